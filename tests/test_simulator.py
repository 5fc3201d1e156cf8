"""The built-in simulator against Qiskit's ``Statevector`` and against statistics."""

from __future__ import annotations

import math

import numpy as np
import pytest
from qiskit.quantum_info import SparsePauliOp, Statevector

from backends import (
    BackendError,
    Circuit,
    Observable,
    Parameter,
    SimulatorBackend,
    SimulatorMemoryError,
)
from backends.simulator import plan as plan_module
from backends.simulator.plan import KronOp, MonomialOp, compile_plan
from backends.simulator.statevector import evolve, probabilities
from backends.templates import hardware_efficient_circuit, z_observables

from .looptools import longest_stall
from .randomcircuits import random_circuit, to_qiskit_reference
from .sampling import assert_chi_square, expected_distribution

PAULIS = np.array(list("IXYZ"))


def random_labels(rng: np.random.Generator, n: int, count: int) -> list[str]:
    return ["".join(rng.choice(PAULIS, n)) for _ in range(count)]


def reference_expectations(
    circuit: Circuit, values: np.ndarray, obs: list[Observable]
) -> np.ndarray:
    out = np.empty((len(values), len(obs)))
    for row, v in enumerate(values):
        state = Statevector(to_qiskit_reference(circuit, list(v), measurements=False))
        for col, o in enumerate(obs):
            op = SparsePauliOp.from_list([(t.label, t.coeff) for t in o.terms])
            out[row, col] = state.expectation_value(op).real
    return out


@pytest.mark.parametrize("case", range(200))
async def test_random_circuits_match_statevector(case: int) -> None:
    rng = np.random.default_rng(case)
    n = 1 + case % 10
    circuit = random_circuit(rng, n, int(rng.integers(24, 60)), num_params=int(rng.integers(1, 6)))
    values = rng.uniform(-2 * math.pi, 2 * math.pi, (3, circuit.num_parameters))
    labels = random_labels(rng, n, 3)
    weighted = Observable([(lab, float(rng.normal())) for lab in random_labels(rng, n, 3)])
    observables = [*(Observable.pauli(lab) for lab in labels), weighted]
    async with SimulatorBackend() as sim:
        result = await sim.run(circuit, values, observables=[*labels, weighted])
    assert result.expectations is not None
    expected = reference_expectations(circuit, values, observables)
    np.testing.assert_allclose(result.expectations, expected, atol=1e-10, rtol=0)


@pytest.mark.parametrize("case", range(20))
def test_probabilities_match_statevector(case: int) -> None:
    rng = np.random.default_rng(500 + case)
    n = 1 + case % 8
    circuit = random_circuit(rng, n, 40, num_params=3)
    values = rng.uniform(-math.pi, math.pi, (4, 3))
    states, owner = evolve(compile_plan(circuit), values)
    probs = probabilities(states)[owner]
    for row, v in enumerate(values):
        ref = Statevector(to_qiskit_reference(circuit, list(v), measurements=False))
        np.testing.assert_allclose(probs[row], ref.probabilities(), atol=1e-12)


async def test_single_precision_is_close() -> None:
    rng = np.random.default_rng(7)
    circuit = random_circuit(rng, 6, 60, num_params=4)
    values = rng.uniform(-math.pi, math.pi, (5, 4))
    labels = random_labels(rng, 6, 4)
    async with SimulatorBackend(precision="single") as sim:
        result = await sim.run(circuit, values, observables=labels)
    assert result.expectations is not None
    expected = reference_expectations(circuit, values, [Observable.pauli(x) for x in labels])
    np.testing.assert_allclose(result.expectations, expected, atol=2e-5)


async def test_batched_results_equal_per_binding_results() -> None:
    rng = np.random.default_rng(11)
    circuit = random_circuit(rng, 7, 50, num_params=5)
    base = rng.uniform(-math.pi, math.pi, 5)
    rows = [base]
    for k in range(5):  # parameter-shift-like rows share prefixes with the base row
        for sign in (1, -1):
            r = base.copy()
            r[k] += sign * math.pi / 2
            rows.append(r)
    rows += [base.copy(), *rng.uniform(-math.pi, math.pi, (20, 5))]
    values = np.array(rows)
    labels = random_labels(rng, 7, 3)
    async with SimulatorBackend() as sim:
        batched = await sim.run(circuit, values, observables=labels)
        single = [await sim.run(circuit, v, observables=labels) for v in values]
    assert batched.expectations is not None
    stacked = np.vstack([s.expectations for s in single if s.expectations is not None])
    np.testing.assert_allclose(batched.expectations, stacked, atol=1e-12, rtol=0)
    # Identical and shift-sharing rows were simulated once per distinct state.
    assert batched.metadata["distinct_states"] <= len(values)


def test_hardware_efficient_plan_is_fused() -> None:
    plan = compile_plan(hardware_efficient_circuit(10, 4), compiled=False)
    kinds = [type(op) for op in plan.ops]
    # Narrow circuits, per layer: 3 + 3 + 3 + 1 qubit blocks of rotations, then the CNOT
    # chain as one gather.
    assert kinds.count(KronOp) == 16
    assert kinds.count(MonomialOp) == 4
    assert len(plan.ops) == 20
    # For the compiled kernels, one block per layer holds every qubit's factor.
    compiled = compile_plan(hardware_efficient_circuit(10, 4), compiled=True)
    blocks = [(op.low, op.width, op.compiled) for op in compiled.ops if isinstance(op, KronOp)]
    assert blocks == [(0, 10, True)] * 4 and len(compiled.ops) == 8


def test_wide_circuits_take_the_cheapest_block_layout() -> None:
    plan = compile_plan(hardware_efficient_circuit(16, 2), compiled=False)
    blocks = [(op.low, op.width) for op in plan.ops if isinstance(op, KronOp)]
    # The cost model's optimum for 16 qubits: four 4-qubit blocks per layer, never a
    # block that starts in the slow middle of the index (qubits 1-3) or wider than 5.
    assert blocks == [(0, 4), (4, 4), (8, 4), (12, 4)] * 2
    assert [type(op) for op in plan.ops].count(MonomialOp) == 2


async def test_unfused_constant_gates_agree(monkeypatch: pytest.MonkeyPatch) -> None:
    """Above MONOMIAL_MAX_QUBITS constant gates run one by one; both paths must agree."""
    rng = np.random.default_rng(3)
    circuit = Circuit(5)
    for _ in range(40):
        a, b = (int(q) for q in rng.choice(5, 2, replace=False))
        circuit.append(str(rng.choice(["cx", "cy", "cz", "swap"])), [a, b])
        circuit.append(str(rng.choice(["h", "t", "sx"])), [a])
    labels = random_labels(rng, 5, 6)
    async with SimulatorBackend() as sim:
        fused = await sim.run(circuit, observables=labels)
    monkeypatch.setattr(plan_module, "MONOMIAL_MAX_QUBITS", 0)
    async with SimulatorBackend() as sim:
        unfused = await sim.run(circuit, observables=labels)
    expected = reference_expectations(
        circuit, np.zeros((1, 0)), [Observable.pauli(x) for x in labels]
    )
    np.testing.assert_allclose(fused.expectations, expected, atol=1e-12)  # type: ignore[arg-type]
    np.testing.assert_allclose(unfused.expectations, expected, atol=1e-12)  # type: ignore[arg-type]


@pytest.mark.parametrize("case", range(12))
async def test_counts_follow_the_born_rule(case: int) -> None:
    rng = np.random.default_rng(900 + case)
    n = 1 + case % 6
    circuit = random_circuit(rng, n, 30, num_params=2, measure=True)
    values = rng.uniform(-math.pi, math.pi, (2, 2))
    shots = 20_000
    async with SimulatorBackend() as sim:
        result = await sim.run(circuit, values, shots=shots, seed=case)
    assert result.counts is not None
    for row, counts in enumerate(result.counts):
        assert_chi_square(counts, expected_distribution(circuit, values[row]), shots)


async def test_counts_do_not_depend_on_threads_or_chunks() -> None:
    circuit = hardware_efficient_circuit(4, 2)
    rng = np.random.default_rng(5)
    values = rng.uniform(0, 1, (9, circuit.num_parameters))
    async with SimulatorBackend(max_workers=1) as one, SimulatorBackend(max_workers=3) as three:
        a = await one.run(circuit, values, shots=300, seed=42)
        b = await three.run(circuit, values, shots=300, seed=42)
        c = await three.run(circuit, values, shots=300, seed=43)
    assert a.counts == b.counts
    assert a.counts != c.counts


async def test_run_without_seed_records_the_seed_it_used() -> None:
    circuit = Circuit(2).h(0).h(1)
    async with SimulatorBackend(seed=1) as sim:
        first = await sim.run(circuit, shots=100)
        again = await sim.run(circuit, shots=100, seed=first.metadata["seed"])
    assert first.counts == again.counts


async def test_partial_measurement_into_sparse_clbits() -> None:
    circuit = Circuit(3).x(0).x(2).measure(2, 0).measure(0, 3)
    async with SimulatorBackend() as sim:
        result = await sim.run(circuit, shots=10, seed=1)
    assert result.counts == [{"1001": 10}]


async def test_shot_estimates_of_a_weighted_observable() -> None:
    theta = Parameter("t")
    circuit = Circuit(2).ry(theta, 0).cx(0, 1)
    obs = Observable([("ZZ", 0.5), ("XI", 2.0), ("IZ", -1.0)])
    thetas = np.array([[0.4], [1.3], [2.9]])
    shots = 10_000
    async with SimulatorBackend() as sim:
        result = await sim.run(circuit, thetas, observables=[obs], shots=shots, seed=3)
    assert result.expectations is not None
    t = thetas[:, 0]
    exact = 0.5 * 1.0 + 2.0 * 0.0 - 1.0 * np.cos(t)  # <ZZ> = 1, <XI> = 0, <IZ> = cos t
    variance = (0.5**2) * 0 + (2.0**2) * 1 + (1.0**2) * (1 - np.cos(t) ** 2)
    assert np.all(np.abs(result.expectations[:, 0] - exact) < 5 * np.sqrt(variance / shots))


async def test_memory_budget_refuses_wide_circuits_before_allocating() -> None:
    async with SimulatorBackend(max_memory_bytes=1 << 20) as small:
        assert small.capabilities.max_qubits == 14
        with pytest.raises(SimulatorMemoryError, match="GiB"):
            await small.run(Circuit(16).h(0), observables=["I" * 15 + "Z"])
    async with SimulatorBackend() as sim:
        with pytest.raises(SimulatorMemoryError, match="fewer qubits"):
            await sim.run(Circuit(48).h(0), shots=1)


async def test_event_loop_stays_responsive_during_a_simulation() -> None:
    circuit = hardware_efficient_circuit(16, 3)
    values = np.random.default_rng(0).uniform(0, 1, (64, circuit.num_parameters))
    async with SimulatorBackend() as sim:
        _, stall, duration = await longest_stall(
            sim.run(circuit, values, observables=z_observables(16))
        )
    assert stall < max(0.25, duration / 2), (stall, duration)


async def test_closed_backend_refuses_runs() -> None:
    sim = SimulatorBackend()
    await sim.aclose()
    with pytest.raises(BackendError, match="closed"):
        await sim.run(Circuit(1).h(0), observables=["Z"])


def test_bad_precision() -> None:
    with pytest.raises(BackendError):
        SimulatorBackend(precision="half")  # type: ignore[arg-type]
