"""The budget ledger and job records in the SQL registry, atomic across tasks and processes."""

from __future__ import annotations

import logging
import time

from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession

from backends.accounting import Budget, JobRecord
from backends.errors import BudgetExceededError, ReservationLostError
from backends.retry import retry_async

from .errors import DataValidationError
from .registry.engine import UNIQUE_KEY_RACE, Registry, lost_unique_key_race
from .registry.schema import BudgetRow, JobRow, LedgerRow

__all__ = ["SqlAccounting"]

logger = logging.getLogger(__name__)

#: Reservations and charges are compared with this slack, so float sums never refuse a
#: job that fits exactly.
_EPSILON = 1e-9


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
    """

    def __init__(self, registry: Registry, *, owner_id: str | None = None) -> None:
        self._registry = registry
        self.owner_id = owner_id

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
    ) -> bool:
        """Close ``job_id``'s reservation: charge ``actual`` (``None``: charge nothing).

        Returns whether this call closed it (False: nothing reserved, or already closed).
        With ``job_status``, the job's row gets that status, ``actual`` as its cost and
        ``note`` as its error, in the same transaction (what the sweeper does).
        """
        async with self._registry.session() as session:
            reservation, closed = await _locked_reservation(session, job_id)
            if reservation is None:
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
        reserved = {r.job_id for r in rows if r.kind == "reservation"}
        closed = {r.job_id for r in rows if r.kind == "release"}
        return len(reserved - closed)

    async def record_job(self, job: JobRecord) -> None:
        async with self._registry.session() as session:
            await self._write_job(session, job)

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

    async def jobs(self, *, run_id: str | None = None) -> list[JobRow]:
        query = select(JobRow).order_by(JobRow.created_at)
        if run_id is not None:
            query = query.where(JobRow.run_id == run_id)
        async with self._registry.session() as session:
            return list((await session.scalars(query)).all())

    def __repr__(self) -> str:
        return f"SqlAccounting({self._registry!r}, owner_id={self.owner_id!r})"


async def _locked_reservation(session: AsyncSession, job_id: str) -> tuple[LedgerRow | None, bool]:
    """``job_id``'s reservation (``None``: none) and whether it has been released.

    The budget's row is locked before the release is looked for, so of two transactions
    that close (or send) the same job, the second sees what the first did.
    """
    reservation = await session.scalar(
        select(LedgerRow)
        .where(LedgerRow.job_id == job_id, LedgerRow.kind == "reservation")
        .limit(1)
    )
    if reservation is None:
        return None, False
    await session.get(BudgetRow, reservation.budget_id, with_for_update=True)
    released = await session.scalar(
        select(LedgerRow.id).where(LedgerRow.job_id == job_id, LedgerRow.kind == "release").limit(1)
    )
    return reservation, released is not None


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
