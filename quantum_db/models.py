"""The model registry: named models, numbered versions of their parameters, and aliases."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Protocol, runtime_checkable

import numpy as np
from numpy.typing import NDArray
from sqlalchemy import func, select

from backends.retry import retry_async

from .datasets import validate_name
from .errors import (
    DataValidationError,
    InvalidNameError,
    ModelNotFoundError,
    RegistryError,
    SerializationError,
)
from .registry.engine import UNIQUE_KEY_RACE, Registry, lost_unique_key_race
from .registry.schema import ModelAliasRow, ModelRow, ModelVersionRow
from .serialization import content_hash, pack_state, unpack_state
from .validation import check_int, check_json, check_number, check_text

__all__ = ["ModelRegistry", "ModelVersion", "SupportsRegistry"]


@runtime_checkable
class SupportsRegistry(Protocol):
    """A model that can describe itself to the registry (``quantum_ml`` models do)."""

    def registry_payload(self) -> Mapping[str, Any]:
        """``{"parameters": {name: array}, "architecture": {...}, "encoding": {...} | None}``."""
        ...


@dataclass(frozen=True, slots=True)
class ModelVersion:
    name: str
    version: int
    parameters: dict[str, NDArray[Any]]
    architecture: dict[str, Any]
    encoding: dict[str, Any] | None
    metrics: dict[str, float]
    provenance: dict[str, Any]
    aliases: tuple[str, ...]
    parameters_hash: str
    created_at: float


def _as_parameters(value: Any) -> dict[str, NDArray[Any]]:
    if isinstance(value, np.ndarray | list | tuple):
        value = {"weights": value}
    if not isinstance(value, Mapping) or not value:
        raise DataValidationError(
            "parameters must be an array, a non-empty mapping of name -> array, or a model "
            "with registry_payload()"
        )
    out: dict[str, NDArray[Any]] = {}
    for key, array in value.items():
        if not isinstance(key, str):
            raise DataValidationError(f"parameter names must be strings, got {key!r}")
        if hasattr(array, "detach"):  # torch tensors
            array = array.detach().cpu().numpy()
        try:
            arr = np.asarray(array)
        except ValueError as exc:
            raise DataValidationError(f"parameters[{key!r}] is not an array: {exc}") from None
        if arr.dtype.kind not in "biuf":
            raise DataValidationError(f"parameters[{key!r}] must be numeric, got {arr.dtype}")
        if arr.dtype.kind == "f" and not np.all(np.isfinite(arr)):
            raise DataValidationError(f"parameters[{key!r}] holds NaN or infinity")
        out[key] = arr
    return out


def _as_metrics(metrics: Mapping[str, Any] | None) -> dict[str, float]:
    if metrics is not None and not isinstance(metrics, Mapping):
        raise DataValidationError(f"metrics must be a mapping, got {type(metrics).__name__}")
    out: dict[str, float] = {}
    for key, value in (metrics or {}).items():
        if not isinstance(key, str):
            raise DataValidationError(f"metric names must be strings, got {key!r}")
        out[key] = check_number(value, f"metric {key!r}")
    return out


def _version_number(version: object) -> int:
    return check_int(version, "version", minimum=1)


class ModelRegistry:
    """``db.models``: register versions, fetch them by number or alias, move aliases."""

    def __init__(self, registry: Registry) -> None:
        self._registry = registry

    async def register(
        self,
        name: str,
        model: Any,
        *,
        architecture: Mapping[str, Any] | None = None,
        metrics: Mapping[str, Any] | None = None,
        encoding: Mapping[str, Any] | None = None,
        provenance: Mapping[str, Any] | None = None,
    ) -> ModelVersion:
        """Store a new version of ``name``: ``model`` is parameters or a registrable model."""
        validate_name(name, "model")
        if isinstance(model, SupportsRegistry):
            payload = model.registry_payload()
            parameters = _as_parameters(payload["parameters"])
            architecture = {**dict(payload.get("architecture") or {}), **dict(architecture or {})}
            encoding = encoding if encoding is not None else payload.get("encoding")
        else:
            parameters = _as_parameters(model)
        arch = check_json(architecture, "architecture")
        enc = check_json(encoding, "encoding") if encoding is not None else None
        prov = check_json(provenance, "provenance")
        scores = _as_metrics(metrics)
        try:
            blob = pack_state(parameters)
        except SerializationError as exc:
            raise DataValidationError(str(exc)) from exc

        # Concurrent writers of one name race for the next version number.
        async def attempt() -> ModelVersion:
            async with self._registry.session() as session:
                model_row = await session.scalar(select(ModelRow).where(ModelRow.name == name))
                if model_row is None:
                    model_row = ModelRow(name=name)
                    session.add(model_row)
                    await session.flush()
                latest = await session.scalar(
                    select(func.max(ModelVersionRow.version)).where(
                        ModelVersionRow.model_id == model_row.id
                    )
                )
                row = ModelVersionRow(
                    model_id=model_row.id,
                    version=(latest or 0) + 1,
                    architecture=arch,
                    encoding=enc,
                    metrics=scores,
                    provenance=prov,
                    parameters=blob,
                    parameters_hash=content_hash(blob),
                )
                session.add(row)
            return self._version(name, row, ())

        try:
            return await retry_async(
                attempt,
                policy=UNIQUE_KEY_RACE,
                service="registry",
                operation=f"allocate a version of model {name!r}",
                retryable=lost_unique_key_race,
                level=logging.DEBUG,  # an expected race, not a fault
            )
        except RegistryError as exc:
            if lost_unique_key_race(exc):
                raise RegistryError(f"could not allocate a version for model {name!r}") from exc
            raise

    def _version(self, name: str, row: ModelVersionRow, aliases: tuple[str, ...]) -> ModelVersion:
        if content_hash(row.parameters) != row.parameters_hash:
            raise SerializationError(
                f"model {name!r} v{row.version}: stored parameters do not match their hash"
            )
        return ModelVersion(
            name=name,
            version=row.version,
            parameters=unpack_state(row.parameters),
            architecture=row.architecture,
            encoding=row.encoding,
            metrics=row.metrics,
            provenance=row.provenance,
            aliases=aliases,
            parameters_hash=row.parameters_hash,
            created_at=row.created_at,
        )

    async def get(
        self, name: str, version: int | None = None, alias: str | None = None
    ) -> ModelVersion:
        """A version by number, by alias, or the latest when neither is given."""
        if version is not None and alias is not None:
            raise DataValidationError("give a version or an alias, not both")
        if version is not None:
            version = _version_number(version)
        async with self._registry.session() as session:
            model_row = await session.scalar(select(ModelRow).where(ModelRow.name == name))
            if model_row is None:
                raise ModelNotFoundError(f"no model named {name!r}")
            if alias is not None:
                alias_row = await session.get(ModelAliasRow, (model_row.id, alias))
                if alias_row is None:
                    raise ModelNotFoundError(f"model {name!r} has no alias {alias!r}")
                version = alias_row.version
            query = select(ModelVersionRow).where(ModelVersionRow.model_id == model_row.id)
            if version is None:
                query = query.order_by(ModelVersionRow.version.desc()).limit(1)
            else:
                query = query.where(ModelVersionRow.version == version)
            row = await session.scalar(query)
            if row is None:
                raise ModelNotFoundError(f"model {name!r} has no version {version}")
            aliases = tuple(
                (
                    await session.scalars(
                        select(ModelAliasRow.alias).where(
                            ModelAliasRow.model_id == model_row.id,
                            ModelAliasRow.version == row.version,
                        )
                    )
                ).all()
            )
        return self._version(name, row, tuple(sorted(aliases)))

    async def set_alias(self, name: str, version: int, alias: str) -> None:
        """Point ``alias`` (e.g. ``"production"``) at ``version``, moving it if it exists."""
        validate_name(alias, "alias")
        # The alias column is 64 wide: PostgreSQL would refuse more, SQLite would keep it.
        check_text(alias, "alias", max_length=64, error=InvalidNameError)
        version = _version_number(version)
        if alias.isdigit():
            raise DataValidationError(f"alias {alias!r} would read as a version number")
        async with self._registry.session() as session:
            model_row = await session.scalar(select(ModelRow).where(ModelRow.name == name))
            if model_row is None:
                raise ModelNotFoundError(f"no model named {name!r}")
            exists = await session.scalar(
                select(ModelVersionRow.id).where(
                    ModelVersionRow.model_id == model_row.id, ModelVersionRow.version == version
                )
            )
            if exists is None:
                raise ModelNotFoundError(f"model {name!r} has no version {version}")
            row = await session.get(ModelAliasRow, (model_row.id, alias))
            if row is None:
                session.add(ModelAliasRow(model_id=model_row.id, alias=alias, version=version))
            else:
                row.version = version

    async def list_versions(self, name: str) -> list[int]:
        async with self._registry.session() as session:
            model_row = await session.scalar(select(ModelRow).where(ModelRow.name == name))
            if model_row is None:
                raise ModelNotFoundError(f"no model named {name!r}")
            versions = await session.scalars(
                select(ModelVersionRow.version)
                .where(ModelVersionRow.model_id == model_row.id)
                .order_by(ModelVersionRow.version)
            )
            return list(versions.all())

    async def list(self) -> list[str]:
        async with self._registry.session() as session:
            return list(
                (await session.scalars(select(ModelRow.name).order_by(ModelRow.name))).all()
            )
