"""QuantumDatabase end to end: datasets, loaders, lifecycle, bad inputs, concurrency."""

from __future__ import annotations

import asyncio
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from quantum_db import (
    ConfigurationError,
    DatasetNotFoundError,
    DataShapeError,
    DataValidationError,
    EmptyDatasetError,
    InvalidNameError,
    NonFiniteDataError,
    NotConnectedError,
    QuantumDatabase,
)

ROOT = Path(__file__).resolve().parent.parent


def blobs(n: int = 90, dim: int = 4, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    labels = np.arange(n) % 3
    data = rng.normal(size=(n, dim)) + labels[:, None]
    return data, labels


@pytest.fixture
async def db(database_url: str) -> Any:
    async with QuantumDatabase(database_url).connect() as database:
        yield database


async def snapshot(db: QuantumDatabase) -> tuple[Any, int]:
    """What is stored: dataset infos and the total number of vectors."""
    return await db.list_datasets(), await db.vector_store.count()


async def test_store_and_read_back_exactly(db: QuantumDatabase) -> None:
    data, labels = blobs()
    info = await db.store_training_data("blobs", data, labels, metadata={"source": "test"})
    assert (info.name, info.version, info.n_samples, info.dim) == ("blobs", 1, 90, 4)
    assert info.label_kind == "class"
    assert info.n_classes == 3
    assert info.metadata == {"source": "test"}
    assert info.encoding["encoder"] == "angle"
    np.testing.assert_array_equal(info.encoding["feature_min"], data.min(axis=0))
    stored = await db.get_dataset("blobs")
    np.testing.assert_array_equal(stored.data, data)  # bit for bit
    np.testing.assert_array_equal(stored.labels, labels)
    assert stored.labels.dtype == np.int64
    listed = await db.list_datasets()
    assert [(d.name, d.version) for d in listed] == [("blobs", 1)]


async def test_versions_and_regression_targets(db: QuantumDatabase) -> None:
    data, _ = blobs()
    targets = data.sum(axis=1)
    first = await db.store_training_data("reg", data, targets)
    second = await db.store_training_data("reg", data * 2, targets * 2)
    assert (first.version, second.version) == (1, 2)
    assert second.label_kind == "regression"
    assert first.content_hash != second.content_hash
    old = await db.get_dataset("reg", version=1)
    np.testing.assert_array_equal(old.labels, targets)
    latest = await db.get_dataset("reg")
    assert latest.info.version == 2


async def test_splits_are_seeded_and_stratified(db: QuantumDatabase) -> None:
    data, labels = blobs(n=300)
    a = await db.store_training_data("s", data, labels, split_seed=4)
    b = await db.store_training_data("s", data, labels, split_seed=4, new_version=True)
    c = await db.store_training_data("s", data, labels, split_seed=5)
    da, db_, dc = [await db.get_dataset("s", v) for v in (1, 2, 3)]
    assert a.splits["counts"] == {"train": 240, "validation": 30, "test": 30}
    np.testing.assert_array_equal(da.split, db_.split)
    assert not np.array_equal(da.split, dc.split)
    for cls in range(3):  # stratified: each class is 80/10/10 on its own
        assert np.count_nonzero((da.labels == cls) & (da.split == "test")) == 10
    assert b.splits == a.splits
    assert c.splits["seed"] == 5


BAD_INPUTS: list[tuple[str, Any, Any, type[Exception], str]] = [
    ("nan", [[0.0, float("nan")]], [0], NonFiniteDataError, r"data\[0, 1\]"),
    ("inf", [[0.0, 1.0], [float("inf"), 1.0]], [0, 1], NonFiniteDataError, "finite"),
    ("ragged", [[0.0, 1.0], [1.0]], [0, 1], DataShapeError, "ragged"),
    ("one-d", [0.0, 1.0, 2.0], [0, 1, 2], DataShapeError, "reshape"),
    ("three-d", np.zeros((2, 2, 2)), [0, 1], DataShapeError, "2-D"),
    ("empty", np.zeros((0, 3)), [], EmptyDatasetError, "no samples"),
    ("no-features", np.zeros((3, 0)), [0, 1, 2], EmptyDatasetError, "no features"),
    ("too-few-labels", np.zeros((3, 2)), [0, 1], DataShapeError, "one label per sample"),
    ("label-nan", np.zeros((2, 2)), [0.5, float("nan")], NonFiniteDataError, "labels"),
    ("label-strings", np.zeros((2, 2)), ["a", "b"], DataValidationError, "integers"),
    ("text-data", [["a", "b"]], [0], DataValidationError, "numeric"),
]


@pytest.mark.parametrize(
    ("case", "data", "labels", "error", "match"), BAD_INPUTS, ids=[c[0] for c in BAD_INPUTS]
)
async def test_bad_data_is_refused_and_changes_nothing(
    db: QuantumDatabase, case: str, data: Any, labels: Any, error: type[Exception], match: str
) -> None:
    await db.store_training_data("keep", *blobs(n=12))
    before = await snapshot(db)
    with pytest.raises(error, match=match):
        await db.store_training_data("keep", data, labels)
    assert await snapshot(db) == before


async def test_dimension_must_match_earlier_versions(db: QuantumDatabase) -> None:
    await db.store_training_data("dim", *blobs(dim=4))
    before = await snapshot(db)
    with pytest.raises(DataShapeError, match="4 features"):
        await db.store_training_data("dim", *blobs(dim=5))
    assert await snapshot(db) == before


@pytest.mark.parametrize("name", ["", "has space", "../etc", "x" * 200, "-lead", 7])
async def test_bad_names(db: QuantumDatabase, name: Any) -> None:
    with pytest.raises(InvalidNameError):
        await db.store_training_data(name, *blobs(n=6))
    assert await db.list_datasets() == []


@pytest.mark.parametrize(
    "splits",
    [{"train": 0.5}, {"train": 0.9, "test": 0.2}, {"train": 1.2, "test": -0.2}, {"training": 1.0}],
)
async def test_bad_split_fractions(db: QuantumDatabase, splits: dict[str, float]) -> None:
    with pytest.raises(DataValidationError):
        await db.store_training_data("x", *blobs(n=6), splits=splits)
    assert await snapshot(db) == ([], 0)


async def test_metadata_must_be_json(db: QuantumDatabase) -> None:
    with pytest.raises(DataValidationError, match="JSON"):
        await db.store_training_data("x", *blobs(n=6), metadata={"f": object()})
    assert await snapshot(db) == ([], 0)


async def test_unknown_dataset(db: QuantumDatabase) -> None:
    await db.store_training_data("known", *blobs(n=6))
    with pytest.raises(DatasetNotFoundError, match="known"):
        await db.get_dataset("unknown")
    with pytest.raises(DatasetNotFoundError):
        await db.get_dataset("known", version=7)
    with pytest.raises(DatasetNotFoundError):
        await db.delete_dataset("unknown")
    loader = db.create_ml_data_loader("unknown")
    with pytest.raises(DatasetNotFoundError):
        await loader.load()


async def test_delete_frees_the_samples(db: QuantumDatabase) -> None:
    await db.store_training_data("a", *blobs(n=30))
    await db.store_training_data("b", *blobs(n=20))
    await db.store_training_data("b", *blobs(n=10))
    assert await db.vector_store.count() == 60
    assert await db.delete_dataset("b", version=1) == 1
    assert await db.vector_store.count() == 40
    assert await db.delete_dataset("b") == 1
    assert [d.name for d in await db.list_datasets()] == ["a"]
    assert await db.vector_store.count() == 30


# ---------------------------------------------------------------- loaders
async def test_loader_visits_every_sample_once_per_epoch(db: QuantumDatabase) -> None:
    n = 103
    data = np.column_stack([np.arange(n, dtype=float), np.zeros(n)])  # column 0 is the row id
    await db.store_training_data("ids", data, np.arange(n) % 2)
    loader = db.create_ml_data_loader("ids", batch_size=10, shuffle=True, seed=3)
    orders = []
    for _ in range(3):
        seen: list[int] = []
        async for x, y in loader:
            assert x.shape[1] == 2
            assert x.shape[0] == y.shape[0] <= 10
            np.testing.assert_array_equal(y, x[:, 0].astype(int) % 2)
            seen.extend(x[:, 0].astype(int).tolist())
        assert sorted(seen) == list(range(n))
        orders.append(seen)
    assert orders[0] != orders[1] != orders[2]
    assert len(loader) == 11
    again = db.create_ml_data_loader("ids", batch_size=10, shuffle=True, seed=3)
    replay: list[int] = []
    async for x, _ in again:
        replay.extend(x[:, 0].astype(int).tolist())
    assert replay == orders[0]
    again.set_epoch(2)
    replay = []
    async for x, _ in again:
        replay.extend(x[:, 0].astype(int).tolist())
    assert replay == orders[2]


async def test_loader_splits_drop_last_and_no_shuffle(db: QuantumDatabase) -> None:
    data, labels = blobs(n=90)
    await db.store_training_data("b", data, labels)
    train = db.create_ml_data_loader("b", batch_size=16, split="train", drop_last=True, seed=1)
    sizes = [x.shape[0] async for x, _ in train]
    assert sizes == [16, 16, 16, 16]  # 72 train samples, the last 8 dropped
    test = db.create_ml_data_loader("b", batch_size=100, split="test", shuffle=False)
    (batch,) = [b async for b in test]
    stored = await db.get_dataset("b")
    x_test, _ = stored.subset("test")
    np.testing.assert_array_equal(batch[0], x_test)
    with pytest.raises(DataValidationError):
        db.create_ml_data_loader("b", split="holdout")
    with pytest.raises(DataValidationError):
        db.create_ml_data_loader("b", batch_size=0)


async def test_torch_adapter_dtypes_and_shapes_after_close(database_url: str) -> None:
    import torch

    data, labels = blobs(n=50, dim=3)
    async with QuantumDatabase(database_url).connect() as db:
        await db.store_training_data("t", data, labels)
        train = db.create_ml_data_loader("t", batch_size=8, seed=2, split=None)
        # Never iterated inside the connection: it is read when the connection closes.
    batches = list(train.as_torch())
    assert len(batches) == 7
    x, y = batches[0]
    assert x.dtype == torch.float32 and x.shape == (8, 3)
    assert y.dtype == torch.int64 and y.shape == (8,)
    assert sum(b[0].shape[0] for b in batches) == 50
    second_epoch = [b[1].tolist() for b in train.as_torch()]
    assert second_epoch != [b[1].tolist() for b in batches]


async def test_not_connected(database_url: str) -> None:
    db = QuantumDatabase(database_url)
    with pytest.raises(NotConnectedError, match=r"async with db\.connect"):
        await db.list_datasets()
    with pytest.raises(NotConnectedError):
        _ = db.models


async def test_closes_on_error_and_reconnects(database_url: str) -> None:
    db = QuantumDatabase(database_url)
    with pytest.raises(RuntimeError, match="boom"):
        async with db.connect():
            await db.metrics.log("r1", {"loss": 1.0}, step=0)
            raise RuntimeError("boom")
    assert not db.connected
    async with db.connect():
        history = await db.metrics.history("r1", "loss")
        assert history.values.tolist() == [1.0]  # flushed on the way out


async def test_closes_on_cancellation(database_url: str) -> None:
    db = QuantumDatabase(database_url)
    entered = asyncio.Event()

    async def work() -> None:
        async with db.connect():
            await db.metrics.log("r2", {"loss": 2.0}, step=1)
            entered.set()
            await asyncio.sleep(60)

    task = asyncio.create_task(work())
    await entered.wait()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert not db.connected
    async with db.connect():
        assert (await db.metrics.history("r2", "loss")).values.tolist() == [2.0]


async def test_concurrent_writers_get_distinct_versions(db: QuantumDatabase) -> None:
    data, labels = blobs(n=40)
    infos = await asyncio.gather(
        *(db.store_training_data("c", data, labels, new_version=True) for _ in range(4))
    )
    assert sorted(i.version for i in infos) == [1, 2, 3, 4]


def test_default_url_is_a_sqlite_file_in_the_cwd(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("QDB_DATABASE_URL", raising=False)
    db = QuantumDatabase()
    assert db.url == f"sqlite+aiosqlite:///{tmp_path / 'quantum_db.sqlite'}"
    monkeypatch.setenv("QDB_DATABASE_URL", "sqlite+aiosqlite:///elsewhere.sqlite")
    assert QuantumDatabase().url == "sqlite+aiosqlite:///elsewhere.sqlite"


def test_bad_configuration() -> None:
    with pytest.raises(ConfigurationError):
        QuantumDatabase("sqlite:///x.db", vector_store="faiss")


async def test_bad_url_is_a_configuration_error() -> None:
    with pytest.raises(ConfigurationError):
        async with QuantumDatabase("mysql+nothing://x").connect():
            pass


def test_password_never_shown() -> None:
    db = QuantumDatabase("postgresql+asyncpg://user:hunter2@127.0.0.1/db")
    assert "hunter2" not in repr(db)


WRITER = """
import asyncio, sys
import numpy as np
from quantum_db import QuantumDatabase

async def main(url, k):
    async with QuantumDatabase(url).connect() as db:
        rng = np.random.default_rng(k)
        for i in range(5):
            await db.store_training_data("shared", rng.normal(size=(200, 3)), np.arange(200) % 2)
            await db.metrics.log(f"run-{k}", {"loss": float(i)}, step=i)
            await db.checkpoints.save(f"run-{k}", i, {"w": rng.normal(size=8)})
asyncio.run(main(sys.argv[1], int(sys.argv[2])))
"""


async def test_writers_in_several_processes_do_not_fail(tmp_path: Path) -> None:
    """SQLite in WAL mode with BEGIN IMMEDIATE: concurrent processes queue, never fail."""
    url = f"sqlite+aiosqlite:///{tmp_path / 'shared.sqlite'}"
    async with QuantumDatabase(url).connect():
        pass  # create the schema once
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", WRITER, url, str(k)], cwd=ROOT, stderr=subprocess.PIPE, text=True
        )
        for k in range(3)
    ]
    errors = []
    try:
        for p in procs:
            _, err = p.communicate(timeout=240)
            errors.append((p.returncode, err))
    finally:
        for p in procs:  # never leave a writer (or its pipe) behind, even when one failed
            p.kill()
            p.wait()
            if p.stderr is not None:
                p.stderr.close()
    assert [code for code, _ in errors] == [0, 0, 0], errors
    async with QuantumDatabase(url).connect() as db:
        versions = [d.version for d in await db.list_datasets()]
        assert versions == list(range(1, 16))
        for k in range(3):
            assert (await db.metrics.history(f"run-{k}", "loss")).values.tolist() == [0, 1, 2, 3, 4]


async def test_datasets_on_pinecone(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The same dataset API over the real pinecone client and the loopback emulator."""
    from quantum_db import Settings

    from .pinecone_emulator import PineconeEmulator

    for name in ("PINECONE_API_KEY", "PINECONE_CONTROLLER_HOST"):
        monkeypatch.delenv(name, raising=False)
    data, labels = blobs(n=90, dim=4)
    with PineconeEmulator(api_key="test-key") as emulator:
        emulator.create_index("qdb", dimension=4, metric="cosine")
        settings = Settings(
            pinecone_api_key="test-key",
            pinecone_controller_host=emulator.url,
            pinecone_index="qdb",
            vector_store="pinecone",
        )
        url = f"sqlite+aiosqlite:///{tmp_path / 'reg.sqlite'}"
        async with QuantumDatabase(url, settings=settings).connect() as db:
            info = await db.store_training_data("p", data, labels)
            stored = await db.get_dataset("p")
            # Pinecone keeps float32 values; labels and splits travel in metadata.
            np.testing.assert_array_equal(stored.data, data.astype(np.float32).astype(np.float64))
            np.testing.assert_array_equal(stored.labels, labels)
            assert stored.info.splits == info.splits
            loader = db.create_ml_data_loader("p", batch_size=32, seed=1, split="train")
            assert sum([x.shape[0] async for x, _ in loader]) == 72
            before = await db.vector_store.count()
            with pytest.raises(DataShapeError):
                await db.store_training_data("p", np.zeros((3, 5)), [0, 1, 2])
            assert await db.vector_store.count() == before
            await db.delete_dataset("p")
            assert await db.vector_store.count() == 0
            assert "test-key" not in repr(db) + repr(db.vector_store)
