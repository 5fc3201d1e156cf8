"""Training runs: the record that metrics, checkpoints and jobs hang from."""

from __future__ import annotations

import re
import time
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from .errors import DataValidationError, InvalidNameError, RunNotFoundError
from .registry.engine import Registry
from .registry.schema import RunRow
from .validation import check_json, check_seed, check_text

__all__ = ["RUN_STATUSES", "RunInfo", "RunStore", "ensure_run", "validate_run_id"]

RUN_STATUSES = ("running", "completed", "failed", "stopped", "interrupted")
_RUN_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.:\-]{0,127}$")


def validate_run_id(run_id: object) -> str:
    if not isinstance(run_id, str) or not _RUN_ID.match(run_id):
        raise InvalidNameError(
            f"run id {run_id!r} is not allowed: use 1-128 characters from [A-Za-z0-9_.:-]"
        )
    return run_id


@dataclass(frozen=True, slots=True)
class RunInfo:
    id: str
    status: str
    config: dict[str, Any]
    backend: str | None
    seed: int | None
    created_at: float
    updated_at: float

    @classmethod
    def from_row(cls, row: RunRow) -> RunInfo:
        return cls(
            row.id, row.status, row.config, row.backend, row.seed, row.created_at, row.updated_at
        )


async def ensure_run(session: AsyncSession, run_id: str) -> RunRow:
    """The run's row, created (status ``running``) the first time something is logged to it."""
    row = await session.get(RunRow, run_id)
    if row is None:
        row = RunRow(id=run_id, status="running", config={})
        session.add(row)
        await session.flush()
    return row


class RunStore:
    """``db.runs``: create, look up and update training runs."""

    def __init__(self, registry: Registry) -> None:
        self._registry = registry

    async def create(
        self,
        run_id: str | None = None,
        *,
        config: Mapping[str, Any] | None = None,
        backend: str | None = None,
        seed: int | None = None,
    ) -> RunInfo:
        run_id = validate_run_id(run_id or f"run-{uuid.uuid4().hex[:12]}")
        stored_config = check_json(config, "run config")
        if backend is not None:
            check_text(backend, "backend", max_length=128)
        if seed is not None:
            seed = check_seed(seed)
        async with self._registry.session() as session:
            if await session.get(RunRow, run_id) is not None:
                raise DataValidationError(f"run {run_id!r} already exists")
            row = RunRow(
                id=run_id, status="running", config=stored_config, backend=backend, seed=seed
            )
            session.add(row)
        return RunInfo.from_row(row)

    async def get(self, run_id: str) -> RunInfo:
        async with self._registry.session() as session:
            row = await session.get(RunRow, run_id)
        if row is None:
            raise RunNotFoundError(f"no run {run_id!r}")
        return RunInfo.from_row(row)

    async def exists(self, run_id: str) -> bool:
        async with self._registry.session() as session:
            return await session.get(RunRow, run_id) is not None

    async def list(self) -> list[RunInfo]:
        async with self._registry.session() as session:
            rows = (await session.scalars(select(RunRow).order_by(RunRow.created_at))).all()
        return [RunInfo.from_row(r) for r in rows]

    async def set_status(self, run_id: str, status: str) -> None:
        if status not in RUN_STATUSES:
            raise DataValidationError(f"status must be one of {RUN_STATUSES}, got {status!r}")
        async with self._registry.session() as session:
            row = await session.get(RunRow, run_id)
            if row is None:
                raise RunNotFoundError(f"no run {run_id!r}")
            row.status = status
            row.updated_at = time.time()
