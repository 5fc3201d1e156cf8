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
from dataclasses import dataclass, field, replace
from typing import Any, Protocol

import numpy as np

from .errors import BackendError, BudgetExceededError, InvalidBudgetError, ReservationLostError

# ``Attachment`` and ``ENDED_JOB_STATUSES`` are public too; they join ``__all__`` once the
# package's ``__init__`` re-exports them.
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
    ``request_key`` names what the job computes (see ``BackendManager.run``), so that a
    restarted caller finds the job again instead of sending it twice.
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
    request_key: str | None = None


#: Statuses of a job whose run has ended with every submission settled: its owner
#: touches it no more, so the same owner may re-attach to it. (An ``unknown`` job never
#: is re-attached to: one of its submissions may have created a job nobody knows the id
#: of, and its reservation must stay for that one until it expires.)
ENDED_JOB_STATUSES = ("completed", "failed", "cancelled")


@dataclass(frozen=True, slots=True)
class Attachment:
    """A job taken over by a caller that asked for it again by its request key.

    ``job`` is its record, now owned by the caller and ``running``; ``reserved`` says
    whether its reservation is still open (now held by the caller), ``charged`` what has
    been charged for it so far (a sweep may have settled it), and ``budget`` the budget
    it was reserved against (``None``: it never was).
    """

    job: JobRecord
    reserved: bool
    charged: float
    budget: Budget | None


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
    """Where budgets are enforced and jobs recorded (in memory, or the SQL registry).

    An accounting may also offer ``record_job_later(job)`` and ``async flush_jobs()``:
    the manager then records jobs that cost nothing and never reached a provider (the
    local simulators' runs) when they end, in batches, instead of writing each one three
    times; a crash can lose the last of those rows, and nothing else.
    """

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

    async def find_attachable(self, request_key: str) -> JobRecord | None:
        """The newest job recorded under ``request_key`` that reached its provider (it has
        provider job ids) and that nobody else is running: its owner is gone (its lease
        expired or is absent), or it is this accounting's own owner and the job has
        ended (:data:`ENDED_JOB_STATUSES`). Never an ``unknown`` one. ``None`` when
        there is none.
        """
        ...

    async def take_over(self, job: JobRecord) -> Attachment | None:
        """Make this accounting's owner the owner of ``job`` (as :meth:`find_attachable`
        returned it) and mark it ``running``, in one step with the check that it is still
        attachable and unchanged, so that of two callers only one takes it. The open
        reservation, if any, moves to the new owner with it. ``None``: someone else took
        it first, or it changed meanwhile.

        A closed reservation may be reopened afterwards by :meth:`reserve` with the same
        job id (for what the new owner has to submit again).
        """
        ...


class InMemoryAccounting:
    """A process-local ledger: correct across tasks of one event loop, not across processes."""

    def __init__(self) -> None:
        self._lock = asyncio.Lock()
        self._limits: dict[str, float] = {}
        self._charged: dict[str, float] = {}
        self._reserved: dict[str, tuple[str, float]] = {}
        #: Per job: the budget it was reserved against and what it was charged.
        self._job_budget: dict[str, str] = {}
        self._job_charged: dict[str, float] = {}
        self._by_key: dict[str, list[str]] = {}
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
            self._job_budget[job_id] = budget.name

    def _exposure(self, name: str) -> float:
        held = sum(a for b, a in self._reserved.values() if b == name)
        return held + self._charged.get(name, 0.0)

    async def settle(self, job_id: str, actual: float) -> None:
        async with self._lock:
            entry = self._reserved.pop(job_id, None)
            if entry is not None:
                self._charged[entry[0]] = self._charged.get(entry[0], 0.0) + actual
                self._job_charged[job_id] = self._job_charged.get(job_id, 0.0) + actual

    async def release(self, job_id: str) -> None:
        async with self._lock:
            self._reserved.pop(job_id, None)

    async def exposure(self, budget: Budget) -> float:
        async with self._lock:
            return self._exposure(budget.name)

    async def record_job(self, job: JobRecord) -> None:
        self._keep(job)

    def record_job_later(self, job: JobRecord) -> None:
        self._keep(job)

    async def flush_jobs(self) -> None:
        """Nothing is ever pending in memory."""

    def _keep(self, job: JobRecord) -> None:
        if job.id not in self.jobs and job.request_key is not None:
            self._by_key.setdefault(job.request_key, []).append(job.id)
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
            self._keep(job)

    async def find_attachable(self, request_key: str) -> JobRecord | None:
        # One process, one owner: only jobs whose run has ended can be taken over.
        found = [
            job
            for job in (self.jobs[i] for i in self._by_key.get(request_key, ()))
            if job.provider_job_ids and job.status in ENDED_JOB_STATUSES
        ]
        if not found:
            return None
        newest = max(found, key=lambda job: job.created_at)
        return replace(newest, provider_job_ids=list(newest.provider_job_ids))

    async def take_over(self, job: JobRecord) -> Attachment | None:
        async with self._lock:
            current = self.jobs.get(job.id)
            if current is None or current.status != job.status:
                return None
            if current.status not in ENDED_JOB_STATUSES:
                return None
            current.status = "running"
            name = self._job_budget.get(job.id)
            budget = None if name is None else Budget(usd=self._limits[name], name=name)
            return Attachment(
                job=replace(current, provider_job_ids=list(current.provider_job_ids)),
                reserved=job.id in self._reserved,
                charged=self._job_charged.get(job.id, 0.0),
                budget=budget,
            )

    def open_reservations(self) -> int:
        return len(self._reserved)

    def __repr__(self) -> str:
        return f"InMemoryAccounting(budgets={sorted(self._limits)})"
