"""Dense differentiation of narrow circuits (``backends.simulator.dense``) against Qiskit
``Statevector`` expectations, their central differences, and the fused adjoint kernels."""

from __future__ import annotations

import math

import numpy as np
import pytest

from backends import Circuit, Observable, SimulatorBackend
from backends.errors import SimulatorMemoryError
from backends.observables import as_observables
from backends.parameters import Parameter
from backends.simulator import backend as backend_module
from backends.simulator.adjoint import adjoint_jacobian
from backends.simulator.dense import DENSE_MAX_QUBITS, compile_dense, dense_bytes, dense_jacobian
from backends.simulator.plan import compile_plan
from backends.templates import hardware_efficient_circuit, z_observables

from .randomcircuits import random_circuit
from .test_simulator import random_labels, reference_expectations

STEP = 1e-5  # central differences of exact expectations: error ~1e-10


def _mixed_values(rng: np.random.Generator, circuit: Circuit, batch: int) -> np.ndarray:
    """Bindings where about half the parameters are the same in every row (shared gates)."""
    values = rng.uniform(-2 * math.pi, 2 * math.pi, (batch, circuit.num_parameters))
    shared = rng.random(circuit.num_parameters) < 0.5
    values[:, shared] = values[0, shared]
    return values


def _central_differences(
    circuit: Circuit, values: np.ndarray, obs: list[Observable], column: int
) -> np.ndarray:
    plus, minus = values.copy(), values.copy()
    plus[:, column] += STEP
    minus[:, column] -= STEP
    up = reference_expectations(circuit, plus, obs)
    down = reference_expectations(circuit, minus, obs)
    return (up - down) / (2 * STEP)


@pytest.mark.parametrize("case", range(24))
def test_random_circuits_match_statevector_and_differences(case: int) -> None:
    rng = np.random.default_rng(100 + case)
    n = 1 + case % DENSE_MAX_QUBITS
    circuit = random_circuit(rng, n, int(rng.integers(24, 48)), num_params=int(rng.integers(1, 5)))
    batch = (1, 2, 5)[case % 3]
    values = _mixed_values(rng, circuit, batch)
    obs = [Observable.pauli(label) for label in random_labels(rng, n, 3)]
    wanted = list(range(circuit.num_parameters))
    expectations, jacobian = dense_jacobian(compile_dense(circuit), values, tuple(obs), wanted)
    assert expectations.shape == (batch, 3)
    assert jacobian.shape == (batch, 3, circuit.num_parameters)
    np.testing.assert_allclose(
        expectations, reference_expectations(circuit, values, obs), rtol=0, atol=1e-10
    )
    for column in wanted:
        np.testing.assert_allclose(
            jacobian[:, :, column],
            _central_differences(circuit, values, obs, column),
            rtol=0,
            atol=1e-7,
        )
    # The fused kernels (tested on their own elsewhere) agree to rounding.
    fused = adjoint_jacobian(compile_plan(circuit), values, tuple(obs), wanted)
    np.testing.assert_allclose(expectations, fused[0], rtol=0, atol=1e-12)
    np.testing.assert_allclose(jacobian, fused[1], rtol=0, atol=1e-11)


def test_weighted_observables_and_wrt_subset() -> None:
    rng = np.random.default_rng(7)
    circuit = hardware_efficient_circuit(3, 2)
    values = _mixed_values(rng, circuit, 4)
    obs = [Observable([("XZI", 0.5), ("IYY", -1.5)]), Observable([("ZZZ", 2.0), ("XII", 0.25)])]
    program = compile_dense(circuit)
    wanted = [0, 4, 7]
    expectations, jacobian = dense_jacobian(program, values, tuple(obs), wanted)
    np.testing.assert_allclose(
        expectations, reference_expectations(circuit, values, obs), rtol=0, atol=1e-10
    )
    others = [c for c in range(circuit.num_parameters) if c not in wanted]
    assert not jacobian[:, :, others].any()
    for column in wanted:
        np.testing.assert_allclose(
            jacobian[:, :, column],
            _central_differences(circuit, values, obs, column),
            rtol=0,
            atol=1e-7,
        )


def test_reused_and_scaled_parameters_across_shared_and_per_binding_gates() -> None:
    # theta feeds a gate that differs between bindings (with x) and shared ones; the
    # chain rule must add every occurrence: <Z> = cos(x + 2.5 theta + 0.1).
    theta, x = Parameter("theta"), Parameter("x", "input")
    circuit = Circuit(1, parameters=[x, theta])
    circuit.ry(x, 0).ry(2 * theta + 0.1, 0).ry(0.5 * theta, 0)
    values = np.array([[0.3, 0.7], [-1.2, 0.7], [2.0, 0.7]])
    expectations, jacobian = dense_jacobian(
        compile_dense(circuit), values, (Observable.pauli("Z"),), [0, 1]
    )
    angle = values[:, 0] + 2.5 * values[:, 1] + 0.1
    np.testing.assert_allclose(expectations[:, 0], np.cos(angle), rtol=0, atol=1e-14)
    np.testing.assert_allclose(jacobian[:, 0, 0], -np.sin(angle), rtol=0, atol=1e-14)
    np.testing.assert_allclose(jacobian[:, 0, 1], -2.5 * np.sin(angle), rtol=0, atol=1e-14)


def test_circuit_without_parameters_or_gates() -> None:
    bell = Circuit(2).h(0).cx(0, 1)
    expectations, jacobian = dense_jacobian(
        compile_dense(bell), np.zeros((2, 0)), (Observable.pauli("ZZ"), Observable.pauli("XI")), []
    )
    np.testing.assert_allclose(expectations, [[1.0, 0.0], [1.0, 0.0]], rtol=0, atol=1e-15)
    assert jacobian.shape == (2, 2, 0)
    empty = Circuit(3)
    expectations, _ = dense_jacobian(
        compile_dense(empty), np.zeros((1, 0)), (Observable.pauli("IIZ"),), []
    )
    assert expectations[0, 0] == pytest.approx(1.0, abs=0)


def test_dense_bytes_counts_shared_gates_once() -> None:
    circuit = hardware_efficient_circuit(4, 2)
    program = compile_dense(circuit)
    rng = np.random.default_rng(3)
    distinct = rng.uniform(-1, 1, (8, circuit.num_parameters))
    shared = np.repeat(distinct[:1], 8, axis=0)
    shared[:, :4] = distinct[:, :4]  # only the encoding differs
    assert dense_bytes(program, shared, 4) < dense_bytes(program, distinct, 4)
    # Nothing shared: every byte is per binding.
    assert dense_bytes(program, distinct, 4) == 4 * dense_bytes(program, distinct[:2], 4)


# --------------------------------------------------------------------------- the backend
async def test_backend_routes_narrow_circuits_through_dense_and_wide_ones_not() -> None:
    rng = np.random.default_rng(11)
    for n in (DENSE_MAX_QUBITS, DENSE_MAX_QUBITS + 1):
        circuit = random_circuit(rng, n, 30, num_params=4)
        values = _mixed_values(rng, circuit, 3)
        labels = random_labels(rng, n, 2)
        async with SimulatorBackend() as sim:
            ours = await sim.adjoint_jacobian(circuit, values, labels)
            compiled = bool(sim._dense_programs)
        assert compiled == (n <= DENSE_MAX_QUBITS)
        expected = reference_expectations(circuit, values, [Observable.pauli(x) for x in labels])
        np.testing.assert_allclose(ours[0], expected, rtol=0, atol=1e-10)
        fused = adjoint_jacobian(
            compile_plan(circuit),
            values,
            tuple(as_observables(labels, n)),
            range(circuit.num_parameters),
        )
        np.testing.assert_allclose(ours[1], fused[1], rtol=0, atol=1e-11)


async def test_large_batches_split_into_worker_tasks_agree(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    rng = np.random.default_rng(5)
    circuit = random_circuit(rng, 4, 40, num_params=6)
    values = _mixed_values(rng, circuit, 9)
    labels = random_labels(rng, 4, 3)
    async with SimulatorBackend(max_workers=2) as sim:
        inline = await sim.adjoint_jacobian(circuit, values, labels, wrt=[1, 2, 5])
        assert sim._executor is None  # small: computed on the calling loop
        monkeypatch.setattr(backend_module, "_INLINE_DENSE_BYTES", 0)
        monkeypatch.setattr(backend_module, "_ADJOINT_TASK_BYTES", 1)  # one binding per task
        split = await sim.adjoint_jacobian(circuit, values, labels, wrt=[1, 2, 5])
        assert sim._executor is not None
    np.testing.assert_allclose(split[0], inline[0], rtol=0, atol=1e-13)
    np.testing.assert_allclose(split[1], inline[1], rtol=0, atol=1e-13)
    assert not split[1][:, :, [0, 3, 4]].any()


async def test_single_precision_keeps_the_fused_kernels() -> None:
    circuit = hardware_efficient_circuit(3, 2)
    values = np.random.default_rng(2).uniform(-1, 1, (2, circuit.num_parameters))
    async with SimulatorBackend(precision="single") as single, SimulatorBackend() as double:
        e32, j32 = await single.adjoint_jacobian(circuit, values, z_observables(3))
        e64, j64 = await double.adjoint_jacobian(circuit, values, z_observables(3))
        assert not single._dense_programs and double._dense_programs
    np.testing.assert_allclose(e32, e64, rtol=0, atol=1e-5)
    np.testing.assert_allclose(j32, j64, rtol=0, atol=1e-5)
    assert np.max(np.abs(j32 - j64)) > 0  # computed in complex64, not by the dense path


async def test_memory_budget_is_enforced_before_anything_runs() -> None:
    circuit = hardware_efficient_circuit(4, 2)
    tiny = SimulatorBackend(max_memory_bytes=64 << 10)
    with pytest.raises(SimulatorMemoryError, match="per binding"):
        await tiny.adjoint_jacobian(
            circuit, np.zeros((3, circuit.num_parameters)), z_observables(4)
        )
    await tiny.aclose()
