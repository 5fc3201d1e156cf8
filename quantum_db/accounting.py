"""The budget ledger and job records in the SQL registry, atomic across tasks and processes."""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession

from backends.accounting import ENDED_JOB_STATUSES, Attachment, Budget, JobRecord
from backends.errors import BudgetExceededError, ReservationLostError
from backends.retry import retry_async

from .errors import DataValidationError
from .leases import live_owner_ids
from .registry.engine import UNIQUE_KEY_RACE, Registry, lost_unique_key_race
from .registry.schema import BudgetRow, JobRow, LedgerRow

__all__ = ["BudgetSummary", "LedgerEntry", "SqlAccounting"]


@dataclass(frozen=True, slots=True)
class BudgetSummary:
    """One budget: its limit, what completed jobs were charged, what is still reserved."""

    name: str
    limit_usd: float
    spent_usd: float
    reserved_usd: float
    jobs: int
    created_at: float

    @property
    def remaining_usd(self) -> float:
        return max(0.0, self.limit_usd - self.spent_usd - self.reserved_usd)


@dataclass(frozen=True, slots=True)
class LedgerEntry:
    """One line of a budget's ledger: a reservation, its release, or a charge."""

    budget: str
    job_id: str | None
    kind: str
    amount_usd: float
    created_at: float


logger = logging.getLogger(__name__)

#: Reservations and charges are compared with this slack, so float sums never refuse a
#: job that fits exactly.
_EPSILON = 1e-9


#: How long a free local job's record waits to be written with others.
_LATER_S = 0.25


class SqlAccounting:
    """:class:`backends.Accounting` on the registry.

    A reservation is one transaction that locks the budget's row (``SELECT … FOR UPDATE``
    on PostgreSQL; SQLite's ``BEGIN IMMEDIATE`` serializes writers), sums the ledger and
    inserts the reservation only if it fits, so concurrent tasks and processes can never
    together exceed a budget. Settling inserts a release of the reservation and the charge
    in one transaction that holds the same lock, so a reservation is closed exactly once
    however many processes (the owner, sweepers) try at the same time.

    ``owner_id`` (the connection's lease) tags every reservation and job row this
    accounting writes; the sweeper reclaims those of owners whose lease has expired.
    A job of a gone owner can be taken over (:meth:`take_over`) by a caller that asks for
    it again by its request key; a reservation closed by a sweep can then be reopened by
    :meth:`reserve` under the same job id for what has to be submitted again.
    """

    def __init__(self, registry: Registry, *, owner_id: str | None = None) -> None:
        self._registry = registry
        self.owner_id = owner_id
        self._later: list[JobRecord] = []
        self._later_task: asyncio.Task[None] | None = None
        self._flush_lock = asyncio.Lock()
        self._flushing = False

    async def _budget_row(self, session: AsyncSession, budget: Budget) -> BudgetRow:
        row = await session.get(BudgetRow, budget.name, with_for_update=True)
        if row is None:
            row = BudgetRow(id=budget.name, limit_usd=float(budget.usd))
            session.add(row)
            await session.flush()
        elif row.limit_usd != budget.usd:
            raise DataValidationError(
                f"budget {budget.name!r} already exists with a limit of ${row.limit_usd}, not "
                f"${budget.usd}; use another name for another limit"
            )
        return row

    @staticmethod
    async def _sum(session: AsyncSession, budget_id: str) -> float:
        total = await session.scalar(
            select(func.coalesce(func.sum(LedgerRow.amount_usd), 0.0)).where(
                LedgerRow.budget_id == budget_id
            )
        )
        return float(total or 0.0)

    async def reserve(self, budget: Budget, job_id: str, amount: float) -> None:
        async def attempt() -> None:
            async with self._registry.session() as session:
                row = await self._budget_row(session, budget)
                exposure = await self._sum(session, row.id)
                if exposure + amount > row.limit_usd + _EPSILON:
                    raise BudgetExceededError(
                        f"the job needs ${amount:.4f} but budget {budget.name!r} has "
                        f"${max(row.limit_usd - exposure, 0.0):.4f} of "
                        f"${row.limit_usd:.2f} left"
                    )
                session.add(
                    LedgerRow(
                        budget_id=row.id,
                        job_id=job_id,
                        kind="reservation",
                        amount_usd=float(amount),
                        owner_id=self.owner_id,
                    )
                )

        await retry_async(
            attempt,
            # Two first reservations of a budget may race to insert its row.
            policy=UNIQUE_KEY_RACE,
            service="registry",
            operation=f"reserve on budget {budget.name!r}",
            retryable=lost_unique_key_race,
            level=logging.DEBUG,  # an expected race, not a fault
        )

    async def close(
        self,
        job_id: str,
        actual: float | None,
        *,
        job_status: str | None = None,
        note: str | None = None,
        expect: tuple[str | None, str] | None = None,
    ) -> bool:
        """Close ``job_id``'s reservation: charge ``actual`` (``None``: charge nothing).

        Returns whether this call closed it (False: nothing reserved, or already closed).
        With ``job_status``, the job's row gets that status, ``actual`` as its cost and
        ``note`` as its error, in the same transaction (what the sweeper does). With
        ``expect`` (an owner and a status), it closes nothing unless the job's row still
        has them: a sweep that decided on a job someone has since taken over leaves it.
        """
        async with self._registry.session() as session:
            reservation, closed = await _locked_reservation(session, job_id)
            if reservation is None:
                return False
            if expect is not None:
                row = await session.get(JobRow, job_id, populate_existing=True)
                if row is None or (row.owner_id, row.status) != expect:
                    return False
            if closed:
                if actual is not None and job_status is None:
                    await self._late_charge(session, reservation, actual)
                return False
            session.add(
                LedgerRow(
                    budget_id=reservation.budget_id,
                    job_id=job_id,
                    kind="release",
                    amount_usd=-reservation.amount_usd,
                    owner_id=reservation.owner_id,
                )
            )
            if actual is not None:
                session.add(
                    LedgerRow(
                        budget_id=reservation.budget_id,
                        job_id=job_id,
                        kind="charge",
                        amount_usd=float(actual),
                        owner_id=reservation.owner_id,
                    )
                )
            if job_status is not None:
                await _mark_job(session, job_id, job_status, actual, note)
            return True

    @staticmethod
    async def _late_charge(session: AsyncSession, reservation: LedgerRow, actual: float) -> None:
        """The owner settles a job whose reservation a sweep already released (its lease
        lapsed while the job ran): the money was spent, so it is charged all the same,
        once."""
        charged = await session.scalar(
            select(LedgerRow.id)
            .where(LedgerRow.job_id == reservation.job_id, LedgerRow.kind == "charge")
            .limit(1)
        )
        if charged is None:
            logger.warning(
                "job %s completed after a sweep had released its reservation; charged $%.4f",
                reservation.job_id,
                actual,
            )
            session.add(
                LedgerRow(
                    budget_id=reservation.budget_id,
                    job_id=reservation.job_id,
                    kind="charge",
                    amount_usd=float(actual),
                    owner_id=reservation.owner_id,
                )
            )

    async def settle(self, job_id: str, actual: float) -> None:
        await self.close(job_id, actual)

    async def release(self, job_id: str) -> None:
        await self.close(job_id, None)

    async def exposure(self, budget: Budget) -> float:
        async with self._registry.session() as session:
            return await self._sum(session, budget.name)

    async def spent(self, budget: Budget) -> float:
        """Charges only (what completed jobs cost)."""
        async with self._registry.session() as session:
            total = await session.scalar(
                select(func.coalesce(func.sum(LedgerRow.amount_usd), 0.0)).where(
                    LedgerRow.budget_id == budget.name, LedgerRow.kind == "charge"
                )
            )
        return float(total or 0.0)

    async def open_reservations(self, budget: Budget | None = None) -> int:
        """Reservations not yet settled or released (of ``budget``, or of every budget)."""
        query = select(LedgerRow.job_id, LedgerRow.kind)
        if budget is not None:
            query = query.where(LedgerRow.budget_id == budget.name)
        async with self._registry.session() as session:
            rows = (await session.execute(query)).all()
        # A job's reservation may be reopened (see take_over): count, not sets.
        balance: dict[str | None, int] = {}
        for r in rows:
            step = {"reservation": 1, "release": -1}.get(r.kind, 0)
            balance[r.job_id] = balance.get(r.job_id, 0) + step
        return sum(1 for n in balance.values() if n > 0)

    async def record_job(self, job: JobRecord) -> None:
        async with self._registry.session() as session:
            await self._write_job(session, job)

    def record_job_later(self, job: JobRecord) -> None:
        """Record a free local job (no provider, nothing reserved) with the next batch:
        one transaction for every such job ended in the last ``_LATER_S`` seconds."""
        self._later.append(job)
        if self._later_task is None or self._later_task.done():
            self._later_task = asyncio.get_running_loop().create_task(
                self._flush_later(), name="qdb-job-records"
            )

    async def _flush_later(self) -> None:
        await asyncio.sleep(_LATER_S)
        try:
            await self.flush_jobs()
        except Exception as exc:  # kept for the next flush; the jobs cost nothing
            logger.warning("could not record %d local jobs yet: %s", len(self._later), exc)

    async def flush_jobs(self) -> None:
        """Write every job :meth:`record_job_later` holds, in one transaction."""
        timer = self._later_task
        if (
            timer is not None
            and timer is not asyncio.current_task()
            and not timer.done()
            and not self._flushing
        ):
            # Still asleep: stopped here, never in the middle of a write (a transaction
            # cancelled half-way would leave its connection to the garbage collector).
            timer.cancel()
        async with self._flush_lock:
            if not self._later:
                return
            jobs, self._later = self._later, []
            now = time.time()
            self._flushing = True
            try:
                async with self._registry.session() as session:
                    # Rows of their own (fresh ids, written nowhere before): one INSERT.
                    session.add_all([self._new_row(job, now) for job in jobs])
            except BaseException:
                self._later = jobs + self._later
                raise
            finally:
                self._flushing = False

    async def mark_sending(self, job: JobRecord, *, reserved: bool) -> None:
        async with self._registry.session() as session:
            if reserved:
                # Under the lock a sweep's release takes: either it released first and
                # this refuses, or this marks the job sent and the sweep keeps it.
                reservation, released = await _locked_reservation(session, job.id)
                if reservation is None or released:
                    raise ReservationLostError(
                        f"the reservation of job {job.id} was reclaimed by a sweep before it "
                        "was sent (this process's lease lapsed: was its event loop blocked "
                        "for longer than QDB_LEASE_TTL_S?); nothing was sent, run it again"
                    )
            job.status = "running"
            await self._write_job(session, job)

    def _new_row(self, job: JobRecord, now: float) -> JobRow:
        return JobRow(
            id=job.id,
            run_id=job.run_id,
            backend=job.backend,
            circuit_hash=job.circuit_hash,
            shots=job.shots,
            batch_size=job.batch_size,
            status=job.status,
            provider_job_ids=list(job.provider_job_ids),
            owner_id=job.owner_id or self.owner_id,
            request_key=job.request_key,
            estimated_cost=job.estimated_cost,
            actual_cost=job.actual_cost,
            queue_latency_s=job.queue_latency_s,
            run_latency_s=job.run_latency_s,
            error=job.error,
            created_at=job.created_at,
            updated_at=now,
        )

    async def _write_job(self, session: AsyncSession, job: JobRecord) -> None:
        row = await session.get(JobRow, job.id)
        if row is None:
            row = JobRow(id=job.id)
            session.add(row)
        row.run_id = job.run_id
        row.backend = job.backend
        row.circuit_hash = job.circuit_hash
        row.shots = job.shots
        row.batch_size = job.batch_size
        row.status = job.status
        # Every id, in the order the provider returned them; an update never drops one
        # an earlier write recorded.
        known = list(row.provider_job_ids or [])
        row.provider_job_ids = known + [i for i in job.provider_job_ids if i not in known]
        if row.owner_id is None:
            row.owner_id = job.owner_id or self.owner_id
        if job.request_key is not None:
            row.request_key = job.request_key
        row.estimated_cost = job.estimated_cost
        row.actual_cost = job.actual_cost
        row.queue_latency_s = job.queue_latency_s
        row.run_latency_s = job.run_latency_s
        row.error = job.error
        row.created_at = job.created_at
        row.updated_at = time.time()

    async def record_provider_job(self, job_id: str, provider_job_id: str) -> None:
        # Only the id list changes (and "queued" becomes "running"), under the row's lock
        # on PostgreSQL, so this write and the job's other record writes can land in any
        # order without losing an id or bringing back an old status.
        async with self._registry.session() as session:
            row = await session.get(JobRow, job_id, with_for_update=True)
            if row is None:
                return
            known = list(row.provider_job_ids or [])
            if provider_job_id not in known:
                row.provider_job_ids = [*known, provider_job_id]
                row.updated_at = time.time()
            if row.status == "queued":  # it has reached the provider; never an ended status
                row.status = "running"

    async def find_attachable(self, request_key: str) -> JobRecord | None:
        async with self._registry.session() as session:
            rows = (
                await session.scalars(
                    select(JobRow)
                    .where(JobRow.request_key == request_key)
                    .order_by(JobRow.created_at.desc())
                )
            ).all()
            # Read last, as the sweeper does: an owner that renews meanwhile counts as live.
            live = await live_owner_ids(session) if rows else set()
        for row in rows:
            if row.provider_job_ids and self._may_take(row, live):
                return _record_of(row)
        return None

    def _may_take(self, row: JobRow, live: set[str]) -> bool:
        if row.status == "unknown":
            return False  # kept reserved for a job whose id may never have come back
        if row.owner_id == self.owner_id or row.owner_id is None:
            # This owner's own job (or one without an owner, whose liveness nothing
            # tells): only once its run has ended, never while it may still be in flight.
            return row.status in ENDED_JOB_STATUSES
        return row.owner_id not in live

    async def take_over(self, job: JobRecord) -> Attachment | None:
        async with self._registry.session() as session:
            # The budget's lock first, the one a sweep's close takes: either the sweep
            # closed the reservation before (it is seen closed here) or it sees the new
            # owner afterwards and leaves the job (see close(expect=...)).
            reservation, closed = await _locked_reservation(session, job.id)
            row = await session.get(JobRow, job.id, with_for_update=True, populate_existing=True)
            if row is None or (row.owner_id, row.status) != (job.owner_id, job.status):
                return None
            if not self._may_take(row, await live_owner_ids(session)):
                return None
            row.owner_id = self.owner_id
            row.status = "running"
            row.updated_at = time.time()
            reserved = reservation is not None and not closed
            if reserved:
                assert reservation is not None
                reservation.owner_id = self.owner_id
            charged = await session.scalar(
                select(func.coalesce(func.sum(LedgerRow.amount_usd), 0.0)).where(
                    LedgerRow.job_id == job.id, LedgerRow.kind == "charge"
                )
            )
            budget: Budget | None = None
            if reservation is not None:
                budget_row = await session.get(BudgetRow, reservation.budget_id)
                if budget_row is not None:
                    budget = Budget(usd=budget_row.limit_usd, name=budget_row.id)
            record = _record_of(row)
        return Attachment(
            job=record, reserved=reserved, charged=float(charged or 0.0), budget=budget
        )

    async def jobs(self, *, run_id: str | None = None) -> list[JobRow]:
        """The recorded jobs (of ``run_id``), oldest first, this accounting's held-back
        local ones included."""
        await self.flush_jobs()
        query = select(JobRow).order_by(JobRow.created_at)
        if run_id is not None:
            query = query.where(JobRow.run_id == run_id)
        async with self._registry.session() as session:
            return list((await session.scalars(query)).all())

    async def budgets(self) -> list[BudgetSummary]:
        """Every budget, oldest first, with its spend and open reservations."""
        async with self._registry.session() as session:
            budgets = (
                await session.scalars(select(BudgetRow).order_by(BudgetRow.created_at))
            ).all()
            sums = (
                await session.execute(
                    select(
                        LedgerRow.budget_id,
                        LedgerRow.kind,
                        func.coalesce(func.sum(LedgerRow.amount_usd), 0.0),
                        func.count(func.distinct(LedgerRow.job_id)),
                    ).group_by(LedgerRow.budget_id, LedgerRow.kind)
                )
            ).all()
        by_budget: dict[str, dict[str, tuple[float, int]]] = {}
        for budget_id, kind, total, jobs in sums:
            by_budget.setdefault(budget_id, {})[kind] = (float(total), int(jobs))
        out = []
        for row in budgets:
            kinds = by_budget.get(row.id, {})
            exposure = sum(total for total, _ in kinds.values())
            spent = kinds.get("charge", (0.0, 0))[0]
            out.append(
                BudgetSummary(
                    row.id,
                    float(row.limit_usd),
                    spent,
                    max(0.0, exposure - spent),
                    kinds.get("reservation", (0.0, 0))[1],
                    float(row.created_at),
                )
            )
        return out

    async def ledger(self, budget_name: str) -> list[LedgerEntry]:
        """The ledger of one budget, oldest first; an unknown budget is an error."""
        from .errors import NotFoundError

        async with self._registry.session() as session:
            if await session.get(BudgetRow, budget_name) is None:
                known = (await session.scalars(select(BudgetRow.id))).all()
                raise NotFoundError(
                    f"no budget {budget_name!r}"
                    + (f"; budgets: {', '.join(sorted(known)[:10])}" if known else "")
                )
            rows = (
                await session.scalars(
                    select(LedgerRow)
                    .where(LedgerRow.budget_id == budget_name)
                    .order_by(LedgerRow.created_at, LedgerRow.id)
                )
            ).all()
        return [
            LedgerEntry(r.budget_id, r.job_id, r.kind, float(r.amount_usd), float(r.created_at))
            for r in rows
        ]

    def __repr__(self) -> str:
        return f"SqlAccounting({self._registry!r}, owner_id={self.owner_id!r})"


def _record_of(row: JobRow) -> JobRecord:
    return JobRecord(
        id=row.id,
        backend=row.backend,
        circuit_hash=row.circuit_hash,
        shots=row.shots,
        batch_size=row.batch_size,
        estimated_cost=row.estimated_cost,
        run_id=row.run_id,
        status=row.status,
        provider_job_ids=[str(i) for i in (row.provider_job_ids or [])],
        actual_cost=row.actual_cost,
        queue_latency_s=row.queue_latency_s,
        run_latency_s=row.run_latency_s,
        error=row.error,
        created_at=row.created_at,
        owner_id=row.owner_id,
        request_key=row.request_key,
    )


async def _locked_reservation(session: AsyncSession, job_id: str) -> tuple[LedgerRow | None, bool]:
    """``job_id``'s latest reservation (``None``: none) and whether it has been released.

    The budget's row is locked before the releases are counted, so of two transactions
    that close (or send) the same job, the second sees what the first did. A job whose
    reservation was reopened (see :meth:`SqlAccounting.take_over`) has several; it is
    open while it has more reservations than releases.
    """

    def of_kind(kind: str) -> Any:
        return (LedgerRow.job_id == job_id) & (LedgerRow.kind == kind)

    first = await session.scalar(select(LedgerRow.budget_id).where(of_kind("reservation")).limit(1))
    if first is None:
        return None, False
    await session.get(BudgetRow, first, with_for_update=True)
    # Read again under the lock: a reservation reopened meanwhile is the one to close.
    reservation = await session.scalar(
        select(LedgerRow)
        .where(of_kind("reservation"))
        .order_by(LedgerRow.id.desc())
        .limit(1)
        .execution_options(populate_existing=True)
    )
    assert reservation is not None
    rows = await session.execute(
        select(LedgerRow.kind, func.count())
        .where(LedgerRow.job_id == job_id, LedgerRow.kind.in_(("reservation", "release")))
        .group_by(LedgerRow.kind)
    )
    counts = {str(kind): int(n) for kind, n in rows.all()}
    return reservation, counts.get("release", 0) >= counts.get("reservation", 0)


async def _mark_job(
    session: AsyncSession, job_id: str, status: str, actual: float | None, note: str | None
) -> None:
    row = await session.get(JobRow, job_id)
    if row is None:
        return
    row.status = status
    row.actual_cost = actual
    if note is not None:
        row.error = note[:2000]
    row.updated_at = time.time()
