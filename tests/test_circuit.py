"""The circuit model: building, parameters, metrics, hashing and its bad inputs."""

from __future__ import annotations

import math
import os
import subprocess
import sys

import numpy as np
import pytest
from qiskit.circuit import library as qlib
from qiskit.quantum_info import Operator

from backends import (
    GATES,
    Circuit,
    CircuitError,
    Parameter,
    ParameterExpressionError,
    QubitIndexError,
    UnknownGateError,
)
from backends.templates import hardware_efficient_circuit

# Qiskit's library classes, used to check each gate matrix independently of our table.
QISKIT_GATES = {
    "h": qlib.HGate, "x": qlib.XGate, "y": qlib.YGate, "z": qlib.ZGate, "s": qlib.SGate,
    "sdg": qlib.SdgGate, "t": qlib.TGate, "tdg": qlib.TdgGate, "sx": qlib.SXGate,
    "rx": qlib.RXGate, "ry": qlib.RYGate, "rz": qlib.RZGate, "p": qlib.PhaseGate,
    "u": qlib.UGate, "cx": qlib.CXGate, "cy": qlib.CYGate, "cz": qlib.CZGate,
    "swap": qlib.SwapGate, "crx": qlib.CRXGate, "cry": qlib.CRYGate, "crz": qlib.CRZGate,
    "rxx": qlib.RXXGate, "ryy": qlib.RYYGate, "rzz": qlib.RZZGate,
}  # fmt: skip


def test_gate_set_is_the_issue_list() -> None:
    assert set(GATES) == set(QISKIT_GATES)
    for name in GATES:
        assert callable(getattr(Circuit, name)), f"no builder for {name}"


@pytest.mark.parametrize("name", sorted(QISKIT_GATES))
def test_gate_matrices_match_qiskit(name: str) -> None:
    spec = GATES[name]
    angles = np.array([0.37, -1.2, 2.9][: spec.num_params])
    ours = spec.matrix(angles[None, :])[0]
    theirs = Operator(QISKIT_GATES[name](*angles)).data
    if spec.num_qubits == 2:
        # Qiskit orders the basis little-endian (first qubit least significant); ours
        # puts the first listed qubit first. Swap the two bits to compare.
        perm = [0, 2, 1, 3]
        theirs = theirs[np.ix_(perm, perm)]
    np.testing.assert_allclose(ours, theirs, atol=1e-14)
    assert np.allclose(ours @ ours.conj().T, np.eye(spec.dim), atol=1e-14)
    if spec.diagonal:
        assert np.count_nonzero(ours - np.diag(np.diag(ours))) == 0


def test_builder_chains_and_counts() -> None:
    theta = Parameter("theta")
    c = Circuit(3).h(0).cx(0, 1).rx(theta, 2).rzz(2 * theta + 1, 1, 2).measure_all()
    assert len(c) == 4
    assert c.count_gates() == {1: 2, 2: 2}
    assert (c.num_one_qubit_gates, c.num_two_qubit_gates) == (2, 2)
    assert c.parameters == (theta,)
    assert c.num_clbits == 3
    assert c.depth() == 3


def test_depth_matches_qiskit() -> None:
    c = hardware_efficient_circuit(5, 3)
    assert c.depth() == c.to_qiskit().depth()
    assert c.num_parameters == 5 + 3 * 5 * 3


def test_affine_parameters() -> None:
    a = Parameter("a")
    angle = (2 * a + 1) / 4 - 0.25
    assert (angle.coeff, angle.parameter, angle.offset) == (0.5, a, 0.0)
    assert angle.value({a: 3.0}) == 1.5
    assert (-a).coeff == -1.0
    assert (1 - a).offset == 1.0
    with pytest.raises(ParameterExpressionError):
        _ = a * a  # type: ignore[operator]
    with pytest.raises(ParameterExpressionError):
        _ = a / 0
    with pytest.raises(ParameterExpressionError):
        _ = a + float("nan")


def test_reused_parameter_and_explicit_order() -> None:
    a, b = Parameter("a"), Parameter("b", "input")
    c = Circuit(1, parameters=[b, a]).rx(a, 0).ry(a * 2, 0).rz(b, 0)
    assert [p.name for p in c.parameters] == ["b", "a"]
    assert c.parameters_of_kind("input") == (b,)
    assert c.parameter_index("a") == 1
    with pytest.raises(CircuitError):
        c.rx(Parameter("b"), 0)  # same name, other kind


def test_content_hash_is_stable_across_processes() -> None:
    code = (
        "from backends.templates import hardware_efficient_circuit as h;"
        "print(h(4, 2).content_hash())"
    )
    hashes = {
        subprocess.run(
            [sys.executable, "-c", code],
            capture_output=True,
            text=True,
            check=True,
            env={**os.environ, "PYTHONHASHSEED": seed},
        ).stdout.strip()
        for seed in ("1", "2")
    }
    assert hashes == {hardware_efficient_circuit(4, 2).content_hash()}


def test_content_hash_sees_every_change() -> None:
    base = Circuit(2).rx(0.5, 0).cx(0, 1)
    variants = [
        Circuit(2).rx(0.5000001, 0).cx(0, 1),
        Circuit(2).rx(0.5, 1).cx(0, 1),
        Circuit(2).rx(0.5, 0).cx(1, 0),
        Circuit(3).rx(0.5, 0).cx(0, 1),
        Circuit(2).rx(0.5, 0).cx(0, 1).measure_all(),
        Circuit(2, global_phase=0.1).rx(0.5, 0).cx(0, 1),
    ]
    assert base == Circuit(2).rx(0.5, 0).cx(0, 1)
    assert len({base.content_hash(), *(v.content_hash() for v in variants)}) == 7


@pytest.mark.parametrize(
    ("build", "error", "match"),
    [
        (lambda c: c.h(3), QubitIndexError, "out of range"),
        (lambda c: c.h(-1), QubitIndexError, "out of range"),
        (lambda c: c.cx(1, 1), QubitIndexError, "same qubit"),
        (lambda c: c.append("ccx", [0, 1, 2]), UnknownGateError, "ccx"),
        (lambda c: c.append("rx", [0], []), CircuitError, "takes 1 angle"),
        (lambda c: c.append("cx", [0]), QubitIndexError, "2 qubit"),
        (lambda c: c.rx(float("inf"), 0), ParameterExpressionError, "finite"),
        (lambda c: c.rx("half", 0), ParameterExpressionError, "number"),
        (lambda c: c.measure(0, 0).h(0), CircuitError, "terminal"),
        (lambda c: c.measure(0, 0).measure(1, 0), QubitIndexError, "already written"),
        (lambda c: c.h(1.0), QubitIndexError, "integers"),
    ],
)
def test_bad_building_raises_specific_errors(build, error, match) -> None:  # type: ignore[no-untyped-def]
    circuit = Circuit(3)
    with pytest.raises(error, match=match):
        build(circuit)


def test_failed_append_leaves_circuit_unchanged() -> None:
    circuit = Circuit(2).h(0)
    before = circuit.content_hash()
    with pytest.raises(QubitIndexError):
        circuit.rx(Parameter("new"), 5)
    assert circuit.content_hash() == before
    assert circuit.parameters == ()


@pytest.mark.parametrize("n", [0, -1, 1.5, True])
def test_bad_width(n: object) -> None:
    with pytest.raises(CircuitError):
        Circuit(n)  # type: ignore[arg-type]


def test_global_phase_round_trip() -> None:
    c = Circuit(1, global_phase=math.pi / 3).x(0)
    np.testing.assert_allclose(
        Operator(c.to_qiskit()).data, np.exp(1j * math.pi / 3) * np.array([[0, 1], [1, 0]])
    )


def test_content_hash_follows_every_mutation() -> None:
    circuit = Circuit(2).h(0)
    first = circuit.content_hash()
    assert circuit.content_hash() == first
    circuit.cx(0, 1)
    second = circuit.content_hash()
    assert second != first
    circuit.global_phase = 0.25
    third = circuit.content_hash()
    assert third not in (first, second)
    circuit.measure(0, 0)
    assert circuit.content_hash() != third
    assert circuit.copy().content_hash() == circuit.content_hash()
    fresh = Circuit(2, global_phase=0.25).h(0).cx(0, 1).measure(0, 0)
    assert fresh.content_hash() == circuit.content_hash()
