"""Run metrics: logged without waiting for the database, written in batches, read as arrays."""

from __future__ import annotations

import asyncio
import contextlib
import csv
import json
import logging
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
from numpy.typing import NDArray
from sqlalchemy import delete, insert, select
from sqlalchemy.exc import DBAPIError, OperationalError

from .errors import MetricError, RegistryError, RegistryUnavailableError
from .registry.engine import Registry
from .registry.schema import MetricRow
from .runs import ensure_run, validate_run_id
from .validation import check_int, check_number

__all__ = ["MetricHistory", "MetricsLogger", "RejectedMetric"]

logger = logging.getLogger(__name__)

#: A flush is forced when this many rows are waiting, whatever the interval.
_MAX_BUFFERED = 20_000
#: Rows per INSERT statement within a flush.
_ROWS_PER_STATEMENT = 500


@dataclass(frozen=True, slots=True)
class MetricHistory:
    """One metric of one run: ``steps``, ``values`` and wall-clock ``timestamps`` in step order."""

    run_id: str
    key: str
    steps: NDArray[np.int64]
    values: NDArray[np.float64]
    timestamps: NDArray[np.float64]

    def __len__(self) -> int:
        return int(self.steps.size)

    @property
    def last(self) -> float | None:
        return float(self.values[-1]) if self.values.size else None


@dataclass(frozen=True, slots=True)
class RejectedMetric:
    """A logged value the database refused to store; it was dropped, with the reason."""

    run_id: str
    key: str
    step: int
    value: float
    reason: str


class MetricsLogger:
    """``db.metrics``. ``log`` only validates and buffers; a background task writes the
    buffer in one transaction every ``flush_interval`` seconds, so logging thousands of
    values a second never waits on the database. Reads flush first, so they see every value
    logged before them.

    A value the database refuses (a constraint, a type it cannot store) never blocks the
    others: the batch is split until the refused rows are alone, those are dropped, logged
    at ERROR and kept in :attr:`rejected`, and the next :meth:`flush` or :meth:`aclose`
    raises one :class:`MetricError` naming them, after every other value was written.
    When the database cannot be reached at all nothing is dropped: the rows stay buffered
    for the next flush, which raises :class:`MetricError` if it still cannot write them.
    """

    def __init__(self, registry: Registry, *, flush_interval: float = 0.25) -> None:
        self._registry = registry
        self._interval = flush_interval
        self._buffer: list[dict[str, Any]] = []
        self._task: asyncio.Task[None] | None = None
        self._lock = asyncio.Lock()
        #: Dropped rows not yet raised by a flush or close.
        self._unreported: list[RejectedMetric] = []
        #: Every row dropped since the logger was made.
        self.rejected: list[RejectedMetric] = []
        self._closed = False

    async def log(
        self, run_id: str, values: Mapping[str, float], step: int, *, timestamp: float | None = None
    ) -> None:
        """Record ``{key: value}`` for ``run_id`` at ``step``; the run is created if new.

        Every check happens here, so a value that cannot be stored is refused at once with
        :class:`MetricError` and nothing of the call is buffered.
        """
        if self._closed:
            raise MetricError("the metrics logger is closed (the database connection ended)")
        validate_run_id(run_id)
        checked_step = check_int(step, "step", minimum=0, error=MetricError)
        if not isinstance(values, Mapping) or not values:
            raise MetricError("values must be a non-empty mapping of metric name -> number")
        stamp = (
            time.time()
            if timestamp is None
            else check_number(timestamp, "timestamp", error=MetricError)
        )
        rows = []
        for key, value in values.items():
            if not isinstance(key, str) or not key or len(key) > 128:
                raise MetricError(f"metric names must be non-empty strings (<= 128), got {key!r}")
            number = check_number(value, f"metric {key!r}", error=MetricError)
            rows.append(
                {
                    "run_id": run_id,
                    "key": key,
                    "step": checked_step,
                    "value": number,
                    "timestamp": stamp,
                }
            )
        self._buffer.extend(rows)
        if len(self._buffer) >= _MAX_BUFFERED:
            await self._write()
        elif self._task is None or self._task.done():
            self._task = asyncio.create_task(self._flush_soon(), name="qdb-metrics-flush")

    async def _flush_soon(self) -> None:
        await asyncio.sleep(self._interval)
        try:
            await self._write()
        except MetricError as exc:  # the rows are kept; the next flush tries again
            logger.warning("%s", exc)

    async def flush(self) -> int:
        """Write everything buffered now; returns how many values were written.

        Raises :class:`MetricError` when values were dropped since the last report (they
        are in :attr:`rejected`) or when the database cannot be reached (the values stay
        buffered).
        """
        written = await self._write()
        self._report()
        return written

    def _report(self) -> None:
        if not self._unreported:
            return
        dropped, self._unreported = self._unreported, []
        shown = "; ".join(
            f"run {r.run_id!r} {r.key!r} at step {r.step}: {r.reason}" for r in dropped[:3]
        )
        more = f" (and {len(dropped) - 3} more)" if len(dropped) > 3 else ""
        raise MetricError(
            f"the database refused {len(dropped)} metric value(s), which were dropped; every "
            f"other value was written: {shown}{more}"
        )

    async def _write(self) -> int:
        """Write the buffer, isolating refused rows; never raises for a refused row."""
        async with self._lock:
            rows, self._buffer = self._buffer, []
            written = 0
            # A stack of batches, next batch on top, so that rows are written in order.
            pending = [rows] if rows else []
            while pending:
                batch = pending.pop()
                try:
                    await self._insert(batch)
                except Exception as exc:
                    if _unreachable(exc):
                        self._buffer[:0] = [r for b in [batch, *reversed(pending)] for r in b]
                        raise MetricError(
                            f"metrics could not be written ({len(self._buffer)} value(s) kept "
                            f"for the next flush): {_reason(exc)}"
                        ) from exc
                    if len(batch) == 1:
                        self._reject(batch[0], exc)
                    else:
                        middle = len(batch) // 2
                        pending += [batch[middle:], batch[:middle]]
                    continue
                except BaseException:  # cancelled: nothing of this batch was written
                    self._buffer[:0] = [r for b in [batch, *reversed(pending)] for r in b]
                    raise
                written += len(batch)
            return written

    async def _insert(self, rows: list[dict[str, Any]]) -> None:
        """One transaction: every row or none."""
        async with self._registry.session() as session:
            for run_id in sorted({r["run_id"] for r in rows}):
                await ensure_run(session, run_id)
            # Small statements: the loop runs other tasks between them, so a large
            # flush never holds it for long.
            for start in range(0, len(rows), _ROWS_PER_STATEMENT):
                await session.execute(insert(MetricRow), rows[start : start + _ROWS_PER_STATEMENT])

    def _reject(self, row: dict[str, Any], exc: Exception) -> None:
        rejected = RejectedMetric(
            row["run_id"], row["key"], row["step"], row["value"], _reason(exc)
        )
        logger.error(
            "dropped metric %r of run %r at step %d: the database refused it (%s)",
            rejected.key,
            rejected.run_id,
            rejected.step,
            rejected.reason,
        )
        self.rejected.append(rejected)
        self._unreported.append(rejected)

    async def truncate_after(self, run_id: str, step: int) -> int:
        """Delete every metric of ``run_id`` logged at a step after ``step``; returns how
        many rows went.

        A resumed run calls it with its restored checkpoint's step, so that the values it
        logs again replace those logged after the checkpoint (before a crash) instead of
        repeating them. Values still buffered are written first, so those go too.
        """
        validate_run_id(run_id)
        last_kept = check_int(step, "step", minimum=0, error=MetricError)
        await self._write()
        async with self._registry.session() as session:
            deleted = await session.execute(
                delete(MetricRow).where(MetricRow.run_id == run_id, MetricRow.step > last_kept)
            )
        return int(getattr(deleted, "rowcount", 0) or 0)

    async def history(self, run_id: str, key: str) -> MetricHistory:
        await self._write()
        async with self._registry.session() as session:
            rows = (
                await session.execute(
                    select(MetricRow.step, MetricRow.value, MetricRow.timestamp)
                    .where(MetricRow.run_id == run_id, MetricRow.key == key)
                    .order_by(MetricRow.step, MetricRow.id)
                )
            ).all()
        return MetricHistory(
            run_id,
            key,
            np.array([r.step for r in rows], dtype=np.int64),
            np.array([r.value for r in rows], dtype=np.float64),
            np.array([r.timestamp for r in rows], dtype=np.float64),
        )

    async def keys(self, run_id: str) -> list[str]:
        await self._write()
        async with self._registry.session() as session:
            found = await session.scalars(
                select(MetricRow.key).where(MetricRow.run_id == run_id).distinct()
            )
            return sorted(found.all())

    async def export(
        self, run_id: str, path: str | Path, format: Literal["csv", "json"] | None = None
    ) -> Path:
        """Write every metric of ``run_id`` to ``path`` (CSV or JSON, from the suffix)."""
        target = Path(path)
        kind = format or target.suffix.lstrip(".").lower()
        if kind not in ("csv", "json"):
            raise MetricError(f"export format must be 'csv' or 'json', got {kind!r}")
        await self._write()
        async with self._registry.session() as session:
            rows = (
                await session.execute(
                    select(MetricRow.key, MetricRow.step, MetricRow.value, MetricRow.timestamp)
                    .where(MetricRow.run_id == run_id)
                    .order_by(MetricRow.key, MetricRow.step, MetricRow.id)
                )
            ).all()
        records = [
            {
                "run_id": run_id,
                "key": r.key,
                "step": r.step,
                "value": r.value,
                "timestamp": r.timestamp,
            }
            for r in rows
        ]
        tmp = target.with_name(target.name + ".tmp")
        if kind == "csv":
            with tmp.open("w", newline="") as f:
                writer = csv.DictWriter(
                    f, fieldnames=["run_id", "key", "step", "value", "timestamp"]
                )
                writer.writeheader()
                writer.writerows(records)
        else:
            tmp.write_text(json.dumps(records, indent=1))
        tmp.replace(target)  # a reader never sees a half-written export
        return target

    async def aclose(self) -> None:
        """Write what is buffered and stop the background task; reports dropped values
        (and values that could not be written) as :class:`MetricError`."""
        self._closed = True
        task, self._task = self._task, None
        if task is not None and not task.done():
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        try:
            await self._write()
        except MetricError as exc:
            lost, self._buffer = len(self._buffer), []
            raise MetricError(
                f"the connection closed with {lost} metric value(s) that could not be "
                f"written: {_reason(exc.__cause__ or exc)}"
            ) from exc
        self._report()


def _unreachable(exc: BaseException) -> bool:
    """Whether ``exc`` says the database is out of reach or busy, so that no row is to blame.

    Those keep the rows for the next flush. Anything else (a constraint, a value the
    column or driver cannot take) is taken as a refusal of some row, which splitting the
    batch finds. asyncpg's InterfaceError covers both a lost connection and a bad value,
    so only SQLAlchemy's own disconnect detection tells them apart.
    """
    seen: BaseException | None = exc
    for _ in range(4):
        if seen is None:
            return False
        if isinstance(seen, RegistryUnavailableError | OSError | OperationalError):
            return True
        if isinstance(seen, DBAPIError) and seen.connection_invalidated:
            return True
        seen = seen.__cause__ or seen.__context__
    return False


def _reason(exc: BaseException) -> str:
    cause = exc.__cause__ if isinstance(exc, RegistryError) and exc.__cause__ else exc
    text = str(getattr(cause, "orig", None) or cause).splitlines()[0] if str(cause) else ""
    return f"{type(cause).__name__}: {text}"[:300]
