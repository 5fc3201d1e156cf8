"""Run metrics: logged without waiting for the database, written in batches, read as arrays."""

from __future__ import annotations

import asyncio
import contextlib
import csv
import json
import math
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
from numpy.typing import NDArray
from sqlalchemy import insert, select

from .errors import MetricError
from .registry.engine import Registry
from .registry.schema import MetricRow
from .runs import ensure_run, validate_run_id

__all__ = ["MetricHistory", "MetricsLogger"]

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


class MetricsLogger:
    """``db.metrics``. ``log`` only validates and buffers; a background task writes the
    buffer in one ``executemany`` every ``flush_interval`` seconds, so logging thousands of
    values a second never waits on the database. Reads flush first, so they see every value
    logged before them. A failed write keeps the rows and raises on the next call.
    """

    def __init__(self, registry: Registry, *, flush_interval: float = 0.25) -> None:
        self._registry = registry
        self._interval = flush_interval
        self._buffer: list[dict[str, Any]] = []
        self._task: asyncio.Task[None] | None = None
        self._lock = asyncio.Lock()
        self._failure: BaseException | None = None
        self._closed = False

    async def log(
        self, run_id: str, values: Mapping[str, float], step: int, *, timestamp: float | None = None
    ) -> None:
        """Record ``{key: value}`` for ``run_id`` at ``step``; the run is created if new."""
        if self._closed:
            raise MetricError("the metrics logger is closed (the database connection ended)")
        self._raise_failure()
        validate_run_id(run_id)
        if isinstance(step, bool) or not isinstance(step, int | np.integer) or step < 0:
            raise MetricError(f"step must be a non-negative integer, got {step!r}")
        if not isinstance(values, Mapping) or not values:
            raise MetricError("values must be a non-empty mapping of metric name -> number")
        stamp = time.time() if timestamp is None else float(timestamp)
        rows = []
        for key, value in values.items():
            if not isinstance(key, str) or not key or len(key) > 128:
                raise MetricError(f"metric names must be non-empty strings (<= 128), got {key!r}")
            try:
                number = float(value)
            except (TypeError, ValueError):
                raise MetricError(f"metric {key!r} must be a number, got {value!r}") from None
            if not math.isfinite(number):
                raise MetricError(f"metric {key!r} is {number}; only finite values are logged")
            rows.append(
                {
                    "run_id": run_id,
                    "key": key,
                    "step": int(step),
                    "value": number,
                    "timestamp": stamp,
                }
            )
        self._buffer.extend(rows)
        if len(self._buffer) >= _MAX_BUFFERED:
            await self.flush()
        elif self._task is None or self._task.done():
            self._task = asyncio.create_task(self._flush_soon(), name="qdb-metrics-flush")

    def _raise_failure(self) -> None:
        if self._failure is not None:
            failure, self._failure = self._failure, None
            raise MetricError(f"writing buffered metrics failed: {failure}") from failure

    async def _flush_soon(self) -> None:
        await asyncio.sleep(self._interval)
        try:
            await self.flush()
        except Exception as exc:  # kept, and raised to the next caller
            self._failure = exc

    async def flush(self) -> int:
        """Write everything buffered now; returns how many values were written."""
        async with self._lock:
            rows, self._buffer = self._buffer, []
            if not rows:
                return 0
            try:
                async with self._registry.session() as session:
                    for run_id in sorted({r["run_id"] for r in rows}):
                        await ensure_run(session, run_id)
                    # Small statements: the loop runs other tasks between them, so a large
                    # flush never holds it for long.
                    for start in range(0, len(rows), _ROWS_PER_STATEMENT):
                        await session.execute(
                            insert(MetricRow), rows[start : start + _ROWS_PER_STATEMENT]
                        )
            except BaseException:
                self._buffer[:0] = rows  # nothing was written: keep them for the next try
                raise
            return len(rows)

    async def history(self, run_id: str, key: str) -> MetricHistory:
        await self.flush()
        self._raise_failure()
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
        await self.flush()
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
        await self.flush()
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
        """Write what is buffered and stop the background task."""
        self._closed = True
        task, self._task = self._task, None
        if task is not None and not task.done():
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        await self.flush()
        self._raise_failure()
