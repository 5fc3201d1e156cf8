"""The model registry: named models, numbered versions of their parameters, and aliases.

A version whose architecture has ``"kind": "torch"`` holds every ``state_dict()`` tensor of
a ``torch.nn.Module`` as an array, and names the importable factory (``"pkg.mod:func"``)
and the JSON keyword arguments that build the module again: ``ModelVersion.build()``
imports the factory, calls it and loads the arrays, so no module is ever pickled.
"""

from __future__ import annotations

import importlib
import logging
import random
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

import numpy as np
from numpy.typing import NDArray
from sqlalchemy import func, select

from backends.errors import MissingDependencyError
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

if TYPE_CHECKING:
    import torch

__all__ = ["ModelRegistry", "ModelVersion", "SupportsRegistry", "import_factory"]


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

    def build(self) -> Any:
        """The live object this version describes, rebuilt from its architecture.

        Kind ``"torch"``: imports the factory named in the architecture, calls it with the
        stored keyword arguments, loads every stored tensor bit for bit
        (``load_state_dict(strict=True)``) and freezes the stored frozen names again.
        Torch's, NumPy's and Python's global random states are left as they were.
        Raises :class:`SerializationError` for any other kind, or when the factory cannot
        be imported or builds a module whose tensors differ in name, shape or dtype.
        """
        return _build(self.architecture, self.parameters, f"model {self.name!r} v{self.version}")


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
        elif callable(getattr(model, "state_dict", None)) and hasattr(model, "named_modules"):
            raise DataValidationError(
                f"a bare {type(model).__name__} module cannot be registered: the registry "
                "stores the factory that builds it, not a pickle. Register "
                "quantum_ml.torch_models.TorchModel(module), for a module built by a "
                "@torch_factory function or given a spec with with_spec()"
            )
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
        if arch.get("kind") == TORCH_KIND:
            # Build it once now, so that a version that could never be loaded (a factory
            # that is not importable, tensors that do not fit it) is refused, not stored.
            try:
                _build_torch(arch, parameters, f"model {name!r}")
            except SerializationError as exc:
                raise DataValidationError(f"cannot register model {name!r}: {exc}") from exc

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

    async def load(self, name: str, version: int | None = None, alias: str | None = None) -> Any:
        """The rebuilt object of a version (see :meth:`ModelVersion.build`), picked as by
        :meth:`get`. Building runs on the event loop's thread: it restores the global
        random states afterwards, which a worker thread could not do safely."""
        return (await self.get(name, version=version, alias=alias)).build()

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


# --------------------------------------------------------------------------- building
#: The architecture kind of a ``torch.nn.Module`` stored as state arrays and a factory.
TORCH_KIND = "torch"


def _build(
    architecture: Mapping[str, Any], parameters: Mapping[str, NDArray[Any]], label: str
) -> Any:
    kind = architecture.get("kind")
    if kind == TORCH_KIND:
        return _build_torch(architecture, parameters, label)
    if kind is None:
        raise SerializationError(
            f"{label} holds bare parameters (its architecture names no kind): there is "
            "nothing to build; read its .parameters"
        )
    raise SerializationError(
        f"{label} has architecture kind {kind!r}; build() rebuilds kind {TORCH_KIND!r} only "
        "(other kinds are rebuilt by their own class, e.g. QuantumModel.from_registry)"
    )


def import_factory(path: object, label: str) -> Callable[..., Any]:
    """The callable a ``"package.module:function"`` path names (``label`` starts each
    error message); :class:`SerializationError` when there is none."""
    module_name, _, qualname = path.partition(":") if isinstance(path, str) else ("", "", "")
    if not (
        all(part.isidentifier() for part in module_name.split("."))
        and all(part.isidentifier() for part in qualname.split("."))
    ):
        raise SerializationError(
            f"{label}: factory {path!r} is not of the form 'package.module:function'"
        )
    try:
        target: Any = importlib.import_module(module_name)
    except Exception as exc:  # an import runs arbitrary code; any failure means "cannot"
        raise SerializationError(
            f"{label}: cannot import module {module_name!r} of factory {path!r} "
            f"({type(exc).__name__}: {exc})"
        ) from exc
    for part in qualname.split("."):
        try:
            target = getattr(target, part)
        except AttributeError:
            raise SerializationError(
                f"{label}: factory {path!r} does not exist ({module_name!r} has no {qualname!r})"
            ) from None
    if not callable(target):
        raise SerializationError(
            f"{label}: factory {path!r} is a {type(target).__name__}, not a callable"
        )
    return target  # type: ignore[no-any-return]


@contextmanager
def _global_random_state_kept(torch_module: Any) -> Iterator[None]:
    """Restore torch's CPU, NumPy's legacy and Python's random states on exit.

    A factory's default initialisation draws from them; building a stored model must not
    shift the random stream of the training code around it.
    """
    numpy_state = np.random.get_state()
    python_state = random.getstate()
    try:
        with torch_module.random.fork_rng(devices=[]):
            yield
    finally:
        np.random.set_state(numpy_state)
        random.setstate(python_state)


def _torch_field(architecture: Mapping[str, Any], key: str, kind: type, label: str) -> Any:
    value = architecture.get(key)
    if not isinstance(value, kind):
        raise SerializationError(
            f"{label}: the torch architecture's {key!r} must be a {kind.__name__}, got {value!r}"
        )
    return value


def _build_torch(
    architecture: Mapping[str, Any], parameters: Mapping[str, NDArray[Any]], label: str
) -> torch.nn.Module:
    try:
        import torch
    except ImportError as exc:  # pragma: no cover - depends on the environment
        raise MissingDependencyError(
            f"{label} is a torch model; building it needs PyTorch: pip install 'quantum-db[torch]'"
        ) from exc

    factory = _torch_field(architecture, "factory", str, label)
    kwargs: dict[str, Any] = _torch_field(architecture, "kwargs", dict, label)
    keys: list[Any] = _torch_field(architecture, "state_keys", list, label)
    dtypes: dict[str, Any] = _torch_field(architecture, "dtypes", dict, label)
    frozen: list[Any] = _torch_field(architecture, "frozen", list, label)
    if len(set(keys)) != len(keys) or set(keys) != set(parameters):
        raise SerializationError(
            f"{label}: the stored arrays {sorted(parameters)} are not the state keys "
            f"{keys} the architecture lists"
        )
    for key in keys:
        if dtypes.get(key) != str(parameters[key].dtype):
            raise SerializationError(
                f"{label}: state {key!r} is stored as {parameters[key].dtype}, but the "
                f"architecture records {dtypes.get(key)!r}"
            )
    build = import_factory(factory, label)
    with _global_random_state_kept(torch):
        try:
            module = build(**kwargs)
        except Exception as exc:  # the factory is the user's code: report what it raised
            raise SerializationError(
                f"{label}: factory {factory}(**{kwargs!r}) raised {type(exc).__name__}: {exc}"
            ) from exc
    if not isinstance(module, torch.nn.Module):
        raise SerializationError(
            f"{label}: factory {factory} returned a {type(module).__name__}, not a torch.nn.Module"
        )
    tensors = {key: _tensor(torch, parameters[key]) for key in keys}
    _check_state_fits(module.state_dict(), tensors, factory, label)
    try:
        module.load_state_dict(tensors, strict=True)
    except RuntimeError as exc:  # the checks above leave little, but say what torch said
        raise SerializationError(f"{label}: load_state_dict refused the state: {exc}") from exc
    _freeze_names(module, frozen, label)
    return module


def _tensor(torch_module: Any, array: NDArray[Any]) -> torch.Tensor:
    """A tensor of ``array``'s exact dtype; copied only when torch cannot share it."""
    if not (array.flags.writeable and array.dtype.isnative):
        array = np.array(array, dtype=array.dtype.newbyteorder("="), copy=True)
    try:
        tensor: torch.Tensor = torch_module.from_numpy(array)
    except TypeError as exc:
        raise SerializationError(f"torch has no dtype for stored {array.dtype} arrays") from exc
    return tensor


def _check_state_fits(
    expected: Mapping[str, Any], stored: Mapping[str, torch.Tensor], factory: str, label: str
) -> None:
    """The factory's fresh ``state_dict()`` and the stored one agree in keys, shapes, dtypes."""
    missing = [key for key in expected if key not in stored]
    unexpected = [key for key in stored if key not in expected]
    if missing or unexpected:
        raise SerializationError(
            f"{label}: {factory} builds a module whose state keys differ from the stored "
            f"ones (missing from the stored state: {missing}; not in the module: {unexpected})"
        )
    for key, fresh in expected.items():
        given = stored[key]
        if not hasattr(fresh, "shape") or not hasattr(fresh, "dtype"):
            raise SerializationError(
                f"{label}: {factory} builds a module whose state {key!r} is a "
                f"{type(fresh).__name__}, not a tensor"
            )
        if tuple(fresh.shape) != tuple(given.shape) or fresh.dtype != given.dtype:
            raise SerializationError(
                f"{label}: state {key!r} is stored as {given.dtype} {tuple(given.shape)}, but "
                f"{factory} builds {fresh.dtype} {tuple(fresh.shape)}"
            )


def _freeze_names(module: torch.nn.Module, names: list[Any], label: str) -> None:
    """``requires_grad=False`` on the parameters of each named submodule or parameter."""
    submodules = dict(module.named_modules())
    own = dict(module.named_parameters())
    for name in names:
        if isinstance(name, str) and name in submodules:
            for parameter in submodules[name].parameters():
                parameter.requires_grad_(False)
        elif isinstance(name, str) and name in own:
            own[name].requires_grad_(False)
        else:
            raise SerializationError(
                f"{label}: frozen name {name!r} is neither a submodule nor a parameter of "
                "the module the factory builds"
            )
