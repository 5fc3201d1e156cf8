"""The registry's engine and session scope: one place that commits, rolls back and maps errors."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from sqlalchemy import event
from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError, NoSuchModuleError, OperationalError, SQLAlchemyError
from sqlalchemy.ext.asyncio import (
    AsyncEngine,
    AsyncSession,
    async_sessionmaker,
    create_async_engine,
)
from sqlalchemy.util.concurrency import await_

from ..errors import ConfigurationError, DatabaseError, RegistryError

__all__ = ["Registry", "redact_url"]

logger = logging.getLogger(__name__)

#: How long a SQLite writer waits for another writer's lock before giving up.
SQLITE_BUSY_TIMEOUT_MS = 60_000
#: How often a BEGIN that SQLite answers with "database is locked" is tried again.
_BEGIN_ATTEMPTS = 8


def redact_url(url: str) -> str:
    """The URL with any password hidden, safe to log or show."""
    try:
        return make_url(url).render_as_string(hide_password=True)
    except ArgumentError:
        return "<invalid database URL>"


def _configure_sqlite(engine: AsyncEngine) -> None:
    @event.listens_for(engine.sync_engine, "connect")
    def on_connect(dbapi_connection: Any, _record: Any) -> None:
        # The driver's own implicit BEGIN is replaced by BEGIN IMMEDIATE below.
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        cursor.execute(f"PRAGMA busy_timeout = {SQLITE_BUSY_TIMEOUT_MS}")
        cursor.execute("PRAGMA journal_mode = WAL")
        cursor.execute("PRAGMA synchronous = NORMAL")
        cursor.execute("PRAGMA foreign_keys = ON")
        cursor.close()

    @event.listens_for(engine.sync_engine, "begin")
    def on_begin(conn: Any) -> None:
        # A deferred transaction that later writes can fail at once with "database is
        # locked" when another connection wrote meanwhile, whatever the busy timeout.
        # Taking the write lock up front makes writers queue (up to the timeout) instead.
        # Under heavy multi-process load SQLite can still answer BUSY to the BEGIN itself
        # (nothing has run yet, so it is safe to try again); wait without blocking the loop.
        for attempt in range(_BEGIN_ATTEMPTS):
            try:
                conn.exec_driver_sql("BEGIN IMMEDIATE")
                return
            except OperationalError as exc:
                if "locked" not in str(exc) or attempt + 1 == _BEGIN_ATTEMPTS:
                    raise
                logger.warning("SQLite was busy at BEGIN (attempt %d); retrying", attempt + 1)
                await_(asyncio.sleep(min(0.05 * 2**attempt, 2.0)))


class Registry:
    """The SQL side of a QuantumDatabase: an async engine and a session scope."""

    def __init__(self, url: str) -> None:
        self.url = url
        try:
            parsed = make_url(url)
        except ArgumentError as exc:
            raise ConfigurationError(f"not a database URL: {redact_url(url)}") from exc
        self.dialect = parsed.get_backend_name()
        if self.dialect not in ("sqlite", "postgresql"):
            raise ConfigurationError(
                f"unsupported database {self.dialect!r}: use sqlite+aiosqlite:///path.db or "
                "postgresql+asyncpg://user@host/db"
            )
        kwargs: dict[str, Any] = {}
        if self.dialect == "sqlite":
            kwargs["connect_args"] = {"timeout": SQLITE_BUSY_TIMEOUT_MS / 1000}
        else:
            kwargs["pool_pre_ping"] = True
        try:
            self.engine = create_async_engine(url, **kwargs)
        except (ArgumentError, NoSuchModuleError, ImportError) as exc:
            hint = "pip install 'quantum-db[postgres]'" if self.dialect == "postgresql" else ""
            raise ConfigurationError(
                f"cannot create an engine for {redact_url(url)}: {exc}. {hint}".strip()
            ) from exc
        if self.dialect == "sqlite":
            _configure_sqlite(self.engine)
        self._sessions = async_sessionmaker(self.engine, expire_on_commit=False)

    @asynccontextmanager
    async def session(self) -> AsyncIterator[AsyncSession]:
        """A transaction: committed when the block ends, rolled back on any error.

        SQLAlchemy errors leave as :class:`RegistryError` (nothing was changed); errors of
        our own hierarchy pass through unchanged after the rollback.
        """
        async with self._sessions() as session:
            try:
                yield session
                await session.commit()
            except DatabaseError:
                await session.rollback()
                raise
            except SQLAlchemyError as exc:
                await session.rollback()
                raise RegistryError(f"the registry rejected the operation: {exc}") from exc
            except BaseException:
                await session.rollback()
                raise

    async def aclose(self) -> None:
        await self.engine.dispose()

    def __repr__(self) -> str:
        return f"Registry({redact_url(self.url)!r})"
