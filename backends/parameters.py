"""Symbolic circuit parameters and the affine angles ``a * parameter + b`` built from them."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal, TypeAlias

from .errors import ParameterExpressionError

__all__ = ["Angle", "AngleLike", "Parameter", "ParameterKind", "as_angle"]

ParameterKind = Literal["weight", "input"]


def _finite(value: float, what: str) -> float:
    value = float(value)
    if not math.isfinite(value):
        raise ParameterExpressionError(f"{what} must be a finite number, got {value!r}")
    return value


@dataclass(frozen=True, slots=True)
class Parameter:
    """A named symbol a gate angle may depend on.

    ``kind`` says what binds it: ``"weight"`` for trainable parameters, ``"input"`` for
    data fed in by an encoder. Two parameters are the same parameter when their names are.
    """

    name: str
    kind: ParameterKind = "weight"

    def __post_init__(self) -> None:
        if not isinstance(self.name, str) or not self.name:
            raise ParameterExpressionError("a parameter needs a non-empty string name")
        if self.kind not in ("weight", "input"):
            raise ParameterExpressionError(
                f"parameter kind must be 'weight' or 'input', got {self.kind!r}"
            )

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Parameter) and other.name == self.name

    def __hash__(self) -> int:
        return hash(("Parameter", self.name))

    def __repr__(self) -> str:
        return (
            f"Parameter({self.name!r})"
            if self.kind == "weight"
            else (f"Parameter({self.name!r}, kind='input')")
        )

    # Arithmetic builds affine angles; anything non-affine is refused.
    def _angle(self) -> Angle:
        return Angle(1.0, self, 0.0)

    def __mul__(self, other: float) -> Angle:
        return self._angle() * other

    __rmul__ = __mul__

    def __truediv__(self, other: float) -> Angle:
        return self._angle() / other

    def __add__(self, other: float) -> Angle:
        return self._angle() + other

    __radd__ = __add__

    def __sub__(self, other: float) -> Angle:
        return self._angle() - other

    def __rsub__(self, other: float) -> Angle:
        return -self._angle() + other

    def __neg__(self) -> Angle:
        return -self._angle()


@dataclass(frozen=True, slots=True)
class Angle:
    """A gate angle ``coeff * parameter + offset``; a constant when ``parameter`` is None."""

    coeff: float
    parameter: Parameter | None
    offset: float

    def __post_init__(self) -> None:
        _finite(self.coeff, "an angle's coefficient")
        _finite(self.offset, "an angle's offset")

    @property
    def is_constant(self) -> bool:
        return self.parameter is None or self.coeff == 0.0

    def value(self, bindings: dict[Parameter, float] | None = None) -> float:
        """The numeric angle, looking the parameter up in ``bindings``."""
        if self.parameter is None:
            return self.offset
        if bindings is None or self.parameter not in bindings:
            raise ParameterExpressionError(f"no value bound for parameter {self.parameter.name!r}")
        return self.coeff * float(bindings[self.parameter]) + self.offset

    def _check_number(self, other: object, op: str) -> float:
        if isinstance(other, bool) or not isinstance(other, int | float):
            raise ParameterExpressionError(
                f"angles are affine in one parameter: cannot {op} an angle and {other!r}"
            )
        return _finite(float(other), "a number combined with an angle")

    def __mul__(self, other: float) -> Angle:
        k = self._check_number(other, "multiply")
        return Angle(self.coeff * k, self.parameter, self.offset * k)

    __rmul__ = __mul__

    def __truediv__(self, other: float) -> Angle:
        k = self._check_number(other, "divide")
        if k == 0.0:
            raise ParameterExpressionError("cannot divide an angle by zero")
        return Angle(self.coeff / k, self.parameter, self.offset / k)

    def __add__(self, other: float) -> Angle:
        return Angle(self.coeff, self.parameter, self.offset + self._check_number(other, "add"))

    __radd__ = __add__

    def __sub__(self, other: float) -> Angle:
        return self + (-self._check_number(other, "subtract"))

    def __rsub__(self, other: float) -> Angle:
        return -self + other

    def __neg__(self) -> Angle:
        return Angle(-self.coeff, self.parameter, -self.offset)

    def __repr__(self) -> str:
        if self.parameter is None:
            return f"Angle({self.offset!r})"
        return f"Angle({self.coeff!r}*{self.parameter.name}+{self.offset!r})"


AngleLike: TypeAlias = "float | int | Parameter | Angle"


def as_angle(value: object) -> Angle:
    """Normalize a number, a parameter or an angle to an :class:`Angle`."""
    if isinstance(value, Angle):
        return value
    if isinstance(value, Parameter):
        return Angle(1.0, value, 0.0)
    if isinstance(value, bool):
        raise ParameterExpressionError(
            f"a gate angle must be a number or a parameter, not {value!r}"
        )
    if isinstance(value, int | float):
        return Angle(0.0, None, _finite(float(value), "a gate angle"))
    try:  # NumPy scalars and other real numbers
        number = float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        raise ParameterExpressionError(
            f"a gate angle must be a number, a Parameter or an affine Angle, not {value!r}"
        ) from None
    return Angle(0.0, None, _finite(number, "a gate angle"))
