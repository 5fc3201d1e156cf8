"""The registry's engine and session scope: one place that commits, rolls back and maps errors."""

from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

from sqlalchemy import event
from sqlalchemy.engine import URL, Connection, make_url
from sqlalchemy.exc import (
    ArgumentError,
    DBAPIError,
    IntegrityError,
    NoSuchModuleError,
    OperationalError,
    SQLAlchemyError,
)
from sqlalchemy.ext.asyncio import (
    AsyncEngine,
    AsyncSession,
    async_sessionmaker,
    create_async_engine,
)
from sqlalchemy.util.concurrency import await_

from backends.errors import MissingDependencyError
from backends.retry import RetryPolicy, retry_sync

from ..errors import (
    ConfigurationError,
    DatabaseError,
    RegistryError,
    RegistryUnavailableError,
)

__all__ = [
    "UNIQUE_KEY_RACE",
    "Registry",
    "async_database_url",
    "connect_error",
    "enable_wal",
    "lost_unique_key_race",
    "redact_url",
    "sqlite_path",
]

logger = logging.getLogger(__name__)

#: How long a SQLite writer waits for another writer's lock before giving up.
SQLITE_BUSY_TIMEOUT_MS = 60_000
#: How long connecting to a PostgreSQL server may take before it counts as unreachable.
POSTGRES_CONNECT_TIMEOUT_S = 10.0
#: A BEGIN that SQLite answers with "database is locked" is tried again under this policy.
BEGIN_RETRY = RetryPolicy(attempts=8, base_delay_s=0.05, max_delay_s=2.0)
#: Writers racing for one unique key (the next version number, a budget's first row):
#: the loser's transaction was rolled back whole, so it simply tries again.
UNIQUE_KEY_RACE = RetryPolicy(attempts=20, base_delay_s=0.005, max_delay_s=0.2)


def lost_unique_key_race(exc: BaseException) -> bool:
    """Whether ``exc`` is a transaction refused for a unique key another writer took."""
    return isinstance(exc, RegistryError) and isinstance(exc.__cause__, IntegrityError)


_SQLITE_MAGIC = b"SQLite format 3\x00"
#: The async driver each supported database is used with when the URL names none.
_ASYNC_DRIVERS = {"sqlite": "aiosqlite", "postgresql": "asyncpg"}
_ASYNC_CAPABLE = {"sqlite": {"aiosqlite"}, "postgresql": {"asyncpg", "psycopg"}}
_SECRET_QUERY_KEYS = frozenset({"password", "passwd", "pwd", "secret", "token", "sslpassword"})


def redact_url(url: str | URL) -> str:
    """The URL with any password hidden, safe to log or show."""
    try:
        parsed = make_url(url)
    except (ArgumentError, ValueError):  # ValueError: e.g. a port that is not a number
        return "<invalid database URL>"
    secret = [key for key in parsed.query if key.lower() in _SECRET_QUERY_KEYS]
    if secret:
        parsed = parsed.update_query_dict(dict.fromkeys(secret, "***"))
    # The query's "***" comes back percent-encoded; show it as the password's is shown.
    return parsed.render_as_string(hide_password=True).replace("%2A%2A%2A", "***")


def async_database_url(url: str) -> str:
    """``url`` with the async driver quantum-db uses: ``sqlite://`` becomes
    ``sqlite+aiosqlite://`` and ``postgresql://`` becomes ``postgresql+asyncpg://``."""
    if not url.strip():
        raise ConfigurationError(
            "the database URL is empty: give sqlite:///path.db or postgresql://user@host/db, "
            "or leave it out for ./quantum_db.sqlite"
        )
    try:
        parsed = make_url(url)
        parsed.port  # noqa: B018 - SQLAlchemy parses the port lazily; a bad one raises here
    except (ArgumentError, ValueError) as exc:
        raise ConfigurationError(
            f"not a database URL: {redact_url(url)} ({exc}); expected sqlite:///path.db or "
            "postgresql://user@host:5432/db"
        ) from exc
    backend, _, driver = parsed.drivername.partition("+")
    if backend == "postgres":  # the spelling of libpq and many hosting services
        backend = "postgresql"
    if backend not in _ASYNC_DRIVERS:
        raise ConfigurationError(
            f"unsupported database {backend!r} in {redact_url(url)}: use sqlite:///path.db or "
            "postgresql://user@host/db"
        )
    if not driver:
        parsed = parsed.set(drivername=f"{backend}+{_ASYNC_DRIVERS[backend]}")
        if backend == "postgresql" and "sslmode" in parsed.query:
            # libpq's name for what asyncpg calls ``ssl``.
            mode = parsed.query["sslmode"]
            parsed = parsed.difference_update_query(["sslmode"]).update_query_dict({"ssl": mode})
    elif driver not in _ASYNC_CAPABLE[backend]:
        raise ConfigurationError(
            f"{redact_url(url)} names the synchronous driver {driver!r}, but quantum-db is "
            f"asynchronous: use {backend}+{_ASYNC_DRIVERS[backend]}:// (or plain {backend}://)"
        )
    return parsed.render_as_string(hide_password=False)


def sqlite_path(url: str | URL) -> Path | None:
    """The file a SQLite URL points at; ``None`` for other databases and in-memory ones."""
    parsed = make_url(url)
    if parsed.get_backend_name() != "sqlite":
        return None
    database = parsed.database
    if database and database.startswith("file:"):  # a SQLite URI (``?uri=true``)
        if "mode=memory" in database:
            return None
        database = database[len("file:") :].partition("?")[0]
    if not database or database == ":memory:":
        return None
    return Path(database).absolute()


def _check_sqlite_file(path: Path, *, create: bool) -> None:
    """Refuse, before SQLite touches anything, a path that cannot be our database."""
    if path.is_dir():
        raise ConfigurationError(f"{path} is a folder, not a SQLite database file")
    if path.exists():
        try:
            with path.open("rb") as file:
                header = file.read(len(_SQLITE_MAGIC))
        except OSError as exc:
            raise ConfigurationError(
                f"cannot read the SQLite database {path}: {exc.strerror or exc}; "
                "check its permissions"
            ) from exc
        # An empty file is a valid (empty) SQLite database.
        if header and header != _SQLITE_MAGIC[: len(header)]:
            raise ConfigurationError(
                f"{path} is not a SQLite database (its first bytes are not a SQLite header): "
                "point the URL at a quantum-db database or at a file that does not exist yet"
            )
        return
    if not create:
        raise ConfigurationError(
            f"no database at {path}; run `qdb init` (or `qdb init --url URL`) to create it"
        )
    if not path.parent.is_dir():
        raise ConfigurationError(
            f"cannot create the SQLite database {path}: the folder {path.parent} does not "
            "exist; create it, or run `qdb init --url URL`, which does"
        )
    if not os.access(path.parent, os.W_OK):
        raise ConfigurationError(
            f"cannot create the SQLite database {path}: the folder {path.parent} is not "
            "writable by this user"
        )


def _causes(exc: BaseException) -> Iterator[BaseException]:
    """``exc`` and what it wraps: SQLAlchemy's ``.orig``, then ``__cause__``/``__context__``."""
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        yield current
        orig = current.orig if isinstance(current, DBAPIError) else None
        if isinstance(orig, BaseException):
            current = orig
        else:
            current = current.__cause__ or current.__context__


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0] if text else type(exc).__name__


def _sqlstate(exc: BaseException) -> str | None:
    for cause in _causes(exc):
        state = getattr(cause, "sqlstate", None)
        if isinstance(state, str):
            return state
    return None


def is_unreachable(exc: BaseException, dialect: str) -> bool:
    """Whether ``exc`` means the database server could not be reached (or went away)."""
    state = _sqlstate(exc)
    if state is not None and state.startswith("08"):  # SQLSTATE class 08: connection exception
        return True
    if dialect == "sqlite":
        return False  # an OSError about a file is a configuration problem, not an outage
    # asyncpg raises the socket's own errors (refused, unknown host, timed out) unwrapped.
    return any(isinstance(cause, OSError) for cause in _causes(exc))


def connect_error(exc: BaseException, url: str) -> DatabaseError:
    """The typed error for a foreign failure while connecting to (or checking) ``url``.

    The message shows the URL without its password, says what went wrong and what to
    do next; the caller raises it ``from exc``.
    """
    shown = redact_url(url)
    try:
        dialect = make_url(url).get_backend_name()
        path = sqlite_path(url)
    except ArgumentError:
        dialect, path = "", None
    if path is not None:
        shown = str(path)
    deepest = list(_causes(exc))[-1]
    text = _first_line(deepest)
    state = _sqlstate(exc)
    if is_unreachable(exc, dialect):
        return RegistryUnavailableError(
            f"cannot reach the database server at {shown} ({text}): check that it is running "
            "and that the host and port in the URL are right, then try again"
        )
    if state == "3D000":
        return ConfigurationError(
            f"the server at {shown} has no such database ({text}): create it (e.g. with "
            "createdb), then run `qdb init --url URL`"
        )
    if state in ("28P01", "28000"):
        return ConfigurationError(
            f"the server at {shown} refused the login ({text}): check the user name and "
            "password in the URL"
        )
    if state in ("57P03", "53300"):
        return RegistryUnavailableError(
            f"the database server at {shown} cannot take a connection now ({text}): try again "
            "in a moment"
        )
    if dialect == "sqlite":
        lowered = text.lower()
        if "not a database" in lowered:
            return ConfigurationError(
                f"{shown} is not a SQLite database ({text}): point the URL at a quantum-db "
                "database or at a file that does not exist yet"
            )
        if "readonly" in lowered or "read-only" in lowered or "unable to open" in lowered:
            return ConfigurationError(
                f"cannot open the SQLite database {shown} for writing ({text}): the file and "
                "its folder must exist and be writable by this user (SQLite writes -wal and "
                "-shm files next to it)"
            )
        if "locked" in lowered:
            return RegistryError(
                f"the SQLite database {shown} stayed locked by another process ({text}); "
                "try again when it is done"
            )
    return ConfigurationError(
        f"cannot use the database at {shown}: {type(deepest).__name__}: {text}"
    )


def enable_wal(connection: Connection) -> None:
    """Switch a SQLite database to WAL mode (persistent; a no-op when it already is).

    Done once the database is known to be ours: the journal mode is written into the
    file's header, and a file owned by another program must stay byte-identical.
    """
    if connection.dialect.name != "sqlite":
        return
    cursor = connection.connection.dbapi_connection.cursor()  # type: ignore[union-attr]
    try:
        cursor.execute("PRAGMA journal_mode = WAL")
    finally:
        cursor.close()


def _locked(exc: BaseException) -> bool:
    return isinstance(exc, OperationalError) and "locked" in str(exc)


def _sleep_on_the_loop(seconds: float) -> None:
    await_(asyncio.sleep(seconds))


def _configure_sqlite(engine: AsyncEngine) -> None:
    @event.listens_for(engine.sync_engine, "connect")
    def on_connect(dbapi_connection: Any, _record: Any) -> None:
        # The driver's own implicit BEGIN is replaced by BEGIN IMMEDIATE below.
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        cursor.execute(f"PRAGMA busy_timeout = {SQLITE_BUSY_TIMEOUT_MS}")
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
        retry_sync(
            lambda: conn.exec_driver_sql("BEGIN IMMEDIATE"),
            policy=BEGIN_RETRY,
            service="sqlite",
            operation="BEGIN IMMEDIATE",
            retryable=_locked,
            sleep=_sleep_on_the_loop,
        )


class Registry:
    """The SQL side of a QuantumDatabase: an async engine and a session scope.

    ``url`` may be a plain SQLAlchemy URL (``sqlite:///x.db``, ``postgresql://…``): it is
    used with the async driver. With ``create=False`` a SQLite file that does not exist is
    refused ("run `qdb init`") instead of being created, as read-only tools need. Nothing
    here creates folders.
    """

    def __init__(self, url: str, *, create: bool = True) -> None:
        self.url = async_database_url(url)
        parsed = make_url(self.url)
        self.dialect = parsed.get_backend_name()
        #: The SQLite file, or ``None`` (PostgreSQL, in-memory SQLite).
        self.path = sqlite_path(parsed)
        if self.path is not None:
            _check_sqlite_file(self.path, create=create)
        kwargs: dict[str, Any] = {}
        if self.dialect == "sqlite":
            kwargs["connect_args"] = {"timeout": SQLITE_BUSY_TIMEOUT_MS / 1000}
        else:
            kwargs["pool_pre_ping"] = True
            kwargs["connect_args"] = {"timeout": POSTGRES_CONNECT_TIMEOUT_S}
        try:
            self.engine = create_async_engine(self.url, **kwargs)
        except ImportError as exc:  # the dialect is known, its async driver is not installed
            driver = parsed.get_driver_name()
            hint = {
                "asyncpg": "pip install 'quantum-db[postgres]'",
                "aiosqlite": "pip install aiosqlite (a dependency of quantum-db)",
            }.get(driver, f"pip install {exc.name or driver}")
            raise MissingDependencyError(
                f"{redact_url(self.url)} needs the {driver} driver, which is not installed: {hint}"
            ) from exc
        except (ArgumentError, NoSuchModuleError) as exc:
            raise ConfigurationError(
                f"cannot create an engine for {redact_url(self.url)}: {_first_line(exc)}"
            ) from exc
        if self.dialect == "sqlite":
            _configure_sqlite(self.engine)
        self._sessions = async_sessionmaker(self.engine, expire_on_commit=False)

    @asynccontextmanager
    async def session(self) -> AsyncIterator[AsyncSession]:
        """A transaction: committed when the block ends, rolled back on any error.

        SQLAlchemy errors leave as :class:`RegistryError` (nothing was changed), or as
        :class:`RegistryUnavailableError` when the server cannot be reached; errors of our
        own hierarchy pass through unchanged after the rollback.
        """
        async with self._sessions() as session:
            if self.dialect != "sqlite":
                # Connect before the block runs: asyncpg raises a refused or lost connection
                # as a bare OSError, which would be ambiguous among the block's own errors.
                try:
                    await session.connection()
                except (SQLAlchemyError, OSError) as exc:
                    await _rollback_quietly(session)
                    raise self._failure(exc) from exc
            try:
                yield session
                await session.commit()
            except DatabaseError:
                await session.rollback()
                raise
            except SQLAlchemyError as exc:
                await _rollback_quietly(session)
                raise self._failure(exc) from exc
            except BaseException:
                await session.rollback()
                raise

    def _failure(self, exc: BaseException) -> RegistryError:
        if is_unreachable(exc, self.dialect):
            return RegistryUnavailableError(
                f"lost the database server at {redact_url(self.url)} "
                f"({_first_line(list(_causes(exc))[-1])}); nothing was changed: try again "
                "when it is back"
            )
        return RegistryError(f"the registry rejected the operation: {exc}")

    async def aclose(self) -> None:
        await self.engine.dispose()

    def __repr__(self) -> str:
        return f"Registry({redact_url(self.url)!r})"


async def _rollback_quietly(session: AsyncSession) -> None:
    # With the server gone the rollback fails too; the error worth reporting is the first.
    try:
        await session.rollback()
    except (SQLAlchemyError, OSError):
        logger.debug("rollback after a failed operation failed as well", exc_info=True)
