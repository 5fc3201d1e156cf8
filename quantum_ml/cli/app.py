"""The ``qdb`` Typer app: global options, the command groups, and how errors end."""

from __future__ import annotations

import logging
import os
import sys
import traceback
from collections.abc import Sequence
from importlib.metadata import PackageNotFoundError, version
from typing import Annotated

import typer

from backends.errors import QuantumDBError

from . import catalog, hpo, runs, setup, train, views
from .common import URL_HELP, state

__all__ = ["app", "main"]


def _version() -> str:
    try:
        return version("quantum-db")
    except PackageNotFoundError:  # pragma: no cover - running from a plain checkout
        return "unknown"


def _show_version(value: bool) -> None:
    if value:
        typer.echo(f"qdb {_version()}")
        raise typer.Exit(0)


app = typer.Typer(
    name="qdb",
    help="quantum-db: hybrid quantum-classical machine learning as a service.",
    no_args_is_help=True,
    add_completion=True,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,
    context_settings={"help_option_names": ["-h", "--help"]},
)


@app.callback()
def _global(
    ctx: typer.Context,
    url: Annotated[
        str | None,
        typer.Option("--url", envvar="QDB_DATABASE_URL", help=URL_HELP, show_default=False),
    ] = None,
    debug: Annotated[
        bool, typer.Option("--debug", help="show tracebacks and debug logs on errors")
    ] = False,
    _version_flag: Annotated[
        bool,
        typer.Option(
            "--version", callback=_show_version, is_eager=True, help="print the version and exit"
        ),
    ] = False,
) -> None:
    state.url = url
    state.debug = debug
    state.command = f"qdb {ctx.invoked_subcommand}" if ctx.invoked_subcommand else "qdb"
    if debug:
        logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
        for package in ("backends", "quantum_db", "quantum_ml"):
            logging.getLogger(package).setLevel(logging.DEBUG)
    else:
        # Retry attempts and sweep notes are for whoever debugs (--debug); the user gets
        # the command's output and, on failure, one line.
        logging.basicConfig(level=logging.ERROR, format="qdb: %(message)s")


setup.register(app)
catalog.register(app)
runs.register(app)
views.register(app)
train.register(app)
hpo.register(app)


def _one_line(exc: BaseException) -> str:
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    return " ".join(lines) or type(exc).__name__


def _command_of(argv: Sequence[str]) -> str:
    """``qdb NAME`` of a command line that failed before a command started."""
    names = set(typer.main.get_command(app).commands)  # type: ignore[attr-defined]
    for arg in argv:
        if arg in names:
            return f"qdb {arg}"
    return "qdb"


def main(argv: Sequence[str] | None = None) -> int:
    """Run ``qdb`` with ``argv`` (default: the process's arguments); the exit status."""
    args = list(sys.argv[1:] if argv is None else argv)
    state.url, state.debug, state.command = None, False, _command_of(args)
    command = typer.main.get_command(app)
    try:
        result = command.main(args=args, prog_name="qdb", standalone_mode=False)
    except QuantumDBError as exc:
        # One line for the user; the traceback is for whoever debugs (--debug).
        if state.debug:
            traceback.print_exc()
        print(f"{state.command}: {_one_line(exc)}", file=sys.stderr)
        return 2
    except typer.Abort:
        print(f"{state.command}: interrupted", file=sys.stderr)
        return 130
    except KeyboardInterrupt:
        print(f"{state.command}: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:  # e.g. `qdb estimate | head`: the reader left, which is fine
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
    except typer.Exit as exc:
        return int(exc.exit_code)
    except Exception as exc:
        # A usage error of the command line (Click's, vendored by Typer: no public class
        # to name here): one line, and Click's exit status (2).
        if type(exc).__name__ == "NoArgsIsHelpError":  # bare `qdb`: the help, as it is
            print(exc.format_message(), file=sys.stderr)  # type: ignore[attr-defined]
            return 2
        if hasattr(exc, "format_message") and hasattr(exc, "exit_code"):
            print(f"{state.command}: {_one_line_text(exc.format_message())}", file=sys.stderr)
            return int(exc.exit_code)
        raise
    return int(result) if isinstance(result, int) else 0


def _one_line_text(text: str) -> str:
    return " ".join(line.strip() for line in text.splitlines() if line.strip())


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
