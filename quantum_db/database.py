"""``QuantumDatabase``: one async facade over the registry, the vector store and the backends."""

from __future__ import annotations

import asyncio
import logging
import weakref
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

from numpy.typing import ArrayLike

from backends import BackendManager, UnknownBackendError
from backends.errors import QuantumDBError
from backends.ionq.targets import BACKEND_NAMES

from .accounting import SqlAccounting
from .alerts import AlertStore
from .checkpoints import CheckpointStore
from .datasets import Dataset, DatasetInfo, DatasetStore
from .errors import ConfigurationError, DatabaseError, NotConnectedError
from .leases import Lease, release_lease, take_lease
from .loader import MLDataLoader
from .metrics import MetricsLogger
from .models import ModelRegistry
from .registry.engine import Registry, connect_error, redact_url
from .registry.migrate import check_schema
from .runs import RunStore
from .settings import Settings
from .sweeper import sweep_on_connect
from .vectorstores.base import VectorStore

__all__ = ["QuantumDatabase"]

logger = logging.getLogger(__name__)


@dataclass(slots=True)
class _Open:
    """Everything a live connection holds, dropped as a whole on close."""

    registry: Registry
    vectors: VectorStore
    backend_manager: BackendManager
    owns_backends: bool
    datasets: DatasetStore
    models: ModelRegistry
    checkpoints: CheckpointStore
    metrics: MetricsLogger
    runs: RunStore
    alerts: AlertStore
    loaders: weakref.WeakSet[MLDataLoader]
    #: This connection's lease: the owner of what it reserves, sends and writes.
    lease: Lease | None = None


class QuantumDatabase:
    """Training data, models, checkpoints and metrics in one place.

    ``QuantumDatabase()`` is the embedded default: a SQLite file in the working directory
    (``QDB_DATABASE_URL`` overrides it), vectors kept in the same database, and the built-in
    simulator. ``QuantumDatabase("postgresql+asyncpg://user@host/db", vector_store="pinecone")``
    scales out with the same API. Everything happens inside ``async with db.connect():``,
    which checks the schema (an empty database is upgraded; one that is behind is refused
    with a message to run ``qdb init``) and closes everything on exit, error or
    cancellation.

    ``create=False`` is for read-only use: a database that does not exist yet (a missing
    SQLite file, an empty database) is refused with "run `qdb init`" and nothing is
    created. No connection creates folders. Whatever fails while connecting (an
    unreachable server, a file that is not a database, a bad setting) raises a
    :class:`~quantum_db.errors.ConfigurationError`, or a
    :class:`~quantum_db.errors.RegistryUnavailableError` when the server cannot be
    reached, with the URL's password redacted.
    """

    def __init__(
        self,
        url: str | None = None,
        *,
        vector_store: str | VectorStore | None = None,
        settings: Settings | None = None,
        backend_manager: BackendManager | None = None,
        upgrade_empty: bool = True,
        create: bool = True,
    ) -> None:
        self.settings = settings if settings is not None else Settings()
        self.url = url or self.settings.resolved_database_url()
        choice = vector_store if vector_store is not None else self.settings.vector_store
        if isinstance(choice, str) and choice not in ("local", "pinecone"):
            raise ConfigurationError(
                f"vector_store must be 'local', 'pinecone' or a VectorStore, got {choice!r}"
            )
        self._vector_choice: str | VectorStore = choice
        self._given_backends = backend_manager
        self._upgrade_empty = upgrade_empty and create
        self._create = create
        self._open: _Open | None = None

    # ------------------------------------------------------------------ lifecycle
    @asynccontextmanager
    async def connect(self) -> AsyncIterator[QuantumDatabase]:
        if self._open is not None:
            raise DatabaseError("this QuantumDatabase is already connected")
        registry = self._make_registry()
        vectors: VectorStore | None = None
        manager: BackendManager | None = None
        lease: Lease | None = None
        try:
            await check_schema(registry, upgrade_empty=self._upgrade_empty)
            # A read-only connection (create=False) reserves nothing, so it takes no lease.
            if self._create:
                lease = await take_lease(registry, self.settings.lease_ttl_s)
            owner = lease.id if lease is not None else None
            vectors = self._make_vector_store(registry)
            await _open_vector_store(vectors)
            manager = self._given_backends or default_backend_manager(
                self.settings, SqlAccounting(registry, owner_id=owner)
            )
            if lease is not None and self.settings.sweep_on_connect:
                await sweep_on_connect(
                    registry,
                    backends=manager,
                    vectors=vectors,
                    timeout_s=self.settings.sweep_timeout_s,
                    unknown_expiry_s=self.settings.unknown_job_expiry_s,
                )
            self._open = _Open(
                registry=registry,
                vectors=vectors,
                backend_manager=manager,
                owns_backends=self._given_backends is None,
                datasets=DatasetStore(registry, vectors, owner_id=owner),
                models=ModelRegistry(registry),
                checkpoints=CheckpointStore(registry, keep_last=self.settings.checkpoint_keep_last),
                metrics=MetricsLogger(
                    registry, flush_interval=self.settings.metrics_flush_interval_s
                ),
                runs=RunStore(registry, lease_ttl_s=self.settings.lease_ttl_s),
                alerts=AlertStore(registry),
                loaders=weakref.WeakSet(),
                lease=lease,
            )
        except BaseException as exc:
            if lease is not None:
                await asyncio.shield(release_lease(lease))
            await asyncio.shield(_abandon(registry, vectors))
            if isinstance(exc, QuantumDBError) or not isinstance(exc, Exception):
                raise
            raise connect_error(exc, self.url) from exc
        try:
            yield self
        finally:
            state, self._open = self._open, None
            # Shielded: a cancelled task still flushes metrics and releases connections.
            await asyncio.shield(_close_connection(state))

    def _make_registry(self) -> Registry:
        try:
            return Registry(self.url, create=self._create)
        except QuantumDBError:
            raise
        except Exception as exc:
            raise connect_error(exc, self.url) from exc

    def _make_vector_store(self, registry: Registry) -> VectorStore:
        choice = self._vector_choice
        if isinstance(choice, VectorStore):
            return choice
        if choice == "local":
            from .vectorstores.local import LocalVectorStore

            return LocalVectorStore(registry)
        from .vectorstores.pinecone import PineconeVectorStore

        return PineconeVectorStore(self.settings)

    def _state(self) -> _Open:
        if self._open is None:
            raise NotConnectedError(
                "the database is not connected: use it inside `async with db.connect():`"
            )
        return self._open

    @property
    def connected(self) -> bool:
        return self._open is not None

    # ------------------------------------------------------------------ parts
    @property
    def registry(self) -> Registry:
        return self._state().registry

    @property
    def vector_store(self) -> VectorStore:
        return self._state().vectors

    @property
    def owner_id(self) -> str | None:
        """This connection's lease id, the owner of what it reserves, sends and writes
        (``None`` without a lease). A BackendManager of your own gets its reservations
        swept after a crash when built with ``SqlAccounting(db.registry, owner_id=db.owner_id)``.
        """
        lease = self._state().lease
        return lease.id if lease is not None else None

    @property
    def backend_manager(self) -> BackendManager:
        return self._state().backend_manager

    @property
    def accounting(self) -> SqlAccounting:
        """Jobs, budgets and the ledger in the registry (the manager's own accounting
        when it keeps it here, so that its held-back job rows are seen too)."""
        kept = self.backend_manager.accounting
        if isinstance(kept, SqlAccounting):
            return kept
        return SqlAccounting(self.registry, owner_id=self.owner_id)

    @property
    def models(self) -> ModelRegistry:
        return self._state().models

    @property
    def checkpoints(self) -> CheckpointStore:
        return self._state().checkpoints

    @property
    def metrics(self) -> MetricsLogger:
        return self._state().metrics

    @property
    def runs(self) -> RunStore:
        return self._state().runs

    @property
    def alerts(self) -> AlertStore:
        return self._state().alerts

    # ------------------------------------------------------------------ datasets
    async def store_training_data(
        self,
        dataset_id: str,
        data: ArrayLike,
        labels: ArrayLike,
        metadata: Mapping[str, Any] | None = None,
        *,
        splits: Mapping[str, float] | None = None,
        split_seed: int = 0,
        encoding: Mapping[str, Any] | None = None,
        new_version: bool = False,
    ) -> DatasetInfo:
        """Validate and store a new version of ``dataset_id``, atomically.

        ``data`` is ``[n_samples, n_features]`` of finite numbers, ``labels`` one integer
        class or float target per sample. ``splits`` (default 80/10/10 train/validation/
        test, stratified by class) is drawn with ``split_seed``. ``encoding`` (encoder,
        scaling, n_qubits) is stored with the feature statistics it needs. When the latest
        version already holds exactly this (same content hash, splits, encoding and
        metadata) it is returned and nothing is written, unless ``new_version=True``.
        """
        return await self._state().datasets.store(
            dataset_id,
            data,
            labels,
            metadata,
            splits=splits,
            split_seed=split_seed,
            encoding=encoding,
            new_version=new_version,
        )

    async def list_datasets(self) -> list[DatasetInfo]:
        return await self._state().datasets.list()

    async def get_dataset(self, dataset_id: str, version: int | None = None) -> Dataset:
        """The dataset's info, data, labels and split assignment (latest version by default)."""
        return await self._state().datasets.load(dataset_id, version)

    async def delete_dataset(self, dataset_id: str, version: int | None = None) -> int:
        return await self._state().datasets.delete(dataset_id, version)

    def create_ml_data_loader(
        self,
        dataset_id: str,
        batch_size: int = 32,
        shuffle: bool = True,
        seed: int | None = None,
        split: str | None = None,
        drop_last: bool = False,
        *,
        version: int | None = None,
    ) -> MLDataLoader:
        """A seeded mini-batch loader over ``dataset_id`` (``async for x, y in loader``)."""
        state = self._state()
        datasets = state.datasets

        async def source() -> Dataset:
            return await datasets.load(dataset_id, version)

        loader = MLDataLoader(
            source,
            name=dataset_id,
            batch_size=batch_size,
            shuffle=shuffle,
            seed=seed,
            split=split,
            drop_last=drop_last,
        )
        state.loaders.add(loader)
        return loader

    def __repr__(self) -> str:
        store = (
            self._vector_choice
            if isinstance(self._vector_choice, str)
            else type(self._vector_choice).__name__
        )
        return (
            f"QuantumDatabase(url={redact_url(self.url)!r}, vector_store={store!r}, "
            f"connected={self.connected})"
        )


def default_backend_manager(
    settings: Settings, accounting: SqlAccounting | None = None
) -> BackendManager:
    """The backends a connection offers: the built-in simulator always, Qiskit Aer when
    qiskit-aer is installed, and IonQ's simulator, Aria and Forte when an IonQ key is set."""
    manager = BackendManager(accounting=accounting)
    try:
        manager.load("aer")
    except (ImportError, UnknownBackendError):
        logger.debug("Qiskit Aer is not installed; pip install 'quantum-db[qiskit]' adds it")
    if settings.ionq_api_key is not None:
        for name, target in IONQ_TARGETS.items():
            try:
                manager.load(
                    name,
                    plugin="ionq",
                    target=target,
                    api_key=settings.ionq_api_key,
                    api_url=settings.ionq_api_url,
                )
            except (ImportError, UnknownBackendError):
                logger.debug("IonQ clients are not installed; pip install 'quantum-db[ionq]'")
                break
    return manager


#: The name a connection registers each IonQ target under (the value is IonQ's own target
#: name): the one ``qdb backends`` lists and ``BackendManager.run(backend=...)`` takes.
IONQ_TARGETS: dict[str, str] = {name: target for target, name in BACKEND_NAMES.items()}


async def _open_vector_store(vectors: VectorStore) -> None:
    try:
        await vectors.open()
    except QuantumDBError:
        raise
    except Exception as exc:
        raise ConfigurationError(
            f"cannot open the vector store {vectors!r}: {type(exc).__name__}: {exc}; check "
            "its settings (QDB_VECTOR_STORE, QDB_PINECONE_*)"
        ) from exc


async def _abandon(registry: Registry, vectors: VectorStore | None) -> None:
    """Close what a failed connect opened; the error worth reporting is the first one."""
    try:
        await _close_parts(registry, vectors, None, None)
    except Exception:
        logger.debug("closing after a failed connect failed as well", exc_info=True)


async def _close_parts(
    registry: Registry,
    vectors: VectorStore | None,
    manager: BackendManager | None,
    metrics: MetricsLogger | None,
) -> None:
    errors: list[BaseException] = []
    for step in (
        metrics.aclose if metrics else None,
        vectors.aclose if vectors else None,
        manager.aclose if manager else None,
        registry.aclose,
    ):
        if step is None:
            continue
        try:
            await step()
        except Exception as exc:  # close everything, then report the first failure
            logger.exception("closing %s failed", step)
            errors.append(exc)
    if errors:
        raise errors[0]


async def _close_connection(state: _Open | None) -> None:
    if state is None:
        return
    for loader in list(state.loaders):
        # A loader made in this connection but never read loads now, so that it keeps
        # working (e.g. as_torch()) after the connection is gone.
        if not loader.loaded:
            try:
                await loader.load()
            except Exception:
                logger.warning("loader over %r could not be read before closing", loader.name)
        loader.detach()
    try:
        await state.backend_manager.flush_jobs()
    except Exception as exc:  # free local jobs only: nothing billed is ever held back
        logger.warning("could not record the last local jobs: %s", exc)
    if state.lease is not None:
        await release_lease(state.lease)
    await _close_parts(
        state.registry,
        state.vectors,
        state.backend_manager if state.owns_backends else None,
        state.metrics,
    )
