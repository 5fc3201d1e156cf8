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
from dataclasses import dataclass, field
from typing import Protocol

from .errors import BackendError, BudgetExceededError

__all__ = ["Accounting", "Budget", "InMemoryAccounting", "JobRecord"]


@dataclass(frozen=True, slots=True)
class Budget:
    """A spending limit in USD, shared by every job that names the same ``name``."""

    usd: float
    name: str = "default"

    def __post_init__(self) -> None:
        if isinstance(self.usd, bool) or not isinstance(self.usd, int | float):
            raise BackendError(f"a budget is a number of USD, got {self.usd!r}")
        if not math.isfinite(self.usd) or self.usd < 0:
            raise BackendError(f"a budget must be a finite, non-negative amount, got {self.usd}")
        if not self.name or len(self.name) > 128:
            raise BackendError("a budget needs a name of 1-128 characters")


@dataclass(slots=True)
class JobRecord:
    """What is kept of every job: where it ran, what it cost, how long it took."""

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

    def open_reservations(self) -> int:
        return len(self._reserved)

    def __repr__(self) -> str:
        return f"InMemoryAccounting(budgets={sorted(self._limits)})"
