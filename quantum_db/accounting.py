"""The budget ledger and job records in the SQL registry, atomic across tasks and processes."""

from __future__ import annotations

import time

from sqlalchemy import func, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from backends.accounting import Budget, JobRecord
from backends.errors import BudgetExceededError

from .errors import DataValidationError, RegistryError
from .registry.engine import Registry
from .registry.schema import BudgetRow, JobRow, LedgerRow

__all__ = ["SqlAccounting"]

#: Reservations and charges are compared with this slack, so float sums never refuse a
#: job that fits exactly.
_EPSILON = 1e-9


class SqlAccounting:
    """:class:`backends.Accounting` on the registry.

    A reservation is one transaction that locks the budget's row (``SELECT … FOR UPDATE``
    on PostgreSQL; SQLite's ``BEGIN IMMEDIATE`` serializes writers), sums the ledger and
    inserts the reservation only if it fits, so concurrent tasks and processes can never
    together exceed a budget. Settling inserts a release of the reservation and the charge
    in one transaction.
    """

    def __init__(self, registry: Registry) -> None:
        self._registry = registry

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
        for _ in range(10):  # two first reservations may race to create the budget's row
            try:
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
                        )
                    )
                return
            except RegistryError as exc:
                if not isinstance(exc.__cause__, IntegrityError):
                    raise
        raise RegistryError(f"could not create budget {budget.name!r}")

    async def _close(self, job_id: str, actual: float | None) -> None:
        async with self._registry.session() as session:
            rows = (
                await session.scalars(select(LedgerRow).where(LedgerRow.job_id == job_id))
            ).all()
            reservation = next((r for r in rows if r.kind == "reservation"), None)
            if reservation is None or any(r.kind == "release" for r in rows):
                return  # nothing reserved, or already settled: settling twice is a no-op
            await session.get(BudgetRow, reservation.budget_id, with_for_update=True)
            session.add(
                LedgerRow(
                    budget_id=reservation.budget_id,
                    job_id=job_id,
                    kind="release",
                    amount_usd=-reservation.amount_usd,
                )
            )
            if actual is not None:
                session.add(
                    LedgerRow(
                        budget_id=reservation.budget_id,
                        job_id=job_id,
                        kind="charge",
                        amount_usd=float(actual),
                    )
                )

    async def settle(self, job_id: str, actual: float) -> None:
        await self._close(job_id, actual)

    async def release(self, job_id: str) -> None:
        await self._close(job_id, None)

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

    async def open_reservations(self, budget: Budget) -> int:
        async with self._registry.session() as session:
            rows = (
                await session.execute(
                    select(LedgerRow.job_id, LedgerRow.kind).where(
                        LedgerRow.budget_id == budget.name
                    )
                )
            ).all()
        reserved = {r.job_id for r in rows if r.kind == "reservation"}
        closed = {r.job_id for r in rows if r.kind == "release"}
        return len(reserved - closed)

    async def record_job(self, job: JobRecord) -> None:
        async with self._registry.session() as session:
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
            row.provider_job_ids = list(job.provider_job_ids)
            row.estimated_cost = job.estimated_cost
            row.actual_cost = job.actual_cost
            row.queue_latency_s = job.queue_latency_s
            row.run_latency_s = job.run_latency_s
            row.error = job.error
            row.created_at = job.created_at
            row.updated_at = time.time()

    async def jobs(self, *, run_id: str | None = None) -> list[JobRow]:
        query = select(JobRow).order_by(JobRow.created_at)
        if run_id is not None:
            query = query.where(JobRow.run_id == run_id)
        async with self._registry.session() as session:
            return list((await session.scalars(query)).all())
