"""The local vector store: vectors in the registry's ``vectors`` table, exact search with numpy."""

from __future__ import annotations

import json
from collections.abc import Iterator, Mapping, Sequence
from typing import Any, cast

import numpy as np
from numpy.typing import NDArray
from sqlalchemy import Table, Text, delete, func, select, text
from sqlalchemy import cast as sql_cast
from sqlalchemy.dialects.postgresql import insert as postgresql_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.sql.dml import Insert
from sqlalchemy.sql.elements import ColumnElement

from ..errors import ConfigurationError, VectorStoreError, VectorValidationError
from ..registry.engine import Registry
from ..registry.schema import VectorRow
from .base import (
    Metric,
    QueryMatch,
    VectorRecord,
    VectorStore,
    validate_ids,
    validate_namespace,
    validate_records,
    validate_top_k,
    validate_vector,
)
from .filters import Predicate, compile_filter

__all__ = ["LocalVectorStore"]

_VECTORS = cast(Table, VectorRow.__table__)
_NAMESPACE_LENGTH = 128  # the width of vectors.namespace
#: Rows per INSERT (executemany) and ids per ``IN (...)``: far below SQLite's and
#: asyncpg's bound-parameter limits, large enough to keep round trips few.
_WRITE_CHUNK = 1000
_ID_CHUNK = 500
#: Rows fetched per round trip while streaming a namespace.
_STREAM_CHUNK = 5000
_DTYPE = np.dtype("<f8")


def _chunks(items: Sequence[Any], size: int) -> Iterator[Sequence[Any]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


class LocalVectorStore(VectorStore):
    """Vectors kept in the SQL registry (SQLite or PostgreSQL); exact top-k search.

    Every ``upsert`` is one transaction: all records are written or none. Ids keep the
    position of their first insertion, so a namespace reads back in insertion order.
    """

    def __init__(
        self, registry: Registry, *, metric: Metric = "cosine", dim: int | None = None
    ) -> None:
        if metric not in ("cosine", "dotproduct"):
            raise ConfigurationError(f"metric must be 'cosine' or 'dotproduct', got {metric!r}")
        if dim is not None and (isinstance(dim, bool) or not isinstance(dim, int) or dim < 1):
            raise ConfigurationError(f"dim must be a positive int or None, got {dim!r}")
        self.registry = registry
        self.metric = metric
        self.dim = dim

    def __repr__(self) -> str:
        return f"LocalVectorStore({self.registry!r}, metric={self.metric!r}, dim={self.dim!r})"

    # -- writing -------------------------------------------------------------------------

    async def upsert(self, records: Sequence[VectorRecord], *, namespace: str = "") -> int:
        namespace = validate_namespace(namespace, max_length=_NAMESPACE_LENGTH)
        ids, matrix, metadata = validate_records(records, dim=self.dim)
        if not ids:
            return 0
        dim = matrix.shape[1]
        async with self.registry.session() as session:
            await self._lock_namespace(session, namespace)
            stored_dim = await session.scalar(
                select(_VECTORS.c.dim).where(_VECTORS.c.namespace == namespace).limit(1)
            )
            if stored_dim is not None and stored_dim != dim:
                raise VectorValidationError(
                    f"namespace {namespace!r} holds vectors of dimension {stored_dim}; "
                    f"these have dimension {dim}"
                )
            last = await session.scalar(
                select(func.max(_VECTORS.c.position)).where(_VECTORS.c.namespace == namespace)
            )
            # Every row is offered the next positions in call order; an id that already
            # exists keeps its own (ON CONFLICT leaves position alone), so new ids get
            # increasing positions without looking up which ids exist.
            first = 0 if last is None else int(last) + 1
            rows = [
                {
                    "namespace": namespace,
                    "id": id_,
                    "position": first + i,
                    "dim": dim,
                    "values": matrix[i].astype(_DTYPE).tobytes(),
                    "metadata": metadata[i],
                }
                for i, id_ in enumerate(ids)
            ]
            statement = self._upsert_statement()
            for chunk in _chunks(rows, _WRITE_CHUNK):
                await session.execute(statement, list(chunk))
        return len(ids)

    def _upsert_statement(self) -> Insert:
        # Overwrite by id keeps the row's original position (it is not in the SET list).
        if self.registry.dialect == "postgresql":
            pg = postgresql_insert(_VECTORS)
            return pg.on_conflict_do_update(
                index_elements=[_VECTORS.c.namespace, _VECTORS.c.id],
                set_={
                    "dim": pg.excluded.dim,
                    "values": pg.excluded["values"],
                    "metadata": pg.excluded["metadata"],
                },
            )
        lite = sqlite_insert(_VECTORS)
        return lite.on_conflict_do_update(
            index_elements=[_VECTORS.c.namespace, _VECTORS.c.id],
            set_={
                "dim": lite.excluded.dim,
                "values": lite.excluded["values"],
                "metadata": lite.excluded["metadata"],
            },
        )

    async def _lock_namespace(self, session: AsyncSession, namespace: str) -> None:
        # SQLite writers are already serialized (BEGIN IMMEDIATE). On PostgreSQL two
        # concurrent upserts would both read the same max(position) or dimension; a
        # transaction-scoped advisory lock per namespace makes them queue instead.
        if self.registry.dialect == "postgresql":
            await session.execute(
                text("SELECT pg_advisory_xact_lock(hashtext(:key))"),
                {"key": f"quantum_db.vectors:{namespace}"},
            )

    async def delete(
        self, ids: Sequence[str] | None = None, *, namespace: str = "", delete_all: bool = False
    ) -> None:
        namespace = validate_namespace(namespace, max_length=_NAMESPACE_LENGTH)
        if delete_all and ids is not None:
            raise VectorValidationError("pass either ids or delete_all=True, not both")
        if not delete_all and ids is None:
            raise VectorValidationError("pass the ids to delete, or delete_all=True")
        checked = [] if ids is None else validate_ids(ids)
        async with self.registry.session() as session:
            where = _VECTORS.c.namespace == namespace
            if delete_all:
                await session.execute(delete(_VECTORS).where(where))
                return
            for chunk in _chunks(sorted(set(checked)), _ID_CHUNK):
                await session.execute(delete(_VECTORS).where(where, _VECTORS.c.id.in_(chunk)))

    # -- reading -------------------------------------------------------------------------

    async def fetch(self, ids: Sequence[str], *, namespace: str = "") -> dict[str, VectorRecord]:
        namespace = validate_namespace(namespace, max_length=_NAMESPACE_LENGTH)
        wanted = sorted(set(validate_ids(ids)))
        found: dict[str, VectorRecord] = {}
        if not wanted:
            return found
        async with self.registry.session() as session:
            for chunk in _chunks(wanted, _ID_CHUNK):
                result = await session.execute(
                    select(_VECTORS.c.id, _VECTORS.c["values"], _VECTORS.c["metadata"]).where(
                        _VECTORS.c.namespace == namespace, _VECTORS.c.id.in_(chunk)
                    )
                )
                for id_, blob, metadata in result:
                    found[id_] = VectorRecord(id_, _decode(blob), dict(metadata or {}))
        return found

    async def query(
        self,
        vector: Sequence[float] | NDArray[np.float64],
        *,
        top_k: int = 10,
        namespace: str = "",
        filter: Mapping[str, Any] | None = None,
        include_values: bool = False,
    ) -> list[QueryMatch]:
        namespace = validate_namespace(namespace, max_length=_NAMESPACE_LENGTH)
        query = validate_vector(vector, what="query vector")
        k = validate_top_k(top_k)
        predicate = None
        if filter is not None:
            predicate = compile_filter(filter)
            if not filter:  # {} matches everything: skip decoding metadata
                predicate = None
        if self.dim is not None and query.size != self.dim:
            raise VectorValidationError(
                f"the query vector has dimension {query.size}; this store holds {self.dim}"
            )
        ids, matrix, metadata = await self._scan(namespace, predicate=predicate)
        if not ids:
            return []
        if matrix.shape[1] != query.size:
            raise VectorValidationError(
                f"the query vector has dimension {query.size}; namespace {namespace!r} holds "
                f"vectors of dimension {matrix.shape[1]}"
            )
        scores = self._scores(matrix, query)
        # Stable: equal scores keep insertion order, so results are reproducible.
        best = np.argsort(-scores, kind="stable")[:k]
        if metadata is None:
            chosen = [ids[i] for i in best]
            found = await self.fetch(chosen, namespace=namespace)
            metadata_of = {id_: record.metadata for id_, record in found.items()}
        else:
            metadata_of = {ids[i]: metadata[i] for i in best}
        return [
            QueryMatch(
                id=ids[i],
                score=float(scores[i]),
                values=matrix[i].copy() if include_values else None,
                metadata=metadata_of.get(ids[i], {}),
            )
            for i in best
        ]

    def _scores(
        self, matrix: NDArray[np.float64], query: NDArray[np.float64]
    ) -> NDArray[np.float64]:
        scores: NDArray[np.float64] = matrix @ query
        if self.metric == "dotproduct":
            return scores
        norms = np.linalg.norm(matrix, axis=1) * np.linalg.norm(query)
        # A zero vector has no direction: it scores 0 rather than NaN.
        cosine: NDArray[np.float64] = np.divide(
            scores, norms, out=np.zeros_like(scores), where=norms > 0
        )
        return cosine

    async def list_ids(self, *, namespace: str = "", prefix: str | None = None) -> list[str]:
        namespace = validate_namespace(namespace, max_length=_NAMESPACE_LENGTH)
        statement = select(_VECTORS.c.id).where(_VECTORS.c.namespace == namespace)
        if prefix is not None:
            if not isinstance(prefix, str):
                raise VectorValidationError(f"prefix must be a str, got {prefix!r}")
            if prefix:
                # substr rather than LIKE: SQLite's LIKE ignores case, and no escaping needed.
                statement = statement.where(func.substr(_VECTORS.c.id, 1, len(prefix)) == prefix)
        statement = statement.order_by(_VECTORS.c.position, _VECTORS.c.id)
        async with self.registry.session() as session:
            return list((await session.scalars(statement)).all())

    async def namespaces(self) -> list[str]:
        statement = select(_VECTORS.c.namespace).distinct().order_by(_VECTORS.c.namespace)
        async with self.registry.session() as session:
            return list((await session.scalars(statement)).all())

    async def count(self, *, namespace: str | None = None) -> int:
        statement = select(func.count()).select_from(_VECTORS)
        if namespace is not None:
            namespace = validate_namespace(namespace, max_length=_NAMESPACE_LENGTH)
            statement = statement.where(_VECTORS.c.namespace == namespace)
        async with self.registry.session() as session:
            return int(await session.scalar(statement) or 0)

    async def read_namespace(
        self, namespace: str
    ) -> tuple[list[str], NDArray[np.float64], list[dict[str, Any]]]:
        """Every vector of ``namespace`` in insertion order: ids, an [N, dim] array, metadata.

        One streamed query; values are decoded straight into a preallocated array, so
        100k x 64 reads back in well under a second.
        """
        namespace = validate_namespace(namespace, max_length=_NAMESPACE_LENGTH)
        ids, matrix, metadata = await self._scan(namespace, predicate=None, with_metadata=True)
        assert metadata is not None
        return ids, matrix, metadata

    async def _scan(
        self, namespace: str, *, predicate: Predicate | None, with_metadata: bool = False
    ) -> tuple[list[str], NDArray[np.float64], list[dict[str, Any]] | None]:
        """The namespace's rows (those ``predicate`` accepts), in position order.

        Metadata is decoded only when a predicate needs it or the caller asks for it.
        """
        want_metadata = with_metadata or predicate is not None
        columns: list[ColumnElement[Any]] = [_VECTORS.c.id, _VECTORS.c.dim, _VECTORS.c["values"]]
        if want_metadata:
            # Raw JSON text, decoded a partition at a time: one json.loads per 5000 rows
            # instead of one per row (the per-row decode was half of the read time).
            columns.append(sql_cast(_VECTORS.c["metadata"], Text))
        where = _VECTORS.c.namespace == namespace
        async with self.registry.session() as session:
            size, dim = (
                await session.execute(select(func.count(), func.max(_VECTORS.c.dim)).where(where))
            ).one()
            if not size:
                return [], np.zeros((0, self.dim or 0)), [] if want_metadata else None
            dim = int(dim)
            out = np.empty((int(size), dim), dtype=np.float64)
            ids: list[str] = []
            metadata: list[dict[str, Any]] = []
            statement = (
                select(*columns)
                .where(where)
                .order_by(_VECTORS.c.position, _VECTORS.c.id)
                .execution_options(yield_per=_STREAM_CHUNK)
            )
            result = await session.stream(statement)
            n = 0
            async for partition in result.partitions():
                if any(row[1] != dim for row in partition):
                    raise VectorStoreError(f"namespace {namespace!r} mixes vector dimensions")
                decoded: list[Any] = [{}] * len(partition)
                if want_metadata:
                    texts = ",".join(row[3] or "{}" for row in partition)
                    decoded = json.loads(f"[{texts}]")
                if predicate is not None:
                    keep = [i for i, m in enumerate(decoded) if predicate(m)]
                    partition = [partition[i] for i in keep]
                    decoded = [decoded[i] for i in keep]
                while n + len(partition) > len(out):  # rows were added since the count
                    out = np.concatenate([out, np.empty_like(out)])
                # One decode per partition, straight into the preallocated array.
                blob = b"".join(row[2] for row in partition)
                out[n : n + len(partition)] = np.frombuffer(blob, dtype=_DTYPE).reshape(-1, dim)
                ids.extend(row[0] for row in partition)
                metadata.extend(decoded)
                n += len(partition)
        return ids, out[:n], metadata if want_metadata else None


def _decode(blob: bytes) -> NDArray[np.float64]:
    return np.frombuffer(blob, dtype=_DTYPE).astype(np.float64)
