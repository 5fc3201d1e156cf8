"""Budgets and the accounting interface the BackendManager reserves and charges through.

The manager reserves a job's estimated cost *before* the job is sent and settles it (the
actual cost charged, the reservation released) when the job ends; a job that fails or is
cancelled only releases. An implementation makes ``reserve`` atomic: however many tasks
(or processes) reserve at once, reservations plus charges never exceed the budget.
:class:`InMemoryAccounting` does so for one process; ``quantum_db`` provides the SQL
ledger that does so across processes and keeps every job's record.
"""

from __future__ import annotations

import asyncio
import math
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np

from .errors import BackendError, BudgetExceededError, InvalidBudgetError, ReservationLostError

__all__ = [
    "Accounting",
    "Budget",
    "InMemoryAccounting",
    "JobRecord",
    "provider_job_sink",
    "report_provider_job",
    "report_submission",
]


@dataclass(frozen=True, slots=True)
class Budget:
    """A spending limit in USD, shared by every job that names the same ``name``."""

    usd: float
    name: str = "default"

    def __post_init__(self) -> None:
        if isinstance(self.usd, bool | np.bool_) or not isinstance(
            self.usd, int | float | np.integer | np.floating
        ):
            raise InvalidBudgetError(f"a budget is a number of USD, got {self.usd!r}")
        object.__setattr__(self, "usd", float(self.usd))  # NumPy scalars too, as a float
        if not math.isfinite(self.usd) or self.usd < 0:
            raise InvalidBudgetError(
                f"a budget must be a finite, non-negative amount, got {self.usd}"
            )
        if not isinstance(self.name, str):
            raise InvalidBudgetError(
                f"a budget's name is a string of 1-128 characters, got {self.name!r}"
            )
        if not 1 <= len(self.name) <= 128:
            raise InvalidBudgetError(
                f"a budget needs a name of 1-128 characters, got {len(self.name)}"
            )
        if not self.name.isprintable():
            # PostgreSQL refuses NUL in text, SQLite would keep it: refused the same way.
            raise InvalidBudgetError(f"a budget's name must be printable, got {self.name!r}")


@dataclass(slots=True)
class JobRecord:
    """What is kept of every job: where it ran, what it cost, how long it took.

    ``owner_id`` is the lease of the process that sent it (``None``: the accounting's own
    owner, if it has one); ``provider_job_ids`` lists every id the provider returned.
    """

    id: str
    backend: str
    circuit_hash: str
    shots: int | None
    batch_size: int
    estimated_cost: float
    run_id: str | None = None
    status: str = "queued"
    provider_job_ids: list[str] = field(default_factory=list)
    actual_cost: float | None = None
    queue_latency_s: float | None = None
    run_latency_s: float | None = None
    error: str | None = None
    created_at: float = field(default_factory=time.time)
    owner_id: str | None = None


#: Where a backend reports each provider job id the moment the provider returns it; the
#: BackendManager sets it around ``Backend.run`` (see :func:`provider_job_sink`).
_sink: ContextVar[Callable[[str], None] | None] = ContextVar("qdb_provider_job_sink", default=None)


def report_provider_job(provider_job_id: str) -> None:
    """Called by a backend as soon as the provider has created a job (and may bill it).

    The id goes to the sink of the run in progress, which records it in the job's
    record before the job ends, so a process killed mid-job leaves it behind for the
    sweeper. Outside a managed run it does nothing. It must not block: it is called
    from the event loop, between a submission and the polling that follows.
    """
    sink = _sink.get()
    if sink is not None:
        sink(str(provider_job_id))


#: Where a backend reports each paid submission it starts (the future of the request).
_submissions: ContextVar[Callable[[asyncio.Future[Any]], None] | None] = ContextVar(
    "qdb_submission_sink", default=None
)


def report_submission(request: asyncio.Future[Any]) -> None:
    """Called by a backend when it sends a request that may create a job at the provider.

    The run in progress then knows that a job may exist even before its id is known: if
    the run fails or is cancelled meanwhile, it waits for the request to settle (its id
    then arrives through :func:`report_provider_job`) instead of releasing the money.
    """
    sink = _submissions.get()
    if sink is not None:
        sink(request)


@contextmanager
def provider_job_sink(
    sink: Callable[[str], None],
    submissions: Callable[[asyncio.Future[Any]], None] | None = None,
) -> Iterator[None]:
    """Within the block (and the tasks it starts), provider job ids go to ``sink`` and
    the requests that may create jobs to ``submissions``."""
    token = _sink.set(sink)
    requests = _submissions.set(submissions)
    try:
        yield
    finally:
        _submissions.reset(requests)
        _sink.reset(token)


class Accounting(Protocol):
    """Where budgets are enforced and jobs recorded (in memory, or the SQL registry)."""

    async def reserve(self, budget: Budget, job_id: str, amount: float) -> None:
        """Reserve ``amount`` for ``job_id``, or raise :class:`BudgetExceededError`."""
        ...

    async def settle(self, job_id: str, actual: float) -> None:
        """Charge ``actual`` for ``job_id`` and drop its reservation."""
        ...

    async def release(self, job_id: str) -> None:
        """Drop ``job_id``'s reservation without charging (failure, cancellation)."""
        ...

    async def exposure(self, budget: Budget) -> float:
        """Open reservations plus charges against ``budget``."""
        ...

    async def record_job(self, job: JobRecord) -> None:
        """Insert or update the job's record."""
        ...

    async def record_provider_job(self, job_id: str, provider_job_id: str) -> None:
        """Add ``provider_job_id`` to the recorded job's ids (at once, before it ends)."""
        ...

    async def mark_sending(self, job: JobRecord, *, reserved: bool) -> None:
        """Record ``job`` as ``running`` just before it is sent.

        With ``reserved``, only while its reservation is still open, in one step with
        that check, or raise :class:`ReservationLostError`: a reservation a sweep
        reclaimed can then never be spent.
        """
        ...


class InMemoryAccounting:
    """A process-local ledger: correct across tasks of one event loop, not across processes."""

    def __init__(self) -> None:
        self._lock = asyncio.Lock()
        self._limits: dict[str, float] = {}
        self._charged: dict[str, float] = {}
        self._reserved: dict[str, tuple[str, float]] = {}
        self.jobs: dict[str, JobRecord] = {}

    async def reserve(self, budget: Budget, job_id: str, amount: float) -> None:
        async with self._lock:
            limit = self._limits.setdefault(budget.name, float(budget.usd))
            if limit != budget.usd:
                raise BackendError(
                    f"budget {budget.name!r} already exists with a limit of ${limit}, not "
                    f"${budget.usd}"
                )
            exposure = self._exposure(budget.name)
            if exposure + amount > limit + 1e-9:
                raise BudgetExceededError(
                    f"the job needs ${amount:.4f} but budget {budget.name!r} has "
                    f"${max(limit - exposure, 0.0):.4f} of ${limit:.2f} left"
                )
            self._reserved[job_id] = (budget.name, amount)

    def _exposure(self, name: str) -> float:
        held = sum(a for b, a in self._reserved.values() if b == name)
        return held + self._charged.get(name, 0.0)

    async def settle(self, job_id: str, actual: float) -> None:
        async with self._lock:
            entry = self._reserved.pop(job_id, None)
            if entry is not None:
                self._charged[entry[0]] = self._charged.get(entry[0], 0.0) + actual

    async def release(self, job_id: str) -> None:
        async with self._lock:
            self._reserved.pop(job_id, None)

    async def exposure(self, budget: Budget) -> float:
        async with self._lock:
            return self._exposure(budget.name)

    async def record_job(self, job: JobRecord) -> None:
        self.jobs[job.id] = job

    async def record_provider_job(self, job_id: str, provider_job_id: str) -> None:
        job = self.jobs.get(job_id)
        if job is not None and provider_job_id not in job.provider_job_ids:
            job.provider_job_ids.append(provider_job_id)

    async def mark_sending(self, job: JobRecord, *, reserved: bool) -> None:
        async with self._lock:
            if reserved and job.id not in self._reserved:
                raise ReservationLostError(f"job {job.id} has no open reservation; nothing sent")
            job.status = "running"
            self.jobs[job.id] = job

    def open_reservations(self) -> int:
        return len(self._reserved)

    def __repr__(self) -> str:
        return f"InMemoryAccounting(budgets={sorted(self._limits)})"
