"""Leases: a live connection's claim on the reservations, jobs and dataset writes it owns.

Every ``QuantumDatabase.connect()`` takes one :class:`Lease`: a row in ``leases`` whose
``expires_at`` a background heartbeat pushes forward every ``ttl_s / 3``. Its id is the
``owner_id`` of everything the connection reserves, sends or writes. An owner is *gone*
when its row has expired or is absent; then the sweeper (:mod:`quantum_db.sweeper`)
reclaims what it held.

Only expiry counts, never a check of the pid on the same host: containers that share a
host name do not share pid namespaces, so a pid that looks dead may belong to a live
process elsewhere, and reclaiming a live owner's reservations could overspend. A process
that dies is reclaimed at most ``ttl_s`` later.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import os
import socket
import time
import uuid

from sqlalchemy import Select, case, delete, func, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from .errors import ConfigurationError, DatabaseError
from .registry.engine import Registry
from .registry.schema import DatasetWriteRow, JobRow, LeaseRow, LedgerRow

__all__ = [
    "UNFINISHED_JOB_STATUSES",
    "Lease",
    "live_owner_ids",
    "open_reservation_owners",
    "release_lease",
    "take_lease",
]

logger = logging.getLogger(__name__)

#: Job statuses of a job that has not ended (``unknown``: a submission that may exist).
UNFINISHED_JOB_STATUSES = ("queued", "running", "unknown")


class Lease:
    """One connection's lease, renewed by heartbeat until :meth:`aclose`."""

    def __init__(self, registry: Registry, *, ttl_s: float) -> None:
        if (
            isinstance(ttl_s, bool)
            or not isinstance(ttl_s, int | float)
            or not math.isfinite(ttl_s)
            or ttl_s <= 0
        ):
            raise ConfigurationError(
                f"a lease's TTL is a positive number of seconds (QDB_LEASE_TTL_S), got {ttl_s!r}"
            )
        self._registry = registry
        self.ttl_s = float(ttl_s)
        self.id = uuid.uuid4().hex
        self.host = socket.gethostname()[:255]
        self.pid = os.getpid()
        self._heartbeat: asyncio.Task[None] | None = None

    async def start(self) -> None:
        """Insert the lease and start its heartbeat."""
        now = time.time()
        async with self._registry.session() as session:
            session.add(
                LeaseRow(
                    id=self.id,
                    host=self.host,
                    pid=self.pid,
                    started_at=now,
                    heartbeat_at=now,
                    expires_at=now + self.ttl_s,
                )
            )
        self._heartbeat = asyncio.create_task(self._beat(), name=f"qdb-lease-{self.id[:8]}")

    async def renew(self) -> None:
        """Push ``expires_at`` to now + TTL (re-inserting the row if a sweeper removed it)."""
        now = time.time()
        async with self._registry.session() as session:
            renewed = await session.execute(
                update(LeaseRow)
                .where(LeaseRow.id == self.id)
                .values(heartbeat_at=now, expires_at=now + self.ttl_s)
            )
            if getattr(renewed, "rowcount", 1) == 0:
                # Only after the lease had expired for a whole TTL can a sweeper have
                # removed it; what it held may have been reclaimed meanwhile.
                logger.error(
                    "lease %s had expired and was removed (no heartbeat for over %g s); "
                    "its reservations may have been reclaimed",
                    self.id,
                    self.ttl_s,
                )
                session.add(
                    LeaseRow(
                        id=self.id,
                        host=self.host,
                        pid=self.pid,
                        started_at=now,
                        heartbeat_at=now,
                        expires_at=now + self.ttl_s,
                    )
                )

    async def _beat(self) -> None:
        interval = self.ttl_s / 3
        while True:
            await asyncio.sleep(interval)
            try:
                await self.renew()
            except Exception as exc:  # keep beating: a busy database is no reason to stop
                logger.warning("lease %s: heartbeat failed (%s); trying again", self.id, exc)

    async def aclose(self) -> None:
        """Stop the heartbeat; delete the lease, or, if it still holds something, let it
        expire now so that the next sweep reclaims that at once."""
        task, self._heartbeat = self._heartbeat, None
        if task is None:
            return
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        async with self._registry.session() as session:
            if await _holds_anything(session, self.id):
                await session.execute(
                    update(LeaseRow).where(LeaseRow.id == self.id).values(expires_at=time.time())
                )
            else:
                await session.execute(delete(LeaseRow).where(LeaseRow.id == self.id))

    def __repr__(self) -> str:
        return f"Lease(id={self.id!r}, host={self.host!r}, pid={self.pid}, ttl_s={self.ttl_s:g})"


async def take_lease(registry: Registry, ttl_s: float) -> Lease | None:
    """A started lease, or None when the database refuses the write (e.g. read-only).

    Without a lease the connection tags nothing with an owner: an owner id without a
    lease row reads as gone, and its reservations would be reclaimed while it lives.
    """
    lease = Lease(registry, ttl_s=ttl_s)
    try:
        await lease.start()
    except DatabaseError as exc:
        logger.warning(
            "could not take a lease (%s); this connection's reservations are not swept", exc
        )
        return None
    return lease


async def release_lease(lease: Lease) -> None:
    """Close ``lease``, logging (not raising) a failure: its row then simply expires."""
    try:
        await lease.aclose()
    except Exception as exc:
        logger.warning("could not release lease %s (%s); it expires by itself", lease.id, exc)


async def live_owner_ids(session: AsyncSession, now: float | None = None) -> set[str]:
    """Ids of the leases that have not expired."""
    moment = time.time() if now is None else now
    rows = await session.scalars(select(LeaseRow.id).where(LeaseRow.expires_at > moment))
    return set(rows.all())


def _open_reservations_query(owner_id: str | None = None) -> Select[str | None, str | None]:
    # Releases carry their reservation's owner, so one pass over the owned ledger rows
    # finds the reservations without a release.
    balance = func.sum(
        case((LedgerRow.kind == "reservation", 1), (LedgerRow.kind == "release", -1), else_=0)
    )
    query = (
        select(LedgerRow.job_id, LedgerRow.owner_id)
        .where(LedgerRow.owner_id.is_not(None), LedgerRow.job_id.is_not(None))
        .group_by(LedgerRow.job_id, LedgerRow.owner_id)
        .having(balance > 0)
    )
    if owner_id is not None:
        query = query.where(LedgerRow.owner_id == owner_id)
    return query


async def open_reservation_owners(session: AsyncSession) -> dict[str, str]:
    """``{job_id: owner_id}`` of every open reservation that has an owner."""
    rows = (await session.execute(_open_reservations_query())).all()
    return {str(r.job_id): str(r.owner_id) for r in rows}


async def _holds_anything(session: AsyncSession, owner_id: str) -> bool:
    if (await session.execute(_open_reservations_query(owner_id).limit(1))).first():
        return True
    unfinished = await session.scalar(
        select(JobRow.id)
        .where(JobRow.owner_id == owner_id, JobRow.status.in_(UNFINISHED_JOB_STATUSES))
        .limit(1)
    )
    if unfinished is not None:
        return True
    writing = await session.scalar(
        select(DatasetWriteRow.namespace).where(DatasetWriteRow.owner_id == owner_id).limit(1)
    )
    return writing is not None
