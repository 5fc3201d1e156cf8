"""Comparing encoding contracts: does the data match the encoding a model was trained on?

An encoding contract is the mapping a stored dataset carries (``DatasetInfo.encoding``)
and a model keeps (``QuantumDataEncoder.to_contract()``, ``ModelVersion.encoding``)::

    {"encoder": "angle" | "amplitude", "scaling": "minmax" | "standard" | "none",
     "n_qubits": int, "feature_min": [...], "feature_max": [...],
     "feature_mean": [...], "feature_std": [...]}

A model fed data whose contract differs sees features scaled or encoded otherwise than
in training, so its outputs mean nothing; :func:`check_encoding` refuses such data
unless the caller overrides it explicitly. Keys outside the ones above are ignored, so
contracts may grow new fields without breaking the check.
"""

from __future__ import annotations

import logging
import math
import numbers
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from .errors import EncodingError, EncodingMismatchError

__all__ = ["CONTRACT_KEYS", "check_encoding", "contract_differences"]

logger = logging.getLogger(__name__)

_ENCODERS = ("angle", "amplitude")
_SCALINGS = ("minmax", "standard", "none")
_STATS = ("feature_min", "feature_max", "feature_mean", "feature_std")
#: The keys every complete contract holds; one missing from either side is a difference.
CONTRACT_KEYS: tuple[str, ...] = ("encoder", "scaling", "n_qubits", *_STATS)
#: Differing features listed per statistic; the rest are counted, to keep messages short.
_SHOWN_FEATURES = 3
_ADVICE = "re-encode the data with the model's contract, or pass allow_encoding_mismatch=True"


def _check_tolerance(tolerance: Any) -> float:
    if (
        isinstance(tolerance, bool)
        or not isinstance(tolerance, numbers.Real)
        or not math.isfinite(float(tolerance))
        or tolerance < 0
    ):
        raise EncodingError(f"tolerance must be a finite number >= 0, got {tolerance!r}")
    return float(tolerance)


def _validated(contract: Any, side: str) -> dict[str, Any]:
    """The contract's known keys, type-checked; the statistics as float arrays."""
    if not isinstance(contract, Mapping):
        raise EncodingError(
            f"the {side} encoding contract must be a mapping, got {type(contract).__name__}"
        )
    out: dict[str, Any] = {}
    for key in ("encoder", "scaling"):
        if key in contract:
            allowed = _ENCODERS if key == "encoder" else _SCALINGS
            if contract[key] not in allowed:
                raise EncodingError(
                    f"the {side} contract's {key} must be one of {allowed}, got {contract[key]!r}"
                )
            out[key] = contract[key]
    if "n_qubits" in contract:
        n_qubits = contract["n_qubits"]
        if isinstance(n_qubits, bool) or not isinstance(n_qubits, numbers.Integral) or n_qubits < 1:
            raise EncodingError(
                f"the {side} contract's n_qubits must be a positive integer, got {n_qubits!r}"
            )
        out["n_qubits"] = int(n_qubits)
    for key in _STATS:
        if key in contract:
            out[key] = _numbers(contract[key], f"the {side} contract's {key}")
    widths = {out[key].size for key in _STATS if key in out}
    if len(widths) > 1:
        raise EncodingError(
            f"the {side} contract's feature statistics have different lengths {sorted(widths)}"
        )
    return out


def _numbers(values: Any, what: str) -> np.ndarray[Any, np.dtype[np.float64]]:
    # Checked element by element: np.asarray would quietly turn "1.5" or True into floats.
    if isinstance(values, str | bytes) or not isinstance(values, Sequence | np.ndarray):
        raise EncodingError(f"{what} must be a list of numbers, got {type(values).__name__}")
    items = list(values)
    if not items:
        raise EncodingError(f"{what} is empty: a contract describes at least one feature")
    for item in items:
        if isinstance(item, bool | np.bool_) or not isinstance(item, numbers.Real):
            raise EncodingError(f"{what} must hold only numbers, got {item!r}")
        if not math.isfinite(float(item)):
            raise EncodingError(f"{what} holds NaN or infinity")
    return np.asarray(items, dtype=np.float64)


def _width(contract: Mapping[str, Any]) -> int | None:
    for key in _STATS:
        if key in contract:
            return int(contract[key].size)
    return None


def _feature_scale(
    expected: Mapping[str, Any], actual: Mapping[str, Any], width: int
) -> np.ndarray[Any, np.dtype[np.float64]]:
    """Per feature ``max(1, |range|)``, the range being the wider of the two contracts'.

    Taking the wider range keeps the comparison symmetric, so swapping the contracts
    reports the same features.
    """
    span = np.zeros(width)
    for contract in (expected, actual):
        if "feature_min" in contract and "feature_max" in contract:
            span = np.maximum(span, np.abs(contract["feature_max"] - contract["feature_min"]))
    return np.maximum(1.0, span)


def _stat_difference(
    key: str,
    want: np.ndarray[Any, np.dtype[np.float64]],
    got: np.ndarray[Any, np.dtype[np.float64]],
    limit: np.ndarray[Any, np.dtype[np.float64]],
    tolerance: float,
) -> str | None:
    off = np.flatnonzero(np.abs(want - got) > limit)
    if off.size == 0:
        return None
    shown = "; ".join(
        f"feature {i}: expected {want[i]:.6g}, got {got[i]:.6g}" for i in off[:_SHOWN_FEATURES]
    )
    more = f"; and {off.size - _SHOWN_FEATURES} more" if off.size > _SHOWN_FEATURES else ""
    return (
        f"{key}: {off.size} of {want.size} features differ by more than "
        f"{tolerance:g} x max(1, feature range) ({shown}{more})"
    )


def contract_differences(
    expected: Mapping[str, Any], actual: Mapping[str, Any], *, tolerance: float = 1e-6
) -> list[str]:
    """Human-readable differences between two encoding contracts, ``[]`` when they match.

    Compared in this order: ``encoder``, ``scaling``, ``n_qubits``, the feature width (the
    length of the statistics lists) and, when the widths agree, each statistic feature by
    feature. A statistic differs where ``|expected - actual| > tolerance * max(1, |range|)``,
    ``range`` being the feature's ``feature_max - feature_min`` (the wider of the two
    contracts'), so the check scales with the data. A key of :data:`CONTRACT_KEYS` missing
    from either contract is a difference; other keys are ignored.

    Raises :class:`~quantum_ml.errors.EncodingError` for a contract that is not a mapping,
    holds an unknown encoder or scaling, a bad ``n_qubits``, statistics that are not
    non-empty lists of finite numbers or have different lengths, or a bad ``tolerance``.
    """
    tol = _check_tolerance(tolerance)
    want = _validated(expected, "expected")
    got = _validated(actual, "actual")
    differences: list[str] = []
    for key in CONTRACT_KEYS:
        if key not in want or key not in got:
            where = (
                "both contracts"
                if key not in want and key not in got
                else ("the expected contract" if key not in want else "the actual contract")
            )
            differences.append(f"{key}: missing from {where}")
        elif key in ("encoder", "scaling", "n_qubits") and want[key] != got[key]:
            differences.append(f"{key}: expected {want[key]!r}, got {got[key]!r}")
    width_want, width_got = _width(want), _width(got)
    if width_want is None or width_got is None:
        return differences  # the missing statistics are reported above
    if width_want != width_got:
        differences.append(f"feature width: expected {width_want} features, got {width_got}")
        return differences
    limit = tol * _feature_scale(want, got, width_want)
    for key in _STATS:
        if key in want and key in got:
            line = _stat_difference(key, want[key], got[key], limit, tol)
            if line is not None:
                differences.append(line)
    return differences


def check_encoding(
    expected: Mapping[str, Any] | None,
    actual: Mapping[str, Any] | None,
    *,
    allow_mismatch: bool = False,
    tolerance: float = 1e-6,
    what: str = "data",
) -> list[str]:
    """Check that ``actual`` (the data's contract) matches ``expected`` (the model's).

    Returns ``[]`` when they match. When they differ, raises
    :class:`~quantum_ml.errors.EncodingMismatchError` listing the differences, unless
    ``allow_mismatch`` is true: then it logs them as a WARNING on the
    ``quantum_ml.contracts`` logger and returns them, so the caller can record the override
    (the trainer stores it in the run). ``what`` names the checked thing in messages
    ("data", "validation data", ...).

    ``expected=None`` (a model registered without a contract) or ``actual=None`` leaves
    nothing to compare and returns ``[]`` without checking the other side. Bad contracts
    or arguments raise :class:`~quantum_ml.errors.EncodingError`, as in
    :func:`contract_differences`.
    """
    if not isinstance(allow_mismatch, bool):
        raise EncodingError(f"allow_mismatch must be True or False, got {allow_mismatch!r}")
    if not isinstance(what, str) or not what.strip():
        raise EncodingError(f"what must be a non-empty string, got {what!r}")
    if expected is None or actual is None:
        return []
    differences = contract_differences(expected, actual, tolerance=tolerance)
    if not differences:
        return []
    listing = "\n".join(f"  - {line}" for line in differences)
    summary = f"the {what}'s encoding contract differs from the model's:\n{listing}"
    if not allow_mismatch:
        raise EncodingMismatchError(f"{summary}\nTo proceed, {_ADVICE}.")
    logger.warning("%s\nProceeding anyway: allow_encoding_mismatch=True.", summary)
    return differences
