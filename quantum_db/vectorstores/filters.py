"""Pinecone-style metadata filters: validated once, then evaluated record by record.

The language is Pinecone's (a subset of MongoDB's)::

    {"genre": "drama"}                                   bare value = $eq
    {"year": {"$gte": 2000, "$lt": 2010}}                several operators = AND
    {"genre": {"$in": ["drama", "comedy"]}, "ok": True}  several fields = AND
    {"$or": [{"genre": "drama"}, {"year": {"$gt": 2019}}]}

Semantics, as the local store applies them:

* Strings, numbers and booleans are distinct kinds: ``True`` never equals ``1``; numbers
  compare numerically whether stored as int or float.
* A metadata value that is a list of strings matches ``$eq``/``$in`` when any element
  matches, and ``$ne``/``$nin`` when no element does.
* ``$gt``/``$gte``/``$lt``/``$lte`` take a number and only match numbers.
* As in MongoDB, a record without the field matches ``$ne`` and ``$nin`` (it is not equal),
  and matches nothing else but ``{"$exists": False}``.
"""

from __future__ import annotations

import math
import operator
from collections.abc import Callable, Mapping, Sequence
from typing import Any, TypeGuard

from ..errors import VectorValidationError

__all__ = ["Predicate", "compile_filter", "matches", "validate_filter"]

#: A compiled filter: does a record with this metadata match?
Predicate = Callable[[Mapping[str, Any]], bool]

_MISSING = object()
_ORDERINGS: dict[str, Callable[[float, float], bool]] = {
    "$gt": operator.gt,
    "$gte": operator.ge,
    "$lt": operator.lt,
    "$lte": operator.le,
}
_FIELD_OPERATORS = frozenset({"$eq", "$ne", "$in", "$nin", "$exists", *_ORDERINGS})
_LOGICAL_OPERATORS = frozenset({"$and", "$or"})


def compile_filter(filter: Mapping[str, Any] | None) -> Predicate:
    """Check ``filter`` and return its predicate; ``None`` or ``{}`` matches everything.

    Raises :class:`~quantum_db.errors.VectorValidationError` naming the first problem.
    """
    if filter is None:
        return _always
    return _compile_node(filter, "filter")


def validate_filter(filter: Mapping[str, Any] | None) -> None:
    """Raise :class:`~quantum_db.errors.VectorValidationError` unless ``filter`` is valid."""
    compile_filter(filter)


def matches(filter: Mapping[str, Any] | None, metadata: Mapping[str, Any]) -> bool:
    """Whether a record with ``metadata`` matches ``filter`` (validating it first)."""
    return compile_filter(filter)(metadata)


def _always(_metadata: Mapping[str, Any]) -> bool:
    return True


def _all_of(predicates: Sequence[Predicate]) -> Predicate:
    if len(predicates) == 1:
        return predicates[0]
    return lambda metadata: all(p(metadata) for p in predicates)


def _any_of(predicates: Sequence[Predicate]) -> Predicate:
    return lambda metadata: any(p(metadata) for p in predicates)


def _compile_node(node: object, where: str) -> Predicate:
    if not isinstance(node, Mapping):
        raise VectorValidationError(f"{where} must be an object (dict), got {node!r}")
    predicates: list[Predicate] = []
    for key, value in node.items():
        if not isinstance(key, str):
            raise VectorValidationError(f"{where}: keys must be str, got {key!r}")
        if key in _LOGICAL_OPERATORS:
            if isinstance(value, str | Mapping) or not isinstance(value, Sequence) or not value:
                raise VectorValidationError(
                    f"{where}.{key} must be a non-empty list of filters, got {value!r}"
                )
            parts = [_compile_node(v, f"{where}.{key}[{i}]") for i, v in enumerate(value)]
            predicates.append(_all_of(parts) if key == "$and" else _any_of(parts))
        elif key.startswith("$"):
            raise VectorValidationError(
                f"{where}: unknown operator {key!r} where a field name or $and/$or was expected"
            )
        else:
            predicates.append(_compile_field(key, value, f"{where}.{key}"))
    return _all_of(predicates) if predicates else _always


def _compile_field(field: str, condition: object, where: str) -> Predicate:
    if not isinstance(condition, Mapping):
        # A bare value means $eq.
        return _compile_operator(field, "$eq", condition, where)
    if not condition:
        raise VectorValidationError(f"{where} has no operator")
    predicates: list[Predicate] = []
    for op, operand in condition.items():
        if op not in _FIELD_OPERATORS:
            known = ", ".join(sorted(_FIELD_OPERATORS))
            raise VectorValidationError(f"{where}: unknown operator {op!r} (known: {known})")
        predicates.append(_compile_operator(field, op, operand, f"{where}.{op}"))
    return _all_of(predicates)


def _is_number(value: object) -> TypeGuard[int | float]:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _scalar(value: object, where: str) -> str | float | bool:
    if isinstance(value, bool | str):
        return value
    if _is_number(value):
        number = float(value)
        if not math.isfinite(number):
            raise VectorValidationError(f"{where}: NaN and infinity cannot be compared")
        return number
    if isinstance(value, list | tuple):
        raise VectorValidationError(
            f"{where}: a list is not a value; use {{'$in': [...]}} to match any of several"
        )
    raise VectorValidationError(f"{where}: expected a str, number or bool, got {value!r}")


def _equal(stored: object, wanted: str | float | bool) -> bool:
    if isinstance(wanted, bool) or isinstance(stored, bool):
        return isinstance(wanted, bool) and isinstance(stored, bool) and stored == wanted
    if isinstance(wanted, str):
        return isinstance(stored, str) and stored == wanted
    return _is_number(stored) and float(stored) == wanted


def _any_equal(stored: object, wanted: Sequence[str | float | bool]) -> bool:
    """Whether ``stored`` (or, for a list, any of its elements) equals one of ``wanted``."""
    elements = stored if isinstance(stored, list) else (stored,)
    return any(_equal(element, w) for element in elements for w in wanted)


def _compile_operator(field: str, op: str, operand: object, where: str) -> Predicate:
    if op == "$exists":
        if not isinstance(operand, bool):
            raise VectorValidationError(f"{where} takes true or false, got {operand!r}")
        return lambda m: (field in m) is operand
    if op in _ORDERINGS:
        if not _is_number(operand):
            raise VectorValidationError(f"{where} takes a number, got {operand!r}")
        bound = float(operand)
        if not math.isfinite(bound):
            raise VectorValidationError(f"{where}: NaN and infinity cannot be compared")
        compare = _ORDERINGS[op]

        def ordered(m: Mapping[str, Any]) -> bool:
            stored = m.get(field, _MISSING)
            return _is_number(stored) and compare(float(stored), bound)

        return ordered
    if op in ("$in", "$nin"):
        if isinstance(operand, str | Mapping) or not isinstance(operand, Sequence):
            raise VectorValidationError(f"{where} takes a list of values, got {operand!r}")
        wanted = [_scalar(v, f"{where}[{i}]") for i, v in enumerate(operand)]
    else:
        wanted = [_scalar(operand, where)]
    negate = op in ("$ne", "$nin")

    def member(m: Mapping[str, Any]) -> bool:
        stored = m.get(field, _MISSING)
        if stored is _MISSING:
            return negate
        return _any_equal(stored, wanted) is not negate

    return member
