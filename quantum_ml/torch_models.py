"""Torch modules in the model registry: factory specs, state arrays, rebuilding, freezing.

A ``torch.nn.Module`` is stored as what rebuilds it, never as a pickle: the importable
factory that builds it (``"package.module:function"``) with JSON keyword arguments, every
``state_dict()`` tensor (parameters and buffers) as a NumPy array of the same dtype, and
the names of its frozen submodules. ``quantum_db`` rebuilds it by importing the factory
(:meth:`quantum_db.ModelVersion.build`); :func:`load_torch_model` is that, with this
package's errors.

    @torch_factory                     # modules it builds remember how they were built
    def encoder_net(width: int = 8) -> torch.nn.Module: ...

    net = encoder_net(width=16)
    freeze(net, ["0"])                 # transfer learning: keep the first layer fixed
    version = await db.models.register("enc", TorchModel(net))
    again = load_torch_model(await db.models.get("enc"))   # equal bit for bit, "0" frozen
"""

from __future__ import annotations

import functools
import inspect
import json
import math
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ParamSpec, TypeVar

from numpy.typing import NDArray

from backends.errors import MissingDependencyError
from quantum_db.errors import SerializationError
from quantum_db.models import TORCH_KIND, import_factory

from .errors import ModelError

try:
    import torch
except ImportError as exc:  # the whole module is about torch modules: say how to get it
    raise MissingDependencyError(
        f"quantum_ml.torch_models needs PyTorch ({exc}): pip install 'quantum-db[torch]'"
    ) from exc

if TYPE_CHECKING:
    from quantum_db.models import ModelVersion

__all__ = [
    "TorchModel",
    "TorchModelSpec",
    "freeze",
    "frozen_names",
    "load_torch_model",
    "spec_of",
    "torch_factory",
    "torch_registry_payload",
    "unfreeze",
    "with_spec",
]

P = ParamSpec("P")
M = TypeVar("M", bound=torch.nn.Module)

#: Where a module keeps the spec of the factory that built it (an instance attribute,
#: so it follows the module through ``copy.deepcopy``).
_SPEC_ATTRIBUTE = "_qdb_torch_spec"
#: State dtypes stored exactly: NumPy has the same dtype, ``torch.from_numpy`` reads it back.
_STORABLE = {
    torch.bool,
    torch.uint8,
    torch.int8,
    torch.int16,
    torch.int32,
    torch.int64,
    torch.float16,
    torch.float32,
    torch.float64,
}
#: How many names an error message lists before it stops.
_LISTED = 30


# --------------------------------------------------------------------------- specs
def _json_exact(value: Any, path: str) -> None:
    """Refuse what JSON would not give back unchanged (a tuple reads back as a list)."""
    if value is None or isinstance(value, bool | str | int):
        return
    if isinstance(value, float):
        if not math.isfinite(value):
            raise ModelError(f"{path} is {value}; factory kwargs must be finite numbers")
        return
    if isinstance(value, list):
        for i, item in enumerate(value):
            _json_exact(item, f"{path}[{i}]")
        return
    if isinstance(value, dict):
        for key, item in value.items():
            if not isinstance(key, str):
                raise ModelError(f"{path} has the key {key!r}; JSON keys must be strings")
            _json_exact(item, f"{path}[{key!r}]")
        return
    hint = " (JSON reads a tuple back as a list: pass a list)" if isinstance(value, tuple) else ""
    raise ModelError(
        f"{path} is a {type(value).__name__}{hint}; factory kwargs must be None, bool, int, "
        "finite float, str, list or dict with string keys, so the stored model rebuilds "
        "from exactly the same arguments"
    )


def _resolve(factory: str) -> Callable[..., Any]:
    module_name, _, qualname = factory.partition(":")
    if not (
        all(part.isidentifier() for part in module_name.split("."))
        and all(part.isidentifier() for part in qualname.split("."))
    ):
        raise ModelError(
            f"factory {factory!r} is not of the form 'package.module:function' "
            "(e.g. 'quantum_ml.hybrid:hybrid_classifier')"
        )
    if module_name == "__main__":
        raise ModelError(
            f"factory {factory!r} lives in __main__, which another process cannot import; "
            "move it into an importable module"
        )
    try:
        return import_factory(factory, "torch model")
    except SerializationError as exc:
        raise ModelError(str(exc)) from exc.__cause__


@dataclass(frozen=True)
class TorchModelSpec:
    """How to build a module again: ``factory`` (``"package.module:function"``) and ``kwargs``.

    Checked when made: the factory imports and is callable, ``kwargs`` survive JSON
    unchanged and fit the factory's signature. ``kwargs`` is a copy, so later changes to
    the caller's dict do not change the spec.
    """

    factory: str
    kwargs: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not isinstance(self.factory, str):
            raise ModelError(
                f"factory must be a 'package.module:function' string, got {self.factory!r}"
            )
        if not isinstance(self.kwargs, Mapping):
            raise ModelError(f"kwargs must be a mapping, got {type(self.kwargs).__name__}")
        kwargs = dict(self.kwargs)
        _json_exact(kwargs, "kwargs")
        target = _resolve(self.factory)
        try:
            signature = inspect.signature(target)
        except (TypeError, ValueError):  # some builtins have none; then torch decides
            signature = None
        if signature is not None:
            try:
                signature.bind(**kwargs)
            except TypeError as exc:
                raise ModelError(
                    f"kwargs {sorted(kwargs)} do not fit {self.factory}{signature}: {exc}"
                ) from None
        object.__setattr__(self, "kwargs", json.loads(json.dumps(kwargs)))

    def resolve(self) -> Callable[..., Any]:
        """The factory callable."""
        return _resolve(self.factory)


def _module(module: object, what: str = "module") -> torch.nn.Module:
    if not isinstance(module, torch.nn.Module):
        raise ModelError(f"{what} must be a torch.nn.Module, got {type(module).__name__}")
    return module


def with_spec(module: M, factory: str | Callable[..., Any], /, **kwargs: Any) -> M:
    """Record on ``module`` that ``factory(**kwargs)`` builds it; returns ``module``.

    ``factory`` is a ``"package.module:function"`` path or a module-level function.
    Whether the factory really builds a module of this shape is checked when it is
    registered.
    """
    _module(module)
    if callable(factory) and not isinstance(factory, str):
        qualname = getattr(factory, "__qualname__", "")
        if "<locals>" in qualname or not qualname:
            raise ModelError(
                f"{factory!r} is not a module-level function, so it cannot be imported again"
            )
        factory = f"{factory.__module__}:{qualname}"
    setattr(module, _SPEC_ATTRIBUTE, TorchModelSpec(factory, kwargs))
    return module


def spec_of(module: torch.nn.Module) -> TorchModelSpec | None:
    """The spec recorded by :func:`torch_factory` or :func:`with_spec`, or ``None``."""
    spec = getattr(_module(module), _SPEC_ATTRIBUTE, None)
    return spec if isinstance(spec, TorchModelSpec) else None


def torch_factory(fn: Callable[P, M]) -> Callable[P, M]:
    """Make ``fn`` a registrable factory: each module it returns records ``fn`` and the
    arguments of the call (positional ones by name, defaults filled in) as its spec.

    ``fn`` must be a module-level function whose arguments are JSON values; its
    ``"package.module:function"`` path must lead back to the decorated function.
    """
    qualname = getattr(fn, "__qualname__", "")
    if "<locals>" in qualname or not callable(fn):
        raise ModelError(f"{fn!r} is not a module-level function, so it cannot be imported again")
    signature = inspect.signature(fn)
    if any(p.kind is inspect.Parameter.VAR_POSITIONAL for p in signature.parameters.values()):
        raise ModelError(f"{qualname} takes *args, which cannot be stored as keyword arguments")
    path = f"{fn.__module__}:{qualname}"

    @functools.wraps(fn)
    def build(*args: P.args, **kwargs: P.kwargs) -> M:
        try:
            bound = signature.bind(*args, **kwargs)
        except TypeError as exc:
            raise ModelError(f"{qualname}{signature}: {exc}") from None
        bound.apply_defaults()
        arguments: dict[str, Any] = {}
        for name, value in bound.arguments.items():
            if signature.parameters[name].kind is inspect.Parameter.VAR_KEYWORD:
                arguments.update(value)
            else:
                arguments[name] = value
        spec = TorchModelSpec(path, arguments)
        if spec.resolve() is not build:
            raise ModelError(
                f"{path} does not lead back to this @torch_factory function (shadowed or "
                "renamed), so the registry could not rebuild its modules"
            )
        module = fn(*args, **kwargs)
        _module(module, f"the result of {qualname}")
        setattr(module, _SPEC_ATTRIBUTE, spec)
        return module

    return build


# --------------------------------------------------------------------------- freezing
def _names(names: str | Iterable[str]) -> list[str]:
    items = [names] if isinstance(names, str) else list(names)
    for name in items:
        if not isinstance(name, str):
            raise ModelError(f"submodule names must be strings, got {name!r}")
    return items


def _listed(names: Iterable[str]) -> str:
    shown = [repr(n) for n in names]
    more = f", … ({len(shown) - _LISTED} more)" if len(shown) > _LISTED else ""
    return ", ".join(shown[:_LISTED]) + more


def _targets(module: torch.nn.Module, names: str | Iterable[str]) -> list[torch.nn.Parameter]:
    """The parameters under each name (a submodule, or one parameter), all names checked
    before anything changes."""
    submodules = dict(module.named_modules())
    own = dict(module.named_parameters())
    wanted = _names(names)
    unknown = [n for n in wanted if n not in submodules and n not in own]
    if unknown:
        available = [n for n in submodules if n]
        raise ModelError(
            f"no submodule named {_listed(unknown)}; the submodules are {_listed(available)} "
            "('' is the whole model; a parameter name such as '0.weight' works too)"
        )
    out: list[torch.nn.Parameter] = []
    for name in wanted:
        out.extend(submodules[name].parameters() if name in submodules else [own[name]])
    return out


def freeze(module: M, names: str | Iterable[str]) -> M:
    """Fix the parameters of the named submodules (names as in ``named_modules()``, e.g.
    ``"0"`` of a Sequential or ``"encoder.lin"``): ``requires_grad=False``, so an
    optimizer leaves them as they are. The frozen set is stored when the module is
    registered and frozen again when it is loaded. Unknown names change nothing."""
    for parameter in _targets(_module(module), names):
        parameter.requires_grad_(False)
    return module


def unfreeze(module: M, names: str | Iterable[str]) -> M:
    """Make the parameters of the named submodules trainable again (see :func:`freeze`)."""
    for parameter in _targets(_module(module), names):
        parameter.requires_grad_(True)
    return module


def frozen_names(module: torch.nn.Module) -> list[str]:
    """The fewest names that :func:`freeze` takes to give ``module``'s frozen parameters:
    each highest submodule whose parameters are all frozen, then any frozen parameter
    that no such submodule holds."""
    covered: set[int] = set()
    names: list[str] = []
    for name, submodule in _module(module).named_modules():  # parents before children
        params = list(submodule.parameters())
        if (
            params
            and not any(p.requires_grad for p in params)
            and not {id(p) for p in params} <= covered
        ):
            names.append(name)
            covered.update(id(p) for p in params)
    for name, parameter in module.named_parameters():
        if not parameter.requires_grad and id(parameter) not in covered:
            names.append(name)
            covered.add(id(parameter))
    return names


# --------------------------------------------------------------------------- registry
def _array(key: str, value: object) -> NDArray[Any]:
    if not isinstance(value, torch.Tensor):
        raise ModelError(
            f"state {key!r} is a {type(value).__name__}, not a tensor (extra state); only "
            "tensors can be stored without pickling"
        )
    if value.layout is not torch.strided or value.is_quantized or value.is_meta:
        raise ModelError(f"state {key!r} is a {value.layout} tensor; only dense tensors are stored")
    if value.dtype not in _STORABLE:
        raise ModelError(
            f"state {key!r} has dtype {value.dtype}, which NumPy cannot hold exactly; "
            f"storable dtypes are {sorted(str(d) for d in _STORABLE)}"
        )
    return value.detach().cpu().numpy().copy()  # a snapshot, not a view of live weights


def torch_registry_payload(
    module: torch.nn.Module,
    spec: TorchModelSpec | None = None,
    *,
    encoding: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """``{"parameters", "architecture", "encoding"}`` for ``db.models.register``.

    Every ``state_dict()`` tensor becomes an array of the same dtype (bool, int, float16,
    float32, float64); the architecture names the factory (``spec``, else the module's
    own), its kwargs, the state keys in order, their dtypes and :func:`frozen_names`.
    ``register`` builds the module from it once before storing, so a spec that does not
    build this module's shapes is refused there, with nothing stored.
    """
    _module(module)
    spec = spec if spec is not None else spec_of(module)
    if spec is None:
        raise ModelError(
            f"this {type(module).__name__} does not say which factory builds it: build it "
            "with a @torch_factory function, or attach one with with_spec(module, "
            "'package.module:function', **kwargs)"
        )
    if not isinstance(spec, TorchModelSpec):
        raise ModelError(f"spec must be a TorchModelSpec, got {type(spec).__name__}")
    state = module.state_dict()
    parameters = {key: _array(key, value) for key, value in state.items()}
    if not parameters:
        raise ModelError(f"this {type(module).__name__} has no state to store")
    architecture = {
        "kind": TORCH_KIND,
        "factory": spec.factory,
        "kwargs": spec.kwargs,
        "state_keys": list(parameters),
        "dtypes": {key: str(array.dtype) for key, array in parameters.items()},
        "frozen": frozen_names(module),
    }
    return {
        "parameters": parameters,
        "architecture": architecture,
        "encoding": dict(encoding) if encoding is not None else None,
    }


class TorchModel:
    """A torch module as ``db.models.register`` takes it: ``register(name, TorchModel(net))``.

    ``spec`` defaults to the module's own (see :func:`torch_factory`); ``encoding`` is the
    data encoding contract the model was trained with, if any.
    """

    def __init__(
        self,
        module: torch.nn.Module,
        spec: TorchModelSpec | None = None,
        *,
        encoding: Mapping[str, Any] | None = None,
    ) -> None:
        self.module = _module(module)
        self.spec = spec
        self.encoding = encoding

    def registry_payload(self) -> dict[str, Any]:
        return torch_registry_payload(self.module, self.spec, encoding=self.encoding)

    def __repr__(self) -> str:
        spec = self.spec if self.spec is not None else spec_of(self.module)
        factory = spec.factory if spec is not None else None
        return f"TorchModel({type(self.module).__name__}, factory={factory!r})"


def load_torch_model(version: ModelVersion) -> torch.nn.Module:
    """The module a registered version stores, rebuilt by its factory: every state
    tensor bit for bit equal, the stored frozen names frozen again."""
    architecture = getattr(version, "architecture", None)
    if not isinstance(architecture, Mapping):
        raise ModelError(f"expected a quantum_db ModelVersion, got {type(version).__name__}")
    kind = architecture.get("kind")
    if kind != TORCH_KIND:
        raise ModelError(
            f"model {version.name!r} v{version.version} has architecture kind {kind!r}, "
            f"not {TORCH_KIND!r}: it was not registered from a torch module"
        )
    try:
        module = version.build()
    except SerializationError as exc:
        raise ModelError(str(exc)) from exc
    return _module(module, "the rebuilt model")
