"""Training datasets: validation, atomic versioned storage in the vector store, reading back."""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import re
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np
from numpy.typing import ArrayLike, NDArray
from sqlalchemy import delete, func, select, text
from sqlalchemy.ext.asyncio import AsyncSession

from backends.retry import retry_async

from .errors import (
    DatasetNotFoundError,
    DataShapeError,
    DataValidationError,
    EmptyDatasetError,
    InvalidNameError,
    NonFiniteDataError,
    RegistryError,
)
from .registry.engine import UNIQUE_KEY_RACE, Registry, lost_unique_key_race
from .registry.schema import INT64_MAX, DatasetRow, DatasetWriteRow
from .validation import check_int, check_json, check_seed
from .vectorstores.base import VectorRecord, VectorStore

__all__ = [
    "DEFAULT_SPLITS",
    "Dataset",
    "DatasetInfo",
    "DatasetStore",
    "validate_name",
]

DEFAULT_SPLITS: dict[str, float] = {"train": 0.8, "validation": 0.1, "test": 0.1}
SPLIT_NAMES = ("train", "validation", "test")
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.\-]{0,127}$")
#: Rows per vector-store write; bounds memory for large datasets.
_WRITE_BATCH = 10_000

logger = logging.getLogger(__name__)


def validate_name(name: object, what: str = "dataset") -> str:
    if not isinstance(name, str) or not _NAME.match(name):
        raise InvalidNameError(
            f"{what} name {name!r} is not allowed: use 1-128 characters from "
            "[A-Za-z0-9_.-], starting with a letter or digit"
        )
    return name


@dataclass(frozen=True, slots=True)
class DatasetInfo:
    """What the registry knows about one version of a dataset."""

    id: str
    name: str
    version: int
    n_samples: int
    dim: int
    label_kind: Literal["class", "regression"]
    n_classes: int | None
    encoding: dict[str, Any]
    splits: dict[str, Any]
    metadata: dict[str, Any]
    content_hash: str
    created_at: float
    namespace: str = field(repr=False)

    @classmethod
    def from_row(cls, row: DatasetRow) -> DatasetInfo:
        return cls(
            id=row.id,
            name=row.name,
            version=row.version,
            n_samples=row.n_samples,
            dim=row.dim,
            label_kind=row.label_kind,  # type: ignore[arg-type]
            n_classes=row.n_classes,
            encoding=row.encoding,
            splits=row.splits,
            metadata=row.user_metadata,
            content_hash=row.content_hash,
            created_at=row.created_at,
            namespace=row.namespace,
        )


@dataclass(frozen=True, slots=True)
class Dataset:
    """A dataset version read back: ``data [N, dim]``, ``labels [N]``, ``split [N]``."""

    info: DatasetInfo
    data: NDArray[np.float64]
    labels: NDArray[Any]
    split: NDArray[np.str_]

    def subset(self, split: str | None) -> tuple[NDArray[np.float64], NDArray[Any]]:
        if split is None:
            return self.data, self.labels
        if split not in SPLIT_NAMES:
            raise DataValidationError(f"split must be one of {SPLIT_NAMES} or None, got {split!r}")
        mask = self.split == split
        return self.data[mask], self.labels[mask]


def _validate_data(data: ArrayLike) -> NDArray[np.float64]:
    try:
        raw = np.asarray(data)
        _check_numeric_kind(raw, "data")
        array = raw.astype(np.float64, copy=False)
    except ValueError as exc:
        if isinstance(exc, DataValidationError):
            raise
        text = str(exc)
        if "inhomogeneous" in text or "sequence" in text:
            raise DataShapeError(
                "data is ragged: every sample needs the same number of features"
            ) from None
        raise DataValidationError(f"data must be numeric: {text}") from None
    except TypeError as exc:
        raise DataValidationError(f"data must be a numeric array: {exc}") from None
    if array.ndim == 1:
        raise DataShapeError(
            f"data must be 2-D [n_samples, n_features]; got a 1-D array of length {array.size} "
            "(use data.reshape(-1, 1) for one feature, or data.reshape(1, -1) for one sample)"
        )
    if array.ndim != 2:
        raise DataShapeError(f"data must be 2-D [n_samples, n_features]; got shape {array.shape}")
    if array.shape[0] == 0 or array.shape[1] == 0:
        raise EmptyDatasetError(f"data has shape {array.shape}: no samples or no features")
    if not np.all(np.isfinite(array)):
        row, col = np.argwhere(~np.isfinite(array))[0]
        raise NonFiniteDataError(
            f"data[{row}, {col}] is {array[row, col]}; training data must be finite"
        )
    return np.ascontiguousarray(array)


def _check_numeric_kind(array: NDArray[Any], what: str) -> None:
    """Refuse what float64 would silently damage: complex (the imaginary part would be
    dropped), objects (anything could hide there), text, dates."""
    kind = array.dtype.kind
    if kind == "c":
        raise DataValidationError(
            f"{what} is complex ({array.dtype}); quantum-db stores real numbers only: store "
            "the real and imaginary parts as separate features (np.hstack([x.real, x.imag]))"
        )
    if kind == "O":
        raise DataValidationError(
            f"{what} is an object array; give a numeric array (floats, integers or booleans)"
        )
    if kind not in "biuf":
        raise DataValidationError(
            f"{what} must be numeric (floats, integers or booleans), got dtype {array.dtype}"
        )
    if kind in "iu" and array.size and what == "data":
        # Samples are stored as float64, exact for integers up to 2**53 only.
        largest = max(abs(int(array.min())), abs(int(array.max())))
        if largest > 2**53:
            raise DataValidationError(
                f"{what} holds the integer {largest}, beyond 2**53: stored as float64 it would "
                "lose its last digits; scale it, or store it as floats on purpose"
            )


def _validate_labels(labels: ArrayLike, n: int) -> tuple[NDArray[Any], str, int | None]:
    try:
        array = np.asarray(labels)
    except ValueError:
        raise DataShapeError("labels are ragged: give one scalar label per sample") from None
    if array.ndim != 1:
        raise DataShapeError(f"labels must be 1-D (one per sample); got shape {array.shape}")
    if array.shape[0] != n:
        raise DataShapeError(f"{array.shape[0]} labels for {n} samples: give one label per sample")
    if array.dtype.kind == "b":
        array = array.astype(np.int64)
    if array.dtype.kind == "u" and array.size and int(array.max()) > INT64_MAX:
        row = int(np.argmax(array))
        raise DataValidationError(
            f"labels[{row}] is {int(array[row])}; class labels must fit in a signed 64-bit "
            f"integer (<= {INT64_MAX})"
        )
    if array.dtype.kind in "iu":
        values = array.astype(np.int64)
        return values, "class", int(np.unique(values).size)
    if array.dtype.kind == "f":
        if not np.all(np.isfinite(array)):
            (row,) = np.argwhere(~np.isfinite(array))[0]
            raise NonFiniteDataError(f"labels[{row}] is {array[row]}; labels must be finite")
        values = array.astype(np.float64)
        return values, "regression", None
    raise DataValidationError(
        f"labels must be integers (classes) or floats (regression targets), got dtype "
        f"{array.dtype}; map class names to integers first"
    )


def _split_assignment(
    labels: NDArray[Any], label_kind: str, fractions: Mapping[str, float], seed: int
) -> NDArray[np.str_]:
    """Seeded split of the rows; stratified by class so small classes appear in each split."""
    unknown = set(fractions) - set(SPLIT_NAMES)
    if unknown or not fractions:
        raise DataValidationError(f"splits must use the names {SPLIT_NAMES}, got {dict(fractions)}")
    values = np.array([float(fractions.get(s, 0.0)) for s in SPLIT_NAMES])
    if np.any(values < 0) or not np.isclose(values.sum(), 1.0):
        raise DataValidationError(
            f"split fractions must be >= 0 and sum to 1, got {dict(fractions)}"
        )
    n = labels.shape[0]
    rng = np.random.default_rng(seed)
    out = np.empty(n, dtype="<U10")
    groups = (
        [np.flatnonzero(labels == c) for c in np.unique(labels)]
        if label_kind == "class"
        else [np.arange(n)]
    )
    for rows in groups:
        rows = rows[rng.permutation(rows.size)]
        bounds = np.round(np.cumsum(values) * rows.size).astype(int)
        start = 0
        for name, stop in zip(SPLIT_NAMES, bounds, strict=True):
            out[rows[start:stop]] = name
            start = stop
    return out


def _content_hash(data: NDArray[np.float64], labels: NDArray[Any]) -> str:
    digest = hashlib.sha256()
    digest.update(repr((data.shape, labels.dtype.str)).encode())
    digest.update(data.tobytes())
    digest.update(np.ascontiguousarray(labels).tobytes())
    return digest.hexdigest()


async def _latest_if_same(session: AsyncSession, fields: Mapping[str, Any]) -> DatasetInfo | None:
    """The latest version of the dataset if it holds exactly what ``fields`` describe."""
    row = await session.scalar(
        select(DatasetRow)
        .where(DatasetRow.name == fields["name"])
        .order_by(DatasetRow.version.desc())
        .limit(1)
    )
    if row is None or row.content_hash != fields["content_hash"]:
        return None
    stored = (row.splits, row.encoding, row.user_metadata)
    wanted = (fields["splits"], fields["encoding"], fields["user_metadata"])
    if _canonical(stored) != _canonical(wanted):
        return None
    return DatasetInfo.from_row(row)


def _canonical(value: Any) -> str:
    return json.dumps(value, sort_keys=True, separators=(",", ":"))


def _encoding_contract(
    data: NDArray[np.float64], encoding: Mapping[str, Any] | None
) -> dict[str, Any]:
    contract: dict[str, Any] = {"encoder": "angle", "scaling": "minmax", "n_qubits": data.shape[1]}
    if encoding:
        contract.update(dict(encoding))
    if contract["encoder"] not in ("angle", "amplitude"):
        raise DataValidationError(
            f"encoding.encoder must be 'angle' or 'amplitude', got {contract['encoder']!r}"
        )
    if contract["scaling"] not in ("minmax", "standard", "none"):
        raise DataValidationError(
            f"encoding.scaling must be 'minmax', 'standard' or 'none', got {contract['scaling']!r}"
        )
    # The statistics the encoder's feature scaling needs, fixed at storage time.
    contract["feature_min"] = data.min(axis=0).tolist()
    contract["feature_max"] = data.max(axis=0).tolist()
    contract["feature_mean"] = data.mean(axis=0).tolist()
    contract["feature_std"] = data.std(axis=0).tolist()
    return contract


class DatasetStore:
    """Datasets of one QuantumDatabase: samples in the vector store, versions in the registry.

    A write first records its fresh namespace in ``dataset_writes`` (committed on its own,
    with ``owner_id``, the writer's lease), then puts the samples there, and finally inserts
    the version's row and deletes the write record in one transaction. Until that commit
    nothing is visible, so a crash at any point leaves the earlier versions exactly as they
    were; a write that fails cleans up after itself, and one that is killed leaves its
    write record, from which the sweeper finds and deletes the orphaned samples.

    Storing what the latest version already holds returns that version and writes
    nothing, unless ``new_version=True``. "The same" means an equal ``content_hash`` (a
    SHA-256 of the samples bit for bit, their shape and the labels with their dtype) and
    equal splits (fractions and seed, hence the same assignment), encoding contract and
    metadata: a store that would change any of them makes a new version.
    """

    def __init__(
        self, registry: Registry, vectors: VectorStore, *, owner_id: str | None = None
    ) -> None:
        self._registry = registry
        self._vectors = vectors
        self.owner_id = owner_id

    async def store(
        self,
        name: str,
        data: ArrayLike,
        labels: ArrayLike,
        metadata: Mapping[str, Any] | None = None,
        *,
        splits: Mapping[str, float] | None = None,
        split_seed: int = 0,
        encoding: Mapping[str, Any] | None = None,
        new_version: bool = False,
    ) -> DatasetInfo:
        validate_name(name)
        array = _validate_data(data)
        values, label_kind, n_classes = _validate_labels(labels, array.shape[0])
        split_seed = check_seed(split_seed, "split_seed")
        fractions = dict(DEFAULT_SPLITS if splits is None else splits)
        assignment = _split_assignment(values, label_kind, fractions, split_seed)
        contract = check_json(_encoding_contract(array, encoding), "encoding")
        user_metadata = check_json(metadata, "metadata")
        counts = {s: int(np.count_nonzero(assignment == s)) for s in SPLIT_NAMES}
        fields: dict[str, Any] = {
            "name": name,
            "dim": array.shape[1],
            "n_samples": array.shape[0],
            "label_kind": label_kind,
            "n_classes": n_classes,
            "encoding": contract,
            "splits": check_json(
                {"fractions": fractions, "seed": split_seed, "counts": counts}, "splits"
            ),
            "user_metadata": user_metadata,
            "content_hash": _content_hash(array, values),
        }
        await self._check_dimension(name, array.shape[1])
        if not new_version:
            async with self._registry.session() as session:
                same = await _latest_if_same(session, fields)
            if same is not None:
                return same

        namespace = f"ds-{uuid.uuid4().hex}"
        async with self._registry.session() as session:
            session.add(
                DatasetWriteRow(namespace=namespace, dataset_name=name, owner_id=self.owner_id)
            )
        try:
            for start in range(0, array.shape[0], _WRITE_BATCH):
                stop = min(start + _WRITE_BATCH, array.shape[0])
                await self._vectors.upsert(
                    [
                        VectorRecord(
                            id=f"s{i:09d}",
                            values=array[i],
                            metadata={
                                "row": i,
                                "label": values[i].item(),
                                "split": str(assignment[i]),
                            },
                        )
                        for i in range(start, stop)
                    ],
                    namespace=namespace,
                )
            info = await self._commit(namespace, new_version, fields)
        except BaseException:
            # Shielded: a cancelled write still cleans up; what a crash leaves, the
            # sweeper finds through the write record.
            await asyncio.shield(self._abandon(namespace))
            raise
        if info.namespace != namespace:  # a concurrent writer stored the same version first
            await asyncio.shield(self._abandon(namespace))
        return info

    async def _abandon(self, namespace: str) -> None:
        """Best effort: free the samples of a write that did not commit, then its record."""
        try:
            await self._vectors.delete(namespace=namespace, delete_all=True)
            async with self._registry.session() as session:
                await session.execute(
                    delete(DatasetWriteRow).where(DatasetWriteRow.namespace == namespace)
                )
        except Exception as exc:  # the record stays, so the sweeper finishes the job
            logger.warning("could not clean up the aborted dataset write %s: %s", namespace, exc)

    async def _check_dimension(self, name: str, dim: int) -> None:
        async with self._registry.session() as session:
            existing = await session.scalar(
                select(DatasetRow.dim).where(DatasetRow.name == name).limit(1)
            )
        if existing is not None and existing != dim:
            raise DataShapeError(
                f"dataset {name!r} has {existing} features in its earlier versions; this data "
                f"has {dim}. Store it under another name"
            )

    async def _commit(
        self, namespace: str, new_version: bool, fields: dict[str, Any]
    ) -> DatasetInfo:
        # Concurrent writers of one name race for the next version number.
        async def attempt() -> DatasetInfo:
            async with self._registry.session() as session:
                if self._registry.dialect == "postgresql":
                    # Writers of one name take turns: otherwise a writer could miss an
                    # identical version committed between its check and its insert (each
                    # statement sees a fresh snapshot). SQLite's BEGIN IMMEDIATE already
                    # serializes writers.
                    await session.execute(
                        text("SELECT pg_advisory_xact_lock(hashtext(:key))"),
                        {"key": f"quantum-db dataset {fields['name']}"},
                    )
                existing = await session.scalar(
                    select(DatasetRow.dim).where(DatasetRow.name == fields["name"]).limit(1)
                )
                if existing is not None and existing != fields["dim"]:
                    raise DataShapeError(
                        f"dataset {fields['name']!r} has {existing} features in its earlier "
                        f"versions; this data has {fields['dim']}"
                    )
                if not new_version:
                    same = await _latest_if_same(session, fields)
                    if same is not None:
                        return same
                latest = await session.scalar(
                    select(func.max(DatasetRow.version)).where(DatasetRow.name == fields["name"])
                )
                row = DatasetRow(
                    id=str(uuid.uuid4()),
                    version=(latest or 0) + 1,
                    namespace=namespace,
                    **fields,
                )
                session.add(row)
                await session.execute(
                    delete(DatasetWriteRow).where(DatasetWriteRow.namespace == namespace)
                )
            return DatasetInfo.from_row(row)

        try:
            return await retry_async(
                attempt,
                policy=UNIQUE_KEY_RACE,
                service="registry",
                operation=f"allocate a version of dataset {fields['name']!r}",
                retryable=lost_unique_key_race,
                level=logging.DEBUG,  # an expected race, not a fault
            )
        except RegistryError as exc:
            if lost_unique_key_race(exc):
                raise RegistryError(
                    f"could not allocate a version for dataset {fields['name']!r}"
                ) from exc
            raise

    async def list(self, name: str | None = None) -> list[DatasetInfo]:
        query = select(DatasetRow).order_by(DatasetRow.name, DatasetRow.version)
        if name is not None:
            query = query.where(DatasetRow.name == name)
        async with self._registry.session() as session:
            rows = (await session.scalars(query)).all()
        return [DatasetInfo.from_row(r) for r in rows]

    async def info(self, name: str, version: int | None = None) -> DatasetInfo:
        query = select(DatasetRow).where(DatasetRow.name == name)
        if version is not None:
            version = check_int(version, "version", minimum=1)
        if version is None:
            query = query.order_by(DatasetRow.version.desc()).limit(1)
        else:
            query = query.where(DatasetRow.version == version)
        async with self._registry.session() as session:
            row = await session.scalar(query)
        if row is None:
            known = sorted({i.name for i in await self.list()})
            which = name if version is None else f"{name} v{version}"
            raise DatasetNotFoundError(
                f"no dataset {which!r}; stored datasets: {', '.join(known) or 'none'}"
            )
        return DatasetInfo.from_row(row)

    async def load(self, name: str, version: int | None = None) -> Dataset:
        info = await self.info(name, version)
        ids, data, metadata = await _read_namespace(self._vectors, info.namespace)
        if len(ids) != info.n_samples:
            raise DataValidationError(
                f"dataset {name!r} v{info.version} should hold {info.n_samples} samples but its "
                f"namespace holds {len(ids)}; the vector store lost data"
            )
        rows = np.array([m["row"] for m in metadata], dtype=np.int64)
        order = np.argsort(rows, kind="stable")
        dtype = np.int64 if info.label_kind == "class" else np.float64
        labels = np.array([metadata[i]["label"] for i in order], dtype=dtype)
        split = np.array([metadata[i]["split"] for i in order], dtype="<U10")
        return Dataset(info, data[order], labels, split)

    async def delete(self, name: str, version: int | None = None) -> int:
        """Delete one version (or all); returns how many versions were removed."""
        infos = [await self.info(name, version)] if version is not None else await self.list(name)
        if not infos:
            raise DatasetNotFoundError(f"no dataset {name!r}")
        async with self._registry.session() as session:
            await session.execute(
                delete(DatasetRow).where(DatasetRow.id.in_([i.id for i in infos]))
            )
        # The rows are gone (and so the data invisible); now free the samples.
        for info in infos:
            await self._vectors.delete(namespace=info.namespace, delete_all=True)
        return len(infos)


async def _read_namespace(
    store: VectorStore, namespace: str
) -> tuple[list[str], NDArray[np.float64], list[dict[str, Any]]]:
    reader = getattr(store, "read_namespace", None)
    if reader is not None:
        ids, data, metadata = await reader(namespace)
        return list(ids), np.asarray(data, dtype=np.float64), list(metadata)
    ids = await store.list_ids(namespace=namespace)
    records: dict[str, VectorRecord] = {}
    for start in range(0, len(ids), 1000):
        records.update(await store.fetch(ids[start : start + 1000], namespace=namespace))
    ordered = [records[i] for i in ids if i in records]
    if not ordered:
        return [], np.zeros((0, 0)), []
    data = np.vstack([r.values for r in ordered]).astype(np.float64)
    return [r.id for r in ordered], data, [r.metadata for r in ordered]
