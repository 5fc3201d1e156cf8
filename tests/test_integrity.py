"""Nothing lost, nothing corrupted: integer ranges, metric flushes, data types, dataset
versions and aborted writes, each on SQLite and PostgreSQL."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Any

import numpy as np
import pytest
from sqlalchemy import func, select, text

from backends import Circuit, ParameterValueError, SimulatorBackend
from quantum_db import (
    DataValidationError,
    InvalidNameError,
    MetricError,
    QuantumDatabase,
)
from quantum_db.datasets import DatasetStore
from quantum_db.registry.schema import (
    INT64_MAX,
    Base,
    DatasetRow,
    DatasetWriteRow,
    JobRow,
    VectorRow,
)
from quantum_db.vectorstores.base import VectorRecord
from quantum_db.vectorstores.local import LocalVectorStore


@pytest.fixture
async def db(database_url: str) -> Any:
    async with QuantumDatabase(database_url).connect() as database:
        yield database


def blobs(n: int = 24, dim: int = 3, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    return rng.normal(size=(n, dim)), np.arange(n) % 3


async def snapshot(db: QuantumDatabase) -> dict[str, list[tuple[Any, ...]]]:
    """Every row of every table (leases aside: their heartbeat moves on its own)."""
    await db.metrics.flush()
    out: dict[str, list[tuple[Any, ...]]] = {}
    async with db.registry.session() as session:
        for table in Base.metadata.sorted_tables:
            if table.name == "leases":
                continue
            rows = (await session.execute(select(table))).all()
            out[table.name] = sorted((tuple(r) for r in rows), key=repr)
    return out


async def seed_everything(db: QuantumDatabase) -> None:
    """Something in every store, so that "nothing changed" has something to compare."""
    await db.store_training_data("keep", *blobs(), metadata={"source": "test"})
    await db.models.register("m", np.ones(3), metrics={"acc": 0.5})
    await db.models.set_alias("m", 1, "production")
    await db.checkpoints.save("run", 3, {"w": np.arange(3.0)})
    await db.metrics.log("run", {"loss": 0.5}, step=3)
    await db.runs.create("seeded", seed=7, config={"lr": 0.1})


async def refused(db: QuantumDatabase, call: Any, error: type[Exception], match: str) -> None:
    """``call()`` raises ``error`` (matching ``match``) and leaves every table as it was."""
    before = await snapshot(db)
    with pytest.raises(error, match=match):
        result = call()
        if asyncio.iscoroutine(result):
            await result
    assert await snapshot(db) == before


# ---------------------------------------------------------------- 1. integer ranges
BIG = 2**63  # one past what a signed 64-bit column stores
OUT_OF_RANGE: list[tuple[str, Any, type[Exception], str]] = [
    ("metric-step", lambda db: db.metrics.log("run", {"loss": 1.0}, step=BIG), MetricError, "<="),
    ("metric-step-huge", lambda db: db.metrics.log("run", {"x": 1.0}, 2**80), MetricError, "64"),
    ("checkpoint-step", lambda db: db.checkpoints.save("run", BIG, {"w": 1}), DataValidationError,
     "64-bit"),
    ("checkpoint-load", lambda db: db.checkpoints.load("run", BIG), DataValidationError, "step"),
    ("model-version", lambda db: db.models.get("m", version=BIG), DataValidationError, "version"),
    ("alias-target", lambda db: db.models.set_alias("m", BIG, "staging"), DataValidationError,
     "version"),
    ("alias-target-zero", lambda db: db.models.set_alias("m", 0, "staging"), DataValidationError,
     ">= 1"),
    ("run-seed", lambda db: db.runs.create("r2", seed=BIG), DataValidationError, "seed"),
    ("run-seed-negative", lambda db: db.runs.create("r2", seed=-1), DataValidationError, ">= 0"),
    ("split-seed", lambda db: db.store_training_data("keep", *blobs(seed=1), split_seed=BIG),
     DataValidationError, "split_seed"),
    ("split-seed-negative",
     lambda db: db.store_training_data("keep", *blobs(seed=1), split_seed=-3),
     DataValidationError, "split_seed"),
    ("split-seed-float",
     lambda db: db.store_training_data("keep", *blobs(seed=1), split_seed=1.5),
     DataValidationError, "integer"),
    ("dataset-version", lambda db: db.get_dataset("keep", version=BIG), DataValidationError,
     "version"),
    ("loader-seed", lambda db: db.create_ml_data_loader("keep", seed=-1), DataValidationError,
     "seed"),
    ("loader-seed-big", lambda db: db.create_ml_data_loader("keep", seed=BIG),
     DataValidationError, "seed"),
]  # fmt: skip


@pytest.mark.parametrize(
    ("case", "call", "error", "match"), OUT_OF_RANGE, ids=[c[0] for c in OUT_OF_RANGE]
)
async def test_out_of_range_integers_are_refused_before_the_database(
    db: QuantumDatabase, case: str, call: Any, error: type[Exception], match: str
) -> None:
    await seed_everything(db)
    await refused(db, lambda: call(db), error, match)
    assert issubclass(error, ValueError)


async def test_a_refused_step_does_not_block_later_metrics(db: QuantumDatabase) -> None:
    await db.metrics.log("run", {"loss": 1.0}, step=0)
    with pytest.raises(MetricError, match="step"):
        await db.metrics.log("run", {"loss": 2.0}, step=2**63)
    await db.metrics.log("run", {"loss": 3.0}, step=1)
    history = await db.metrics.history("run", "loss")
    assert history.steps.tolist() == [0, 1]
    assert history.values.tolist() == [1.0, 3.0]
    assert db.metrics.rejected == []


async def test_the_64_bit_limits_themselves_are_stored_exactly(db: QuantumDatabase) -> None:
    await db.metrics.log("edge", {"loss": 1.0}, step=INT64_MAX)
    assert (await db.metrics.history("edge", "loss")).steps.tolist() == [INT64_MAX]
    await db.checkpoints.save("edge", INT64_MAX, {"w": np.ones(2)})
    assert (await db.checkpoints.load("edge", INT64_MAX)).step == INT64_MAX
    assert (await db.runs.create("edge-seed", seed=INT64_MAX)).seed == INT64_MAX
    assert (await db.runs.get("edge-seed")).seed == INT64_MAX
    info = await db.store_training_data("edge", *blobs(), split_seed=INT64_MAX)
    assert (await db.get_dataset("edge")).info.splits["seed"] == INT64_MAX == info.splits["seed"]
    loader = db.create_ml_data_loader("edge", seed=INT64_MAX)
    assert sum([len(x) async for x, _ in loader]) == 24


# ---------------------------------------------------------------- 2. metric flushes
async def refuse_metric_key(db: QuantumDatabase, key: str) -> None:
    """Make the database itself refuse every metric row named ``key`` (a real trigger)."""
    async with db.registry.session() as session:
        if db.registry.dialect == "sqlite":
            await session.execute(
                text(
                    "CREATE TRIGGER refuse_key BEFORE INSERT ON metrics "
                    f"WHEN NEW.key = '{key}' BEGIN SELECT RAISE(ABORT, 'refused by test'); END"
                )
            )
        else:
            await session.execute(
                text(
                    "CREATE FUNCTION refuse_key() RETURNS trigger AS $$ BEGIN "
                    f"IF NEW.key = '{key}' THEN RAISE EXCEPTION 'refused by test' "
                    "USING ERRCODE = 'check_violation'; END IF; RETURN NEW; END $$ "
                    "LANGUAGE plpgsql"
                )
            )
            await session.execute(
                text(
                    "CREATE TRIGGER refuse_key BEFORE INSERT ON metrics "
                    "FOR EACH ROW EXECUTE FUNCTION refuse_key()"
                )
            )


async def test_a_refused_row_is_isolated_reported_and_never_blocks_the_rest(
    db: QuantumDatabase,
) -> None:
    await refuse_metric_key(db, "poison")
    await db.metrics.log("run", {"loss": 1.0}, step=0)
    await db.metrics.log("run", {"poison": 5.0, "acc": 0.1}, step=1)
    for step in range(2, 40):
        await db.metrics.log("run", {"loss": 1.0 / step}, step=step)
    with pytest.raises(MetricError, match=r"refused 1 metric value.*'poison' at step 1"):
        await db.metrics.flush()
    assert [(r.run_id, r.key, r.step, r.value) for r in db.metrics.rejected] == [
        ("run", "poison", 1, 5.0)
    ]
    assert "IntegrityError" in db.metrics.rejected[0].reason
    assert await db.metrics.flush() == 0  # reported once, not again
    history = await db.metrics.history("run", "loss")
    assert history.steps.tolist() == [0, *range(2, 40)]
    assert (await db.metrics.history("run", "acc")).values.tolist() == [0.1]
    assert len(await db.metrics.history("run", "poison")) == 0
    # Logging goes on as before.
    await db.metrics.log("run", {"loss": 0.01}, step=40)
    assert (await db.metrics.history("run", "loss")).steps[-1] == 40


async def test_a_refused_row_is_raised_at_close_and_the_rest_is_kept(database_url: str) -> None:
    with pytest.raises(MetricError, match="poison"):
        async with QuantumDatabase(database_url).connect() as db:
            await refuse_metric_key(db, "poison")
            for step in range(30):
                values = {"poison": 1.0} if step == 7 else {"loss": float(step)}
                await db.metrics.log("run", values, step=step)
    async with QuantumDatabase(database_url).connect() as db:
        history = await db.metrics.history("run", "loss")
        assert history.steps.tolist() == [s for s in range(30) if s != 7]


async def test_an_unstorable_buffered_row_never_escapes_as_overflow_error(
    database_url: str,
) -> None:
    # The row of the original defect: a step past 64 bits that reached the buffer (``log``
    # refuses it now, so it is put there directly). Closing raised a raw OverflowError
    # and every later metric of the connection was lost.
    with pytest.raises(MetricError, match="step 9223372036854775808"):
        async with QuantumDatabase(database_url).connect() as db:
            await db.metrics.log("run", {"loss": 0.0}, step=0)
            db.metrics._buffer.append(
                {"run_id": "run", "key": "loss", "step": 2**63, "value": 1.0, "timestamp": 0.0}
            )
            for step in range(1, 5):
                await db.metrics.log("run", {"loss": float(step)}, step=step)
    async with QuantumDatabase(database_url).connect() as db:
        assert (await db.metrics.history("run", "loss")).steps.tolist() == [0, 1, 2, 3, 4]


# ---------------------------------------------------------------- 3. untyped -> typed
UNTYPED: list[tuple[str, Any, type[Exception], str]] = [
    ("checkpoint-metric-text",
     lambda db: db.checkpoints.save("run", 4, {"w": 1}, metric_name="loss", metric_value="low"),
     DataValidationError, "metric_value must be a number"),
    ("checkpoint-metric-object",
     lambda db: db.checkpoints.save("run", 4, {"w": 1}, metric_name="loss", metric_value=[1]),
     DataValidationError, "metric_value"),
    ("checkpoint-metric-name-long",
     lambda db: db.checkpoints.save("run", 4, {"w": 1}, metric_name="x" * 129, metric_value=1),
     DataValidationError, "128"),
    ("metric-timestamp-text",
     lambda db: db.metrics.log("run", {"loss": 1.0}, step=4, timestamp="noon"),
     MetricError, "timestamp must be a number"),
    ("metric-timestamp-nan",
     lambda db: db.metrics.log("run", {"loss": 1.0}, step=4, timestamp=float("nan")),
     MetricError, "timestamp is nan"),
    ("metric-value-overflow",
     lambda db: db.metrics.log("run", {"loss": 10**400}, step=4), MetricError, "number"),
    ("model-metric-overflow",
     lambda db: db.models.register("m", np.ones(3), metrics={"acc": 10**400}),
     DataValidationError, "number"),
    ("alias-too-long", lambda db: db.models.set_alias("m", 1, "a" * 65), InvalidNameError, "64"),
    ("run-backend-long", lambda db: db.runs.create("r3", backend="b" * 129), DataValidationError,
     "128"),
]  # fmt: skip


@pytest.mark.parametrize(("case", "call", "error", "match"), UNTYPED, ids=[c[0] for c in UNTYPED])
async def test_bad_values_get_typed_errors(
    db: QuantumDatabase, case: str, call: Any, error: type[Exception], match: str
) -> None:
    await seed_everything(db)
    await refused(db, lambda: call(db), error, match)


def one_qubit() -> Circuit:
    return Circuit(1).ry(0.3, 0).measure_all()


@pytest.mark.parametrize("seed", [-1, 2**63, 2**64])
async def test_a_bad_seed_is_refused_before_a_job_is_recorded(
    db: QuantumDatabase, seed: int
) -> None:
    await db.backend_manager.run(one_qubit(), shots=16, seed=1, backend="simulator")
    await db.backend_manager.flush_jobs()  # a free local job is recorded with the next batch
    before = await snapshot(db)
    with pytest.raises(ParameterValueError, match=r"seed must be in \[0, 2\*\*63 - 1\]"):
        await db.backend_manager.run(one_qubit(), shots=16, seed=seed, backend="simulator")
    await db.backend_manager.flush_jobs()
    assert await snapshot(db) == before
    async with db.registry.session() as session:
        statuses = (await session.scalars(select(JobRow.status))).all()
    assert statuses == ["completed"]  # no `failed` row for a call that was never valid
    with pytest.raises(ParameterValueError, match="seed"):
        await SimulatorBackend().run(one_qubit(), observables="Z", shots=8, seed=seed)


# ---------------------------------------------------------------- 4. data types
def uint64_labels() -> np.ndarray:
    labels = (np.arange(24) % 3).astype(np.uint64)
    labels[5] = np.uint64(2**63 + 5)
    return labels


DATA_TYPES: list[tuple[str, dict[str, Any], str]] = [
    ("complex-data", {"data": blobs()[0] + 1j}, "complex"),
    ("complex-list", {"data": [[1 + 2j, 0.0]] * 24}, "complex"),
    ("object-data", {"data": np.array([[1.0, 2.0, object()]] * 24, dtype=object)}, "object"),
    ("object-numbers", {"data": blobs()[0].astype(object)}, "object"),
    ("datetime-data", {"data": np.zeros((24, 3), dtype="datetime64[s]")}, "numeric"),
    ("uint64-labels", {"labels": uint64_labels()}, r"labels\[5\] is 9223372036854775813"),
    ("complex-labels", {"labels": np.arange(24) + 0j}, "complex128"),
    ("object-labels", {"labels": np.array([0, 1, None] * 8, dtype=object)}, "object"),
    ("nan-metadata", {"metadata": {"source": "x", "score": float("nan")}}, r"\['score'\] is nan"),
    ("inf-nested-metadata", {"metadata": {"stats": {"max": [1.0, float("inf")]}}},
     r"metadata\['stats'\]\['max'\]\[1\] is inf"),
    ("np-nan-metadata", {"metadata": {"v": np.float32("nan")}}, r"\['v'\] is nan"),
    ("int-key-metadata", {"metadata": {1: "one"}}, "keys must be strings"),
    ("nan-encoding", {"encoding": {"encoder": "angle", "gain": float("nan")}},
     r"encoding\['gain'\] is nan"),
]  # fmt: skip


@pytest.mark.parametrize(("case", "change", "match"), DATA_TYPES, ids=[c[0] for c in DATA_TYPES])
async def test_data_that_would_be_damaged_is_refused_identically(
    db: QuantumDatabase, case: str, change: dict[str, Any], match: str
) -> None:
    await seed_everything(db)
    data, labels = blobs(seed=2)
    args: dict[str, Any] = {"data": data, "labels": labels, **change}
    await refused(
        db,
        lambda: db.store_training_data(
            "keep",
            args["data"],
            args["labels"],
            args.get("metadata"),
            encoding=args.get("encoding"),
        ),
        DataValidationError,
        match,
    )


async def test_uint64_labels_within_range_are_kept_exactly(db: QuantumDatabase) -> None:
    labels = (np.arange(24) % 3).astype(np.uint64) + np.uint64(2**62)
    await db.store_training_data("big-labels", blobs()[0], labels)
    stored = await db.get_dataset("big-labels")
    assert stored.labels.tolist() == labels.astype(np.int64).tolist()
    assert int(stored.labels.min()) == 2**62


JSON_HOLES: list[tuple[str, Any, str]] = [
    ("model-provenance", lambda db: db.models.register(
        "m", np.ones(3), provenance={"loss": float("nan")}), r"provenance\['loss'\] is nan"),
    ("model-architecture", lambda db: db.models.register(
        "m", np.ones(3), architecture={"scale": [float("-inf")]}),
     r"architecture\['scale'\]\[0\] is -inf"),
    ("model-encoding", lambda db: db.models.register(
        "m", np.ones(3), encoding={"shift": float("inf")}), r"encoding\['shift'\] is inf"),
    ("model-metric", lambda db: db.models.register(
        "m", np.ones(3), metrics={"acc": float("nan")}), "finite"),
    ("run-config", lambda db: db.runs.create("r4", config={"lr": float("nan")}),
     r"run config\['lr'\] is nan"),
    ("complex-parameters", lambda db: db.models.register("m", np.ones(3) * 1j), "numeric"),
]  # fmt: skip


@pytest.mark.parametrize(("case", "call", "match"), JSON_HOLES, ids=[c[0] for c in JSON_HOLES])
async def test_non_finite_json_is_refused_identically(
    db: QuantumDatabase, case: str, call: Any, match: str
) -> None:
    await seed_everything(db)
    await refused(db, lambda: call(db), DataValidationError, match)


async def test_checkpoint_state_keeps_non_finite_values_exactly(db: QuantumDatabase) -> None:
    # Checkpoint state is not JSON in a column: NaN, infinities and complex arrays are
    # legitimate state and read back bit for bit on both dialects.
    state = {"best": float("inf"), "last": float("nan"), "z": np.array([1 + 2j, np.nan])}
    await db.checkpoints.save("run", 1, state)
    loaded = (await db.checkpoints.load("run", 1)).state
    assert loaded["best"] == float("inf") and np.isnan(loaded["last"])
    np.testing.assert_array_equal(loaded["z"], state["z"])


# ---------------------------------------------------------------- 5. dataset versions
async def test_storing_the_latest_content_again_returns_that_version(db: QuantumDatabase) -> None:
    data, labels = blobs()
    first = await db.store_training_data("d", data, labels, {"source": "a"}, split_seed=3)
    before = await snapshot(db)
    again = await db.store_training_data(
        "d", data.copy(), labels.tolist(), {"source": "a"}, split_seed=3
    )
    assert again == first
    assert await snapshot(db) == before  # nothing written, not even a write record
    forced = await db.store_training_data(
        "d", data, labels, {"source": "a"}, split_seed=3, new_version=True
    )
    assert forced.version == 2 and forced.content_hash == first.content_hash
    np.testing.assert_array_equal((await db.get_dataset("d", 2)).data, data)


@pytest.mark.parametrize(
    "change",
    [
        {"metadata": {"source": "b"}},
        {"split_seed": 4},
        {"splits": {"train": 0.5, "validation": 0.25, "test": 0.25}},
        {"encoding": {"scaling": "standard"}},
        {"data": blobs()[0] * 2},
        {"labels": (np.arange(24) + 1) % 3},
        {"labels": (np.arange(24) % 3).astype(np.float64)},  # regression targets now
    ],
    ids=["metadata", "split-seed", "fractions", "encoding", "data", "labels", "label-dtype"],
)
async def test_any_difference_makes_a_new_version(
    db: QuantumDatabase, change: dict[str, Any]
) -> None:
    data, labels = blobs()
    base: dict[str, Any] = {"data": data, "labels": labels, "metadata": {"source": "a"}}
    first = await db.store_training_data("d", base["data"], base["labels"], base["metadata"])
    args = {**base, **change}
    second = await db.store_training_data(
        "d",
        args.pop("data"),
        args.pop("labels"),
        args.pop("metadata"),
        **args,
    )
    assert (first.version, second.version) == (1, 2)


async def test_only_the_latest_version_is_compared(db: QuantumDatabase) -> None:
    a, b = blobs(seed=1), blobs(seed=2)
    assert (await db.store_training_data("d", *a)).version == 1
    assert (await db.store_training_data("d", *b)).version == 2
    assert (await db.store_training_data("d", *a)).version == 3  # back to a: a new version
    assert (await db.store_training_data("d", *a)).version == 3


async def test_concurrent_identical_stores_make_one_version(db: QuantumDatabase) -> None:
    data, labels = blobs(n=200)
    infos = await asyncio.gather(*[db.store_training_data("c", data, labels) for _ in range(4)])
    assert {i.version for i in infos} == {1}
    assert await db.vector_store.count() == 200  # the losers' samples were deleted
    async with db.registry.session() as session:
        assert await session.scalar(select(func.count()).select_from(DatasetWriteRow)) == 0


# ---------------------------------------------------------------- 6. aborted writes
class FailingStore(LocalVectorStore):
    """The real local store, made to fail its ``fail_on``-th upsert (a lost connection).

    Before each upsert it records which write records are committed, as another
    connection sees them.
    """

    def __init__(self, *args: Any, fail_on: int, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.fail_on = fail_on
        self.upserts = 0
        self.seen: list[list[tuple[str, str, str | None]]] = []

    async def upsert(self, records: Sequence[VectorRecord], *, namespace: str = "") -> int:
        async with self.registry.session() as session:
            rows = (await session.scalars(select(DatasetWriteRow))).all()
        self.seen.append([(r.namespace, r.dataset_name, r.owner_id) for r in rows])
        self.upserts += 1
        if self.upserts == self.fail_on:
            raise ConnectionResetError("the vector store went away")
        return await super().upsert(records, namespace=namespace)


async def namespaces_with_samples(db: QuantumDatabase) -> set[str]:
    async with db.registry.session() as session:
        return set((await session.scalars(select(VectorRow.namespace).distinct())).all())


async def test_a_write_records_its_namespace_until_the_version_commits(
    db: QuantumDatabase, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("quantum_db.datasets._WRITE_BATCH", 10)
    store = FailingStore(db.registry, fail_on=0)
    datasets = DatasetStore(db.registry, store, owner_id="lease-1")
    info = await datasets.store("w", *blobs(n=25))
    assert store.upserts == 3
    # Each batch was written while the write record was committed, naming the namespace.
    assert store.seen == [[(info.namespace, "w", "lease-1")]] * 3
    async with db.registry.session() as session:
        assert (await session.scalars(select(DatasetWriteRow))).all() == []
    assert await namespaces_with_samples(db) == {info.namespace}


@pytest.mark.parametrize("fail_on", [1, 3])
async def test_a_failed_write_removes_its_samples_and_its_record(
    db: QuantumDatabase, monkeypatch: pytest.MonkeyPatch, fail_on: int
) -> None:
    await seed_everything(db)
    monkeypatch.setattr("quantum_db.datasets._WRITE_BATCH", 10)
    store = FailingStore(db.registry, fail_on=fail_on)
    datasets = DatasetStore(db.registry, store, owner_id="lease-2")
    before = await snapshot(db)
    with pytest.raises(ConnectionResetError):
        await datasets.store("keep", *blobs(n=40, seed=5))
    assert await snapshot(db) == before
    assert [len(s) for s in store.seen] == [1] * fail_on


async def test_a_cancelled_write_removes_its_samples_and_its_record(
    db: QuantumDatabase, monkeypatch: pytest.MonkeyPatch
) -> None:
    await seed_everything(db)
    monkeypatch.setattr("quantum_db.datasets._WRITE_BATCH", 10)
    reached = asyncio.Event()

    class Stalling(LocalVectorStore):
        async def upsert(self, records: Sequence[VectorRecord], *, namespace: str = "") -> int:
            written = await super().upsert(records, namespace=namespace)
            reached.set()
            await asyncio.Event().wait()  # until cancelled
            return written

    before = await snapshot(db)
    task = asyncio.create_task(
        DatasetStore(db.registry, Stalling(db.registry)).store("keep", *blobs(n=40, seed=6))
    )
    await reached.wait()
    async with db.registry.session() as session:
        assert await session.scalar(select(func.count()).select_from(DatasetWriteRow)) == 1
        assert await session.scalar(select(func.count()).select_from(DatasetRow)) == 1
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert await snapshot(db) == before
