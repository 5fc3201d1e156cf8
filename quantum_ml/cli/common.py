"""What every command shares: the database URL, output as tables or JSON, errors."""

from __future__ import annotations

import io
import json
import math
import shutil
import sys
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Annotated, Any

import typer

from ..errors import CommandLineError as UsageProblem

if TYPE_CHECKING:
    from quantum_db import QuantumDatabase

__all__ = [
    "JsonOption",
    "State",
    "UrlOption",
    "UsageProblem",
    "emit_json",
    "emit_table",
    "make_database_folder",
    "reading",
    "resolve_url",
    "state",
    "when",
]

URL_HELP = "database URL (default: QDB_DATABASE_URL or ./quantum_db.sqlite)"

#: ``--url`` on a command: the same setting as the global ``qdb --url``, given after the
#: command name; the command's own wins when both are given.
UrlOption = Annotated[str | None, typer.Option("--url", help=URL_HELP, show_default=False)]
JsonOption = Annotated[bool, typer.Option("--json", help="print JSON instead of a table")]


@dataclass(slots=True)
class State:
    """The global options of this invocation."""

    url: str | None = None
    debug: bool = False
    command: str = "qdb"


state = State()


def resolve_url(url: str | None) -> str | None:
    """The command's ``--url``, else the global one; None means the settings' default."""
    chosen = url if url is not None else state.url
    if chosen is not None and not chosen.strip():
        from quantum_db.errors import ConfigurationError

        raise ConfigurationError(
            "--url is empty: give a database URL, or leave --url out for the default"
        )
    return chosen


def database_url(url: str | None) -> str:
    from quantum_db.settings import Settings

    return resolve_url(url) or Settings().resolved_database_url()


def make_database_folder(url: str | None) -> None:
    """Create the folder of a SQLite database: only commands that write do this."""
    from quantum_db.errors import ConfigurationError
    from quantum_db.registry import async_database_url, sqlite_path

    path = sqlite_path(async_database_url(database_url(url)))
    if path is None or path.parent.is_dir():
        return
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ConfigurationError(
            f"cannot create the folder {path.parent} for the database {path.name}: "
            f"{exc.strerror or exc}"
        ) from exc


def reading(url: str | None) -> QuantumDatabase:
    """The database for a command that only reads: it is never created (a mistyped
    ``--url`` must not leave an empty database behind)."""
    from quantum_db import QuantumDatabase

    return QuantumDatabase(resolve_url(url), create=False)


def when(stamp: float | None) -> str:
    if stamp is None:
        return "-"
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(stamp))


def number(value: float | None, digits: int = 6) -> str:
    if value is None:
        return "-"
    if math.isnan(value) or math.isinf(value):
        return str(value)
    return f"{value:.{digits}g}"


def shorten(text: str, width: int) -> str:
    """``text`` on one line, cut to ``width`` characters (ending in "...")."""
    flat = " ".join(text.split())
    return flat if len(flat) <= width else flat[: width - 3] + "..."


def emit_table(
    headers: Sequence[str], rows: Iterable[Sequence[object]], *, right: Iterable[str] = ()
) -> None:
    """A plain table (rich, no borders): columns two spaces apart, no trailing blanks."""
    from rich.console import Console
    from rich.table import Table

    aligned = set(right)
    table = Table(box=None, pad_edge=False, show_edge=False, header_style="")
    for header in headers:
        table.add_column(header, justify="right" if header in aligned else "left", no_wrap=True)
    for row in rows:
        table.add_row(*(str(cell) for cell in row))
    tty = sys.stdout.isatty()
    # Piped or captured output is never cut to a terminal's width (scripts read it).
    width = shutil.get_terminal_size((200, 24)).columns if tty else 100_000
    buffer = io.StringIO()
    Console(file=buffer, width=width, color_system=None, force_terminal=False).print(table)
    for line in buffer.getvalue().splitlines():
        typer.echo(line.rstrip())


def emit_json(value: Any) -> None:
    typer.echo(json.dumps(value, indent=2, sort_keys=False, default=_jsonable, allow_nan=False))


def _jsonable(value: Any) -> Any:
    import numpy as np

    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, set | frozenset | tuple):
        return list(value)
    raise TypeError(f"{type(value).__name__} is not JSON serializable")


def finite(value: float | None) -> float | None:
    """JSON has no NaN or infinity: those are written as null."""
    if value is None or not math.isfinite(value):
        return None
    return float(value)
