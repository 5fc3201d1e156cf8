"""One contract suite for every vector store, plus what is particular to each.

The stores: the local store on a fresh SQLite file and on a fresh PostgreSQL database, and
the Pinecone store (the official client) against the loopback emulator in
``tests/pinecone_emulator.py``, each with a cosine and a dot-product index. Rankings are
checked against a brute-force numpy reference computed here, filters against a table of
expected matches and against the emulator's independent evaluator.
"""

from __future__ import annotations

import asyncio
import logging
import sys
import threading
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

import numpy as np
import pytest
from numpy.typing import NDArray

from backends.errors import MissingDependencyError
from quantum_db import vectorstores
from quantum_db.errors import (
    ConfigurationError,
    VectorStoreError,
    VectorStoreUnavailableError,
    VectorValidationError,
)
from quantum_db.registry import Registry, upgrade
from quantum_db.settings import Settings
from quantum_db.vectorstores import (
    LocalVectorStore,
    Metric,
    PineconeVectorStore,
    VectorRecord,
    VectorStore,
)
from quantum_db.vectorstores import local as local_module
from quantum_db.vectorstores.filters import compile_filter
from quantum_db.vectorstores.pinecone import PartialUpsertError

from .pinecone_emulator import PineconeEmulator, evaluate

DIM = 8
API_KEY = "pc-test-SECRET-4f9a2c7e1b"
ENV_VARS = (
    "PINECONE_API_KEY",
    "QDB_PINECONE_API_KEY",
    "QDB_PINECONE_INDEX",
    "QDB_PINECONE_INDEX_HOST",
    "PINECONE_CONTROLLER_HOST",
    "QDB_PINECONE_CONTROLLER_HOST",
    "QDB_PINECONE_MAX_ATTEMPTS",
    "QDB_PINECONE_TIMEOUT_S",
)


@pytest.fixture(autouse=True)
def _clean_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    """Settings come from the test alone, never from the machine's environment."""
    for name in ENV_VARS:
        monkeypatch.delenv(name, raising=False)


# ---------------------------------------------------------------- fixtures


@pytest.fixture
def emulator() -> Iterator[PineconeEmulator]:
    with PineconeEmulator(api_key=API_KEY) as emu:
        emu.create_index("vs-cosine", dimension=DIM, metric="cosine")
        emu.create_index("vs-dotproduct", dimension=DIM, metric="dotproduct")
        yield emu
    leftovers = [
        t.name
        for t in threading.enumerate()
        if t.name == "pinecone-emulator" or "process_request_thread" in t.name
    ]
    assert not leftovers, f"the emulator left threads behind: {leftovers}"


def pinecone_settings(emulator: PineconeEmulator, **overrides: Any) -> Settings:
    values: dict[str, Any] = {
        "pinecone_api_key": API_KEY,
        "pinecone_controller_host": emulator.url,
        "pinecone_max_attempts": 4,
        "pinecone_timeout_s": 10.0,
    }
    values.update(overrides)
    return Settings(**values)


def pinecone_store(emulator: PineconeEmulator, **kwargs: Any) -> PineconeVectorStore:
    settings = kwargs.pop("settings", None) or pinecone_settings(emulator)
    kwargs.setdefault("retry_base_delay_s", 0.001)
    kwargs.setdefault("retry_max_delay_s", 0.01)
    return PineconeVectorStore(settings, **kwargs)


@dataclass
class Case:
    """One store under test, with what the assertions need to know about it."""

    store: VectorStore
    backend: str  # "sqlite", "postgres" or "pinecone"
    metric: str
    emulator: PineconeEmulator | None = None

    @property
    def is_local(self) -> bool:
        return self.backend != "pinecone"

    def stored(self, values: NDArray[np.float64]) -> NDArray[np.float64]:
        """What the store keeps of ``values``: Pinecone keeps float32."""
        if self.is_local:
            return values
        return values.astype(np.float32).astype(np.float64)


STORE_PARAMS = [
    "sqlite-cosine",
    "sqlite-dotproduct",
    pytest.param("postgres-cosine", marks=pytest.mark.postgres),
    pytest.param("postgres-dotproduct", marks=pytest.mark.postgres),
    "pinecone-cosine",
    "pinecone-dotproduct",
]


@pytest.fixture(params=STORE_PARAMS)
def store_spec(request: pytest.FixtureRequest, tmp_path: Path) -> tuple[str, str, Any]:
    """(backend, metric, and the emulator or database URL the store will use)."""
    backend, metric = request.param.split("-")
    if backend == "pinecone":
        return backend, metric, request.getfixturevalue("emulator")
    if backend == "sqlite":
        return backend, metric, f"sqlite+aiosqlite:///{tmp_path / 'vectors.sqlite'}"
    return backend, metric, request.getfixturevalue("postgres_url")


@pytest.fixture
async def case(store_spec: tuple[str, str, Any]) -> AsyncIterator[Case]:
    backend, metric, where = store_spec
    if backend == "pinecone":
        async with pinecone_store(where, index_name=f"vs-{metric}") as store:
            yield Case(store, backend, metric, where)
        return
    registry = Registry(where)
    try:
        await upgrade(registry)
        async with LocalVectorStore(registry, metric=cast(Metric, metric)) as local:
            yield Case(local, backend, metric)
    finally:
        await registry.aclose()


@pytest.fixture
async def registry(database_url: str) -> AsyncIterator[Registry]:
    """A migrated registry on SQLite and on PostgreSQL (``database_url`` is in conftest)."""
    registry = Registry(database_url)
    try:
        await upgrade(registry)
        yield registry
    finally:
        await registry.aclose()


# ---------------------------------------------------------------- helpers


def records(
    matrix: NDArray[np.float64], prefix: str = "v", metadata: list[dict[str, Any]] | None = None
) -> list[VectorRecord]:
    return [
        VectorRecord(f"{prefix}{i:04d}", row, metadata[i] if metadata else {"i": i})
        for i, row in enumerate(matrix)
    ]


def reference_scores(
    metric: str, matrix: NDArray[np.float64], query: NDArray[np.float64]
) -> NDArray[np.float64]:
    """Brute force, written independently of the stores."""
    dots = np.array([float(np.dot(row, query)) for row in matrix])
    if metric == "dotproduct":
        return dots
    norms = np.array([np.linalg.norm(row) * np.linalg.norm(query) for row in matrix])
    return np.array([d / n if n > 0 else 0.0 for d, n in zip(dots, norms, strict=True)])


async def snapshot(store: VectorStore) -> dict[str, dict[str, tuple[list[float], Any]]]:
    """Everything the store holds, to compare before and after a refused call."""
    out = {}
    for namespace in await store.namespaces():
        ids = await store.list_ids(namespace=namespace)
        found = await store.fetch(ids, namespace=namespace)
        out[namespace] = {i: (r.values.tolist(), r.metadata) for i, r in found.items()}
    return out


# ---------------------------------------------------------------- the contract


async def test_upsert_fetch_round_trip(case: Case, rng: np.random.Generator) -> None:
    matrix = rng.normal(size=(5, DIM))
    metadata: list[dict[str, Any]] = [
        {"genre": "drama", "year": 1999, "rating": 7.5, "ok": True, "tags": ["a", "b"]},
        {"genre": "comedy"},
        {},
        {"n": -3, "big": 1e300, "tiny": 1e-300},
        {"text": "ünïcödé ✓", "empty": [], "flag": False},
    ]
    assert await case.store.upsert(records(matrix, metadata=metadata)) == 5
    found = await case.store.fetch(["v0000", "v0003", "v0004", "missing"])
    assert set(found) == {"v0000", "v0003", "v0004"}
    for i in (0, 3, 4):
        record = found[f"v{i:04d}"]
        assert record.id == f"v{i:04d}"
        assert record.values.dtype == np.float64
        np.testing.assert_array_equal(record.values, case.stored(matrix[i]))
        assert record.metadata == metadata[i]
    assert await case.store.fetch([]) == {}
    assert await case.store.upsert([]) == 0


async def test_overwrite_replaces_values_and_metadata(case: Case, rng: np.random.Generator) -> None:
    matrix = rng.normal(size=(3, DIM))
    await case.store.upsert(records(matrix))
    replacement = rng.normal(size=DIM)
    await case.store.upsert([VectorRecord("v0001", replacement, {"new": "yes"})])
    found = await case.store.fetch(["v0000", "v0001", "v0002"])
    np.testing.assert_array_equal(found["v0001"].values, case.stored(replacement))
    assert found["v0001"].metadata == {"new": "yes"}
    np.testing.assert_array_equal(found["v0000"].values, case.stored(matrix[0]))
    assert await case.store.count() == 3
    assert await case.store.list_ids() == ["v0000", "v0001", "v0002"]


async def test_query_ranks_like_brute_force(case: Case, rng: np.random.Generator) -> None:
    matrix = rng.normal(size=(200, DIM)) * rng.uniform(0.1, 5.0, size=(200, 1))
    matrix[17] = 0.0  # a zero vector: cosine 0, never NaN
    await case.store.upsert(records(matrix))
    assert case.store.metric == case.metric
    for _ in range(5):
        query = rng.normal(size=DIM)
        expected = reference_scores(case.metric, case.stored(matrix), query)
        order = np.argsort(-expected, kind="stable")
        matches = await case.store.query(query, top_k=10)
        assert [m.id for m in matches] == [f"v{i:04d}" for i in order[:10]]
        np.testing.assert_allclose(
            [m.score for m in matches], expected[order[:10]], rtol=1e-9, atol=1e-12
        )
        assert all(m.values is None for m in matches)
        assert matches[0].metadata == {"i": int(order[0])}
    everything = await case.store.query(rng.normal(size=DIM), top_k=500, include_values=True)
    assert len(everything) == 200
    zero = next(m for m in everything if m.id == "v0017")
    assert zero.score == 0.0
    first = everything[0]
    assert first.values is not None
    assert first.values.dtype == np.float64
    np.testing.assert_array_equal(first.values, case.stored(matrix[int(first.id[1:])]))
    scores = [m.score for m in everything]
    assert scores == sorted(scores, reverse=True)
    assert await case.store.query(rng.normal(size=DIM), namespace="empty") == []


FILTER_DATA: list[dict[str, Any]] = [
    {"genre": "drama", "year": 1999, "rating": 7.5, "ok": True, "tags": ["a", "b"]},
    {"genre": "comedy", "year": 2005, "rating": 6.0, "ok": False, "tags": ["b"]},
    {"genre": "drama", "year": 2010, "ok": True, "tags": []},
    {"genre": "action", "year": 2020, "rating": 8.1, "tags": ["c"]},
    {"year": 2015, "rating": 5.0, "ok": False},
    {"genre": "comedy", "rating": 9.0, "tags": ["a"], "n": 1},
    {},
    {"genre": "1999"},
    {"flag": 1},
    {"flag": True},
]
ALL = set(range(len(FILTER_DATA)))
FILTER_CASES: list[tuple[dict[str, Any], set[int]]] = [
    ({"genre": "drama"}, {0, 2}),
    ({"genre": {"$eq": "drama"}}, {0, 2}),
    ({"genre": {"$ne": "drama"}}, ALL - {0, 2}),
    ({"year": {"$gt": 2005}}, {2, 3, 4}),
    ({"year": {"$gte": 2005}}, {1, 2, 3, 4}),
    ({"year": {"$lt": 2005}}, {0}),
    ({"year": {"$lte": 2005}}, {0, 1}),
    ({"year": 1999}, {0}),
    ({"genre": "1999"}, {7}),
    ({"rating": {"$gt": 7.5}}, {3, 5}),
    ({"genre": {"$in": ["comedy", "action"]}}, {1, 3, 5}),
    ({"genre": {"$nin": ["comedy", "action"]}}, ALL - {1, 3, 5}),
    ({"rating": {"$in": [6, 9]}}, {1, 5}),
    ({"tags": "a"}, {0, 5}),
    ({"tags": {"$in": ["b", "c"]}}, {0, 1, 3}),
    ({"tags": {"$nin": ["a"]}}, ALL - {0, 5}),
    ({"tags": {"$ne": "b"}}, ALL - {0, 1}),
    ({"rating": {"$exists": True}}, {0, 1, 3, 4, 5}),
    ({"rating": {"$exists": False}}, {2, 6, 7, 8, 9}),
    ({"ok": True}, {0, 2}),
    ({"ok": False}, {1, 4}),
    ({"flag": True}, {9}),
    ({"flag": 1}, {8}),
    ({"genre": "drama", "year": {"$gt": 2000}}, {2}),
    ({"year": {"$gte": 2000, "$lt": 2016}}, {1, 2, 4}),
    ({"$and": [{"genre": "comedy"}, {"rating": {"$gte": 8}}]}, {5}),
    ({"$or": [{"genre": "action"}, {"year": {"$lt": 2000}}]}, {0, 3}),
    ({"$or": [{"$and": [{"genre": "drama"}, {"ok": True}]}, {"n": {"$exists": True}}]}, {0, 2, 5}),
    ({}, ALL),
]


async def test_query_filters(case: Case, rng: np.random.Generator) -> None:
    matrix = rng.normal(size=(len(FILTER_DATA), DIM))
    await case.store.upsert(records(matrix, metadata=FILTER_DATA))
    query = rng.normal(size=DIM)
    reference = reference_scores(case.metric, case.stored(matrix), query)
    for condition, expected in FILTER_CASES:
        matches = await case.store.query(query, top_k=100, filter=condition)
        got = [int(m.id[1:]) for m in matches]
        assert set(got) == expected, condition
        # Filtering narrows the candidates; the ranking among them is unchanged.
        assert got == sorted(expected, key=lambda i: -reference[i]), condition
        # The emulator's independent evaluator agrees with the table.
        assert {i for i, m in enumerate(FILTER_DATA) if evaluate(condition, m)} == expected
    top = await case.store.query(query, top_k=1, filter={"genre": {"$in": ["drama", "comedy"]}})
    assert len(top) == 1
    assert int(top[0].id[1:]) in {0, 1, 2, 5}


async def test_namespaces_are_isolated(case: Case, rng: np.random.Generator) -> None:
    a, b = rng.normal(size=(2, 3, DIM))
    await case.store.upsert(records(a), namespace="alpha")
    await case.store.upsert(records(b)[:2], namespace="beta")
    assert await case.store.namespaces() == ["alpha", "beta"]
    assert await case.store.count(namespace="alpha") == 3
    assert await case.store.count(namespace="beta") == 2
    assert await case.store.count(namespace="") == 0
    assert await case.store.count() == 5
    found = await case.store.fetch(["v0000"], namespace="beta")
    np.testing.assert_array_equal(found["v0000"].values, case.stored(b[0]))
    assert await case.store.fetch(["v0000"]) == {}
    matches = await case.store.query(a[2], top_k=10, namespace="beta")
    assert {m.id for m in matches} == {"v0000", "v0001"}
    await case.store.delete(namespace="alpha", delete_all=True)
    assert await case.store.namespaces() == ["beta"]
    assert await case.store.list_ids(namespace="beta") == ["v0000", "v0001"]


async def test_list_ids_pages_through_everything(case: Case, rng: np.random.Generator) -> None:
    await case.store.upsert(records(rng.normal(size=(250, DIM)), prefix="a-"), namespace="ns")
    await case.store.upsert(records(rng.normal(size=(30, DIM)), prefix="b-"), namespace="ns")
    ids = await case.store.list_ids(namespace="ns")
    assert ids == [f"a-{i:04d}" for i in range(250)] + [f"b-{i:04d}" for i in range(30)]
    assert await case.store.list_ids(namespace="ns", prefix="b-") == [
        f"b-{i:04d}" for i in range(30)
    ]
    assert await case.store.list_ids(namespace="ns", prefix="a-01") == [
        f"a-{i:04d}" for i in range(100, 200)
    ]
    assert await case.store.list_ids(namespace="ns", prefix="A-") == []
    assert await case.store.list_ids(namespace="nothing") == []
    if case.emulator is not None:
        pages = [r for r in case.emulator.requests if r.path == "/vectors/list"]
        assert len(pages) >= 3  # 280 ids take three pages of at most 100


async def test_delete(case: Case, rng: np.random.Generator) -> None:
    await case.store.upsert(records(rng.normal(size=(10, DIM))))
    await case.store.upsert(records(rng.normal(size=(2, DIM))), namespace="keep")
    await case.store.delete(["v0001", "v0003", "not-there"])
    assert await case.store.count(namespace="") == 8
    assert set(await case.store.fetch(["v0001", "v0002", "v0003"])) == {"v0002"}
    await case.store.delete([])
    await case.store.delete(delete_all=True)
    assert await case.store.count(namespace="") == 0
    assert await case.store.list_ids() == []
    assert await case.store.namespaces() == ["keep"]
    await case.store.delete(delete_all=True)  # an empty namespace is fine too
    await case.store.delete(namespace="never-used", delete_all=True)
    assert await case.store.count() == 2


# ---------------------------------------------------------------- bad input

Op = Callable[[VectorStore], Awaitable[Any]]


def _upsert(*items: VectorRecord | Any, namespace: str = "") -> Op:
    return lambda store: store.upsert(list(items), namespace=namespace)


def _rec(id_: Any = "x", values: Any = None, metadata: Any = None) -> VectorRecord:
    return VectorRecord(id_, np.ones(DIM) if values is None else values, metadata or {})


BAD_UPSERTS: dict[str, Op] = {
    "empty id": _upsert(_rec("")),
    "id not a str": _upsert(_rec(7)),
    "id too long": _upsert(_rec("x" * 513)),
    "id not ASCII": _upsert(_rec("naïve")),
    "id with NUL": _upsert(_rec("a\x00b")),
    "ids repeated in one call": _upsert(_rec("x"), _rec("x")),
    "NaN value": _upsert(_rec(values=np.array([np.nan] + [1.0] * (DIM - 1)))),
    "infinite value": _upsert(_rec(values=np.array([np.inf] + [1.0] * (DIM - 1)))),
    "values as strings": _upsert(_rec(values=["1"] * DIM)),
    "values as booleans": _upsert(_rec(values=[True] * DIM)),
    "2-D values": _upsert(_rec(values=np.ones((2, DIM)))),
    "empty values": _upsert(_rec(values=[])),
    "ragged values": _upsert(_rec(values=[[1.0], [1.0, 2.0]])),
    "dimension differs within the call": _upsert(_rec("a"), _rec("b", np.ones(DIM + 1))),
    "dimension differs from the stored": _upsert(_rec("c", np.ones(DIM - 1))),
    "metadata value None": _upsert(_rec(metadata={"a": None})),
    "metadata nested dict": _upsert(_rec(metadata={"a": {"b": 1}})),
    "metadata list of numbers": _upsert(_rec(metadata={"a": [1, 2]})),
    "metadata key not a str": _upsert(_rec(metadata={1: "a"})),
    "metadata key starts with $": _upsert(_rec(metadata={"$a": 1})),
    "metadata NaN": _upsert(_rec(metadata={"a": float("nan")})),
    "metadata not a dict": _upsert(VectorRecord("x", np.ones(DIM), ["a"])),  # type: ignore[arg-type]
    "metadata over 40 KB": _upsert(_rec(metadata={"a": "x" * 41_000})),
    "not a VectorRecord": _upsert(("x", [1.0] * DIM)),
    "the last record of a batch is bad": _upsert(
        *[_rec(f"ok-{i}") for i in range(20)], _rec("bad", np.full(DIM, np.nan))
    ),
    "records not a sequence": lambda store: store.upsert(_rec()),  # type: ignore[arg-type]
    "namespace not a str": _upsert(_rec(), namespace=3),  # type: ignore[arg-type]
}

BAD_READS: dict[str, Op] = {
    "top_k 0": lambda s: s.query(np.ones(DIM), top_k=0),
    "top_k negative": lambda s: s.query(np.ones(DIM), top_k=-1),
    "top_k a bool": lambda s: s.query(np.ones(DIM), top_k=True),
    "top_k a float": lambda s: s.query(np.ones(DIM), top_k=2.0),  # type: ignore[arg-type]
    "query of the wrong dimension": lambda s: s.query(np.ones(DIM + 2)),
    "query with NaN": lambda s: s.query(np.full(DIM, np.nan)),
    "query empty": lambda s: s.query([]),
    "filter not a dict": lambda s: s.query(np.ones(DIM), filter=["a"]),  # type: ignore[arg-type]
    "filter unknown top-level operator": lambda s: s.query(np.ones(DIM), filter={"$not": {}}),
    "filter unknown field operator": lambda s: s.query(np.ones(DIM), filter={"a": {"$regex": 1}}),
    "filter $gt on a string": lambda s: s.query(np.ones(DIM), filter={"a": {"$gt": "x"}}),
    "filter $in not a list": lambda s: s.query(np.ones(DIM), filter={"a": {"$in": "x"}}),
    "filter $in holding None": lambda s: s.query(np.ones(DIM), filter={"a": {"$in": [None]}}),
    "filter empty $and": lambda s: s.query(np.ones(DIM), filter={"$and": []}),
    "filter $or not a list": lambda s: s.query(np.ones(DIM), filter={"$or": {"a": 1}}),
    "filter field without operator": lambda s: s.query(np.ones(DIM), filter={"a": {}}),
    "filter bare list": lambda s: s.query(np.ones(DIM), filter={"a": [1, 2]}),
    "filter None value": lambda s: s.query(np.ones(DIM), filter={"a": None}),
    "filter $exists not a bool": lambda s: s.query(np.ones(DIM), filter={"a": {"$exists": 1}}),
    "filter NaN": lambda s: s.query(np.ones(DIM), filter={"a": {"$lt": float("nan")}}),
    "fetch ids as one str": lambda s: s.fetch("v0000"),
    "fetch an empty id": lambda s: s.fetch(["v0000", ""]),
    "list_ids prefix not a str": lambda s: s.list_ids(prefix=1),  # type: ignore[arg-type]
    "delete without ids": lambda s: s.delete(),
    "delete ids and all": lambda s: s.delete(["v0000"], delete_all=True),
    "delete a bad id": lambda s: s.delete(["v0000", 5]),  # type: ignore[list-item]
    "count in a bad namespace": lambda s: s.count(namespace=5),  # type: ignore[arg-type]
}


async def _refuses(case: Case, cases: dict[str, Op], rng: np.random.Generator) -> None:
    await case.store.upsert(records(rng.normal(size=(4, DIM)), metadata=FILTER_DATA[:4]))
    await case.store.upsert(records(rng.normal(size=(2, DIM))), namespace="other")
    before = await snapshot(case.store)
    for name, op in cases.items():
        with pytest.raises(VectorValidationError) as raised:
            await op(case.store)
        assert str(raised.value), name
        assert await snapshot(case.store) == before, f"{name} changed the stored data"


async def test_bad_upserts_are_refused_and_change_nothing(
    case: Case, rng: np.random.Generator
) -> None:
    await _refuses(case, BAD_UPSERTS, rng)
    if case.emulator is not None:  # refused before anything was sent
        assert all(r.status == 200 for r in case.emulator.requests)


async def test_bad_reads_are_refused_and_change_nothing(
    case: Case, rng: np.random.Generator
) -> None:
    await _refuses(case, BAD_READS, rng)


def test_the_package_exports_its_public_names() -> None:
    public = {name for name in vars(vectorstores) if not name.startswith("_")}
    modules = {name for name in public if type(getattr(vectorstores, name)).__name__ == "module"}
    assert public - modules == set(vectorstores.__all__)


# ---------------------------------------------------------------- filters, unit level


def _random_filter(rng: np.random.Generator, depth: int = 0) -> dict[str, Any]:
    fields = ["a", "b", "c", "tags"]
    values: list[Any] = ["x", "y", 1, 2.5, True, False, 0]
    if depth < 2 and rng.random() < 0.3:
        op = "$and" if rng.random() < 0.5 else "$or"
        return {op: [_random_filter(rng, depth + 1) for _ in range(int(rng.integers(1, 4)))]}
    field = str(rng.choice(fields))
    op = str(rng.choice(["$eq", "$ne", "$gt", "$gte", "$lt", "$lte", "$in", "$nin", "$exists"]))
    if op == "$exists":
        return {field: {op: bool(rng.random() < 0.5)}}
    if op in ("$in", "$nin"):
        picks = rng.choice(len(values), size=int(rng.integers(0, 4)), replace=False)
        return {field: {op: [values[int(i)] for i in picks]}}
    if op in ("$gt", "$gte", "$lt", "$lte"):
        return {field: {op: float(rng.integers(-1, 4))}}
    value = values[int(rng.integers(len(values)))]
    return {field: value} if rng.random() < 0.5 else {field: {op: value}}


def _random_metadata(rng: np.random.Generator) -> dict[str, Any]:
    pool: list[Any] = ["x", "y", 1, 2.5, True, False, 0, 3, ["x", "z"], []]
    return {
        f: pool[int(rng.integers(len(pool)))] for f in ("a", "b", "c", "tags") if rng.random() < 0.7
    }


def test_filter_module_agrees_with_the_reference_evaluator(rng: np.random.Generator) -> None:
    metadata = [_random_metadata(rng) for _ in range(60)]
    for _ in range(400):
        condition = _random_filter(rng)
        predicate = compile_filter(condition)
        for m in metadata:
            assert predicate(m) == evaluate(condition, m), (condition, m)


# ---------------------------------------------------------------- the local store


async def test_local_keeps_insertion_order(registry: Registry, rng: np.random.Generator) -> None:
    store = LocalVectorStore(registry)
    matrix = rng.normal(size=(5, DIM))
    names = ["z", "y", "x"]
    await store.upsert([VectorRecord(n, matrix[i], {"i": i}) for i, n in enumerate(names)])
    await store.upsert([VectorRecord("w", matrix[3]), VectorRecord("y", matrix[4], {"i": 9})])
    assert await store.list_ids() == ["z", "y", "x", "w"]
    ids, data, metadata = await store.read_namespace("")
    assert ids == ["z", "y", "x", "w"]
    assert data.dtype == np.float64
    assert data.shape == (4, DIM)
    np.testing.assert_array_equal(data, matrix[[0, 4, 2, 3]])
    assert metadata == [{"i": 0}, {"i": 9}, {"i": 2}, {}]
    empty_ids, empty, empty_metadata = await store.read_namespace("nothing")
    assert (empty_ids, empty.shape, empty_metadata) == ([], (0, 0), [])


async def test_local_bulk_upsert_and_read(registry: Registry, rng: np.random.Generator) -> None:
    store = LocalVectorStore(registry, metric="dotproduct")
    matrix = rng.normal(size=(2500, 16))  # more rows than one INSERT chunk
    await store.upsert(records(matrix, prefix="s"), namespace="bulk")
    ids, data, metadata = await store.read_namespace("bulk")
    assert ids == [f"s{i:04d}" for i in range(2500)]
    np.testing.assert_array_equal(data, matrix)
    assert [m["i"] for m in metadata] == list(range(2500))
    matches = await store.query(matrix[42], top_k=3, namespace="bulk", filter={"i": {"$lt": 100}})
    expected = np.argsort(-(matrix[:100] @ matrix[42]), kind="stable")[:3]
    assert [m.id for m in matches] == [f"s{i:04d}" for i in expected]


async def test_local_upsert_is_all_or_nothing(
    registry: Registry, rng: np.random.Generator, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = LocalVectorStore(registry)
    await store.upsert(records(rng.normal(size=(3, DIM)), prefix="old"))
    before = await snapshot(store)
    real_chunks = local_module._chunks

    def failing_chunks(items: Any, size: int) -> Iterator[Any]:
        chunks = real_chunks(items, 10)
        yield next(chunks)  # the first chunk is written, then the "disk" fails
        raise OSError("disk full")

    monkeypatch.setattr(local_module, "_chunks", failing_chunks)
    with pytest.raises(OSError, match="disk full"):
        await store.upsert(records(rng.normal(size=(50, DIM)), prefix="new"))
    monkeypatch.undo()
    assert await snapshot(store) == before


async def test_local_concurrent_upserts_get_distinct_positions(
    registry: Registry, rng: np.random.Generator
) -> None:
    store = LocalVectorStore(registry)
    batches = [records(rng.normal(size=(40, DIM)), prefix=f"t{t}-") for t in range(4)]
    await asyncio.gather(*(store.upsert(b, namespace="race") for b in batches))
    ids, _, _ = await store.read_namespace("race")
    assert len(ids) == len(set(ids)) == 160
    # Each batch was one transaction: its rows are contiguous and in order.
    for batch in batches:
        start = ids.index(batch[0].id)
        assert ids[start : start + 40] == [r.id for r in batch]


async def test_local_dim_is_enforced(registry: Registry) -> None:
    store = LocalVectorStore(registry, dim=4)
    with pytest.raises(VectorValidationError, match="dimension"):
        await store.upsert([VectorRecord("a", np.ones(3))])
    with pytest.raises(VectorValidationError, match="dimension"):
        await store.query(np.ones(3))
    await store.upsert([VectorRecord("a", np.ones(4))])
    assert await store.count() == 1


def test_local_refuses_bad_configuration(tmp_path: Path) -> None:
    registry = Registry(f"sqlite+aiosqlite:///{tmp_path / 'x.sqlite'}")
    with pytest.raises(ConfigurationError, match="metric"):
        LocalVectorStore(registry, metric="euclidean")  # type: ignore[arg-type]
    with pytest.raises(ConfigurationError, match="dim"):
        LocalVectorStore(registry, dim=0)


@pytest.mark.slow
async def test_local_reads_100k_vectors_fast(tmp_path: Path, rng: np.random.Generator) -> None:
    registry = Registry(f"sqlite+aiosqlite:///{tmp_path / 'big.sqlite'}")
    try:
        await upgrade(registry)
        store = LocalVectorStore(registry)
        matrix = rng.normal(size=(100_000, 64))
        for start in range(0, len(matrix), 20_000):
            await store.upsert(
                [
                    VectorRecord(f"s{i:09d}", matrix[i], {"row": i, "label": i % 3})
                    for i in range(start, start + 20_000)
                ],
                namespace="big",
            )
        started = time.perf_counter()
        ids, data, metadata = await store.read_namespace("big")
        elapsed = time.perf_counter() - started
        np.testing.assert_array_equal(data, matrix)
        assert ids[-1] == "s000099999"
        assert metadata[-1] == {"row": 99_999, "label": 0}
        assert elapsed < 5.0, f"reading 100k x 64 took {elapsed:.2f}s"
    finally:
        await registry.aclose()


# ---------------------------------------------------------------- the Pinecone store


async def test_pinecone_resolves_the_index_by_name(emulator: PineconeEmulator) -> None:
    async with pinecone_store(emulator, index_name="vs-dotproduct") as store:
        assert store.metric == "dotproduct"
        assert store.dim == DIM
        assert store.index_host == emulator.host_of("vs-dotproduct")
        await store.upsert([VectorRecord("a", np.ones(DIM))])
    first = emulator.requests[0]
    assert (first.method, first.index, first.path) == ("GET", None, "/indexes/vs-dotproduct")
    assert emulator.stored("vs-dotproduct")["a"][0] == [1.0] * DIM


async def test_pinecone_by_host_and_from_settings(
    emulator: PineconeEmulator, monkeypatch: pytest.MonkeyPatch
) -> None:
    host = emulator.host_of("vs-cosine")
    settings = pinecone_settings(emulator, pinecone_controller_host=None, pinecone_index_host=host)
    async with pinecone_store(emulator, settings=settings) as store:
        assert store.metric == "cosine"
        assert store.dim == DIM
        assert await store.count() == 0
    assert all(r.index == "vs-cosine" for r in emulator.requests)  # no control-plane call
    # The usual environment variables, read by Settings at the edge.
    monkeypatch.setenv("PINECONE_API_KEY", API_KEY)
    monkeypatch.setenv("PINECONE_CONTROLLER_HOST", emulator.url)
    monkeypatch.setenv("QDB_PINECONE_INDEX", "vs-dotproduct")
    async with pinecone_store(emulator, settings=Settings()) as store:
        assert store.metric == "dotproduct"
        assert store.index_host == emulator.host_of("vs-dotproduct")


async def test_pinecone_built_on_its_own_reads_the_environment(
    emulator: PineconeEmulator, monkeypatch: pytest.MonkeyPatch
) -> None:
    with pytest.raises(ConfigurationError) as missing:
        PineconeVectorStore()
    assert "set PINECONE_API_KEY or QDB_PINECONE_API_KEY" in str(missing.value)
    for blank in ("", "  \t"):
        monkeypatch.setenv("PINECONE_API_KEY", blank)
        with pytest.raises(ConfigurationError, match=r"PINECONE_API_KEY.*empty or only whitespace"):
            PineconeVectorStore()
    monkeypatch.setenv("PINECONE_API_KEY", API_KEY)
    with pytest.raises(ConfigurationError, match="QDB_PINECONE_INDEX"):
        PineconeVectorStore()
    monkeypatch.setenv("PINECONE_CONTROLLER_HOST", emulator.url)
    monkeypatch.setenv("QDB_PINECONE_INDEX", "vs-cosine")
    async with PineconeVectorStore() as store:
        assert (store.metric, store.dim) == ("cosine", DIM)
        await store.upsert([VectorRecord("a", np.ones(DIM))])
        assert API_KEY not in repr(store)
    assert emulator.stored("vs-cosine")["a"][0] == [1.0] * DIM
    # The prefixed name wins over the client's own, as documented.
    monkeypatch.setenv("QDB_PINECONE_API_KEY", "not-the-key")
    with pytest.raises(ConfigurationError, match="refused the API key"):
        async with PineconeVectorStore():
            pass


async def test_pinecone_retries_are_logged_by_the_shared_policy(
    emulator: PineconeEmulator, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="backends.retry")
    async with pinecone_store(emulator, index_name="vs-cosine") as store:
        emulator.fail_next(429, count=2, path="/query", retry_after=0.002)
        await store.query(np.ones(DIM), top_k=1)
    attempts = [r.getMessage() for r in caplog.records if r.name == "backends.retry"]
    assert len(attempts) == 2
    assert attempts[0].startswith("pinecone query: attempt 1 of 4 failed")
    assert attempts[1].startswith("pinecone query: attempt 2 of 4 failed")
    # Retry-After (2 ms) is above our backoff (1 ms, then 2 ms) but under its cap (10 ms).
    assert attempts[0].endswith("retrying in 0.002 s")


async def test_pinecone_configuration_errors(
    emulator: PineconeEmulator, monkeypatch: pytest.MonkeyPatch
) -> None:
    with pytest.raises(ConfigurationError, match="PINECONE_API_KEY"):
        PineconeVectorStore(pinecone_settings(emulator, pinecone_api_key=None), index_name="x")
    with pytest.raises(ConfigurationError, match="QDB_PINECONE_INDEX"):
        PineconeVectorStore(pinecone_settings(emulator))
    with pytest.raises(ConfigurationError, match="no-such-index"):
        async with pinecone_store(emulator, index_name="no-such-index"):
            pass
    emulator.create_index("euclid", dimension=DIM, metric="euclidean")
    with pytest.raises(ConfigurationError, match="euclidean"):
        async with pinecone_store(emulator, index_name="euclid"):
            pass
    with pytest.raises(ConfigurationError, match="dimension"):
        async with pinecone_store(emulator, index_name="vs-cosine", dim=DIM + 1):
            pass
    store = pinecone_store(emulator, index_name="vs-cosine")
    with monkeypatch.context() as patch:
        patch.setitem(sys.modules, "pinecone", None)  # as if it were not installed
        with pytest.raises(MissingDependencyError, match=r"pip install 'quantum-db\[pinecone\]'"):
            await store.open()
    wrong_key = pinecone_settings(emulator, pinecone_api_key="not-the-key")
    with pytest.raises(ConfigurationError, match="PINECONE_API_KEY"):
        async with pinecone_store(emulator, settings=wrong_key, index_name="vs-cosine"):
            pass


async def test_pinecone_never_shows_the_api_key(
    emulator: PineconeEmulator, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    store = pinecone_store(emulator, index_name="vs-cosine")
    assert API_KEY not in repr(store)
    errors: list[BaseException] = []
    async with store:
        assert API_KEY not in repr(store)
        emulator.fail_next(429, count=2)
        await store.upsert([VectorRecord("a", np.ones(DIM), {"k": "v"})])
        await store.query(np.ones(DIM), top_k=1)
        emulator.fail_next(503, count=4)  # every attempt
        with pytest.raises(VectorStoreUnavailableError) as unavailable:
            await store.count()
        errors.append(unavailable.value)
    bad = pinecone_settings(emulator, pinecone_api_key=API_KEY + "-wrong")
    with pytest.raises(ConfigurationError) as refused:
        async with pinecone_store(emulator, settings=bad, index_name="vs-cosine"):
            pass
    errors.append(refused.value)
    assert "retrying" in caplog.text  # the retries were logged ...
    assert API_KEY not in caplog.text  # ... without the key
    for error in errors:
        assert API_KEY not in str(error)
        assert API_KEY not in repr(error)


async def test_pinecone_retries_429_and_503_bursts(emulator: PineconeEmulator) -> None:
    async with pinecone_store(emulator, index_name="vs-cosine") as store:
        emulator.clear_log()
        emulator.fail_next(429, count=3, path="/vectors/upsert", retry_after=0.001)
        assert await store.upsert([VectorRecord("a", np.ones(DIM))]) == 1
        statuses = [r.status for r in emulator.requests if r.path == "/vectors/upsert"]
        assert statuses == [429, 429, 429, 200]
        emulator.clear_log()
        emulator.fail_next(503, count=2, path="/query")
        emulator.disconnect_next(1, path="/query")
        assert [m.id for m in await store.query(np.ones(DIM), top_k=1)] == ["a"]
        assert [r.status for r in emulator.requests] == [503, 503, 0, 200]
        emulator.clear_log()
        emulator.fail_next(502, count=1, path="/vectors/fetch")
        assert set(await store.fetch(["a"])) == {"a"}
        assert [r.status for r in emulator.requests] == [502, 200]


async def test_pinecone_gives_up_after_max_attempts(emulator: PineconeEmulator) -> None:
    settings = pinecone_settings(emulator, pinecone_max_attempts=3)
    async with pinecone_store(emulator, settings=settings, index_name="vs-cosine") as store:
        await store.upsert([VectorRecord("a", np.ones(DIM))])
        emulator.clear_log()
        emulator.fail_next(503, count=100)  # an outage
        with pytest.raises(VectorStoreUnavailableError, match="3 times"):
            await store.upsert([VectorRecord("b", np.ones(DIM))])
        assert [r.status for r in emulator.requests] == [503, 503, 503]
        emulator.clear_faults()  # the outage ends
        emulator.clear_log()
        emulator.fail_next(400, count=1)  # a refusal is not retried
        with pytest.raises(VectorValidationError, match="400"):
            await store.upsert([VectorRecord("b", np.ones(DIM))])
        assert [r.status for r in emulator.requests] == [400]
    assert set(emulator.stored("vs-cosine")) == {"a"}


async def test_pinecone_batches_under_1000_vectors(
    emulator: PineconeEmulator, rng: np.random.Generator
) -> None:
    matrix = rng.normal(size=(2500, DIM))
    async with pinecone_store(emulator, index_name="vs-cosine") as store:
        emulator.clear_log()
        assert await store.upsert(records(matrix), namespace="many") == 2500
        upserts = [r for r in emulator.requests if r.path == "/vectors/upsert"]
        assert [r.count for r in upserts] == [1000, 1000, 500]
        assert await store.count(namespace="many") == 2500
        ids = [f"v{i:04d}" for i in range(2500)]
        emulator.clear_log()
        found = await store.fetch(ids, namespace="many")
        assert len(found) == 2500
        assert [r.count for r in emulator.requests] == [1000, 1000, 500]
        emulator.clear_log()
        await store.delete(ids[:1500], namespace="many")
        assert [r.count for r in emulator.requests] == [1000, 500]
        assert await store.count(namespace="many") == 1000
        with pytest.raises(VectorValidationError, match="10000"):
            await store.query(matrix[0], top_k=10_001)


async def test_pinecone_batches_under_2_mb(
    emulator: PineconeEmulator, rng: np.random.Generator
) -> None:
    dim = 4096
    emulator.create_index("wide", dimension=dim, metric="cosine")
    matrix = rng.normal(size=(60, dim))
    async with pinecone_store(emulator, index_name="wide") as store:
        emulator.clear_log()
        assert await store.upsert(records(matrix)) == 60
        upserts = [r for r in emulator.requests if r.path == "/vectors/upsert"]
        assert len(upserts) >= 3  # about 80 kB per vector: 60 of them are ~5 MB
        assert all(r.status == 200 and r.body_bytes <= 2 * 1024 * 1024 for r in upserts)
        assert sum(r.count for r in upserts) == 60
        found = await store.fetch(["v0059"])
        np.testing.assert_allclose(found["v0059"].values, matrix[59], rtol=1e-6)


async def test_pinecone_detects_partial_writes(
    emulator: PineconeEmulator, rng: np.random.Generator
) -> None:
    async with pinecone_store(emulator, index_name="vs-cosine") as store:
        emulator.drop_from_next_upsert(3)
        with pytest.raises(PartialUpsertError) as raised:
            await store.upsert(records(rng.normal(size=(2500, DIM))))
        error = raised.value
        assert isinstance(error, VectorStoreError)
        assert error.written == 1500
        assert list(error.unconfirmed_ids) == [f"v{i:04d}" for i in range(1000)]
        assert "v0000" in str(error)
        assert "1000 of 2500" in str(error)
        assert await store.count() == 2497  # the emulator kept all but 3
        # Upserting the unconfirmed ids again repairs the write.
        again = records(rng.normal(size=(1000, DIM)))
        assert await store.upsert(again) == 1000
        assert await store.count() == 2500


async def test_pinecone_use_outside_its_life_is_refused(emulator: PineconeEmulator) -> None:
    store = pinecone_store(emulator, index_name="vs-cosine")
    with pytest.raises(VectorStoreError, match="not open"):
        await store.count()
    with pytest.raises(VectorStoreError, match="metric"):
        _ = store.metric
    async with store:
        await store.upsert([VectorRecord("a", np.ones(DIM))])
        # Another event loop (here, in a worker thread) must fail fast, not hang.
        with pytest.raises(VectorStoreError, match="another event loop"):
            await asyncio.to_thread(asyncio.run, store.count())
        assert await store.count() == 1
    with pytest.raises(VectorStoreError, match="closed"):
        await store.count()
    with pytest.raises(VectorStoreError, match="closed"):
        await store.upsert([VectorRecord("b", np.ones(DIM))])
    with pytest.raises(VectorStoreError, match="closed"):
        await store.open()
    await store.aclose()  # closing twice is harmless
    assert "closed" in repr(store)
