"""A resumed run replaces the metrics logged after its checkpoint instead of repeating them."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
from sqlalchemy import func, select

from quantum_db import InvalidNameError, MetricError, QuantumDatabase, Settings
from quantum_db.registry.schema import MetricRow

KEYS = ("loss", "accuracy")


def _value(key: str, step: int, attempt: int) -> float:
    """What attempt ``attempt`` of the run logs: different for each, to tell them apart."""
    return float(step * 10 + attempt) if key == "loss" else float(step) / 100 + attempt


async def _counts(db: QuantumDatabase, run_id: str) -> dict[tuple[str, int], int]:
    async with db.registry.session() as session:
        rows = (
            await session.execute(
                select(MetricRow.key, MetricRow.step, func.count())
                .where(MetricRow.run_id == run_id)
                .group_by(MetricRow.key, MetricRow.step)
            )
        ).all()
    return {(key, step): count for key, step, count in rows}


def _settings() -> Settings:
    return Settings(sweep_on_connect=False)


async def test_a_resumed_run_logs_each_step_once(database_url: str) -> None:
    # The first process logs steps 1..12, checkpoints at 10, and dies before step 13.
    async with QuantumDatabase(database_url, settings=_settings()).connect() as db:
        await db.runs.create("crashy", owner_id=db.owner_id)
        await db.metrics.log("bystander", {"loss": 1.0}, step=12)
        for step in range(1, 13):
            await db.metrics.log("crashy", {k: _value(k, step, 0) for k in KEYS}, step=step)
            if step == 10:
                await db.checkpoints.save("crashy", step, {"params": np.arange(3.0)})
        await db.metrics.flush()

    # The resumed process restores step 10, drops what came after it, and logs 11..12 again.
    async with QuantumDatabase(database_url, settings=_settings()).connect() as db:
        restored = await db.checkpoints.latest("crashy")
        assert restored is not None and restored.step == 10
        assert await db.metrics.truncate_after("crashy", restored.step) == 2 * len(KEYS)
        for step in (11, 12):
            await db.metrics.log("crashy", {k: _value(k, step, 1) for k in KEYS}, step=step)

        await db.metrics.flush()  # _counts reads the table directly
        counts = await _counts(db, "crashy")
        assert counts == {(k, s): 1 for k in KEYS for s in range(1, 13)}
        for key in KEYS:
            history = await db.metrics.history("crashy", key)
            assert history.steps.tolist() == list(range(1, 13))
            expected = [_value(key, s, 0 if s <= 10 else 1) for s in range(1, 13)]
            assert history.values.tolist() == expected
        # Another run's rows at those steps are not touched.
        assert (await db.metrics.history("bystander", "loss")).steps.tolist() == [12]


async def test_values_still_buffered_are_truncated_too(database_url: str) -> None:
    async with QuantumDatabase(database_url, settings=_settings()).connect() as db:
        for step in range(5):
            await db.metrics.log("buffered", {"loss": float(step)}, step=step)
        # Nothing flushed yet: truncating must write the buffer first, then delete.
        assert await db.metrics.truncate_after("buffered", 2) == 2
        assert (await db.metrics.history("buffered", "loss")).steps.tolist() == [0, 1, 2]
        assert await db.metrics.truncate_after("buffered", 2) == 0  # nothing after 2 now
        assert await db.metrics.truncate_after("never-logged", 0) == 0
        assert await db.metrics.truncate_after("buffered", 0) == 2
        assert (await db.metrics.history("buffered", "loss")).values.tolist() == [0.0]


@pytest.mark.parametrize(
    ("run_id", "step", "error", "match"),
    [
        ("kept", -1, MetricError, ">= 0"),
        ("kept", 2.0, MetricError, "integer"),
        ("kept", True, MetricError, "integer"),
        ("kept", "3", MetricError, "integer"),
        ("kept", 2**63, MetricError, "64-bit"),
        ("bad id", 1, InvalidNameError, "not allowed"),
        ("", 1, InvalidNameError, "not allowed"),
    ],
)
async def test_bad_truncations_are_refused_and_delete_nothing(
    database_url: str, run_id: Any, step: Any, error: type[Exception], match: str
) -> None:
    async with QuantumDatabase(database_url, settings=_settings()).connect() as db:
        for s in range(4):
            await db.metrics.log("kept", {"loss": float(s)}, step=s)
        await db.metrics.flush()
        with pytest.raises(error, match=match):
            await db.metrics.truncate_after(run_id, step)
        assert (await db.metrics.history("kept", "loss")).steps.tolist() == [0, 1, 2, 3]
