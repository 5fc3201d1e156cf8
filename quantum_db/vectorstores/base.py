"""The async vector-store interface every store (local, Pinecone) implements.

Semantics follow Pinecone's data plane so that code moves between stores unchanged:
records are ``(id, values, metadata)`` in a namespace (``""`` is the default one);
``upsert`` overwrites by id; ``query`` returns the ``top_k`` best matches under the store's
metric, optionally restricted by a Pinecone-style metadata filter (``$eq``, ``$ne``,
``$gt``, ``$gte``, ``$lt``, ``$lte``, ``$in``, ``$nin``, ``$exists``, ``$and``, ``$or``;
a bare value means ``$eq``).
"""

from __future__ import annotations

import abc
import json
import math
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any, Literal, Self

import numpy as np
from numpy.typing import NDArray

from ..errors import VectorValidationError

__all__ = [
    "MAX_ID_LENGTH",
    "MAX_METADATA_BYTES",
    "Metric",
    "QueryMatch",
    "VectorRecord",
    "VectorStore",
    "validate_ids",
    "validate_metadata",
    "validate_namespace",
    "validate_records",
    "validate_top_k",
    "validate_vector",
]

#: Pinecone's limits, applied by every store so that data moves between them unchanged.
MAX_ID_LENGTH = 512
MAX_METADATA_BYTES = 40 * 1024

Metric = Literal["cosine", "dotproduct"]


@dataclass(frozen=True, slots=True)
class VectorRecord:
    id: str
    values: NDArray[np.float64]
    metadata: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class QueryMatch:
    id: str
    score: float
    values: NDArray[np.float64] | None = None
    metadata: dict[str, Any] = field(default_factory=dict)


class VectorStore(abc.ABC):
    """An async store of vectors with metadata, grouped in namespaces.

    Use as ``async with store:`` (or ``await store.open()`` / ``await store.aclose()``).
    Every method validates its input before anything is sent or written, raising
    :class:`~quantum_db.errors.VectorValidationError`; a store that cannot be reached after
    its retries raises :class:`~quantum_db.errors.VectorStoreUnavailableError`.
    """

    #: The similarity the store's ``query`` ranks by.
    metric: Metric

    async def open(self) -> None:  # noqa: B027 - optional hook
        """Connect (no-op for stores without a connection)."""

    async def aclose(self) -> None:  # noqa: B027 - optional hook
        """Release connections."""

    async def __aenter__(self) -> Self:
        await self.open()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()

    @abc.abstractmethod
    async def upsert(self, records: Sequence[VectorRecord], *, namespace: str = "") -> int:
        """Insert or overwrite ``records``; returns how many were written (all, or raise)."""

    @abc.abstractmethod
    async def fetch(self, ids: Sequence[str], *, namespace: str = "") -> dict[str, VectorRecord]:
        """The records with these ids that exist (missing ids are simply absent)."""

    @abc.abstractmethod
    async def query(
        self,
        vector: Sequence[float] | NDArray[np.float64],
        *,
        top_k: int = 10,
        namespace: str = "",
        filter: Mapping[str, Any] | None = None,
        include_values: bool = False,
    ) -> list[QueryMatch]:
        """The ``top_k`` records most similar to ``vector``, best first."""

    @abc.abstractmethod
    async def list_ids(self, *, namespace: str = "", prefix: str | None = None) -> list[str]:
        """Every id in ``namespace`` (starting with ``prefix`` when given)."""

    @abc.abstractmethod
    async def delete(
        self, ids: Sequence[str] | None = None, *, namespace: str = "", delete_all: bool = False
    ) -> None:
        """Delete these ids, or the whole namespace with ``delete_all=True``."""

    @abc.abstractmethod
    async def namespaces(self) -> list[str]:
        """Namespaces that hold at least one vector."""

    @abc.abstractmethod
    async def count(self, *, namespace: str | None = None) -> int:
        """Vectors in ``namespace``, or in the whole store when ``namespace`` is None."""


# Input validation shared by every store: bad input is refused before anything is written
# or sent, with the same message whichever store is behind the interface.


def _describe(value: object) -> str:
    text = repr(value)
    return text if len(text) <= 60 else f"{text[:57]}..."


def validate_namespace(namespace: object, *, max_length: int = MAX_ID_LENGTH) -> str:
    if not isinstance(namespace, str):
        raise VectorValidationError(f"namespace must be a str, got {type(namespace).__name__}")
    if len(namespace) > max_length or not namespace.isascii() or "\x00" in namespace:
        raise VectorValidationError(
            f"namespace {_describe(namespace)} must be ASCII without NUL, at most "
            f"{max_length} characters"
        )
    return namespace


def _validate_id(value: object, where: str) -> str:
    if not isinstance(value, str):
        raise VectorValidationError(f"{where}: a vector id must be a str, got {_describe(value)}")
    if not value:
        raise VectorValidationError(f"{where}: a vector id must not be empty")
    if len(value) > MAX_ID_LENGTH:
        raise VectorValidationError(
            f"{where}: vector id {_describe(value)} is {len(value)} characters long; "
            f"the limit is {MAX_ID_LENGTH}"
        )
    # Pinecone's rule; PostgreSQL text cannot hold NUL either.
    if not value.isascii() or "\x00" in value:
        raise VectorValidationError(
            f"{where}: vector id {_describe(value)} must be ASCII without NUL characters"
        )
    return value


def validate_ids(ids: object, *, unique: bool = False) -> list[str]:
    """The ids as a list, each a non-empty ASCII str of at most 512 characters."""
    if isinstance(ids, str | bytes) or not isinstance(ids, Sequence):
        raise VectorValidationError(
            f"ids must be a sequence of str (a list), got {type(ids).__name__}"
        )
    checked = [_validate_id(value, f"ids[{i}]") for i, value in enumerate(ids)]
    if unique and len(set(checked)) != len(checked):
        repeated = sorted(i for i, n in Counter(checked).items() if n > 1)
        raise VectorValidationError(
            f"ids repeat within one call: {', '.join(map(repr, repeated[:10]))}"
        )
    return checked


def validate_vector(values: object, *, what: str = "vector") -> NDArray[np.float64]:
    """``values`` as a 1-D float64 array of finite numbers (a copy, never a view)."""
    try:
        array = np.asarray(values)
    except (TypeError, ValueError) as exc:
        raise VectorValidationError(f"{what} is not an array of numbers: {exc}") from None
    # Strings, booleans, objects and ragged nesting are refused, not coerced.
    if array.dtype.kind not in "iuf":
        raise VectorValidationError(
            f"{what} must hold real numbers, got an array of dtype {array.dtype}"
        )
    if array.ndim != 1 or array.size == 0:
        raise VectorValidationError(
            f"{what} must be a non-empty 1-D sequence of numbers, got shape {array.shape}"
        )
    result = np.array(array, dtype=np.float64)
    if not np.all(np.isfinite(result)):
        raise VectorValidationError(f"{what} holds NaN or infinity")
    return result


def _metadata_value(key: str, value: object, where: str) -> Any:
    if isinstance(value, bool | np.bool_):
        return bool(value)
    if isinstance(value, int | np.integer):
        return int(value)
    if isinstance(value, float | np.floating):
        if not math.isfinite(value):
            raise VectorValidationError(f"{where}: metadata {key!r} is NaN or infinity")
        return float(value)
    if isinstance(value, str):
        return value
    if isinstance(value, list | tuple) and all(isinstance(v, str) for v in value):
        return list(value)
    if value is None:
        raise VectorValidationError(
            f"{where}: metadata {key!r} is None; leave the key out instead (Pinecone has no null)"
        )
    raise VectorValidationError(
        f"{where}: metadata {key!r} must be a str, number, bool or list of str, "
        f"got {_describe(value)}"
    )


def validate_metadata(metadata: object, *, where: str = "metadata") -> dict[str, Any]:
    """A JSON-safe copy of ``metadata`` under Pinecone's rules (numpy scalars become Python)."""
    if not isinstance(metadata, Mapping):
        raise VectorValidationError(f"{where}: metadata must be a dict, got {_describe(metadata)}")
    checked: dict[str, Any] = {}
    for key, value in metadata.items():
        if not isinstance(key, str) or not key:
            raise VectorValidationError(f"{where}: metadata keys must be non-empty str: {key!r}")
        if key.startswith("$"):
            # A filter could never name it: "$..." is the operator namespace.
            raise VectorValidationError(f"{where}: metadata key {key!r} must not start with '$'")
        checked[key] = _metadata_value(key, value, where)
    size = len(json.dumps(checked, separators=(",", ":")).encode())
    if size > MAX_METADATA_BYTES:
        raise VectorValidationError(
            f"{where}: metadata is {size} bytes as JSON; the limit is {MAX_METADATA_BYTES}"
        )
    return checked


def validate_records(
    records: object, *, dim: int | None = None
) -> tuple[list[str], NDArray[np.float64], list[dict[str, Any]]]:
    """Check a whole upsert: (ids, values as an [N, dim] array, metadata), or raise.

    Ids must be unique within the call, every vector must have the same dimension (and
    ``dim`` when given), values finite, metadata valid.
    """
    if isinstance(records, str | bytes | Mapping) or not isinstance(records, Sequence):
        raise VectorValidationError(
            f"records must be a sequence of VectorRecord, got {type(records).__name__}"
        )
    ids: list[str] = []
    rows: list[NDArray[np.float64]] = []
    metadata: list[dict[str, Any]] = []
    for i, record in enumerate(records):
        where = f"records[{i}]"
        if not isinstance(record, VectorRecord):
            raise VectorValidationError(f"{where} must be a VectorRecord, got {_describe(record)}")
        ids.append(_validate_id(record.id, where))
        values = validate_vector(record.values, what=f"{where} ({record.id!r}) values")
        expected = dim if dim is not None else (rows[0].size if rows else values.size)
        if values.size != expected:
            raise VectorValidationError(
                f"{where} ({record.id!r}) has dimension {values.size}, expected {expected}"
            )
        rows.append(values)
        metadata.append(validate_metadata(record.metadata, where=f"{where} ({record.id!r})"))
    validate_ids(ids, unique=True)
    matrix = np.vstack(rows) if rows else np.zeros((0, dim or 0))
    return ids, matrix, metadata


def validate_top_k(top_k: object) -> int:
    if isinstance(top_k, bool) or not isinstance(top_k, int | np.integer) or top_k < 1:
        raise VectorValidationError(f"top_k must be a positive int, got {_describe(top_k)}")
    return int(top_k)
