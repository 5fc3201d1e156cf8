"""Seeded random circuits over the whole gate set, and independent Qiskit references for them."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import numpy as np
from qiskit import QuantumCircuit
from qiskit.circuit import Gate
from qiskit.circuit import library as lib

from backends import Circuit
from backends.gates import GATES
from backends.parameters import Angle, Parameter

__all__ = ["QISKIT_GATES", "random_circuit", "random_values", "to_qiskit_reference"]

#: Each gate of the circuit model as the Qiskit library gate of the same name and
#: argument order; the reference circuits are built from these alone.
QISKIT_GATES: dict[str, type[Gate]] = {
    "h": lib.HGate,
    "x": lib.XGate,
    "y": lib.YGate,
    "z": lib.ZGate,
    "s": lib.SGate,
    "sdg": lib.SdgGate,
    "t": lib.TGate,
    "tdg": lib.TdgGate,
    "sx": lib.SXGate,
    "rx": lib.RXGate,
    "ry": lib.RYGate,
    "rz": lib.RZGate,
    "p": lib.PhaseGate,
    "u": lib.UGate,
    "cx": lib.CXGate,
    "cy": lib.CYGate,
    "cz": lib.CZGate,
    "swap": lib.SwapGate,
    "crx": lib.CRXGate,
    "cry": lib.CRYGate,
    "crz": lib.CRZGate,
    "rxx": lib.RXXGate,
    "ryy": lib.RYYGate,
    "rzz": lib.RZZGate,
}


def random_circuit(
    rng: np.random.Generator,
    num_qubits: int,
    num_gates: int,
    *,
    num_params: int,
    measure: bool = False,
    parameter_names: Sequence[str] | None = None,
    gate_names: Sequence[str] | None = None,
) -> Circuit:
    """A random circuit drawing on every gate of :data:`backends.gates.GATES`.

    The first gates are a random permutation of the whole gate set (two-qubit gates only
    when ``num_qubits >= 2``), so with ``num_gates`` at least the gate-set size every gate
    appears; the rest are drawn uniformly. ``num_params`` parameters (named ``p0``,
    ``p1``, ... unless ``parameter_names`` is given) are declared up front, so they keep
    that order even if some end up unused. About two thirds of the angles are affine,
    ``a * p + b`` with ``a`` in [-2, 2], ``b`` in [-π, π] and ``p`` drawn with
    replacement (so parameters are reused); the rest are constants in [-2π, 2π]. The
    global phase is uniform in [-π, π]. With ``measure``, a random non-empty subset of
    the qubits is measured into distinct, possibly non-contiguous classical bits.
    ``gate_names`` restricts the draw to those gates.
    """
    if parameter_names is None:
        parameter_names = [f"p{i}" for i in range(num_params)]
    if len(parameter_names) != num_params:
        raise ValueError("parameter_names must hold num_params names")
    params = [Parameter(name) for name in parameter_names]
    circuit = Circuit(
        num_qubits,
        parameters=params,
        global_phase=float(rng.uniform(-math.pi, math.pi)),
        name="random",
    )
    names = [
        name
        for name, spec in GATES.items()
        if spec.num_qubits <= num_qubits and (gate_names is None or name in gate_names)
    ]
    order = [names[i] for i in rng.permutation(len(names))]
    for k in range(num_gates):
        name = order[k] if k < len(order) else names[int(rng.integers(len(names)))]
        spec = GATES[name]
        qubits = [int(q) for q in rng.choice(num_qubits, size=spec.num_qubits, replace=False)]
        angles: list[Angle | float] = []
        for _ in range(spec.num_params):
            if params and rng.random() < 2 / 3:
                p = params[int(rng.integers(len(params)))]
                a, b = float(rng.uniform(-2, 2)), float(rng.uniform(-math.pi, math.pi))
                angles.append(Angle(a, p, b))
            else:
                angles.append(float(rng.uniform(-2 * math.pi, 2 * math.pi)))
        circuit.append(name, qubits, angles)
    if measure:
        count = int(rng.integers(1, num_qubits + 1))
        measured = rng.choice(num_qubits, size=count, replace=False)
        clbits = rng.choice(num_qubits + 2, size=count, replace=False)
        for q, c in zip(measured, clbits, strict=True):
            circuit.measure(int(q), int(c))
    return circuit


def random_values(rng: np.random.Generator, circuit: Circuit) -> dict[str, float]:
    """A value in [-2π, 2π] for each parameter of ``circuit``, keyed by name."""
    return {p.name: float(rng.uniform(-2 * math.pi, 2 * math.pi)) for p in circuit.parameters}


def _value(angle: Angle, values: Mapping[str, float]) -> float:
    if angle.parameter is None:
        return angle.offset
    return angle.coeff * values[angle.parameter.name] + angle.offset


def to_qiskit_reference(
    circuit: Circuit,
    values: Mapping[str, float] | Sequence[float] = (),
    *,
    measurements: bool = True,
) -> QuantumCircuit:
    """``circuit`` bound to ``values``, rebuilt gate by gate from Qiskit's gate library.

    Independent of the package's own converters: each instruction becomes the
    :data:`QISKIT_GATES` gate of the same name with its numeric angles in the same
    order, on the same qubit indices (qubit ``i`` is Qiskit qubit ``i``), and the global
    phase is copied. ``values`` maps parameter names to numbers, or lists them in
    :attr:`Circuit.parameters` order. With ``measurements`` (the default) the terminal
    measurements are appended too; leave them out to take an ``Operator``.
    """
    if not isinstance(values, Mapping):
        if len(values) != circuit.num_parameters:
            raise ValueError(f"expected {circuit.num_parameters} values, got {len(values)}")
        values = {p.name: float(v) for p, v in zip(circuit.parameters, values, strict=True)}
    num_clbits = circuit.num_clbits if measurements else 0
    qc = QuantumCircuit(circuit.num_qubits, num_clbits, global_phase=circuit.global_phase)
    for inst in circuit.instructions:
        gate = QISKIT_GATES[inst.name](*(_value(a, values) for a in inst.angles))
        qc.append(gate, [qc.qubits[q] for q in inst.qubits])
    if measurements:
        for m in circuit.measurements:
            qc.measure(m.qubit, m.clbit)
    return qc
