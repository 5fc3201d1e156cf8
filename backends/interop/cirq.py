"""Conversion of the circuit model to a Cirq ``Circuit`` (exact, global phase included)."""

from __future__ import annotations

import cmath
import functools
import math
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

from ..errors import MissingDependencyError, UnknownGateError

if TYPE_CHECKING:
    import cirq

    from ..circuit import Circuit
    from ..parameters import Angle

__all__ = ["MEASUREMENT_KEY", "circuit_to_cirq"]

#: The key of the single measurement a converted circuit ends with.
MEASUREMENT_KEY = "m"

_INSTALL_HINT = "pip install 'quantum-db[cirq]'"


def _import_cirq() -> Any:
    try:
        import cirq
        import sympy  # noqa: F401  (cirq needs it for symbolic angles)
    except ImportError as exc:
        raise MissingDependencyError(
            f"converting a circuit to Cirq needs cirq-core; install it with: {_INSTALL_HINT}"
        ) from exc
    return cirq


def _angle_expr(angle: Angle) -> Any:
    """``coeff * Symbol(name) + offset`` as sympy, or a plain float for a constant angle."""
    if angle.is_constant or angle.parameter is None:
        return float(angle.offset)
    import sympy

    expr: Any = sympy.Symbol(angle.parameter.name)
    if angle.coeff != 1.0:
        expr = angle.coeff * expr
    if angle.offset != 0.0:
        expr = expr + angle.offset
    return expr


@functools.cache
def _fixed_gates() -> dict[str, Any]:
    """The Cirq gates of the gates without angles."""
    cirq = _import_cirq()
    return {
        "h": cirq.H,
        "x": cirq.X,
        "y": cirq.Y,
        "z": cirq.Z,
        "s": cirq.Z**0.5,
        "sdg": cirq.Z**-0.5,
        "t": cirq.Z**0.25,
        "tdg": cirq.Z**-0.25,
        # XPowGate(1/2) is [[1+i, 1-i], [1-i, 1+i]] / 2, exactly Qiskit's SX.
        "sx": cirq.XPowGate(exponent=0.5),
        "cx": cirq.CNOT,
        "cy": cirq.ControlledGate(cirq.Y),
        "cz": cirq.CZ,
        "swap": cirq.SWAP,
    }


def _ops_for(cirq: Any, name: str, qubits: Sequence[Any], angles: Sequence[Any]) -> list[Any]:
    """The Cirq operations, in time order, whose product is exactly the gate's matrix."""
    fixed = _fixed_gates()
    if name in fixed:
        return [fixed[name].on(*qubits)]
    rotations: dict[str, Callable[[Any], Any]] = {
        "rx": cirq.rx,
        "ry": cirq.ry,
        "rz": cirq.rz,
    }
    if name in rotations:
        return [rotations[name](angles[0]).on(*qubits)]
    if name in ("crx", "cry", "crz"):
        return [cirq.ControlledGate(rotations[name[1:]](angles[0])).on(*qubits)]
    if name == "p":
        return [cirq.ZPowGate(exponent=angles[0] / math.pi).on(*qubits)]
    if name == "u":
        # U(θ, φ, λ) = P(φ) · RY(θ) · P(λ) exactly, so P(λ) acts first.
        theta, phi, lam = angles
        (q,) = qubits
        return [
            cirq.ZPowGate(exponent=lam / math.pi).on(q),
            cirq.ry(theta).on(q),
            cirq.ZPowGate(exponent=phi / math.pi).on(q),
        ]
    pair_rotations: dict[str, Any] = {
        "rxx": cirq.XXPowGate,
        "ryy": cirq.YYPowGate,
        "rzz": cirq.ZZPowGate,
    }
    if name in pair_rotations:
        # (P⊗P)^t with global_shift -1/2 is exp(-iπt/2 P⊗P); t = θ/π gives RPP(θ).
        gate = pair_rotations[name](exponent=angles[0] / math.pi, global_shift=-0.5)
        return [gate.on(*qubits)]
    raise UnknownGateError(f"gate {name!r} has no Cirq equivalent")


def circuit_to_cirq(circuit: Circuit) -> cirq.Circuit:
    """Convert ``circuit`` to an equivalent ``cirq.Circuit``.

    Qubit ``i`` becomes ``cirq.LineQubit(i)``. Every gate maps to Cirq operations whose
    unitary equals the gate's matrix exactly, global phase included, and a nonzero
    ``circuit.global_phase`` becomes a ``cirq.global_phase_operation``. A parameter named
    ``name`` becomes ``sympy.Symbol(name)`` and an angle ``a * p + b`` the expression
    ``a * Symbol(p.name) + b``, so ``cirq.resolve_parameters(c, {name: value})`` binds it.

    Qubits no gate touches do not appear in the result; pass
    ``qubit_order=cirq.LineQubit.range(circuit.num_qubits)`` to ``Circuit.unitary`` to get
    the full-width matrix (Cirq orders it big-endian: ``LineQubit(0)`` is the most
    significant bit, the reverse of this package's and Qiskit's convention).

    Measurements become one ``cirq.measure`` with key :data:`MEASUREMENT_KEY` (``"m"``)
    in a final moment, over the measured qubits sorted by classical bit index: column
    ``j`` of ``result.measurements["m"]`` holds the ``j``-th smallest measured clbit.
    """
    cq = _import_cirq()
    ops: list[Any] = []
    if circuit.global_phase != 0.0:
        ops.append(cq.global_phase_operation(cmath.exp(1j * circuit.global_phase)))
    for inst in circuit.instructions:
        qubits = [cq.LineQubit(q) for q in inst.qubits]
        angles = [_angle_expr(a) for a in inst.angles]
        ops.extend(_ops_for(cq, inst.name, qubits, angles))
    out: cirq.Circuit = cq.Circuit(ops)
    if circuit.measurements:
        ordered = sorted(circuit.measurements, key=lambda m: m.clbit)
        measured = [cq.LineQubit(m.qubit) for m in ordered]
        out.append(cq.Moment([cq.measure(*measured, key=MEASUREMENT_KEY)]))
    return out
