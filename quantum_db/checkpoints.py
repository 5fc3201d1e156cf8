"""Checkpoints: atomic, hashed snapshots of a run's state; keep-last-N plus the best."""

from __future__ import annotations

import logging
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

from sqlalchemy import delete, select

from .errors import (
    CheckpointCorruptError,
    CheckpointNotFoundError,
    CheckpointWarning,
    DataValidationError,
    SerializationError,
)
from .registry.engine import Registry
from .registry.schema import CheckpointRow
from .runs import ensure_run, validate_run_id
from .serialization import content_hash, pack_state, unpack_state
from .validation import check_int, check_number, check_text

__all__ = ["Checkpoint", "CheckpointInfo", "CheckpointStore", "CheckpointWarning"]

logger = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class CheckpointInfo:
    run_id: str
    step: int
    content_hash: str
    metric_name: str | None
    metric_value: float | None
    created_at: float
    size_bytes: int


@dataclass(frozen=True, slots=True)
class Checkpoint:
    info: CheckpointInfo
    state: dict[str, Any]

    @property
    def step(self) -> int:
        return self.info.step


def _info(row: CheckpointRow) -> CheckpointInfo:
    return CheckpointInfo(
        row.run_id,
        row.step,
        row.content_hash,
        row.metric_name,
        row.metric_value,
        row.created_at,
        len(row.payload),
    )


def _read(row: CheckpointRow) -> Checkpoint:
    if content_hash(row.payload) != row.content_hash:
        raise CheckpointCorruptError(
            f"checkpoint of run {row.run_id!r} at step {row.step} does not match its hash"
        )
    try:
        state = unpack_state(row.payload)
    except SerializationError as exc:
        raise CheckpointCorruptError(
            f"checkpoint of run {row.run_id!r} at step {row.step} cannot be read: {exc}"
        ) from exc
    return Checkpoint(_info(row), state)


class CheckpointStore:
    """``db.checkpoints``. A save is one transaction: the new checkpoint and the pruning of
    old ones commit together, so a crash mid-save leaves the previous checkpoints intact."""

    def __init__(self, registry: Registry, *, keep_last: int = 3) -> None:
        keep_last = check_int(keep_last, "keep_last", minimum=1)
        self._registry = registry
        self.keep_last = keep_last

    async def save(
        self,
        run_id: str,
        step: int,
        state: Mapping[str, Any],
        *,
        metric_name: str | None = None,
        metric_value: float | None = None,
        mode: Literal["min", "max"] = "min",
    ) -> CheckpointInfo:
        """Store ``state`` (arrays, numbers, strings, lists, dicts) for ``run_id`` at ``step``.

        With ``metric_name``/``metric_value`` the best checkpoint by that metric (``mode``)
        is kept besides the last ``keep_last``. Saving a step again replaces it.
        """
        validate_run_id(run_id)
        step = check_int(step, "step", minimum=0)
        if mode not in ("min", "max"):
            raise DataValidationError(f"mode must be 'min' or 'max', got {mode!r}")
        if (metric_name is None) != (metric_value is None):
            raise DataValidationError("give metric_name and metric_value together")
        if metric_name is not None:
            check_text(metric_name, "metric_name", max_length=128)
        if metric_value is not None:
            metric_value = check_number(metric_value, "metric_value")
        if not isinstance(state, Mapping):
            raise DataValidationError("state must be a mapping (a dict of arrays and values)")
        payload = pack_state(state)
        digest = content_hash(payload)
        async with self._registry.session() as session:
            await ensure_run(session, run_id)
            await session.execute(
                delete(CheckpointRow).where(
                    CheckpointRow.run_id == run_id, CheckpointRow.step == step
                )
            )
            row = CheckpointRow(
                run_id=run_id,
                step=step,
                payload=payload,
                content_hash=digest,
                metric_name=metric_name,
                metric_value=metric_value,
            )
            session.add(row)
            await session.flush()
            await self._prune(session, run_id, mode)  # never prunes the newest
            return _info(row)

    async def _prune(self, session: Any, run_id: str, mode: str) -> None:
        rows = (
            await session.execute(
                select(CheckpointRow.id, CheckpointRow.step, CheckpointRow.metric_value)
                .where(CheckpointRow.run_id == run_id)
                .order_by(CheckpointRow.step.desc())
            )
        ).all()
        keep = {r.id for r in rows[: self.keep_last]}
        scored = [r for r in rows if r.metric_value is not None]
        if scored:
            sign = 1.0 if mode == "min" else -1.0
            # Ties go to the earlier step: the first time the best value was reached.
            best = min(scored, key=lambda r: (sign * r.metric_value, r.step))
            keep.add(best.id)
        drop = [r.id for r in rows if r.id not in keep]
        if drop:
            await session.execute(delete(CheckpointRow).where(CheckpointRow.id.in_(drop)))

    async def list(self, run_id: str) -> list[CheckpointInfo]:
        async with self._registry.session() as session:
            rows = (
                await session.scalars(
                    select(CheckpointRow)
                    .where(CheckpointRow.run_id == run_id)
                    .order_by(CheckpointRow.step)
                )
            ).all()
        return [_info(r) for r in rows]

    async def load(self, run_id: str, step: int) -> Checkpoint:
        """The checkpoint at ``step``; :class:`CheckpointCorruptError` if it fails its hash."""
        step = check_int(step, "step", minimum=0)
        async with self._registry.session() as session:
            row = await session.scalar(
                select(CheckpointRow).where(
                    CheckpointRow.run_id == run_id, CheckpointRow.step == step
                )
            )
        if row is None:
            raise CheckpointNotFoundError(f"run {run_id!r} has no checkpoint at step {step}")
        return _read(row)

    async def latest(self, run_id: str) -> Checkpoint | None:
        """The newest readable checkpoint; corrupt ones are skipped with a warning."""
        return await self._first_readable(run_id, [], [CheckpointRow.step.desc()])

    async def best(self, run_id: str, mode: Literal["min", "max"] = "min") -> Checkpoint | None:
        """The readable checkpoint with the best metric value (``mode``), if any has one."""
        order = (
            CheckpointRow.metric_value.asc() if mode == "min" else CheckpointRow.metric_value.desc()
        )
        return await self._first_readable(
            run_id, [CheckpointRow.metric_value.is_not(None)], [order, CheckpointRow.step.asc()]
        )

    async def _first_readable(
        self, run_id: str, conditions: Sequence[Any], orders: Sequence[Any]
    ) -> Checkpoint | None:
        async with self._registry.session() as session:
            ids = (
                await session.scalars(
                    select(CheckpointRow.id)
                    .where(CheckpointRow.run_id == run_id, *conditions)
                    .order_by(*orders)
                )
            ).all()
        for checkpoint_id in ids:
            async with self._registry.session() as session:
                row = await session.get(CheckpointRow, checkpoint_id)
            if row is None:  # pruned meanwhile by a concurrent save
                continue
            try:
                return _read(row)
            except CheckpointCorruptError as exc:
                message = f"{exc}; falling back to an earlier checkpoint"
                logger.warning(message)
                warnings.warn(message, CheckpointWarning, stacklevel=2)
        return None

    async def delete_run(self, run_id: str) -> None:
        async with self._registry.session() as session:
            await session.execute(delete(CheckpointRow).where(CheckpointRow.run_id == run_id))
