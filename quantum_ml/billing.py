"""One training call's spend: reserved before it is sent, recorded as a job, then settled.

The trainer sends its circuits to the backend directly (not through
``BackendManager.run``), so it keeps the same books itself: the estimated cost is
reserved, a job row (with the connection's owner) is written before anything is sent,
provider job ids reach that row as soon as the provider creates them, and the
reservation is settled when the call returns. A call that fails after a job reached
its provider keeps its reservation, so the owner's sweep charges what the provider bills
instead of releasing money that may still be spent.
"""

from __future__ import annotations

import asyncio
import uuid
from contextlib import AbstractContextManager
from types import TracebackType
from typing import Any

from backends.accounting import Accounting, Budget, JobRecord, provider_job_sink
from backends.errors import SubmissionUnknownError

__all__ = ["SUBMISSION_WAIT_S", "BilledCall"]

#: How long a failed step waits for a submission still in flight before it records the
#: job ``unknown`` (keeping its reservation).
SUBMISSION_WAIT_S = 60.0


class BilledCall:
    """``async with BilledCall(...):`` (or ``open``/``close``) around one step's backend calls."""

    def __init__(
        self,
        accounting: Accounting,
        budget: Budget,
        cost: float,
        *,
        backend: str,
        circuit_hash: str,
        batch_size: int,
        shots: int | None,
        run_id: str | None,
        kind: str,
    ) -> None:
        self._accounting = accounting
        self._budget = budget
        self.job = JobRecord(
            id=f"{kind}-{uuid.uuid4().hex}",
            backend=backend,
            circuit_hash=circuit_hash,
            shots=shots,
            batch_size=batch_size,
            estimated_cost=cost,
            run_id=run_id,
        )
        self._sink: AbstractContextManager[None] | None = None
        self._id_writes: list[asyncio.Task[None]] = []
        #: Requests sent that may create a job at the provider (``report_submission``).
        self._submissions: list[asyncio.Future[Any]] = []

    async def open(self) -> None:
        """Reserve the cost (or raise ``BudgetExceededError``) and record the job."""
        job = self.job
        await self._accounting.reserve(self._budget, job.id, job.estimated_cost)
        try:
            await asyncio.shield(self._accounting.mark_sending(job, reserved=True))
        except BaseException:
            await asyncio.shield(self._accounting.release(job.id))
            raise
        # Entered here and left in close(), in the same task: the backend calls made in
        # between (and the tasks they start) report their provider ids to this job.
        self._sink = provider_job_sink(self._on_provider_job, self._submissions.append)
        self._sink.__enter__()

    async def close(self, exc: BaseException | None = None) -> None:
        """Settle (``exc`` is None), keep the reservation, or release it; record the job."""
        if self._sink is not None:
            self._sink.__exit__(None, None, None)
            self._sink = None
        await asyncio.shield(self._close(exc))

    async def __aenter__(self) -> BilledCall:
        await self.open()
        return self

    def _on_provider_job(self, provider_job_id: str) -> None:
        if provider_job_id in self.job.provider_job_ids:
            return
        self.job.provider_job_ids.append(provider_job_id)
        self._id_writes.append(
            asyncio.get_running_loop().create_task(
                self._accounting.record_provider_job(self.job.id, provider_job_id)
            )
        )

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close(exc)

    async def _close(self, exc: BaseException | None) -> None:
        in_flight = [f for f in self._submissions if not f.done()]
        if exc is not None and in_flight:
            # A submission may still create a job: its id arrives when it settles.
            await asyncio.wait(in_flight, timeout=SUBMISSION_WAIT_S)
        if self._id_writes:
            await asyncio.gather(*self._id_writes, return_exceptions=True)
        job, accounting = self.job, self._accounting
        if exc is None:
            job.status, job.actual_cost = "completed", job.estimated_cost
            await accounting.settle(job.id, job.estimated_cost)
        elif isinstance(exc, SubmissionUnknownError):
            job.status = "unknown"  # the provider may bill it: kept until it is found
        elif job.provider_job_ids:
            job.status = "failed"  # it reached the provider: the sweep charges its bill
        elif any(not f.done() for f in in_flight):
            job.status = "unknown"  # still in flight: kept until found or expired
        else:
            job.status = "cancelled" if isinstance(exc, asyncio.CancelledError) else "failed"
            await accounting.release(job.id)
        if exc is not None:
            job.error = f"{type(exc).__name__}: {exc}"[:2000]
        await accounting.record_job(job)
