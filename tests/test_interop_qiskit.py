"""Conversion to and from Qiskit, checked with ``qiskit.quantum_info.Operator``."""

from __future__ import annotations

import math

import numpy as np
import pytest
from qiskit import QuantumCircuit
from qiskit.circuit import Parameter as QiskitParameter
from qiskit.circuit import ParameterVector
from qiskit.quantum_info import Operator, Statevector

from backends import (
    Circuit,
    CircuitError,
    ParameterExpressionError,
    SimulatorBackend,
    UnsupportedInstructionError,
)

ONE_QUBIT = ["h", "x", "y", "z", "s", "sdg", "t", "tdg", "sx"]
ONE_QUBIT_ROTATIONS = ["rx", "ry", "rz", "p"]
TWO_QUBIT = ["cx", "cy", "cz", "swap"]
TWO_QUBIT_ROTATIONS = ["crx", "cry", "crz", "rxx", "ryy", "rzz"]


def random_qiskit_circuit(rng: np.random.Generator, n: int, gates: int) -> QuantumCircuit:
    """A Qiskit circuit with every supported gate, ParameterVector and affine expressions."""
    vec = ParameterVector("θ", 4)
    named = [QiskitParameter("alpha"), QiskitParameter("beta")]
    symbols = [*vec, *named]
    qc = QuantumCircuit(n, global_phase=float(rng.uniform(-math.pi, math.pi)))

    def angle() -> object:
        kind = rng.integers(3)
        if kind == 0:
            return float(rng.uniform(-math.pi, math.pi))
        p = symbols[rng.integers(len(symbols))]
        if kind == 1:
            return p
        return float(rng.uniform(-2, 2)) * p + float(rng.uniform(-1, 1))

    for _ in range(gates):
        pick = rng.integers(5 if n > 1 else 3)
        q = int(rng.integers(n))
        if pick == 0:
            getattr(qc, ONE_QUBIT[rng.integers(len(ONE_QUBIT))])(q)
        elif pick == 1:
            getattr(qc, ONE_QUBIT_ROTATIONS[rng.integers(len(ONE_QUBIT_ROTATIONS))])(angle(), q)
        elif pick == 2:
            qc.u(angle(), angle(), angle(), q)
        else:
            a, b = (int(v) for v in rng.choice(n, 2, replace=False))
            if pick == 3:
                getattr(qc, TWO_QUBIT[rng.integers(len(TWO_QUBIT))])(a, b)
            else:
                getattr(qc, TWO_QUBIT_ROTATIONS[rng.integers(len(TWO_QUBIT_ROTATIONS))])(
                    angle(), a, b
                )
    return qc


def bind(qc: QuantumCircuit, values: np.ndarray) -> QuantumCircuit:
    return qc.assign_parameters(dict(zip(qc.parameters, values, strict=True)))


@pytest.mark.parametrize("case", range(40))
def test_round_trip_preserves_the_unitary(case: int) -> None:
    rng = np.random.default_rng(1000 + case)
    n = int(rng.integers(1, 5))
    qc = random_qiskit_circuit(rng, n, int(rng.integers(1, 25)))
    circuit = Circuit.from_qiskit(qc)
    assert [p.name for p in circuit.parameters] == [p.name for p in qc.parameters]
    back = circuit.to_qiskit()
    values = rng.uniform(-math.pi, math.pi, len(qc.parameters))
    # Parameters are matched by name: both circuits list them in the same (Qiskit) order.
    assert [p.name for p in back.parameters] == [p.name for p in qc.parameters]
    assert Operator(bind(back, values)).equiv(Operator(bind(qc, values)))
    np.testing.assert_allclose(
        Operator(bind(back, values)).data, Operator(bind(qc, values)).data, atol=1e-10
    )


@pytest.mark.parametrize("case", range(20))
async def test_simulating_a_converted_circuit_matches_statevector(case: int) -> None:
    rng = np.random.default_rng(2000 + case)
    n = int(rng.integers(1, 6))
    qc = random_qiskit_circuit(rng, n, 30)
    circuit = Circuit.from_qiskit(qc)
    values = rng.uniform(-math.pi, math.pi, (3, len(qc.parameters)))
    async with SimulatorBackend() as sim:
        result = await sim.run(circuit, values, observables=["Z" * n, "X" + "I" * (n - 1)])
    assert result.expectations is not None
    from qiskit.quantum_info import SparsePauliOp

    for row, v in enumerate(values):
        state = Statevector(bind(qc, v))
        for col, label in enumerate(["Z" * n, "X" + "I" * (n - 1)]):
            expected = state.expectation_value(SparsePauliOp(label)).real
            assert abs(result.expectations[row, col] - expected) < 1e-10


def test_parameter_order_follows_qiskit() -> None:
    qc = QuantumCircuit(1)
    b, a = QiskitParameter("b"), QiskitParameter("a")
    qc.rx(b, 0)
    qc.ry(2 * a + 0.5, 0)
    circuit = Circuit.from_qiskit(qc, input_parameters=["a"])
    assert [p.name for p in circuit.parameters] == ["a", "b"]
    assert circuit.parameters[0].kind == "input"
    (_, ry) = circuit.instructions
    assert (ry.angles[0].coeff, ry.angles[0].offset) == (2.0, 0.5)


def test_measurements_and_barriers() -> None:
    qc = QuantumCircuit(2, 2)
    qc.h(0)
    qc.barrier()
    qc.measure(0, 1)
    qc.measure(1, 0)
    circuit = Circuit.from_qiskit(qc)
    assert len(circuit.instructions) == 1
    assert [(m.qubit, m.clbit) for m in circuit.measurements] == [(0, 1), (1, 0)]
    assert circuit.to_qiskit().count_ops() == {"h": 1, "measure": 2}


def test_unsupported_instruction_is_named() -> None:
    qc = QuantumCircuit(3)
    qc.ccx(0, 1, 2)
    with pytest.raises(UnsupportedInstructionError, match="ccx"):
        Circuit.from_qiskit(qc)


def test_non_affine_angles_are_refused() -> None:
    a, b = QiskitParameter("a"), QiskitParameter("b")
    qc = QuantumCircuit(1)
    qc.rx(a * b, 0)
    with pytest.raises(ParameterExpressionError, match="several parameters"):
        Circuit.from_qiskit(qc)
    qc2 = QuantumCircuit(1)
    qc2.rx(a * a, 0)
    with pytest.raises(ParameterExpressionError, match="not affine"):
        Circuit.from_qiskit(qc2)
    qc3 = QuantumCircuit(1)
    qc3.rx(a.sin(), 0)
    with pytest.raises(ParameterExpressionError):
        Circuit.from_qiskit(qc3)


def test_unknown_input_parameter_name() -> None:
    qc = QuantumCircuit(1)
    qc.rx(QiskitParameter("a"), 0)
    with pytest.raises(CircuitError, match="not parameters"):
        Circuit.from_qiskit(qc, input_parameters=["nope"])
