"""Where a study lives: Optuna's RDB storage beside the registry, and the study lock.

Optuna keeps its own tables and its own Alembic version table, ``alembic_version``, which
is the registry's too; on one schema the two migrators would overwrite each other's
revision. So Optuna gets a namespace of its own on the registry's database:

* PostgreSQL: the schema ``optuna`` in the same database (the registry's tables are in
  ``public``), reached with the synchronous ``psycopg`` driver, which Optuna needs, and
  ``options=-csearch_path=optuna`` in the URL;
* SQLite: SQLite has no schemas, so the file beside the registry's: ``qdb.sqlite`` keeps
  its studies in ``qdb.optuna.sqlite``.

:func:`optuna_url` is what ``optuna-dashboard`` is pointed at. :func:`study_lock` makes
"count the trials, then ask for one" atomic across every worker of a study, so a study of
N trials never gets an (N+1)-th: a PostgreSQL advisory lock, or a file lock next to a
SQLite study (SQLite studies are one machine's).
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import threading
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sqlalchemy import text
from sqlalchemy.engine import make_url

from backends.errors import MissingDependencyError
from quantum_db.errors import ConfigurationError
from quantum_db.registry import async_database_url, redact_url

from ..errors import HPOError

if TYPE_CHECKING:
    from optuna.storages import RDBStorage

    from quantum_db.registry.engine import Registry

__all__ = ["OPTUNA_SCHEMA", "open_storage", "optuna_url", "prepare_storage", "study_lock"]

#: The PostgreSQL schema of Optuna's tables.
OPTUNA_SCHEMA = "optuna"


def optuna_url(database_url: str) -> str:
    """The Optuna storage URL of the registry at ``database_url`` (see the module docstring)."""
    parsed = make_url(async_database_url(database_url))
    backend = parsed.get_backend_name()
    if backend == "sqlite":
        if not parsed.database or parsed.database == ":memory:":
            raise HPOError(
                "an in-memory SQLite registry cannot hold a study that workers share: use a "
                "SQLite file or PostgreSQL"
            )
        path = Path(parsed.database)
        return f"sqlite:///{path.with_name(path.stem + '.optuna.sqlite')}"
    query = dict(parsed.query)
    if "ssl" in query:  # asyncpg's name for what libpq calls sslmode
        query["sslmode"] = query.pop("ssl")
    options = query.get("options")
    search_path = f"-csearch_path={OPTUNA_SCHEMA}"
    query["options"] = f"{options} {search_path}" if options else search_path
    synced = parsed.set(drivername="postgresql+psycopg", query=query)
    return synced.render_as_string(hide_password=False)


async def prepare_storage(registry: Registry) -> None:
    """Create the ``optuna`` schema on PostgreSQL (nothing to do on SQLite)."""
    if registry.dialect != "postgresql":
        return
    async with registry.engine.begin() as connection:
        # Serialized: two CREATE SCHEMA IF NOT EXISTS at once can both try to insert it.
        await connection.execute(text("SELECT pg_advisory_xact_lock(:k)"), {"k": _key("schema")})
        await connection.execute(text(f'CREATE SCHEMA IF NOT EXISTS "{OPTUNA_SCHEMA}"'))


def open_storage(
    url: str,
    *,
    heartbeat_s: float | None = None,
    grace_s: float | None = None,
    stale_trial_callback: Callable[..., None] | None = None,
) -> RDBStorage:
    """Optuna's RDBStorage at ``url`` (an :func:`optuna_url`), with heartbeats if given."""
    try:
        import optuna
    except ImportError as exc:  # pragma: no cover - a dependency of quantum-db
        raise MissingDependencyError(
            "hyperparameter search needs optuna: pip install optuna"
        ) from exc
    kwargs: dict[str, Any] = {}
    if heartbeat_s is not None:
        kwargs.update(
            heartbeat_interval=max(1, round(heartbeat_s)),
            grace_period=max(1, round(grace_s if grace_s is not None else 3 * heartbeat_s)),
            heartbeat_stale_trial_callback=stale_trial_callback,
        )
    engine_kwargs: dict[str, Any] = {"pool_pre_ping": True}
    if url.startswith("sqlite"):
        engine_kwargs = {"connect_args": {"timeout": 30}}
    try:
        return optuna.storages.RDBStorage(url, engine_kwargs=engine_kwargs, **kwargs)
    except ImportError as exc:
        raise MissingDependencyError(
            "a study on PostgreSQL needs the psycopg driver: pip install 'quantum-db[postgres]'"
        ) from exc
    except Exception as exc:
        raise ConfigurationError(
            f"cannot open the study storage {redact_url(url)}: {str(exc).splitlines()[0]}"
        ) from exc


def _key(name: str) -> int:
    """A stable signed 64-bit advisory-lock key for ``name``."""
    digest = hashlib.blake2b(f"qdb-hpo:{name}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big", signed=True)


@asynccontextmanager
async def study_lock(registry: Registry, storage_url: str, name: str) -> AsyncIterator[None]:
    """Hold the study's lock for the block (see the module docstring).

    Nothing inside the block may open a registry session on SQLite: the lock there is a
    file, but keep the block to Optuna calls for both, so it stays short.
    """
    if registry.dialect == "postgresql":
        async with registry.engine.begin() as connection:
            await connection.execute(text("SELECT pg_advisory_xact_lock(:k)"), {"k": _key(name)})
            yield
        return
    from filelock import FileLock

    path = Path(make_url(storage_url).database or "study").with_suffix(".lock")
    lock = FileLock(str(path))
    # Taken in a thread so the event loop (and the lease's heartbeat) keep running.
    await asyncio.to_thread(lock.acquire)
    try:
        yield
    finally:
        lock.release()


class Heartbeat:
    """Records a trial's heartbeat every ``interval_s`` from a thread of its own.

    A thread, not a task: a long step that holds the event loop must not look like a dead
    worker to the others (Optuna's own ``optimize`` does the same).
    """

    def __init__(self, storage: RDBStorage, trial_id: int, interval_s: float) -> None:
        self._storage = storage
        self._trial_id = trial_id
        self._interval = interval_s
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._beat, name="qdb-hpo-heartbeat", daemon=True)

    def _beat(self) -> None:
        while True:
            # A missed beat (a database hiccup) is tried again at the next interval.
            with contextlib.suppress(Exception):
                self._storage.record_heartbeat(self._trial_id)
            if self._stop.wait(self._interval):
                return

    def __enter__(self) -> Heartbeat:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=10)
