"""The search space of a study: which hyperparameters, and the values each may take.

A parameter is a list of choices (``[1, 2]``, or ``{choices = [1, 2]}`` in TOML), or a
range: ``{low = 0.01, high = 0.3, log = true}`` (a float, or an int when both bounds are
ints; ``step`` makes it discrete). Names are :class:`TrainingConfig` fields plus the model
settings ``layers``, ``entanglement`` and ``readout``. Everything is checked when the
space is made, so a bad space fails before any trial starts.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, cast

from ..errors import HPOError, TrainingError
from ..training.config import TrainingConfig

if TYPE_CHECKING:
    from optuna.distributions import BaseDistribution

__all__ = [
    "MODEL_HYPERPARAMETERS",
    "TRAINING_HYPERPARAMETERS",
    "Choice",
    "FloatRange",
    "IntRange",
    "Parameter",
    "SearchSpace",
]

#: Hyperparameters that shape the model rather than the training run.
MODEL_HYPERPARAMETERS = ("layers", "entanglement", "readout")
TRAINING_HYPERPARAMETERS = tuple(f.name for f in dataclasses.fields(TrainingConfig))
_ENTANGLEMENTS = ("linear", "circular", "full")
_READOUTS = ("expectation", "probabilities")
_RANGE_KEYS = {"type", "low", "high", "log", "step"}

Value = str | int | float | bool | None


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


@dataclass(frozen=True, slots=True)
class Choice:
    """One of ``values`` (str, int, float, bool or None; no repeats)."""

    values: tuple[Value, ...]

    def to_json(self) -> dict[str, Any]:
        return {"type": "choice", "choices": list(self.values)}

    def distribution(self) -> BaseDistribution:
        from optuna.distributions import CategoricalDistribution

        return CategoricalDistribution(list(self.values))

    def grid(self) -> list[Value]:
        return list(self.values)

    def candidates(self) -> list[Value]:
        return list(self.values)


@dataclass(frozen=True, slots=True)
class FloatRange:
    """A float in ``[low, high]``: log-uniform with ``log``, on a grid of ``step``."""

    low: float
    high: float
    log: bool = False
    step: float | None = None

    def to_json(self) -> dict[str, Any]:
        return {"type": "float", "low": self.low, "high": self.high, "log": self.log,
                "step": self.step}  # fmt: skip

    def distribution(self) -> BaseDistribution:
        from optuna.distributions import FloatDistribution

        return FloatDistribution(self.low, self.high, log=self.log, step=self.step)

    def grid(self) -> list[Value]:
        if self.step is None:
            raise HPOError("a grid search needs a list of choices, or a range with a step")
        n = math.floor((self.high - self.low) / self.step + 1e-9) + 1
        return [round(self.low + k * self.step, 12) for k in range(n)]

    def candidates(self) -> list[Value]:
        return [self.low, self.high]


@dataclass(frozen=True, slots=True)
class IntRange:
    """An integer in ``[low, high]`` (every ``step``-th; log-uniform with ``log``)."""

    low: int
    high: int
    log: bool = False
    step: int = 1

    def to_json(self) -> dict[str, Any]:
        return {"type": "int", "low": self.low, "high": self.high, "log": self.log,
                "step": self.step}  # fmt: skip

    def distribution(self) -> BaseDistribution:
        from optuna.distributions import IntDistribution

        return IntDistribution(self.low, self.high, log=self.log, step=self.step)

    def grid(self) -> list[Value]:
        return list(range(self.low, self.high + 1, self.step))

    def candidates(self) -> list[Value]:
        return [self.low, self.high]


Parameter = Choice | FloatRange | IntRange


def _check_value(name: str, value: object) -> None:
    if value is not None and not isinstance(value, str | int | float | bool):
        raise HPOError(
            f"hyperparameter {name!r}: values must be str, int, float, bool or None, "
            f"got {type(value).__name__}"
        )
    if isinstance(value, float) and not math.isfinite(value):
        raise HPOError(f"hyperparameter {name!r}: values must be finite, got {value!r}")


def _choice(name: str, values: object) -> Choice:
    if isinstance(values, str | bytes) or not isinstance(values, Sequence):
        raise HPOError(f"hyperparameter {name!r}: choices must be a list, got {values!r}")
    if not values:
        raise HPOError(f"hyperparameter {name!r} has an empty list of choices")
    seen: list[Value] = []
    for value in values:
        _check_value(name, value)
        if any(type(value) is type(s) and value == s for s in seen):
            raise HPOError(f"hyperparameter {name!r} lists {value!r} twice")
        seen.append(value)
    return Choice(tuple(seen))


def _range(name: str, spec: Mapping[str, Any]) -> FloatRange | IntRange:
    unknown = sorted(set(spec) - _RANGE_KEYS)
    if unknown:
        raise HPOError(
            f"hyperparameter {name!r}: unknown keys {unknown}; a range has low, high and "
            "optionally log, step and type (int or float)"
        )
    if "low" not in spec or "high" not in spec:
        raise HPOError(f"hyperparameter {name!r}: a range needs both low and high")
    low, high, log, step = spec["low"], spec["high"], spec.get("log", False), spec.get("step")
    kind = spec.get("type")
    if kind not in (None, "int", "float"):
        raise HPOError(f"hyperparameter {name!r}: type must be 'int' or 'float', got {kind!r}")
    if not _is_number(low) or not _is_number(high) or not math.isfinite(low + high):
        raise HPOError(f"hyperparameter {name!r}: low and high must be finite numbers")
    if not isinstance(log, bool):
        raise HPOError(f"hyperparameter {name!r}: log must be true or false, got {log!r}")
    if low >= high:
        raise HPOError(
            f"hyperparameter {name!r}: the bounds are reversed or empty (low={low!r} >= "
            f"high={high!r}); for one fixed value use a list of choices"
        )
    if log and low <= 0:
        raise HPOError(f"hyperparameter {name!r}: a log range needs low > 0, got {low!r}")
    if step is not None:
        if not _is_number(step) or not math.isfinite(step) or step <= 0:
            raise HPOError(f"hyperparameter {name!r}: step must be a number > 0, got {step!r}")
        if log:
            raise HPOError(f"hyperparameter {name!r}: a range takes log or step, not both")
    integer = kind == "int" or (
        kind is None and _is_int(low) and _is_int(high) and (step is None or _is_int(step))
    )
    if integer:
        if not (_is_int(low) and _is_int(high) and (step is None or _is_int(step))):
            raise HPOError(f"hyperparameter {name!r}: an int range needs int low, high and step")
        return IntRange(int(low), int(high), log=log, step=1 if step is None else int(step))
    return FloatRange(float(low), float(high), log=log, step=None if step is None else float(step))


def parse_parameter(name: str, spec: object) -> Parameter:
    """A list (choices), ``{"choices": [...]}``, a range mapping, or a parameter object."""
    if isinstance(spec, Choice | FloatRange | IntRange):
        spec = spec.to_json()
    if isinstance(spec, Mapping):
        if "choices" in spec or spec.get("type") == "choice":
            extra = sorted(set(spec) - {"choices", "type"})
            if extra:
                raise HPOError(f"hyperparameter {name!r}: choices take no other keys, got {extra}")
            return _choice(name, spec.get("choices"))
        return _range(name, spec)
    return _choice(name, spec)


def _check_model_setting(name: str, parameter: Parameter) -> None:
    if name == "layers" and (
        isinstance(parameter, FloatRange)
        or any(not _is_int(v) or v < 1 for v in parameter.candidates())  # type: ignore[operator]
    ):
        raise HPOError("hyperparameter 'layers' needs integers >= 1")
    allowed = {"entanglement": _ENTANGLEMENTS, "readout": _READOUTS}.get(name)
    if allowed is not None:
        if not isinstance(parameter, Choice):
            raise HPOError(f"hyperparameter {name!r} needs a list of choices from {allowed}")
        for value in parameter.values:
            if value not in allowed:
                raise HPOError(f"{name} must be one of {allowed}, got {value!r}")


class SearchSpace:
    """Named parameters, in the order given; see the module docstring."""

    def __init__(self, parameters: Mapping[str, object], base: TrainingConfig | None = None):
        if not isinstance(parameters, Mapping) or not parameters:
            raise HPOError(
                "the search space must be a non-empty mapping of name -> choices or range"
            )
        allowed = (*TRAINING_HYPERPARAMETERS, *MODEL_HYPERPARAMETERS)
        unknown = sorted(str(k) for k in parameters if k not in allowed)
        if unknown:
            import difflib

            hints = [
                f"{u!r} (did you mean {close[0]!r}?)"
                if (close := difflib.get_close_matches(u, allowed, 1))
                else repr(u)
                for u in unknown
            ]
            raise HPOError(
                f"unknown hyperparameters {', '.join(hints)}: the model takes "
                f"{list(MODEL_HYPERPARAMETERS)} and the trainer its TrainingConfig fields"
            )
        base = base if base is not None else TrainingConfig()
        self.parameters: dict[str, Parameter] = {}
        for name, spec in parameters.items():
            parameter = parse_parameter(str(name), spec)
            if name in MODEL_HYPERPARAMETERS:
                _check_model_setting(str(name), parameter)
            else:
                # Every value (a range's bounds) must make a valid config on its own.
                for value in parameter.candidates():
                    try:
                        dataclasses.replace(base, **{str(name): cast(Any, value)})
                    except (TrainingError, TypeError) as exc:
                        raise HPOError(f"hyperparameter {name!r}={value!r}: {exc}") from None
            self.parameters[str(name)] = parameter

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> SearchSpace:
        return cls(data)

    def to_json(self) -> dict[str, dict[str, Any]]:
        return {name: p.to_json() for name, p in self.parameters.items()}

    def distributions(self) -> dict[str, BaseDistribution]:
        return {name: p.distribution() for name, p in self.parameters.items()}

    def grid(self) -> dict[str, list[Value]]:
        """Every parameter's finite list of values, for Optuna's GridSampler."""
        return {name: p.grid() for name, p in self.parameters.items()}

    @property
    def grid_size(self) -> int | None:
        """The number of combinations, or ``None`` when a float range has no step."""
        try:
            return math.prod(len(v) for v in self.grid().values())
        except HPOError:
            return None

    def __iter__(self) -> Any:
        return iter(self.parameters)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, SearchSpace) and self.to_json() == other.to_json()

    def __hash__(self) -> int:  # pragma: no cover - spaces are not dict keys
        return hash(repr(self.to_json()))

    def __repr__(self) -> str:
        return f"SearchSpace({self.to_json()!r})"
