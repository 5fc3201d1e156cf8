"""Circuit.to_qasm3: programs Qiskit's OpenQASM 3 importer reads back to the exact unitary."""

from __future__ import annotations

import math

import numpy as np
import pytest
import qiskit.qasm3
from qiskit import QuantumCircuit
from qiskit.quantum_info import Operator

from backends import Circuit, Parameter
from backends.gates import GATES
from backends.interop.qasm3 import parameter_identifiers
from tests.randomcircuits import random_circuit, random_values, to_qiskit_reference

ATOL = 1e-10


def load_bound(circuit: Circuit, values: dict[str, float]) -> QuantumCircuit:
    """Export ``circuit``, import it with Qiskit and bind its inputs by their QASM names."""
    imported = qiskit.qasm3.loads(circuit.to_qasm3())
    by_identifier = {ident: name for name, ident in parameter_identifiers(circuit).items()}
    bindings = {p: values[by_identifier[p.name]] for p in imported.parameters}
    return imported.assign_parameters(bindings)


def unitary(qc: QuantumCircuit) -> np.ndarray:
    return np.asarray(Operator(qc.remove_final_measurements(inplace=False)).data)


def measurements(qc: QuantumCircuit) -> set[tuple[int, int]]:
    return {
        (qc.find_bit(i.qubits[0]).index, qc.find_bit(i.clbits[0]).index)
        for i in qc.data
        if i.operation.name == "measure"
    }


def random_cases() -> list[tuple[int, int, bool]]:
    rng = np.random.default_rng(31337)
    return [
        (int(rng.integers(1, 6)), int(seed), bool(seed % 2))
        for seed in rng.integers(0, 2**31, size=40)
    ]


# The importer honours ``gphase``, so the comparison includes the global phase.
@pytest.mark.parametrize(("num_qubits", "seed", "measure"), random_cases())
def test_random_circuit_round_trips_through_qiskit(
    num_qubits: int, seed: int, measure: bool
) -> None:
    rng = np.random.default_rng(seed)
    names = [f"θ[{i}]" for i in range(3)]
    circuit = random_circuit(
        rng,
        num_qubits,
        int(rng.integers(24, 40)),
        num_params=3,
        measure=measure,
        parameter_names=names,
    )
    values = random_values(rng, circuit)
    loaded = load_bound(circuit, values)
    reference = to_qiskit_reference(circuit, values)
    assert loaded.num_qubits == circuit.num_qubits
    assert loaded.num_parameters == 0
    np.testing.assert_allclose(unitary(loaded), unitary(reference), atol=ATOL, rtol=0)
    assert measurements(loaded) == {(m.qubit, m.clbit) for m in circuit.measurements}
    assert loaded.num_clbits == circuit.num_clbits


@pytest.mark.parametrize("name", sorted(GATES))
def test_each_gate_round_trips(name: str) -> None:
    spec = GATES[name]
    w = Parameter("w")
    angles = [0.75 * w - 0.5 * k for k in range(spec.num_params)]
    qubits = [2, 0] if spec.num_qubits == 2 else [1]
    circuit = Circuit(3).append(name, qubits, angles)
    values = {"w": 1.3}
    np.testing.assert_allclose(
        unitary(load_bound(circuit, values)),
        unitary(to_qiskit_reference(circuit, values)),
        atol=ATOL,
        rtol=0,
    )


PAULIS = {
    "x": np.array([[0, 1], [1, 0]], dtype=complex),
    "y": np.array([[0, -1j], [1j, 0]]),
    "z": np.diag([1.0 + 0j, -1.0]),
}


@pytest.mark.parametrize("pauli", sorted(PAULIS))
@pytest.mark.parametrize("theta", [0.0, 0.4, -1.9, math.pi, 5.5])
def test_pair_rotation_definitions_are_exactly_exp_of_pauli_pair(pauli: str, theta: float) -> None:
    # exp(-iθ/2 P⊗P) = cos(θ/2) I - i sin(θ/2) P⊗P, since (P⊗P)² = I; P⊗P is symmetric
    # under swapping the qubits, so the bit order of the comparison does not matter.
    pp = np.kron(PAULIS[pauli], PAULIS[pauli])
    expected = math.cos(theta / 2) * np.eye(4) - 1j * math.sin(theta / 2) * pp
    t = Parameter("t")
    circuit = Circuit(2).append(f"r{pauli}{pauli}", [0, 1], [t])
    text = circuit.to_qasm3()
    assert f"gate r{pauli}{pauli}(_theta) _q0, _q1 {{" in text
    loaded = load_bound(circuit, {"t": theta})
    np.testing.assert_allclose(Operator(loaded).data, expected, atol=ATOL, rtol=0)


def test_golden_text() -> None:
    theta = Parameter("θ[0]")
    circuit = (
        Circuit(2, global_phase=0.5)
        .h(0)
        .rx(0.5 * theta - 0.25, 1)
        .rz(math.pi / 3, 1)
        .u(theta, -1.0, 2 * theta + 0.1, 0)
        .rzz(-theta, 0, 1)
        .cx(0, 1)
        .measure(1, 0)
        .measure(0, 2)
    )
    assert circuit.to_qasm3() == (
        "OPENQASM 3.0;\n"
        'include "stdgates.inc";\n'
        "input float[64] θ_0_;\n"
        "gate rzz(_theta) _q0, _q1 { cx _q0, _q1; rz(_theta) _q1; cx _q0, _q1; }\n"
        "qubit[2] q;\n"
        "bit[3] c;\n"
        "gphase(0.5);\n"
        "h q[0];\n"
        "rx(0.5*θ_0_ - 0.25) q[1];\n"
        "rz(1.0471975511965976) q[1];\n"
        "p(2.0*θ_0_ + 0.1) q[0];\n"
        "ry(θ_0_) q[0];\n"
        "p(-1.0) q[0];\n"
        "rzz(-θ_0_) q[0], q[1];\n"
        "cx q[0], q[1];\n"
        "c[0] = measure q[1];\n"
        "c[2] = measure q[0];\n"
    )


def test_u_avoids_the_revision_dependent_builtin() -> None:
    # The built-in U changed by a phase e^{iθ/2} between OpenQASM 3 revisions and u3 carries
    # its own phase, so neither may appear; p·ry·p means the same in every revision.
    text = Circuit(1).u(0.3, -0.2, 1.1, 0).to_qasm3()
    assert "U(" not in text
    assert "u3(" not in text
    assert text.endswith("p(1.1) q[0];\nry(0.3) q[0];\np(-0.2) q[0];\n")


def test_no_parameters_no_measurements_no_phase() -> None:
    assert Circuit(1).x(0).to_qasm3() == (
        'OPENQASM 3.0;\ninclude "stdgates.inc";\nqubit[1] q;\nx q[0];\n'
    )


def test_angles_keep_full_precision() -> None:
    angle = 0.1 + 0.2  # 0.30000000000000004: any rounding would lose the last digit
    text = Circuit(1).rx(angle, 0).to_qasm3()
    assert "rx(0.30000000000000004) q[0];" in text


@pytest.mark.parametrize(
    ("names", "expected"),
    [
        (["θ[0]", "θ[1]"], ["θ_0_", "θ_1_"]),
        (["alpha", "θ", "_w1", "theta"], ["alpha", "θ", "_w1", "theta"]),
        # A valid name keeps itself even when a sanitized name before it would take it.
        (["a[0]", "a_0_"], ["a_0__1", "a_0_"]),
        (["a.b", "a-b", "a b"], ["a_b", "a_b_1", "a_b_2"]),
        (
            ["pi", "q", "c", "rx", "input", "U", "rzz"],
            ["pi_", "q_", "c_", "rx_", "input_", "U_", "rzz_"],
        ),
        (["pi", "pi_"], ["pi__1", "pi_"]),
        (["0x", "x y", "1"], ["_0x", "x_y", "_1"]),
        # Local names of the rxx/ryy/rzz definitions are taken; common names are not.
        (
            ["theta", "a", "b", "_theta", "_q0", "_q1"],
            ["theta", "a", "b", "_theta_", "_q0_", "_q1_"],
        ),
    ],
)
def test_parameter_names_are_sanitized_deterministically(
    names: list[str], expected: list[str]
) -> None:
    circuit = Circuit(2, parameters=[Parameter(n) for n in names])
    for k, name in enumerate(names):
        circuit.ry(Parameter(name) * (k + 1.0) + 0.1, k % 2)
        circuit.append(("rxx", "ryy", "rzz")[k % 3], [k % 2, 1 - k % 2], [-Parameter(name)])
    assert parameter_identifiers(circuit) == dict(zip(names, expected, strict=True))
    text = circuit.to_qasm3()
    for ident in expected:
        assert f"input float[64] {ident};\n" in text
    values = {name: 0.3 * (k + 1) for k, name in enumerate(names)}
    loaded = load_bound(circuit, values)
    assert sorted(p.name for p in qiskit.qasm3.loads(text).parameters) == sorted(expected)
    np.testing.assert_allclose(
        unitary(loaded), unitary(to_qiskit_reference(circuit, values)), atol=ATOL, rtol=0
    )
