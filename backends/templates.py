"""Circuit templates used across the project (encoders, benchmarks, demos)."""

from __future__ import annotations

import math

from .circuit import Circuit
from .parameters import Parameter

__all__ = ["hardware_efficient_circuit", "z_observables"]


def hardware_efficient_circuit(num_qubits: int, layers: int) -> Circuit:
    """Angle encoding ``RY(π x_i)``, then ``layers`` of RX RY RZ on each qubit and a CNOT chain.

    Parameters are ordered inputs ``x0..x{n-1}`` first, then weights ``w0..w{3nL-1}``
    (layer-major, qubit, then rotation RX/RY/RZ).
    """
    inputs = [Parameter(f"x{i}", "input") for i in range(num_qubits)]
    weights = [Parameter(f"w{k}") for k in range(3 * num_qubits * layers)]
    circuit = Circuit(num_qubits, parameters=[*inputs, *weights], name=f"hea-{num_qubits}x{layers}")
    for q, x in enumerate(inputs):
        circuit.ry(math.pi * x, q)
    w = iter(weights)
    for _ in range(layers):
        for q in range(num_qubits):
            circuit.rx(next(w), q).ry(next(w), q).rz(next(w), q)
        for q in range(num_qubits - 1):
            circuit.cx(q, q + 1)
    return circuit


def z_observables(num_qubits: int) -> list[str]:
    """Pauli labels ``<Z_i>`` for each qubit ``i`` (rightmost character is qubit 0)."""
    return ["I" * (num_qubits - 1 - i) + "Z" + "I" * i for i in range(num_qubits)]
