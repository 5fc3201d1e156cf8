"""Rewrite a circuit into gates each IonQ client can serialize, bind it, and add measurements."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np
from numpy.typing import NDArray

from ..circuit import Circuit, Instruction
from ..gates import GATES
from ..observables import PauliTerm
from ..parameters import Angle

__all__ = [
    "NATIVE_GATES",
    "DriverName",
    "MeasurementGroup",
    "group_terms",
    "job_circuit",
    "lower",
]

DriverName = Literal["qiskit", "cirq"]

#: Gates of the circuit model that IonQ's QIS gate set expresses one to one (controlled
#: forms included); ``p`` and ``u`` are rewritten before anything is sent.
NATIVE_GATES = frozenset(GATES) - {"p", "u"}

# cirq-ionq's serializer knows X/Y/Z/H/S/T/SX powers, rotations, XX/YY/ZZ, CNOT and SWAP
# only; Cirq's CZ, controlled-Y and controlled rotations need rewriting into those.
_REWRITTEN: dict[DriverName, frozenset[str]] = {
    "qiskit": frozenset({"p", "u"}),
    "cirq": frozenset({"p", "u", "cy", "cz", "crx", "cry", "crz"}),
}


def lower(circuit: Circuit, driver: DriverName) -> Circuit:
    """``circuit`` with every gate the driver's client cannot serialize rewritten.

    Each rewrite is exact up to a global phase, which no probability depends on; angles
    stay symbolic, so a lowered circuit binds like the original. The global phase and
    the measurements are dropped (a job measures every qubit; see :func:`job_circuit`).
    """
    rewritten = _REWRITTEN[driver]
    out = Circuit(circuit.num_qubits, parameters=circuit.parameters, name=circuit.name)
    for inst in circuit.instructions:
        if inst.name in rewritten:
            _rewrite(out, inst)
        else:
            out.append(inst.name, inst.qubits, inst.angles)
    return out


def _rewrite(out: Circuit, inst: Instruction) -> None:
    name, q, a = inst.name, inst.qubits, inst.angles
    if name == "p":
        out.rz(a[0], q[0])  # P(λ) = e^{iλ/2} RZ(λ)
    elif name == "u":
        theta, phi, lam = a
        out.rz(lam, q[0]).ry(theta, q[0]).rz(phi, q[0])  # U = e^{i(φ+λ)/2} RZ(φ) RY(θ) RZ(λ)
    elif name == "cy":
        c, t = q
        out.sdg(t).cx(c, t).s(t)  # S X S† = Y
    elif name == "cz":
        c, t = q
        out.h(t).cx(c, t).h(t)  # H X H = Z
    elif name in ("crz", "cry"):
        c, t = q
        _controlled_rotation(out, name[1:], a[0], c, t)
    elif name == "crx":
        c, t = q
        out.h(t)  # H RZ H = RX
        _controlled_rotation(out, "rz", a[0], c, t)
        out.h(t)
    else:  # pragma: no cover - _REWRITTEN lists exactly the names above
        raise AssertionError(name)


def _controlled_rotation(out: Circuit, gate: str, theta: Angle, control: int, target: int) -> None:
    # X R(-θ/2) X = R(θ/2) for R in RY, RZ, so the target turns by θ only when control is 1.
    half = theta / 2
    out.append(gate, [target], [half]).cx(control, target)
    out.append(gate, [target], [-half]).cx(control, target)


@dataclass(frozen=True, slots=True)
class MeasurementGroup:
    """Pauli terms measured together: ``basis`` is a Pauli label (qubit 0 rightmost)."""

    basis: str
    terms: tuple[int, ...]


def group_terms(terms: Sequence[PauliTerm]) -> list[MeasurementGroup]:
    """Group qubit-wise commuting terms so each group needs one job; identities need none."""
    bases: list[list[str]] = []
    members: list[list[int]] = []
    for index, term in enumerate(terms):
        if set(term.label) == {"I"}:
            continue
        for basis, group in zip(bases, members, strict=True):
            if all(a == "I" or b == "I" or a == b for a, b in zip(term.label, basis, strict=True)):
                basis[:] = [b if a == "I" else a for a, b in zip(term.label, basis, strict=True)]
                group.append(index)
                break
        else:
            bases.append(list(term.label))
            members.append([index])
    return [MeasurementGroup("".join(b), tuple(m)) for b, m in zip(bases, members, strict=True)]


def job_circuit(lowered: Circuit, values: NDArray[np.float64], basis: str | None = None) -> Circuit:
    """``lowered`` bound to ``values``, rotated into ``basis`` and measured on every qubit.

    Measuring ``X`` appends ``H``; measuring ``Y`` appends ``S†`` then ``H``, so each
    term's eigenvalue is the parity of its qubits' outcomes.
    """
    bindings = {p: float(v) for p, v in zip(lowered.parameters, values, strict=True)}
    out = Circuit(lowered.num_qubits, name=lowered.name)
    for inst in lowered.instructions:
        out.append(inst.name, inst.qubits, [a.value(bindings) for a in inst.angles])
    if basis is not None:
        for q, pauli in enumerate(reversed(basis)):
            if pauli == "X":
                out.h(q)
            elif pauli == "Y":
                out.sdg(q).h(q)
    return out.measure_all()
