"""Models, checkpoints, metrics and runs on SQLite and PostgreSQL."""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from sqlalchemy import select, update

from quantum_db import (
    CheckpointCorruptError,
    CheckpointNotFoundError,
    CheckpointWarning,
    DataValidationError,
    InvalidNameError,
    MetricError,
    ModelNotFoundError,
    QuantumDatabase,
    SerializationError,
)
from quantum_db.registry.schema import CheckpointRow, ModelVersionRow


@pytest.fixture
async def db(database_url: str) -> Any:
    async with QuantumDatabase(database_url).connect() as database:
        yield database


def training_state(seed: int) -> dict[str, Any]:
    stream = np.random.default_rng(seed)
    stream.normal(size=17)  # advance, so the saved state is mid-stream
    rng = np.random.default_rng(seed + 1000)
    return {
        "parameters": rng.normal(size=(3, 4)),
        "optimizer": {"name": "adam", "m": rng.normal(size=12), "v": rng.random(12), "t": 7},
        "rng": stream.bit_generator.state,  # holds 128-bit integers
        "history": {"loss": [0.9, 0.5, 0.25]},
        "config": {"lr": 0.05, "layers": 2, "tags": ("a", "b"), "none": None},
        "int32": np.arange(5, dtype=np.int32),
    }


# ---------------------------------------------------------------- checkpoints
async def test_checkpoint_round_trip_is_exact(db: QuantumDatabase) -> None:
    state = training_state(1)
    await db.checkpoints.save("run", 10, state)
    loaded = (await db.checkpoints.load("run", 10)).state
    np.testing.assert_array_equal(loaded["parameters"], state["parameters"])
    assert loaded["parameters"].dtype == np.float64
    assert loaded["int32"].dtype == np.int32
    assert loaded["optimizer"]["t"] == 7
    assert loaded["config"]["tags"] == ("a", "b")
    assert loaded["history"] == state["history"]
    # The RNG continues exactly where it was saved.
    restored = np.random.default_rng()
    restored.bit_generator.state = loaded["rng"]
    reference = np.random.default_rng(1)
    reference.normal(size=17)
    np.testing.assert_array_equal(restored.normal(size=5), reference.normal(size=5))


async def test_keep_last_n_plus_best(db: QuantumDatabase) -> None:
    losses = [5.0, 1.0, 4.0, 3.5, 3.0, 2.5]
    for step, loss in enumerate(losses):
        await db.checkpoints.save(
            "r", step, {"w": np.full(2, step)}, metric_name="loss", metric_value=loss
        )
    kept = [c.step for c in await db.checkpoints.list("r")]
    assert kept == [1, 3, 4, 5]  # last three plus the best (step 1)
    best = await db.checkpoints.best("r")
    assert best is not None and best.step == 1
    latest = await db.checkpoints.latest("r")
    assert latest is not None and latest.step == 5


async def test_a_corrupt_checkpoint_is_skipped_with_a_warning(db: QuantumDatabase) -> None:
    for step in range(3):
        await db.checkpoints.save("r", step, {"w": np.full(3, float(step))})
    async with db.registry.session() as session:
        row = await session.scalar(select(CheckpointRow).where(CheckpointRow.step == 2))
        assert row is not None
        damaged = bytearray(row.payload)
        damaged[len(damaged) // 2] ^= 0xFF
        await session.execute(
            update(CheckpointRow).where(CheckpointRow.id == row.id).values(payload=bytes(damaged))
        )
    with pytest.warns(CheckpointWarning, match="step 2"):
        latest = await db.checkpoints.latest("r")
    assert latest is not None and latest.step == 1
    np.testing.assert_array_equal(latest.state["w"], [1.0, 1.0, 1.0])
    with pytest.raises(CheckpointCorruptError):
        await db.checkpoints.load("r", 2)


async def test_checkpoint_bad_inputs_change_nothing(db: QuantumDatabase) -> None:
    await db.checkpoints.save("r", 0, {"w": np.ones(2)})
    before = await db.checkpoints.list("r")
    with pytest.raises(SerializationError, match="function"):
        await db.checkpoints.save("r", 1, {"w": np.ones(2), "fn": lambda: 0})
    with pytest.raises(SerializationError, match="object arrays"):
        await db.checkpoints.save("r", 1, {"w": np.array([object()])})
    with pytest.raises(DataValidationError):
        await db.checkpoints.save("r", -1, {"w": 1})
    with pytest.raises(DataValidationError):
        await db.checkpoints.save("r", 1, [1, 2])  # type: ignore[arg-type]
    with pytest.raises(DataValidationError):
        await db.checkpoints.save("r", 1, {"w": 1}, metric_name="loss", metric_value=float("nan"))
    with pytest.raises(InvalidNameError):
        await db.checkpoints.save("bad run id", 1, {"w": 1})
    assert await db.checkpoints.list("r") == before
    with pytest.raises(CheckpointNotFoundError):
        await db.checkpoints.load("r", 99)
    assert await db.checkpoints.latest("nobody") is None


# ---------------------------------------------------------------- models
async def test_model_versions_and_aliases(db: QuantumDatabase) -> None:
    w1 = np.random.default_rng(0).normal(size=(2, 3))
    v1 = await db.models.register(
        "clf", {"w": w1, "b": np.zeros(3)}, metrics={"acc": 0.9}, architecture={"layers": 2}
    )
    v2 = await db.models.register("clf", w1 * 2, provenance={"run": "r1"})
    assert (v1.version, v2.version) == (1, 2)
    np.testing.assert_array_equal((await db.models.get("clf", version=1)).parameters["w"], w1)
    latest = await db.models.get("clf")
    assert latest.version == 2 and set(latest.parameters) == {"weights"}
    await db.models.set_alias("clf", 1, "production")
    prod = await db.models.get("clf", alias="production")
    assert prod.version == 1 and prod.aliases == ("production",) and prod.metrics == {"acc": 0.9}
    await db.models.set_alias("clf", 2, "production")
    assert (await db.models.get("clf", alias="production")).version == 2
    assert await db.models.list_versions("clf") == [1, 2]
    assert await db.models.list() == ["clf"]


async def test_models_are_stored_as_arrays_not_pickles(db: QuantumDatabase) -> None:
    await db.models.register("m", {"w": np.arange(4.0)})
    async with db.registry.session() as session:
        blob = await session.scalar(select(ModelVersionRow.parameters))
    assert blob is not None
    with np.load(io.BytesIO(blob), allow_pickle=False) as archive:
        assert "__state__.json" in archive.files


class Registrable:
    def registry_payload(self) -> dict[str, Any]:
        return {
            "parameters": {"theta": np.ones(6)},
            "architecture": {"kind": "qnn", "qubits": 3},
            "encoding": {"encoder": "angle"},
        }


async def test_models_that_describe_themselves(db: QuantumDatabase) -> None:
    version = await db.models.register("qnn", Registrable(), metrics={"loss": 0.1})
    assert version.architecture == {"kind": "qnn", "qubits": 3}
    assert version.encoding == {"encoder": "angle"}


async def test_model_bad_inputs(db: QuantumDatabase) -> None:
    await db.models.register("m", np.ones(2))
    with pytest.raises(DataValidationError, match="NaN"):
        await db.models.register("m", np.array([1.0, np.nan]))
    with pytest.raises(DataValidationError):
        await db.models.register("m", {"w": np.array(["a"])})
    with pytest.raises(DataValidationError):
        await db.models.register("m", np.ones(2), metrics={"acc": "high"})
    with pytest.raises(InvalidNameError):
        await db.models.register("no spaces", np.ones(2))
    with pytest.raises(ModelNotFoundError):
        await db.models.get("nope")
    with pytest.raises(ModelNotFoundError):
        await db.models.get("m", version=5)
    with pytest.raises(ModelNotFoundError):
        await db.models.get("m", alias="staging")
    with pytest.raises(ModelNotFoundError):
        await db.models.set_alias("m", 9, "staging")
    with pytest.raises(DataValidationError):
        await db.models.set_alias("m", 1, "2")
    assert await db.models.list_versions("m") == [1]


# ---------------------------------------------------------------- metrics and runs
async def test_metrics_history_and_exports(db: QuantumDatabase, tmp_path: Path) -> None:
    for step in range(50):
        await db.metrics.log("run-a", {"loss": 1.0 / (step + 1), "acc": step / 50}, step=step)
    history = await db.metrics.history("run-a", "loss")
    assert history.steps.tolist() == list(range(50))
    np.testing.assert_array_equal(history.values, [1.0 / (s + 1) for s in range(50)])
    assert np.all(np.diff(history.timestamps) >= 0)
    assert await db.metrics.keys("run-a") == ["acc", "loss"]
    csv_path = await db.metrics.export("run-a", tmp_path / "m.csv")
    with csv_path.open() as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 100 and {r["key"] for r in rows} == {"acc", "loss"}
    json_path = await db.metrics.export("run-a", tmp_path / "m.json")
    records = json.loads(json_path.read_text())
    assert records[0] == {**records[0], "run_id": "run-a", "key": "acc", "step": 0}
    run = await db.runs.get("run-a")
    assert run.status == "running"


async def test_metrics_are_written_in_the_background(database_url: str) -> None:
    import asyncio

    async with (
        QuantumDatabase(database_url).connect() as writer,
        QuantumDatabase(database_url).connect() as reader,
    ):
        await writer.metrics.log("bg", {"loss": 3.0}, step=0)
        for _ in range(100):  # no explicit flush: the background task writes it
            await asyncio.sleep(0.05)
            if await reader.runs.exists("bg"):
                break
        else:
            raise AssertionError("metrics were not written in the background")


@pytest.mark.parametrize(
    ("values", "step"),
    [
        ({"loss": float("nan")}, 0),
        ({"loss": "low"}, 0),
        ({}, 0),
        ({"loss": 1.0}, -1),
        ({"": 1.0}, 0),
        ({"loss": 1.0}, 1.5),
    ],
)
async def test_metric_bad_inputs(db: QuantumDatabase, values: Any, step: Any) -> None:
    with pytest.raises(MetricError):
        await db.metrics.log("run-b", values, step=step)
    assert len(await db.metrics.history("run-b", "loss")) == 0


async def test_metric_export_format(db: QuantumDatabase, tmp_path: Path) -> None:
    with pytest.raises(MetricError):
        await db.metrics.export("r", tmp_path / "m.xlsx")
