"""The registry's tables as typed SQLAlchemy ORM models (the Alembic revisions mirror them)."""

from __future__ import annotations

import time
from typing import Any, ClassVar

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    Float,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    String,
    UniqueConstraint,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

__all__ = [
    "INT64_MAX",
    "INT64_MIN",
    "AlertRow",
    "Base",
    "BigInt",
    "BudgetRow",
    "CheckpointRow",
    "DatasetRow",
    "DatasetWriteRow",
    "JobRow",
    "LeaseRow",
    "LedgerRow",
    "MetricRow",
    "ModelAliasRow",
    "ModelRow",
    "ModelVersionRow",
    "RunRow",
    "VectorRow",
]

# Explicit constraint names keep migrations identical on SQLite and PostgreSQL.
NAMING = {
    "ix": "ix_%(table_name)s_%(column_0_N_name)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


#: The range every integer that reaches the registry is checked against: both dialects
#: store it (SQLite's INTEGER is 64-bit; PostgreSQL's columns are BIGINT).
INT64_MIN = -(2**63)
INT64_MAX = 2**63 - 1

#: A 64-bit integer column: BIGINT on PostgreSQL, INTEGER (already 64-bit) on SQLite.
BigInt = BigInteger().with_variant(Integer(), "sqlite")


def now() -> float:
    """Timestamps are UNIX seconds (float): portable across both dialects, easy to plot."""
    return time.time()


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING)
    type_annotation_map: ClassVar[dict[Any, Any]] = {dict[str, Any]: JSON, list[Any]: JSON}


class DatasetRow(Base):
    """One stored version of a named dataset; its samples live in the vector store."""

    __tablename__ = "datasets"
    __table_args__ = (UniqueConstraint("name", "version"),)

    id: Mapped[str] = mapped_column(String(36), primary_key=True)
    name: Mapped[str] = mapped_column(String(128), index=True)
    version: Mapped[int] = mapped_column(BigInt)
    dim: Mapped[int] = mapped_column(BigInt)
    n_samples: Mapped[int] = mapped_column(BigInt)
    label_kind: Mapped[str] = mapped_column(String(16))
    n_classes: Mapped[int | None] = mapped_column(BigInt, nullable=True)
    namespace: Mapped[str] = mapped_column(String(64))
    encoding: Mapped[dict[str, Any]] = mapped_column(JSON)
    splits: Mapped[dict[str, Any]] = mapped_column(JSON)
    user_metadata: Mapped[dict[str, Any]] = mapped_column("metadata", JSON)
    content_hash: Mapped[str] = mapped_column(String(64))
    created_at: Mapped[float] = mapped_column(Float, default=now)


class VectorRow(Base):
    """A vector of the local vector store (training samples among them)."""

    __tablename__ = "vectors"
    __table_args__ = (Index("ix_vectors_namespace_position", "namespace", "position"),)

    namespace: Mapped[str] = mapped_column(String(128), primary_key=True)
    id: Mapped[str] = mapped_column(String(512), primary_key=True)
    #: Insertion order within the namespace, so that datasets read back in order.
    position: Mapped[int] = mapped_column(BigInt)
    dim: Mapped[int] = mapped_column(BigInt)
    #: float64 little-endian bytes.
    values: Mapped[bytes] = mapped_column(LargeBinary)
    vector_metadata: Mapped[dict[str, Any] | None] = mapped_column("metadata", JSON, nullable=True)


class ModelRow(Base):
    __tablename__ = "models"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    name: Mapped[str] = mapped_column(String(128), unique=True)
    created_at: Mapped[float] = mapped_column(Float, default=now)


class ModelVersionRow(Base):
    __tablename__ = "model_versions"
    __table_args__ = (UniqueConstraint("model_id", "version"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    model_id: Mapped[int] = mapped_column(ForeignKey("models.id", ondelete="CASCADE"))
    version: Mapped[int] = mapped_column(BigInt)
    architecture: Mapped[dict[str, Any]] = mapped_column(JSON)
    encoding: Mapped[dict[str, Any] | None] = mapped_column(JSON, nullable=True)
    metrics: Mapped[dict[str, Any]] = mapped_column(JSON)
    provenance: Mapped[dict[str, Any]] = mapped_column(JSON)
    #: The parameters as an ``.npz`` archive written without pickling.
    parameters: Mapped[bytes] = mapped_column(LargeBinary)
    parameters_hash: Mapped[str] = mapped_column(String(64))
    created_at: Mapped[float] = mapped_column(Float, default=now)


class ModelAliasRow(Base):
    __tablename__ = "model_aliases"

    model_id: Mapped[int] = mapped_column(
        ForeignKey("models.id", ondelete="CASCADE"), primary_key=True
    )
    alias: Mapped[str] = mapped_column(String(64), primary_key=True)
    version: Mapped[int] = mapped_column(BigInt)


class RunRow(Base):
    __tablename__ = "runs"

    id: Mapped[str] = mapped_column(String(128), primary_key=True)
    status: Mapped[str] = mapped_column(String(16), default="running")
    config: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    backend: Mapped[str | None] = mapped_column(String(128), nullable=True)
    seed: Mapped[int | None] = mapped_column(BigInt, nullable=True)
    #: The lease of the process training the run (``None``: not being trained).
    owner_id: Mapped[str | None] = mapped_column(String(64), nullable=True)
    #: Why the run ended: the stop reason, or the error of a failed run.
    reason: Mapped[str | None] = mapped_column(String(2000), nullable=True)
    created_at: Mapped[float] = mapped_column(Float, default=now)
    updated_at: Mapped[float] = mapped_column(Float, default=now)


class CheckpointRow(Base):
    __tablename__ = "checkpoints"
    __table_args__ = (UniqueConstraint("run_id", "step"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    run_id: Mapped[str] = mapped_column(ForeignKey("runs.id", ondelete="CASCADE"), index=True)
    step: Mapped[int] = mapped_column(BigInt)
    payload: Mapped[bytes] = mapped_column(LargeBinary)
    content_hash: Mapped[str] = mapped_column(String(64))
    metric_name: Mapped[str | None] = mapped_column(String(128), nullable=True)
    metric_value: Mapped[float | None] = mapped_column(Float, nullable=True)
    created_at: Mapped[float] = mapped_column(Float, default=now)


class MetricRow(Base):
    __tablename__ = "metrics"
    __table_args__ = (Index("ix_metrics_run_id_key_step", "run_id", "key", "step"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    run_id: Mapped[str] = mapped_column(ForeignKey("runs.id", ondelete="CASCADE"))
    key: Mapped[str] = mapped_column(String(128))
    step: Mapped[int] = mapped_column(BigInt)
    value: Mapped[float] = mapped_column(Float)
    timestamp: Mapped[float] = mapped_column(Float)


class JobRow(Base):
    """One circuit job sent to a backend (filled by the backend manager)."""

    __tablename__ = "jobs"

    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    run_id: Mapped[str | None] = mapped_column(String(128), nullable=True, index=True)
    backend: Mapped[str] = mapped_column(String(128))
    circuit_hash: Mapped[str] = mapped_column(String(64))
    shots: Mapped[int | None] = mapped_column(BigInt, nullable=True)
    batch_size: Mapped[int] = mapped_column(BigInt, default=1)
    status: Mapped[str] = mapped_column(String(16))
    #: Every provider job id of this job, recorded as soon as each is known.
    provider_job_ids: Mapped[list[Any]] = mapped_column(JSON, default=list)
    #: The lease (process) that sent the job; the sweeper reclaims jobs of expired owners.
    owner_id: Mapped[str | None] = mapped_column(String(64), nullable=True, index=True)
    #: What the job computes (see ``BackendManager.run(request_key=...)``): a restarted
    #: run finds the jobs it sent before a crash by it.
    request_key: Mapped[str | None] = mapped_column(String(64), nullable=True, index=True)
    estimated_cost: Mapped[float] = mapped_column(Float, default=0.0)
    actual_cost: Mapped[float | None] = mapped_column(Float, nullable=True)
    queue_latency_s: Mapped[float | None] = mapped_column(Float, nullable=True)
    run_latency_s: Mapped[float | None] = mapped_column(Float, nullable=True)
    error: Mapped[str | None] = mapped_column(String(2000), nullable=True)
    created_at: Mapped[float] = mapped_column(Float, default=now)
    updated_at: Mapped[float] = mapped_column(Float, default=now)


class BudgetRow(Base):
    __tablename__ = "budgets"

    id: Mapped[str] = mapped_column(String(128), primary_key=True)
    limit_usd: Mapped[float] = mapped_column(Float)
    created_at: Mapped[float] = mapped_column(Float, default=now)


class LedgerRow(Base):
    """A reservation, charge or release against a budget."""

    __tablename__ = "budget_ledger"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    budget_id: Mapped[str] = mapped_column(ForeignKey("budgets.id", ondelete="CASCADE"), index=True)
    job_id: Mapped[str | None] = mapped_column(String(64), nullable=True)
    kind: Mapped[str] = mapped_column(String(16))
    amount_usd: Mapped[float] = mapped_column(Float)
    #: The lease that holds a reservation; reclaimed by the sweeper when it expires.
    owner_id: Mapped[str | None] = mapped_column(String(64), nullable=True, index=True)
    created_at: Mapped[float] = mapped_column(Float, default=now)


class LeaseRow(Base):
    """A live owner of reservations, jobs and dataset writes (one per open connection).

    Its holder renews ``expires_at`` by heartbeat; once it has passed, the owner is gone
    and the sweeper (``qdb gc``, and every connect) reclaims what it held.
    """

    __tablename__ = "leases"

    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    host: Mapped[str] = mapped_column(String(255))
    pid: Mapped[int] = mapped_column(BigInt)
    started_at: Mapped[float] = mapped_column(Float, default=now)
    heartbeat_at: Mapped[float] = mapped_column(Float, default=now)
    expires_at: Mapped[float] = mapped_column(Float, index=True)


class DatasetWriteRow(Base):
    """A dataset version being written: its samples' namespace, until the version commits.

    A row left behind by an owner that is gone marks samples of an aborted write, which
    the sweeper deletes.
    """

    __tablename__ = "dataset_writes"

    namespace: Mapped[str] = mapped_column(String(128), primary_key=True)
    dataset_name: Mapped[str] = mapped_column(String(128))
    owner_id: Mapped[str | None] = mapped_column(String(64), nullable=True, index=True)
    started_at: Mapped[float] = mapped_column(Float, default=now)


class AlertRow(Base):
    __tablename__ = "alerts"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    run_id: Mapped[str | None] = mapped_column(String(128), nullable=True, index=True)
    kind: Mapped[str] = mapped_column(String(64))
    message: Mapped[str] = mapped_column(String(2000))
    metric_key: Mapped[str | None] = mapped_column(String(128), nullable=True)
    value: Mapped[float | None] = mapped_column(Float, nullable=True)
    threshold: Mapped[float | None] = mapped_column(Float, nullable=True)
    acknowledged: Mapped[bool] = mapped_column(Boolean, default=False)
    created_at: Mapped[float] = mapped_column(Float, default=now)
    #: The rule that fired (None: raised by hand), its severity and the latest firing's step.
    rule: Mapped[str | None] = mapped_column(String(128), nullable=True, index=True)
    severity: Mapped[str] = mapped_column(String(16), default="warning", server_default="warning")
    step: Mapped[int | None] = mapped_column(BigInt, nullable=True)
    #: Firings this row stands for: a rule firing again while open updates the row.
    count: Mapped[int] = mapped_column(BigInt, default=1, server_default="1")
    updated_at: Mapped[float | None] = mapped_column(Float, nullable=True, default=now)
    #: When the condition cleared; None while the alert is open.
    resolved_at: Mapped[float | None] = mapped_column(Float, nullable=True)
