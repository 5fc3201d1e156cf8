"""Observables: real-weighted sums of Pauli strings, labelled the way Qiskit labels them.

A label such as ``"XZI"`` is read like a Qiskit ``Pauli`` label: its *rightmost* character
acts on qubit 0. Internally each string is kept as an ``x`` bit mask and a ``z`` bit mask
(bit ``q`` for qubit ``q``), which is all the simulator needs.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any, TypeAlias

from .errors import ObservableError

__all__ = ["Observable", "ObservableLike", "PauliTerm", "as_observables"]

_ALPHABET = frozenset("IXYZ")


@dataclass(frozen=True, slots=True)
class PauliTerm:
    """``coeff * P`` for one Pauli string ``P``."""

    label: str
    coeff: float

    @property
    def x_mask(self) -> int:
        return sum(1 << q for q, c in enumerate(reversed(self.label)) if c in "XY")

    @property
    def z_mask(self) -> int:
        return sum(1 << q for q, c in enumerate(reversed(self.label)) if c in "ZY")

    @property
    def num_y(self) -> int:
        return self.label.count("Y")


def _check_label(label: object, num_qubits: int | None) -> str:
    if not isinstance(label, str) or not label:
        raise ObservableError(f"a Pauli label must be a non-empty string, got {label!r}")
    bad = sorted(set(label) - _ALPHABET)
    if bad:
        raise ObservableError(
            f"Pauli label {label!r} has characters {bad}; only 'I', 'X', 'Y', 'Z' are allowed"
        )
    if num_qubits is not None and len(label) != num_qubits:
        raise ObservableError(
            f"Pauli label {label!r} has width {len(label)} but the circuit has {num_qubits} "
            "qubits; labels are read with qubit 0 rightmost, one character per qubit"
        )
    return label


class Observable:
    """A Hermitian observable ``sum_k c_k P_k`` with real weights ``c_k``."""

    __slots__ = ("_terms", "num_qubits")

    def __init__(self, terms: Iterable[tuple[str, float | complex]]) -> None:
        collected: dict[str, float] = {}
        width: int | None = None
        for label, coeff in terms:
            _check_label(label, width)
            width = len(label)
            if isinstance(coeff, complex):
                if coeff.imag != 0:
                    raise ObservableError(
                        f"weight {coeff!r} of {label!r} is complex; observables need real weights"
                    )
                coeff = coeff.real
            try:
                value = float(coeff)
            except (TypeError, ValueError):
                raise ObservableError(f"weight {coeff!r} of {label!r} is not a number") from None
            if not math.isfinite(value):
                raise ObservableError(f"weight of {label!r} must be finite, got {value!r}")
            collected[label] = collected.get(label, 0.0) + value
        if width is None:
            raise ObservableError("an observable needs at least one Pauli term")
        self.num_qubits = width
        self._terms = tuple(PauliTerm(label, c) for label, c in collected.items())

    @classmethod
    def pauli(cls, label: str, coeff: float = 1.0) -> Observable:
        return cls([(label, coeff)])

    @classmethod
    def from_qiskit(cls, op: Any) -> Observable:
        """From a Qiskit ``SparsePauliOp`` or ``Pauli``."""
        from qiskit.quantum_info import Pauli, SparsePauliOp

        if isinstance(op, Pauli):
            op = SparsePauliOp(op)
        if not isinstance(op, SparsePauliOp):
            raise ObservableError(f"expected a SparsePauliOp or Pauli, got {type(op).__name__}")
        return cls((str(label), complex(c)) for label, c in op.to_list())

    @property
    def terms(self) -> tuple[PauliTerm, ...]:
        return self._terms

    def __add__(self, other: Observable) -> Observable:
        return Observable([(t.label, t.coeff) for t in (*self._terms, *other._terms)])

    def __mul__(self, k: float) -> Observable:
        return Observable([(t.label, t.coeff * float(k)) for t in self._terms])

    __rmul__ = __mul__

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Observable) and self._as_dict() == other._as_dict()

    def _as_dict(self) -> dict[str, float]:
        return {t.label: t.coeff for t in self._terms}

    def __hash__(self) -> int:
        return hash(tuple(sorted((t.label, t.coeff) for t in self._terms)))

    def __repr__(self) -> str:
        inner = " + ".join(f"{t.coeff:g}*{t.label}" for t in self._terms)
        return f"Observable({inner})"


ObservableLike: TypeAlias = "str | Observable"


@functools.lru_cache(maxsize=4096)
def _pauli_observable(label: str, num_qubits: int) -> Observable:
    # Observables are immutable, and a training loop names the same few on every step:
    # parsing them once keeps a small cached run's validation in microseconds.
    return Observable.pauli(_check_label(label, num_qubits))


def as_observables(items: Sequence[Any] | ObservableLike, num_qubits: int) -> list[Observable]:
    """Normalize labels and observables to a list, checking each against ``num_qubits``."""
    if isinstance(items, str | Observable):
        items = [items]
    if len(items) == 0:
        raise ObservableError("at least one observable is needed for an expectation run")
    out: list[Observable] = []
    for item in items:
        if isinstance(item, str):
            obs = _pauli_observable(item, num_qubits)
        elif isinstance(item, Observable):
            obs = item
        else:
            try:
                obs = Observable.from_qiskit(item)
            except ImportError:
                raise ObservableError(
                    f"an observable must be a Pauli label or an Observable, got {item!r}"
                ) from None
        if obs.num_qubits != num_qubits:
            raise ObservableError(
                f"observable {obs!r} acts on {obs.num_qubits} qubits but the circuit has "
                f"{num_qubits}"
            )
        out.append(obs)
    return out
