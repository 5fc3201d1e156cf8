"""The one place for the range and type checks of values that reach the registry."""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import numpy as np

from .errors import DataValidationError
from .registry.schema import INT64_MAX, INT64_MIN

__all__ = [
    "INT64_MAX",
    "INT64_MIN",
    "check_int",
    "check_json",
    "check_number",
    "check_seed",
    "check_text",
]

#: Where a range error message says the limit comes from.
_WHY_64 = "the registry stores 64-bit integers on SQLite and PostgreSQL alike"


def check_int(
    value: object,
    what: str,
    *,
    minimum: int = INT64_MIN,
    maximum: int = INT64_MAX,
    error: type[ValueError] = DataValidationError,
) -> int:
    """``value`` as an ``int`` in ``[minimum, maximum]`` (within 64 bits), or ``error``.

    Booleans and floats are refused even when integral: ``step=True`` or ``version=2.0``
    is almost always a mistake, and a float loses integers beyond 2**53.
    """
    if isinstance(value, bool) or not isinstance(value, int | np.integer):
        raise error(f"{what} must be an integer, got {value!r}")
    number = int(value)
    low, high = max(minimum, INT64_MIN), min(maximum, INT64_MAX)
    if not low <= number <= high:
        bound = f">= {low}" if number < low else f"<= {high}"
        reason = f" ({_WHY_64})" if number < INT64_MIN or number > INT64_MAX else ""
        raise error(f"{what} must be {bound}, got {number}{reason}")
    return number


def check_seed(
    value: object, what: str = "seed", *, error: type[ValueError] = DataValidationError
) -> int:
    """A seed for NumPy's generators: an integer in ``[0, 2**63 - 1]``."""
    return check_int(value, what, minimum=0, error=error)


def check_number(
    value: object, what: str, *, error: type[ValueError] = DataValidationError
) -> float:
    """``value`` as a finite ``float``, or ``error`` (never float()'s bare ValueError)."""
    if isinstance(value, str | bytes):
        # float("1.5") would succeed, but a string in a number's place is a caller's bug.
        raise error(f"{what} must be a number, got {value!r}")
    if isinstance(value, complex | np.complexfloating):
        # float() of a NumPy complex drops the imaginary part with only a warning.
        raise error(f"{what} must be a real number, got {value!r}")
    try:
        number = float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError, OverflowError):
        raise error(f"{what} must be a number, got {value!r}") from None
    if not math.isfinite(number):
        raise error(f"{what} is {number}; it must be finite")
    return number


def check_text(
    value: object,
    what: str,
    *,
    max_length: int,
    error: type[ValueError] = DataValidationError,
) -> str:
    """A non-empty string that fits its column (PostgreSQL refuses longer, SQLite would not)."""
    if not isinstance(value, str) or not value:
        raise error(f"{what} must be a non-empty string, got {value!r}")
    if len(value) > max_length:
        raise error(f"{what} is {len(value)} characters long; at most {max_length} fit")
    return value


def check_json(
    value: Mapping[str, Any] | None, what: str, *, error: type[ValueError] = DataValidationError
) -> dict[str, Any]:
    """A JSON-storable copy of ``value`` that reads back equal on both dialects.

    NaN and infinity are refused (PostgreSQL refuses them, SQLite would keep them), as
    are non-string keys (JSON would turn ``{1: x}`` into ``{"1": x}``) and anything that
    is not None, a bool, a number, a string, a list or a mapping. NumPy scalars become
    the Python numbers they hold and tuples become lists, as JSON stores them.
    """
    if value is None:
        return {}
    if not isinstance(value, Mapping):
        raise error(f"{what} must be a mapping, got {type(value).__name__}")
    out = _plain(value, what, error)
    assert isinstance(out, dict)
    return out


def _plain(value: Any, path: str, error: type[ValueError]) -> Any:
    if isinstance(value, np.generic) and not isinstance(value, np.void):
        value = value.item()
    if value is None or isinstance(value, bool | str):
        return value
    if isinstance(value, int):
        return value
    if isinstance(value, float):
        if not math.isfinite(value):
            raise error(
                f"{path} is {value}; JSON values must be finite (NaN and infinity cannot be "
                "stored on every database)"
            )
        return value
    if isinstance(value, Mapping):
        out: dict[str, Any] = {}
        for key, item in value.items():
            if not isinstance(key, str):
                raise error(f"{path} has the key {key!r}; JSON keys must be strings")
            out[key] = _plain(item, f"{path}[{key!r}]", error)
        return out
    if isinstance(value, list | tuple):
        return [_plain(item, f"{path}[{i}]", error) for i, item in enumerate(value)]
    raise error(
        f"{path} is a {type(value).__name__}; it must be JSON-serializable (None, bool, "
        "number, string, list or mapping)"
    )
