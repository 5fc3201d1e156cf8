"""The sweeper: reclaims the reservations, jobs and dataset writes of owners that are gone.

Run on every connect (bounded in time) and by ``qdb gc``. For each open reservation and
unfinished job whose owner's lease has expired:

* a job with provider ids is looked up at its provider (the backend of that name in the
  connection's :class:`~backends.BackendManager`). Once every one of its provider jobs has
  ended it is charged what the provider reports (a completed job the provider does not
  price is charged its whole estimate); while one is still queued or running it stays
  reserved and is looked at again by the next sweep (``cancel_running=True`` first asks
  the provider to cancel it). When the provider cannot be asked, it stays reserved too;
* a job that never left (status ``queued``: a job is marked ``running`` only while its
  reservation is held, just before it is sent), or a reservation with no job row at all,
  is released;
* a job marked ``running`` with no provider id (its submission may have created a job),
  or in status ``unknown`` (its submission failed after the provider may have created
  it), stays reserved until ``unknown_expiry_s`` after its last update; then it is
  charged what its known provider ids report and the rest is released, with a warning.

A reservation its owner gave up on (status ``failed``, ``cancelled`` or ``unknown``: the
run ended after the job reached the provider) is settled the same way by any sweep, even
while the owner lives.

A job a restarted caller has taken over meanwhile (``BackendManager.run`` with the job's
request key; see :meth:`SqlAccounting.take_over`) belongs to a live owner again: a sweep
that had already decided on it closes nothing.

Money is never released for a job that may still bill, so reclaiming cannot overspend.
Each reclaim is one transaction that locks the budget's row and closes the reservation
only if nobody has (see :meth:`SqlAccounting.close`), so sweeps from several processes
at once are safe. The samples (vector-store namespace) of every dataset write whose
owner is gone are deleted with its write record, and expired leases that hold nothing
more are removed.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

from sqlalchemy import delete, select, update

from backends import BackendManager, UnknownBackendError
from backends.base import ProviderJob, provider_bill
from backends.errors import QuantumDBError

from .accounting import SqlAccounting
from .leases import UNFINISHED_JOB_STATUSES, live_owner_ids, open_reservation_owners
from .registry.engine import Registry
from .registry.schema import DatasetRow, DatasetWriteRow, JobRow, LeaseRow
from .vectorstores.base import VectorStore

__all__ = ["DEFAULT_UNKNOWN_EXPIRY_S", "SweepSummary", "sweep", "sweep_on_connect"]

#: Statuses the owner leaves a job in once it has finished with it while its
#: reservation stays open (see BackendManager and quantum_ml.billing).
_GIVEN_UP_STATUSES = ("failed", "cancelled", "unknown")

logger = logging.getLogger(__name__)

#: How long a job whose submission may have created it is kept reserved (24 h).
DEFAULT_UNKNOWN_EXPIRY_S = 86_400.0


@dataclass(slots=True)
class SweepSummary:
    """What one sweep reclaimed, and what it had to leave for a later one (the sweep
    counts into it as it goes)."""

    #: Reservations released: jobs that never reached their provider.
    released: int = 0
    #: Jobs that reached their provider, settled with what it reports.
    charged: int = 0
    #: The sum of those charges, in USD.
    charged_usd: float = 0.0
    #: Provider jobs this sweep asked the provider to cancel.
    cancelled: int = 0
    #: Unknown submissions closed after their expiry.
    expired: int = 0
    #: Jobs left reserved: still running at the provider, unknown, or not askable now.
    pending: int = 0
    #: Vector-store namespaces of aborted dataset writes deleted.
    namespaces_deleted: int = 0
    #: Expired leases removed.
    leases_removed: int = 0

    @property
    def idle(self) -> bool:
        """Whether the sweep changed nothing."""
        return not (
            self.released
            or self.charged
            or self.cancelled
            or self.expired
            or self.namespaces_deleted
            or self.leases_removed
        )

    def describe(self) -> str:
        """One line for ``qdb gc``."""
        return (
            f"released {self.released} reservation(s), charged {self.charged} job(s) "
            f"${self.charged_usd:.4f}, cancelled {self.cancelled} provider job(s), expired "
            f"{self.expired} unknown submission(s), {self.pending} pending, deleted "
            f"{self.namespaces_deleted} orphaned namespace(s), removed "
            f"{self.leases_removed} expired lease(s)"
        )


@dataclass(frozen=True, slots=True)
class _Charge:
    """Close with ``amount`` (``None``: release) and give the job ``status``."""

    amount: float | None
    status: str
    note: str


async def sweep(
    registry: Registry,
    *,
    backends: BackendManager | None = None,
    vectors: VectorStore | None = None,
    unknown_expiry_s: float = DEFAULT_UNKNOWN_EXPIRY_S,
    cancel_running: bool = False,
    now: float | None = None,
) -> SweepSummary:
    """Reclaim what owners that are gone left behind (see the module docstring)."""
    moment = time.time() if now is None else now
    async with registry.session() as session:
        # What may be reclaimed is read first and the live leases last: a connection that
        # takes its lease and reserves in between then counts as live (on PostgreSQL each
        # statement sees a fresh snapshot, so the other order could reclaim it).
        owners = await open_reservation_owners(session)
        unfinished_rows = (
            await session.scalars(
                select(JobRow).where(
                    JobRow.owner_id.is_not(None), JobRow.status.in_(UNFINISHED_JOB_STATUSES)
                )
            )
        ).all()
        write_rows = (
            await session.scalars(
                select(DatasetWriteRow).where(DatasetWriteRow.owner_id.is_not(None))
            )
        ).all()
        expired_leases = list(
            (await session.scalars(select(LeaseRow.id).where(LeaseRow.expires_at <= moment))).all()
        )
        kept = (
            set(
                (
                    await session.scalars(
                        select(JobRow.id).where(
                            JobRow.id.in_(list(owners)), JobRow.status.in_(_GIVEN_UP_STATUSES)
                        )
                    )
                ).all()
            )
            if owners
            else set()
        )
        live = await live_owner_ids(session, moment)
    # A reservation its owner gave up on (the run failed after the job reached the
    # provider, or its submission's outcome is unknown) is settled by any sweep, whether
    # or not the owner still lives: the owner will not touch it again.
    reserved = {job: owner for job, owner in owners.items() if owner not in live or job in kept}
    unfinished = [row for row in unfinished_rows if row.owner_id not in live or row.id in kept]
    writes = [row for row in write_rows if row.owner_id not in live]
    tally = SweepSummary()
    if not (reserved or unfinished or writes or expired_leases):
        return tally

    accounting = SqlAccounting(registry)
    jobs = {row.id: row for row in unfinished}
    missing = [job_id for job_id in reserved if job_id not in jobs]
    if missing:
        async with registry.session() as session:
            for row in (await session.scalars(select(JobRow).where(JobRow.id.in_(missing)))).all():
                jobs[row.id] = row
    holding: set[str] = set()
    for job_id in sorted(set(reserved) | {row.id for row in unfinished}):
        job = jobs.get(job_id)
        owner = reserved.get(job_id) or (job.owner_id if job is not None else None)
        charge = await _decide(job, backends, unknown_expiry_s, cancel_running, moment, tally)
        if charge is None:
            tally.pending += 1
            if owner is not None:
                holding.add(owner)
            continue
        if job_id in reserved:
            closed = await accounting.close(
                job_id,
                charge.amount,
                job_status=charge.status if job is not None else None,
                note=charge.note,
                # Unless someone took the job over meanwhile (BackendManager.run with its
                # request key): it is theirs to settle then.
                expect=(job.owner_id, job.status) if job is not None else None,
            )
            if not closed:
                continue  # another sweep (or the owner) closed it first, or it was taken
        elif job is None or not await _mark_unfinished(registry, job, charge):
            continue
        if charge.status == "expired":
            tally.expired += 1
            logger.warning("job %s: %s", job_id, charge.note)
        if charge.amount is None:
            tally.released += int(job_id in reserved)
        else:
            tally.charged += 1
            tally.charged_usd += charge.amount
        logger.info("sweeper: job %s (owner %s): %s", job_id, owner, charge.note)

    for write in writes:
        outcome = await _delete_orphaned_write(registry, vectors, write)
        if outcome == "deleted":
            tally.namespaces_deleted += 1
        elif outcome == "kept" and write.owner_id is not None:
            holding.add(write.owner_id)

    removable = [lease for lease in expired_leases if lease not in holding]
    if removable:
        async with registry.session() as session:
            result = await session.execute(
                delete(LeaseRow).where(LeaseRow.id.in_(removable), LeaseRow.expires_at <= moment)
            )
            tally.leases_removed = int(getattr(result, "rowcount", 0) or 0)
    summary = tally
    if not summary.idle:
        logger.info("sweep: %s", summary.describe())
    return summary


async def sweep_on_connect(
    registry: Registry,
    *,
    backends: BackendManager | None,
    vectors: VectorStore | None,
    timeout_s: float,
    unknown_expiry_s: float = DEFAULT_UNKNOWN_EXPIRY_S,
) -> SweepSummary | None:
    """:func:`sweep`, bounded by ``timeout_s``; a failure or timeout is logged, not raised.

    With nothing to reclaim it costs four queries. Stopping it half-way is safe:
    each reclaim is its own transaction, and the next sweep finishes the rest.
    """
    try:
        # asyncio.timeout, not wait_for, which on Python 3.11 can swallow a cancellation.
        async with asyncio.timeout(timeout_s):
            return await sweep(
                registry, backends=backends, vectors=vectors, unknown_expiry_s=unknown_expiry_s
            )
    except TimeoutError:
        logger.warning("the sweep on connect took over %g s; `qdb gc` finishes it", timeout_s)
    except QuantumDBError as exc:
        logger.warning("the sweep on connect failed (%s); `qdb gc` tries again", exc)
    return None


async def _decide(
    job: JobRow | None,
    backends: BackendManager | None,
    unknown_expiry_s: float,
    cancel_running: bool,
    now: float,
    tally: SweepSummary,
) -> _Charge | None:
    """What to do with one job of a gone owner; ``None``: keep it for a later sweep."""
    if job is None:
        return _Charge(None, "abandoned", "owner gone before the job was recorded: released")
    ids = [str(i) for i in (job.provider_job_ids or [])]
    if job.status == "running" and not ids:
        # Marked sent (see Accounting.mark_sending) but no id came back: its submission
        # may have created a job at the provider, so it is kept like an unknown one.
        if now - job.updated_at < unknown_expiry_s:
            return None
        return _Charge(
            None,
            "expired",
            f"sent but no provider id was recorded within {unknown_expiry_s:g} s: released",
        )
    if job.status == "unknown":
        if now - job.updated_at < unknown_expiry_s:
            return None
        if not ids:
            return _Charge(
                None,
                "expired",
                f"submission unknown for over {unknown_expiry_s:g} s and no provider id was "
                "ever recorded to look it up by: released",
            )
        found = await _lookup(job, ids, backends, cancel_running=False, tally=tally)
        if found is None or not all(p.ended for p in found):
            return None
        amount = sum(p.cost_usd or 0.0 for p in found)
        return _Charge(
            amount,
            "expired",
            f"submission unknown for over {unknown_expiry_s:g} s: charged ${amount:.4f} for "
            f"the {len(found)} provider job(s) found, the rest released",
        )
    if not ids:
        if job.status == "completed":
            amount = job.actual_cost if job.actual_cost is not None else job.estimated_cost
            return _Charge(amount, "completed", "owner gone after the job completed: settled")
        if job.status == "queued":
            return _Charge(None, "abandoned", "owner gone before the job was sent")
        return _Charge(None, job.status, f"owner gone; the job had ended {job.status}: released")
    found = await _lookup(job, ids, backends, cancel_running=cancel_running, tally=tally)
    if found is None or not all(p.ended for p in found):
        return None
    return _settlement(job, found)


def _settlement(job: JobRow, found: Sequence[ProviderJob]) -> _Charge:
    amount = provider_bill(found, job.estimated_cost)
    statuses = {p.status for p in found}
    status = statuses.pop() if len(statuses) == 1 else "failed"
    return _Charge(
        amount,
        status,
        f"owner gone; {len(found)} provider job(s) ended {status}: charged ${amount:.4f} "
        "as the provider reports",
    )


async def _lookup(
    job: JobRow,
    ids: Sequence[str],
    backends: BackendManager | None,
    *,
    cancel_running: bool,
    tally: SweepSummary,
) -> list[ProviderJob] | None:
    """The provider's view of each id, or None when it cannot be asked now."""
    try:
        if backends is None:
            raise UnknownBackendError(job.backend)
        backend = backends.get(job.backend)
    except UnknownBackendError:
        logger.warning(
            "sweeper: job %s ran on %r, which this connection does not offer; kept reserved",
            job.id,
            job.backend,
        )
        return None
    if not backend.supports_job_lookup():
        logger.warning(
            "sweeper: %s cannot look up provider jobs; job %s kept reserved", job.backend, job.id
        )
        return None
    found: list[ProviderJob] = []
    for provider_id in ids:
        try:
            found.append(await backend.lookup_job(provider_id))
        except Exception as exc:  # the provider is down or refuses: look again next sweep
            logger.warning(
                "sweeper: could not look up %s job %s (%s); kept reserved",
                job.backend,
                provider_id,
                exc,
            )
            return None
    if cancel_running:
        for provider_job in found:
            if provider_job.ended:
                continue
            try:
                await backend.cancel_job(provider_job.id)
                tally.cancelled += 1
            except Exception as exc:
                logger.warning(
                    "sweeper: could not cancel %s job %s (%s)", job.backend, provider_job.id, exc
                )
    return found


async def _mark_unfinished(registry: Registry, job: JobRow, charge: _Charge) -> bool:
    """A job without a reservation (free, or run without a budget): only its row changes,
    and only while it is as the sweep read it (not taken over meanwhile)."""
    async with registry.session() as session:
        result = await session.execute(
            update(JobRow)
            .where(
                JobRow.id == job.id,
                JobRow.status == job.status,
                JobRow.owner_id == job.owner_id,
                JobRow.status.in_(UNFINISHED_JOB_STATUSES),
            )
            .values(
                status=charge.status,
                actual_cost=charge.amount,
                error=charge.note[:2000],
                updated_at=time.time(),
            )
        )
        return bool(getattr(result, "rowcount", 0))


async def _delete_orphaned_write(
    registry: Registry, vectors: VectorStore | None, write: DatasetWriteRow
) -> Literal["deleted", "stale", "kept"]:
    """Delete the samples of an aborted dataset write, then its record.

    ``stale``: a committed version owns the namespace (only the record went) or another
    sweep got there first; ``kept``: the samples could not be deleted now.
    """
    async with registry.session() as session:
        committed = await session.scalar(
            select(DatasetRow.id).where(DatasetRow.namespace == write.namespace).limit(1)
        )
    if committed is None:
        if vectors is None:
            return "kept"
        try:
            await vectors.delete(namespace=write.namespace, delete_all=True)
        except Exception as exc:  # the record stays; the next sweep tries again
            logger.warning(
                "sweeper: could not delete the samples of aborted write %s (%s)",
                write.namespace,
                exc,
            )
            return "kept"
    async with registry.session() as session:
        result = await session.execute(
            delete(DatasetWriteRow).where(DatasetWriteRow.namespace == write.namespace)
        )
    if committed is not None or not getattr(result, "rowcount", 0):
        return "stale"
    logger.info(
        "sweeper: deleted the orphaned samples of dataset %r (namespace %s)",
        write.dataset_name,
        write.namespace,
    )
    return "deleted"
