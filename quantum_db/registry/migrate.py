"""Alembic revisions applied from code: upgrade to head, and refuse an out-of-date schema."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import TypeVar

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import inspect
from sqlalchemy.engine import Connection

from backends.errors import QuantumDBError

from ..errors import SchemaError, SchemaOutOfDateError
from .engine import Registry, connect_error, enable_wal

__all__ = [
    "MIGRATIONS_DIR",
    "alembic_config",
    "check_schema",
    "current_revision",
    "head_revision",
    "upgrade",
]

T = TypeVar("T")

#: The Alembic scripts ship inside the package (the top-level ``migrations`` is a link here).
MIGRATIONS_DIR = Path(__file__).resolve().parents[1] / "migrations"


def alembic_config() -> Config:
    if not (MIGRATIONS_DIR / "env.py").exists():
        raise SchemaError(
            f"the Alembic migrations were not found at {MIGRATIONS_DIR}: this installation "
            "of quantum-db is incomplete; reinstall it (pip install --force-reinstall quantum-db)"
        )
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS_DIR))
    return config


def head_revision() -> str:
    heads = ScriptDirectory.from_config(alembic_config()).get_heads()
    if len(heads) != 1:
        raise SchemaError(f"the migrations have {len(heads)} heads; expected exactly one")
    return heads[0]


def _state(connection: Connection) -> tuple[str | None, bool]:
    """(current revision, whether the database has any table at all)."""
    revision = MigrationContext.configure(connection).get_current_revision()
    return revision, bool(inspect(connection).get_table_names())


def _upgrade(connection: Connection, revision: str) -> None:
    config = alembic_config()
    config.attributes["connection"] = connection
    command.upgrade(config, revision)


async def _typed(registry: Registry, step: Callable[[], Awaitable[T]]) -> T:
    """Run ``step``; a foreign error (driver, socket, Alembic) leaves as a typed one."""
    try:
        return await step()
    except QuantumDBError:
        raise
    except Exception as exc:
        raise connect_error(exc, registry.url) from exc


async def _read_state(registry: Registry) -> tuple[str | None, bool]:
    async with registry.engine.connect() as connection:
        return await connection.run_sync(_state)


def _refuse_foreign(current: str | None, has_tables: bool) -> None:
    if current is None and has_tables:
        raise SchemaError(
            "the database has tables but no quantum-db schema version, so another program "
            "owns it; nothing was changed: point --url / QDB_DATABASE_URL at an empty "
            "database or one created by quantum-db"
        )
    if current is not None:
        known = {s.revision for s in ScriptDirectory.from_config(alembic_config()).walk_revisions()}
        if current not in known:
            raise SchemaError(
                f"the database is at schema revision {current}, which this quantum-db does not "
                "know: it was created by a newer version; upgrade quantum-db"
            )


async def current_revision(registry: Registry) -> str | None:
    """The schema revision the database is at (``None``: no quantum-db schema)."""
    current, _ = await _typed(registry, lambda: _read_state(registry))
    return current


async def upgrade(registry: Registry, revision: str = "head") -> str:
    """Upgrade the registry's database to ``revision``; returns the revision reached.

    A database that another program owns (tables, no quantum-db version) or that a newer
    quantum-db wrote is refused with :class:`SchemaError` before anything is written.
    """

    async def run() -> str:
        _refuse_foreign(*await _read_state(registry))
        async with registry.engine.begin() as connection:
            await connection.run_sync(_upgrade, revision)
        async with registry.engine.connect() as connection:
            await connection.run_sync(enable_wal)
            reached, _ = await connection.run_sync(_state)
        assert reached is not None
        return reached

    return await _typed(registry, run)


async def check_schema(registry: Registry, *, upgrade_empty: bool = True) -> str:
    """Make sure the schema is at head: upgrade an empty database, refuse one that is behind."""
    head = head_revision()
    current, has_tables = await _typed(registry, lambda: _read_state(registry))
    if current == head:
        if registry.dialect == "sqlite":
            await _typed(registry, lambda: _wal(registry))
        return head
    if current is None and not has_tables:
        if upgrade_empty:
            return await upgrade(registry)
        raise SchemaOutOfDateError("the database is empty: run `qdb init` to create the schema")
    _refuse_foreign(current, has_tables)
    raise SchemaOutOfDateError(
        f"the database schema is at revision {current} but this quantum-db needs {head}: run "
        "`qdb init` (or `qdb init --url URL`) to upgrade it"
    )


async def _wal(registry: Registry) -> None:
    async with registry.engine.connect() as connection:
        await connection.run_sync(enable_wal)
