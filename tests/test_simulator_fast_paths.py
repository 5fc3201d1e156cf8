"""The simulator's fast paths against Qiskit ``Statevector``: twins, depth-first branches,
wide-circuit block layouts, and adjoint differentiation split into tasks."""

from __future__ import annotations

import copy
import math
import pickle

import numpy as np
import pytest
from threadpoolctl import threadpool_info

from backends import Circuit, Observable, SimulatorBackend
from backends.errors import BackendError, SimulatorMemoryError
from backends.parameters import Parameter
from backends.simulator import backend as backend_module
from backends.simulator.plan import compile_plan
from backends.simulator.statevector import evolve, iter_final_states
from backends.simulator.twins import find_twins, rotation_columns
from backends.templates import hardware_efficient_circuit, z_observables

from .randomcircuits import random_circuit
from .sampling import assert_chi_square, expected_distribution
from .test_simulator import random_labels, reference_expectations

# --------------------------------------------------------------------------- twins


def _shift_batch(base: np.ndarray, columns: list[int], shifts: list[float]) -> np.ndarray:
    """``base`` then, per column, one row per shift: a parameter-shift / difference batch."""
    rows = [base]
    for c in columns:
        for s in shifts:
            row = base.copy()
            row[c] += s
            rows.append(row)
    return np.array(rows)


def _rotation_circuit(n: int) -> Circuit:
    """Rotations with scaled parameters, a reused parameter, and gates twins must skip."""
    names = [f"t{i}" for i in range(3 * n)]
    circuit = Circuit(n, parameters=[Parameter(name) for name in [*names, "shared", "c"]])
    for q in range(n):
        circuit.ry(circuit.parameters[3 * q], q)
        circuit.rx(circuit.parameters[3 * q + 1] * 0.5 + 0.25, q)
    for q in range(n - 1):
        circuit.cx(q, q + 1)
        circuit.rzz(circuit.parameters[3 * q + 2], q, q + 1)
    circuit.rz(circuit.parameters[-2], 0).rz(circuit.parameters[-2], 1)  # reused
    circuit.crx(circuit.parameters[-1], 0, n - 1)  # not a Pauli rotation
    return circuit


def test_rotation_columns_are_single_pauli_rotations() -> None:
    circuit = _rotation_circuit(4)
    columns = rotation_columns(circuit)
    index = {p.name: i for i, p in enumerate(circuit.parameters)}
    assert columns[index["t1"]] == 0.5  # rx(0.5 t + 0.25): the angle moves by half
    assert columns[index["t0"]] == 1.0
    assert index["shared"] not in columns  # feeds two gates
    assert index["c"] not in columns  # controlled rotation: three-term, not two
    assert index["t11"] not in columns  # t11 is never used by the 4-qubit circuit


def test_twin_states_are_the_linear_combination() -> None:
    circuit = _rotation_circuit(5)
    rng = np.random.default_rng(3)
    base = rng.uniform(-math.pi, math.pi, circuit.num_parameters)
    cols = sorted(rotation_columns(circuit))[:6]
    values = _shift_batch(base, cols, [math.pi / 2, -math.pi / 2, 1e-3])
    layout = find_twins(values, rotation_columns(circuit))
    assert layout is not None
    assert sorted(layout.twins.tolist()) == list(range(1, len(values)))  # every shifted row
    assert layout.evolved.shape[0] == 1 + len(cols)  # the base and one z per column
    plan = compile_plan(circuit)
    states, owner = evolve(plan, layout.evolved)
    direct, direct_owner = evolve(plan, values)
    for i, binding in enumerate(layout.twins):
        combined = (
            layout.cos[i] * states[owner[layout.y_row[i]]]
            + layout.sin[i] * states[owner[layout.z_row[i]]]
        )
        np.testing.assert_allclose(combined, direct[direct_owner[binding]], atol=1e-12)


def test_find_twins_only_groups_rows_one_column_apart() -> None:
    columns = {0: 1.0, 1: 1.0, 2: 1.0}
    base = np.array([0.1, 0.2, 0.3])
    one, two = np.array([1.0, 0.0, 0.0]), np.array([1.0, 1.0, 0.0])
    # Pairs only (no saving), rows two columns apart, and a signed zero.
    assert find_twins(np.array([base, base + one]), columns) is None
    assert find_twins(np.array([base, base + two, base + 2 * two]), columns) is None
    zero = np.array([[-0.0, 0.2, 0.3], [0.0, 0.2, 0.3], [0.5, 0.2, 0.3], [0.7, 0.2, 0.3]])
    layout = find_twins(zero, columns)
    assert layout is not None  # -0.0 and 0.0 are the same binding, one y for the others
    assert set(layout.twins.tolist()) == {2, 3}
    # Non-rotation columns are never grouped.
    assert find_twins(_shift_batch(base, [0], [1.0, 2.0]), {1: 1.0}) is None


@pytest.mark.parametrize("case", range(3))
async def test_shift_batches_with_twins_match_statevector(case: int) -> None:
    rng = np.random.default_rng(40 + case)
    circuit = _rotation_circuit(10)
    base = rng.uniform(-math.pi, math.pi, circuit.num_parameters)
    cols = sorted(rng.choice(circuit.num_parameters, 8, replace=False).tolist())
    values = np.vstack(
        [
            _shift_batch(base, cols, [math.pi / 2, -math.pi / 2]),
            _shift_batch(base + 0.3, cols[:3], [1e-4, -1e-4, 0.7]),
            rng.uniform(-math.pi, math.pi, (3, circuit.num_parameters)),
        ]
    )
    labels = random_labels(rng, 10, 3)
    observables = [Observable.pauli(lab) for lab in labels]
    async with SimulatorBackend() as sim:
        result = await sim.run(circuit, values, observables=labels)
    assert result.expectations is not None
    # Twins simulated: fewer distinct states than bindings even across two threads.
    assert result.metadata["distinct_states"] < len(values) - 8
    expected = reference_expectations(circuit, values, observables)
    np.testing.assert_allclose(result.expectations, expected, atol=1e-10, rtol=0)


async def test_counts_of_twins_follow_the_born_rule() -> None:
    circuit = _rotation_circuit(10).measure_all()
    rng = np.random.default_rng(8)
    base = rng.uniform(-math.pi, math.pi, circuit.num_parameters)
    values = _shift_batch(base, [0, 4], [math.pi / 2, -math.pi / 2])
    shots = 40_000
    async with SimulatorBackend() as sim:
        result = await sim.run(circuit, values, shots=shots, seed=11)
        again = await sim.run(circuit, values, shots=shots, seed=11)
    assert result.counts is not None
    assert result.counts == again.counts
    for row in (0, 1, 4):  # the base and two recovered twins
        expected = expected_distribution(circuit, values[row])
        top = dict(sorted(expected.items(), key=lambda kv: -kv[1])[:40])
        rest = 1.0 - sum(top.values())
        counts = dict(result.counts[row])
        pooled = sum(v for k, v in counts.items() if k not in top)
        merged = {**{k: counts.get(k, 0) for k in top}, "rest": pooled}
        assert_chi_square(merged, {**top, "rest": rest}, shots)


# --------------------------------------------------------------------------- branches


@pytest.mark.parametrize("max_rows", [1, 2, 5])
def test_depth_first_branches_equal_one_breadth_first_pass(max_rows: int) -> None:
    rng = np.random.default_rng(max_rows)
    circuit = random_circuit(rng, 6, 50, num_params=5)
    base = rng.uniform(-math.pi, math.pi, 5)
    values = np.vstack([_shift_batch(base, [0, 2, 4], [0.5, -0.5]), np.tile(base, (3, 1))])
    plan = compile_plan(circuit)
    states, owner = evolve(plan, values)
    seen = np.zeros(len(values), dtype=int)
    for group, group_owner, bindings in iter_final_states(plan, values, max_rows=max_rows):
        assert group.shape[0] <= max_rows  # never more rows than the budget at once
        seen[bindings] += 1
        np.testing.assert_allclose(group[group_owner], states[owner[bindings]], atol=1e-12)
    assert (seen == 1).all()


# --------------------------------------------------------------------------- wide circuits


@pytest.mark.parametrize("case", range(3))
async def test_wide_circuits_match_statevector(case: int) -> None:
    rng = np.random.default_rng(70 + case)
    circuit = random_circuit(rng, 12 + case, 120, num_params=6)
    values = rng.uniform(-math.pi, math.pi, (2, 6))
    labels = random_labels(rng, circuit.num_qubits, 3)
    async with SimulatorBackend() as sim:
        result = await sim.run(circuit, values, observables=labels)
    assert result.expectations is not None
    expected = reference_expectations(circuit, values, [Observable.pauli(x) for x in labels])
    np.testing.assert_allclose(result.expectations, expected, atol=1e-10, rtol=0)


# --------------------------------------------------------------------------- adjoint


async def test_adjoint_tasks_split_by_bindings_and_observables_agree(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    rng = np.random.default_rng(5)
    circuit = random_circuit(rng, 6, 60, num_params=7)
    values = rng.uniform(-math.pi, math.pi, (5, 7))
    labels = random_labels(rng, 6, 4)
    async with SimulatorBackend() as sim:
        whole = await sim.adjoint_jacobian(circuit, values, labels)
        # Tasks of a few rows: observables and bindings both split.
        monkeypatch.setattr(backend_module, "_ADJOINT_TASK_BYTES", 3 * (1 << 6) * 16)
        split = await sim.adjoint_jacobian(circuit, values, labels, wrt=[0, 3, 6])
        shifted = await sim.run(circuit, _plus_minus(values, 3), observables=labels)
    np.testing.assert_allclose(split[0], whole[0], atol=1e-12)
    np.testing.assert_allclose(split[1][:, :, [0, 3, 6]], whole[1][:, :, [0, 3, 6]], atol=1e-12)
    assert not split[1][:, :, [1, 2, 4, 5]].any()
    expected_values = reference_expectations(circuit, values, [Observable.pauli(x) for x in labels])
    np.testing.assert_allclose(whole[0], expected_values, atol=1e-10)
    # Central differences of Statevector-checked expectations (step 1e-5: error ~1e-10).
    assert shifted.expectations is not None
    f = shifted.expectations.reshape(2, len(values), len(labels))
    np.testing.assert_allclose(whole[1][:, :, 3], (f[0] - f[1]) / 2e-5, atol=1e-7)


def _plus_minus(values: np.ndarray, column: int, step: float = 1e-5) -> np.ndarray:
    plus, minus = values.copy(), values.copy()
    plus[:, column] += step
    minus[:, column] -= step
    return np.vstack([plus, minus])


async def test_adjoint_rejects_bad_requests() -> None:
    circuit = hardware_efficient_circuit(3, 1)
    values = np.zeros(circuit.num_parameters)
    async with SimulatorBackend() as sim:
        with pytest.raises(BackendError, match="wrt"):
            await sim.adjoint_jacobian(circuit, values, z_observables(3), wrt=[99])
        with pytest.raises(BackendError, match="observable"):
            await sim.adjoint_jacobian(circuit, values, [])
    tiny = SimulatorBackend(max_memory_bytes=(1 << 3) * 16 * 4)
    with pytest.raises(SimulatorMemoryError):
        await tiny.adjoint_jacobian(
            circuit, np.zeros((50, circuit.num_parameters)), z_observables(3)
        )
    await tiny.aclose()


# --------------------------------------------------------------------------- plumbing


async def test_blas_threads_are_restored_after_a_run() -> None:
    before = [(i["prefix"], i["num_threads"]) for i in threadpool_info()]
    circuit = hardware_efficient_circuit(4, 2)
    async with SimulatorBackend() as sim:
        await sim.run(circuit, np.zeros((3, circuit.num_parameters)), z_observables(4))
    assert [(i["prefix"], i["num_threads"]) for i in threadpool_info()] == before


async def test_a_used_backend_can_be_pickled_and_copied() -> None:
    circuit = hardware_efficient_circuit(3, 1)
    values = np.linspace(0, 1, circuit.num_parameters)
    async with SimulatorBackend() as sim:
        first = await sim.run(circuit, values, z_observables(3))
        for clone in (pickle.loads(pickle.dumps(sim)), copy.deepcopy(sim)):
            again = await clone.run(circuit, values, z_observables(3))
            assert again.expectations is not None and first.expectations is not None
            np.testing.assert_array_equal(again.expectations, first.expectations)
            await clone.aclose()
