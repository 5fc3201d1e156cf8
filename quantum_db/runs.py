"""Training runs: the record that metrics, checkpoints and jobs hang from, and its lifecycle.

A run is ``running`` while a process trains it; that process's lease id
(``QuantumDatabase.owner_id``) is the run's ``owner_id``. It ends in one of:

* ``finished`` - trained to the end (early stopping included);
* ``stopped`` - ended early on purpose, with the reason (a budget, a NaN, a request);
* ``failed`` - ended by an error, with the error;
* ``interrupted`` - a signal stopped it, or the process died: :meth:`RunStore.detect_interrupted`
  finds runs still ``running`` whose owner's lease has expired.

Runs written before migration 0003 may say ``completed``: it reads as ``finished``.
"""

from __future__ import annotations

import builtins
import logging
import re
import time
import uuid
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from sqlalchemy import func, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from .errors import DataValidationError, InvalidNameError, RunExistsError, RunNotFoundError
from .registry.engine import Registry
from .registry.schema import CheckpointRow, LeaseRow, MetricRow, RunRow
from .validation import check_json, check_number, check_seed, check_text

__all__ = [
    "ENDED_RUN_STATUSES",
    "MAX_REASON_LENGTH",
    "RUN_STATUSES",
    "RunInfo",
    "RunStore",
    "ensure_run",
    "validate_run_id",
]

RUN_STATUSES = ("running", "finished", "stopped", "failed", "interrupted")
#: The statuses :meth:`RunStore.finish` ends a run with.
ENDED_RUN_STATUSES = ("finished", "stopped", "failed", "interrupted")
#: The ``runs.reason`` column's width; longer reasons are cut to it.
MAX_REASON_LENGTH = 2000

#: Ended runs that must say why: the stop reason, or the error.
_NEEDS_REASON = ("stopped", "failed")
#: Statuses from before migration 0003, read (and accepted by ``set_status``) as today's.
_LEGACY_STATUSES = {"completed": "finished"}
logger = logging.getLogger(__name__)

_RUN_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.:\-]{0,127}$")
#: Lease ids are 32 hex characters; the column holds 64.
_MAX_OWNER_LENGTH = 64


def validate_run_id(run_id: object) -> str:
    if not isinstance(run_id, str) or not _RUN_ID.match(run_id):
        raise InvalidNameError(
            f"run id {run_id!r} is not allowed: use 1-128 characters from [A-Za-z0-9_.:-]"
        )
    return run_id


def _current_status(stored: str) -> str:
    return _LEGACY_STATUSES.get(stored, stored)


def _stored_statuses(status: str) -> tuple[str, ...]:
    """What a status may be stored as (today's name and its legacy aliases)."""
    return (status, *(old for old, new in _LEGACY_STATUSES.items() if new == status))


def _check_status(status: object, allowed: tuple[str, ...], what: str) -> str:
    if not isinstance(status, str) or status not in allowed:
        raise DataValidationError(f"{what} must be one of {allowed}, got {status!r}")
    return status


def _check_owner(owner_id: object) -> str | None:
    if owner_id is None:
        return None
    return check_text(owner_id, "owner_id (a lease id)", max_length=_MAX_OWNER_LENGTH)


def _check_reason(status: str, reason: object) -> str | None:
    if reason is None:
        if status in _NEEDS_REASON:
            raise DataValidationError(
                f"a {status} run needs a reason (the stop reason or the error); got none"
            )
        return None
    if not isinstance(reason, str):
        raise DataValidationError(f"reason must be a string, got {type(reason).__name__}")
    if not reason.strip():
        if status in _NEEDS_REASON:
            raise DataValidationError(f"a {status} run needs a reason; got an empty string")
        return None
    return _shorten(reason)


def _shorten(reason: str, limit: int = MAX_REASON_LENGTH) -> str:
    """``reason`` cut to ``limit`` characters, ending in "..." when it was cut."""
    return reason if len(reason) <= limit else reason[: limit - 3] + "..."


@dataclass(frozen=True, slots=True)
class RunInfo:
    id: str
    #: One of :data:`RUN_STATUSES` (a stored ``completed`` reads as ``finished``).
    status: str
    config: dict[str, Any]
    backend: str | None
    seed: int | None
    created_at: float
    updated_at: float
    #: The lease of the process training the run; ``None`` once it ended.
    owner_id: str | None = None
    #: Why it ended: the stop reason, the error, or how it was interrupted.
    reason: str | None = None

    @classmethod
    def from_row(cls, row: RunRow) -> RunInfo:
        return cls(
            row.id,
            _current_status(row.status),
            row.config,
            row.backend,
            row.seed,
            row.created_at,
            row.updated_at,
            row.owner_id,
            row.reason,
        )


async def ensure_run(session: AsyncSession, run_id: str) -> RunRow:
    """The run's row, created (status ``running``) the first time something is logged to it."""
    row = await session.get(RunRow, run_id)
    if row is None:
        row = RunRow(id=run_id, status="running", config={})
        session.add(row)
        await session.flush()
    return row


async def _locked_run(session: AsyncSession, run_id: str) -> RunRow:
    """The run's row, locked until the transaction ends (PostgreSQL; SQLite's BEGIN
    IMMEDIATE already serializes writers), so that a status is decided on what is current."""
    row = await session.scalar(
        select(RunRow)
        .where(RunRow.id == run_id)
        .with_for_update()
        .execution_options(populate_existing=True)
    )
    if row is None:
        raise RunNotFoundError(f"no run {run_id!r}")
    return row


async def _live_leases(session: AsyncSession, ids: Iterable[str], now: float) -> set[str]:
    wanted = sorted(set(ids))
    if not wanted:
        return set()
    found = await session.scalars(
        select(LeaseRow.id).where(LeaseRow.id.in_(wanted), LeaseRow.expires_at > now)
    )
    return set(found.all())


class RunStore:
    """``db.runs``: create, look up and move training runs through their lifecycle.

    ``lease_ttl_s`` is how long a run without an owner may go without an update before
    :meth:`detect_interrupted` takes its process for gone (runs with an owner go by their
    lease's own expiry).
    """

    def __init__(self, registry: Registry, *, lease_ttl_s: float = 60.0) -> None:
        self._registry = registry
        self._lease_ttl_s = check_number(lease_ttl_s, "lease_ttl_s")

    async def create(
        self,
        run_id: str | None = None,
        *,
        config: Mapping[str, Any] | None = None,
        backend: str | None = None,
        seed: int | None = None,
        owner_id: str | None = None,
    ) -> RunInfo:
        """A new ``running`` run (a random id when none is given), owned by ``owner_id``."""
        run_id = validate_run_id(run_id or f"run-{uuid.uuid4().hex[:12]}")
        stored_config = check_json(config, "run config")
        if backend is not None:
            check_text(backend, "backend", max_length=128)
        if seed is not None:
            seed = check_seed(seed)
        owner = _check_owner(owner_id)
        async with self._registry.session() as session:
            if await session.get(RunRow, run_id) is not None:
                raise RunExistsError(f"run {run_id!r} already exists")
            row = RunRow(
                id=run_id,
                status="running",
                config=stored_config,
                backend=backend,
                seed=seed,
                owner_id=owner,
            )
            session.add(row)
        return RunInfo.from_row(row)

    async def get(self, run_id: str) -> RunInfo:
        validate_run_id(run_id)
        async with self._registry.session() as session:
            row = await session.get(RunRow, run_id)
        if row is None:
            raise RunNotFoundError(f"no run {run_id!r}")
        return RunInfo.from_row(row)

    async def exists(self, run_id: str) -> bool:
        async with self._registry.session() as session:
            return await session.get(RunRow, run_id) is not None

    async def list(self, status: str | None = None) -> builtins.list[RunInfo]:
        """Every run (or those in ``status``), oldest first."""
        query = select(RunRow).order_by(RunRow.created_at, RunRow.id)
        if status is not None:
            _check_status(status, RUN_STATUSES, "status")
            query = query.where(RunRow.status.in_(_stored_statuses(status)))
        async with self._registry.session() as session:
            rows = (await session.scalars(query)).all()
        return [RunInfo.from_row(r) for r in rows]

    async def start(self, run_id: str, owner_id: str | None) -> RunInfo:
        """Mark the run ``running`` and owned by the lease ``owner_id`` (a resume).

        A run still owned by another live lease is taken over, with a WARNING: after a
        SIGKILL the dead process's lease stays live for up to its TTL, and a restart must
        not wait for it; if that process does live on, two processes now train the run.
        """
        validate_run_id(run_id)
        owner = _check_owner(owner_id)
        now = time.time()
        async with self._registry.session() as session:
            row = await _locked_run(session, run_id)
            other = row.owner_id
            if (
                row.status == "running"
                and other is not None
                and other != owner
                and await _live_leases(session, [other], now)
            ):
                logger.warning(
                    "run %r is still owned by lease %s, which has not expired (its process "
                    "was killed less than a lease TTL ago, or still trains the run); lease %s "
                    "takes it over: stop the other process if it still runs",
                    run_id,
                    other,
                    owner,
                )
            row.status = "running"
            row.owner_id = owner
            row.reason = None
            row.updated_at = now
        return RunInfo.from_row(row)

    async def finish(self, run_id: str, status: str, reason: str | None = None) -> RunInfo:
        """End the run with ``status`` (one of :data:`ENDED_RUN_STATUSES`) and ``reason``.

        ``stopped`` and ``failed`` need a reason; reasons longer than
        :data:`MAX_REASON_LENGTH` are cut to it. The owner is cleared. A run that already
        ended (other than ``interrupted``, which a live process may still end) is refused:
        :meth:`start` it again first.
        """
        validate_run_id(run_id)
        _check_status(status, ENDED_RUN_STATUSES, "an ended run's status")
        stored_reason = _check_reason(status, reason)
        async with self._registry.session() as session:
            row = await _locked_run(session, run_id)
            current = _current_status(row.status)
            if current not in ("running", "interrupted"):
                raise DataValidationError(
                    f"run {run_id!r} already ended as {current}; start() it again to resume it"
                )
            row.status = status
            row.reason = stored_reason
            row.owner_id = None
            row.updated_at = time.time()
        return RunInfo.from_row(row)

    async def set_status(self, run_id: str, status: str) -> None:
        """Set the status as is (``completed`` is taken as ``finished``); prefer
        :meth:`start` and :meth:`finish`, which keep the owner and reason right."""
        if isinstance(status, str):
            status = _LEGACY_STATUSES.get(status, status)
        _check_status(status, RUN_STATUSES, "status")
        async with self._registry.session() as session:
            row = await session.get(RunRow, run_id)
            if row is None:
                raise RunNotFoundError(f"no run {run_id!r}")
            row.status = status
            if status != "running":
                row.owner_id = None
            row.updated_at = time.time()

    async def detect_interrupted(self, run_id: str | None = None) -> builtins.list[str]:
        """Mark ``interrupted`` every ``running`` run (or just ``run_id``) whose process is
        gone; returns their ids.

        Gone means: its owner's lease has expired or no longer exists, or, for a run with
        no owner, no update for longer than the lease TTL. A run whose owner's lease is
        live is never touched: the runs are locked before the leases are read, in the same
        transaction, so a concurrent :meth:`start` by a live process is either seen or
        waits for this to end.
        """
        query = select(RunRow.id, RunRow.owner_id, RunRow.updated_at).where(
            RunRow.status == "running"
        )
        if run_id is not None:
            validate_run_id(run_id)
            query = query.where(RunRow.id == run_id)
        now = time.time()
        stale_before = now - self._lease_ttl_s
        async with self._registry.session() as session:
            if run_id is not None and await session.get(RunRow, run_id) is None:
                raise RunNotFoundError(f"no run {run_id!r}")
            candidates = (await session.execute(query.order_by(RunRow.id).with_for_update())).all()
            live = await _live_leases(
                session, (c.owner_id for c in candidates if c.owner_id is not None), now
            )
            interrupted = []
            for candidate in candidates:
                if candidate.owner_id is not None:
                    if candidate.owner_id in live:
                        continue
                    how = f"lease {candidate.owner_id} expired"
                elif candidate.updated_at < stale_before:
                    idle = now - candidate.updated_at
                    how = f"no owner lease, and no update for {idle:.0f} s"
                else:
                    continue
                marked = await session.execute(
                    update(RunRow)
                    .where(
                        RunRow.id == candidate.id,
                        RunRow.status == "running",
                        # What was judged above; the row lock keeps it so on PostgreSQL.
                        RunRow.owner_id.is_(None)
                        if candidate.owner_id is None
                        else RunRow.owner_id == candidate.owner_id,
                    )
                    .values(
                        status="interrupted",
                        owner_id=None,
                        reason=_shorten(
                            f"the process training it stopped without ending the run ({how})"
                        ),
                        updated_at=now,
                    )
                )
                if getattr(marked, "rowcount", 1) != 0:
                    interrupted.append(candidate.id)
        return interrupted

    async def last_steps(self, run_ids: Iterable[str] | None = None) -> dict[str, int]:
        """``{run_id: highest step}`` over each run's stored metrics and checkpoints (runs
        with neither are left out; metrics still buffered count once flushed)."""
        wanted = None if run_ids is None else sorted({validate_run_id(r) for r in run_ids})
        columns = (
            (MetricRow.run_id, MetricRow.step),
            (CheckpointRow.run_id, CheckpointRow.step),
        )
        found: dict[str, int] = {}
        async with self._registry.session() as session:
            for run_column, step_column in columns:
                query = select(run_column, func.max(step_column)).group_by(run_column)
                if wanted is not None:
                    query = query.where(run_column.in_(wanted))
                for run, step in (await session.execute(query)).all():
                    if step is not None:
                        found[run] = max(found.get(run, step), int(step))
        return found
