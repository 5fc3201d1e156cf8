"""Circuit.to_cirq: exact unitaries against Qiskit's gate library, symbols and measurements."""

from __future__ import annotations

import math
import pathlib
import subprocess
import sys

import cirq
import numpy as np
import pytest
import sympy
from qiskit import QuantumCircuit
from qiskit.quantum_info import Operator

from backends import Circuit, MissingDependencyError, Parameter
from backends.gates import GATES
from backends.interop.cirq import MEASUREMENT_KEY
from tests.randomcircuits import (
    QISKIT_GATES,
    random_circuit,
    random_values,
    to_qiskit_reference,
)

ATOL = 1e-10


def cirq_unitary(circuit: Circuit, values: dict[str, float]) -> np.ndarray:
    """The bound Cirq unitary over all qubits, LineQubit(0) most significant."""
    resolved = cirq.resolve_parameters(circuit.to_cirq(), values)
    assert not cirq.is_parameterized(resolved)
    return resolved.unitary(qubit_order=cirq.LineQubit.range(circuit.num_qubits))


def qiskit_unitary(qc: QuantumCircuit) -> np.ndarray:
    """Qiskit's unitary reordered big-endian (qubit 0 most significant), as Cirq's is."""
    return np.asarray(Operator(qc.reverse_bits()).data)


def random_cases() -> list[tuple[int, int]]:
    rng = np.random.default_rng(20240611)
    return [(int(rng.integers(1, 7)), int(seed)) for seed in rng.integers(0, 2**31, size=50)]


@pytest.mark.parametrize(("num_qubits", "seed"), random_cases())
def test_random_circuit_unitary_matches_qiskit(num_qubits: int, seed: int) -> None:
    rng = np.random.default_rng(seed)
    circuit = random_circuit(rng, num_qubits, int(rng.integers(24, 40)), num_params=3)
    values = random_values(rng, circuit)
    expected = qiskit_unitary(to_qiskit_reference(circuit, values))
    np.testing.assert_allclose(cirq_unitary(circuit, values), expected, atol=ATOL, rtol=0)


def test_random_circuits_cover_the_gate_set() -> None:
    rng = np.random.default_rng(1)
    seen = {i.name for i in random_circuit(rng, 3, 30, num_params=2).instructions}
    assert seen == set(GATES) == set(QISKIT_GATES)


@pytest.mark.parametrize("name", sorted(GATES))
@pytest.mark.parametrize("symbolic", [False, True], ids=["constant", "symbolic"])
def test_each_gate_matches_qiskit(name: str, symbolic: bool) -> None:
    spec = GATES[name]
    rng = np.random.default_rng(sorted(GATES).index(name))
    qubits = [1, 0] if spec.num_qubits == 2 else [0]  # a reversed pair checks the order
    theta = Parameter("theta")
    values = {"theta": float(rng.uniform(-4, 4))}
    angles = [
        -1.25 * theta + float(rng.uniform(-3, 3)) if symbolic else float(rng.uniform(-7, 7))
        for _ in range(spec.num_params)
    ]
    circuit = Circuit(2).append(name, qubits, angles)
    expected = qiskit_unitary(to_qiskit_reference(circuit, values))
    np.testing.assert_allclose(cirq_unitary(circuit, values), expected, atol=ATOL, rtol=0)


def test_global_phase_is_kept() -> None:
    circuit = Circuit(1, global_phase=0.75).h(0)
    ops = list(circuit.to_cirq().all_operations())
    phases = [op.gate for op in ops if isinstance(op.gate, cirq.GlobalPhaseGate)]
    assert len(phases) == 1
    assert phases[0].coefficient == pytest.approx(np.exp(0.75j), abs=ATOL)
    expected = np.exp(0.75j) * np.array([[1, 1], [1, -1]]) / math.sqrt(2)
    np.testing.assert_allclose(cirq_unitary(circuit, {}), expected, atol=ATOL, rtol=0)


def test_zero_global_phase_adds_no_operation() -> None:
    ops = list(Circuit(1).x(0).to_cirq().all_operations())
    assert ops == [cirq.X(cirq.LineQubit(0))]


def test_affine_angle_becomes_a_sympy_expression_of_the_parameter_name() -> None:
    alpha = Parameter("θ[0]")
    circuit = Circuit(1).rx(2.5 * alpha - 0.5, 0).rz(alpha, 0)
    converted = circuit.to_cirq()
    assert cirq.parameter_symbols(converted) == {sympy.Symbol("θ[0]")}
    resolved = cirq.resolve_parameters(converted, {"θ[0]": 0.3})
    q = cirq.LineQubit(0)
    expected = cirq.unitary(cirq.Circuit([cirq.rx(0.25).on(q), cirq.rz(0.3).on(q)]))
    np.testing.assert_allclose(resolved.unitary(), expected, atol=ATOL, rtol=0)


def test_reused_parameter_resolves_everywhere() -> None:
    w = Parameter("w")
    circuit = Circuit(2).ry(w, 0).rzz(-w, 0, 1).u(w, 2 * w, w + 1, 1)
    assert cirq.parameter_names(circuit.to_cirq()) == {"w"}
    expected = qiskit_unitary(to_qiskit_reference(circuit, {"w": 1.1}))
    np.testing.assert_allclose(cirq_unitary(circuit, {"w": 1.1}), expected, atol=ATOL, rtol=0)


def test_measurement_is_one_final_op_ordered_by_clbit() -> None:
    circuit = Circuit(4).h(3).x(1).cx(1, 2).measure(1, 3).measure(3, 0).measure(2, 1)
    converted = circuit.to_cirq()
    last = converted[-1]
    assert len(last.operations) == 1
    (op,) = last.operations
    assert isinstance(op.gate, cirq.MeasurementGate)
    assert op.gate.key == MEASUREMENT_KEY == "m"
    assert op.qubits == (cirq.LineQubit(3), cirq.LineQubit(2), cirq.LineQubit(1))
    assert converted.are_all_measurements_terminal()

    result = cirq.Simulator(seed=5).run(converted, repetitions=20)
    bits = result.measurements["m"]
    assert bits.shape == (20, 3)
    # clbit 0 <- qubit 3 (H: random), clbit 1 <- qubit 2 (1), clbit 3 <- qubit 1 (1).
    assert (bits[:, 1] == 1).all()
    assert (bits[:, 2] == 1).all()
    assert set(bits[:, 0]) == {0, 1}


def test_unmeasured_circuit_has_no_measurement() -> None:
    assert not Circuit(2).h(0).to_cirq().has_measurements()


def test_missing_cirq_raises_with_install_hint(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "cirq", None)
    with pytest.raises(MissingDependencyError, match=r"pip install 'quantum-db\[cirq\]'"):
        Circuit(1).h(0).to_cirq()


def test_backends_import_without_loading_cirq() -> None:
    code = (
        "import sys\n"
        "import backends, backends.interop.cirq, backends.interop.qasm3\n"
        "assert 'cirq' not in sys.modules and 'sympy' not in sys.modules\n"
    )
    root = pathlib.Path(__file__).resolve().parents[1]
    subprocess.run([sys.executable, "-c", code], check=True, cwd=root)
