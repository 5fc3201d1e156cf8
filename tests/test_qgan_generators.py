"""QGAN building blocks: grid, ansatzes, Born machine, latent generator, discriminators.

References are independent of the code under test: Qiskit's circuit library and
``Statevector``, scipy (Hadamard matrix, normal density, chi-square), central finite
differences, closed-form grids written out by hand.
"""

from __future__ import annotations

import json
import math
import warnings
from collections.abc import AsyncIterator
from typing import Any

import numpy as np
import pytest
import scipy.linalg
import torch
from qiskit import QuantumCircuit
from qiskit.circuit.library import TwoLocal, n_local
from qiskit.circuit.library import efficient_su2 as qiskit_efficient_su2
from qiskit.quantum_info import SparsePauliOp, Statevector
from scipy.stats import chisquare, norm

from backends.base import Capabilities, RunResult
from backends.circuit import Circuit
from backends.parameters import Parameter
from backends.simulator import SimulatorBackend
from backends.templates import hardware_efficient_circuit
from quantum_db.models import ModelVersion
from quantum_ml.errors import (
    DataOutOfBoundsError,
    DiscriminatorError,
    GANError,
    GeneratorError,
    GridError,
    LearningError,
)
from quantum_ml.models import QuantumModel
from quantum_ml.qgan.ansatz import (
    compose,
    efficient_su2,
    hardware_efficient_ansatz,
    initial_state,
    ry_cz_ansatz,
)
from quantum_ml.qgan.discriminators import QuantumDiscriminator, input_width, mlp_discriminator
from quantum_ml.qgan.generators import LatentGenerator, QuantumGenerator, _walsh
from quantum_ml.qgan.grid import Grid
from quantum_ml.torch_layer import TorchQuantumLayer


@pytest.fixture
async def sim() -> AsyncIterator[SimulatorBackend]:
    async with SimulatorBackend(max_workers=2) as backend:
        yield backend


def bound_statevector(circuit: Circuit, weights: np.ndarray) -> Statevector:
    """Our circuit through Qiskit, each parameter bound by name to its weight."""
    qc = circuit.to_qiskit()
    values = {p: float(weights[circuit.parameter_index(p.name)]) for p in qc.parameters}
    return Statevector(qc.assign_parameters(values))


def two_local(n: int, entanglement: str, reps: int) -> QuantumCircuit:
    # The class the Qiskit QGAN tutorial uses; deprecated in Qiskit 2 for n_local.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        qc = TwoLocal(n, "ry", "cz", entanglement, reps=reps)
        return qc.decompose()


def tutorial_circuit() -> QuantumCircuit:
    qc = QuantumCircuit(6)
    qc.h(qc.qubits)
    qc.compose(qiskit_efficient_su2(6, reps=6), inplace=True)
    return qc


def tutorial_generator(weights: np.ndarray) -> QuantumGenerator:
    return QuantumGenerator(
        efficient_su2(6, reps=6),
        bounds=[(-2, 2), (-2, 2)],
        bits=[3, 3],
        initial_state="uniform",
        weights=weights,
    )


def small_generator(seed: int = 3) -> QuantumGenerator:
    """The 3-qubit RY/CZ k=1 generator of the Qiskit QGAN tutorial on (0, 7): uniform
    initial state, ``TwoLocal(3, "ry", "cz", entanglement="circular", reps=1)``."""
    return QuantumGenerator(
        ry_cz_ansatz(3, reps=1, entanglement="circular"),
        bounds=[(0, 7)],
        bits=[3],
        initial_state="uniform",
        seed=seed,
    )


class NoExactSimulator(SimulatorBackend):
    """A shots-only backend with a small batch limit, like a QPU."""

    def __init__(self) -> None:
        super().__init__(max_workers=1)
        self.batches: list[int] = []
        base = super().capabilities
        self._limited = Capabilities(
            max_qubits=base.max_qubits,
            native_gates=base.native_gates,
            supports_exact=False,
            supports_shots=True,
            max_batch=5,
        )

    @property
    def capabilities(self) -> Capabilities:
        return self._limited

    async def run(
        self,
        circuit: Circuit,
        parameter_values: Any = None,
        observables: Any = None,
        shots: int | None = None,
        seed: int | None = None,
    ) -> RunResult:
        self.batches.append(len(np.atleast_2d(parameter_values)))
        return await super().run(circuit, parameter_values, observables, shots, seed)


# ---------------------------------------------------------------- ansatzes vs Qiskit
@pytest.mark.parametrize("entanglement", ["linear", "circular"])
@pytest.mark.parametrize("reps", [1, 2, 3])
@pytest.mark.parametrize("n", [2, 3, 4])
def test_ry_cz_ansatz_is_qiskits_two_local(n: int, reps: int, entanglement: str) -> None:
    ours = ry_cz_ansatz(n, reps=reps, entanglement=entanglement)  # type: ignore[arg-type]
    theirs = two_local(n, entanglement, reps)
    assert ours.num_parameters == theirs.num_parameters == n * (reps + 1)
    assert [p.name for p in ours.parameters] == [p.name for p in theirs.parameters]
    w = np.random.default_rng(n * 10 + reps).uniform(-math.pi, math.pi, ours.num_parameters)
    expected = Statevector(theirs.assign_parameters(w))  # Qiskit's own parameter order
    assert bound_statevector(ours, w).equiv(expected)
    assert np.allclose(bound_statevector(ours, w).data, expected.data, atol=1e-12)
    # n_local, TwoLocal's successor, and the conversion of Qiskit's circuit agree too.
    successor = n_local(n, "ry", "cz", entanglement, reps=reps)
    assert np.allclose(Statevector(successor.assign_parameters(w)).data, expected.data)
    converted = Circuit.from_qiskit(theirs)
    assert np.allclose(bound_statevector(converted, w).data, expected.data, atol=1e-12)


@pytest.mark.parametrize("reps", [1, 2, 3, 4, 5, 6])
@pytest.mark.parametrize("n", [2, 3, 4, 5, 6])
def test_efficient_su2_is_qiskits(n: int, reps: int) -> None:
    ours = efficient_su2(n, reps=reps)
    theirs = qiskit_efficient_su2(n, reps=reps)
    assert ours.num_parameters == theirs.num_parameters == 2 * n * (reps + 1)
    w = np.random.default_rng(100 * n + reps).uniform(-math.pi, math.pi, ours.num_parameters)
    expected = Statevector(theirs.assign_parameters(w)).data
    assert np.allclose(bound_statevector(ours, w).data, expected, atol=1e-12)
    converted = Circuit.from_qiskit(theirs)
    assert [p.name for p in converted.parameters] == [p.name for p in ours.parameters]
    assert converted == ours  # the same gates in the same order


@pytest.mark.parametrize("entanglement", ["linear", "circular", "full"])
def test_efficient_su2_entanglements_are_qiskits(entanglement: str) -> None:
    ours = efficient_su2(4, reps=2, entanglement=entanglement)  # type: ignore[arg-type]
    theirs = qiskit_efficient_su2(4, reps=2, entanglement=entanglement)
    w = np.random.default_rng(5).uniform(-math.pi, math.pi, ours.num_parameters)
    expected = Statevector(theirs.assign_parameters(w)).data
    assert np.allclose(bound_statevector(ours, w).data, expected, atol=1e-12)


@pytest.mark.parametrize(("n", "reps"), [(2, 1), (3, 2), (4, 3)])
def test_hardware_efficient_ansatz_is_an_ry_rz_cx_chain(n: int, reps: int) -> None:
    ours = hardware_efficient_ansatz(n, reps)
    theirs = n_local(n, ["ry", "rz"], "cx", "linear", reps=reps)
    w = np.random.default_rng(n).uniform(-math.pi, math.pi, ours.num_parameters)
    # Ours: layer, qubit, (RY, RZ). Qiskit's: layer, (RY layer, RZ layer), qubit.
    theirs_w = np.empty_like(w)
    for layer in range(reps + 1):
        for q in range(n):
            theirs_w[layer * 2 * n + q] = w[layer * 2 * n + 2 * q]
            theirs_w[layer * 2 * n + n + q] = w[layer * 2 * n + 2 * q + 1]
    expected = Statevector(theirs.assign_parameters(theirs_w)).data
    assert np.allclose(bound_statevector(ours, w).data, expected, atol=1e-12)
    assert ours.count_gates() == {1: 2 * n * (reps + 1), 2: reps * (n - 1)}


def test_bad_ansatz_settings() -> None:
    with pytest.raises(GeneratorError, match="reps"):
        ry_cz_ansatz(3, reps=0)
    with pytest.raises(GeneratorError, match="n_qubits"):
        efficient_su2(0)
    with pytest.raises(GeneratorError, match="entanglement"):
        ry_cz_ansatz(3, entanglement="ring")  # type: ignore[arg-type]
    with pytest.raises(GeneratorError, match="uniform"):
        initial_state("gaussian", n_qubits=2)
    with pytest.raises(GeneratorError, match="1-D"):
        initial_state("normal", Grid([(0, 1), (0, 1)], [1, 1]))
    with pytest.raises(GeneratorError, match="sigma"):
        initial_state("normal", Grid([(0, 7)], [3]), sigma=0.0)
    with pytest.raises(GeneratorError, match="n_qubits"):
        initial_state("uniform")
    with pytest.raises(GeneratorError, match="qubits"):
        compose(initial_state("uniform", n_qubits=2), ry_cz_ansatz(3))
    with pytest.raises(GeneratorError, match="no parameters"):
        compose(ry_cz_ansatz(3), ry_cz_ansatz(3))


# ---------------------------------------------------------------- Born machine vs Qiskit
async def test_tutorial_probabilities_match_qiskit_statevector(sim: SimulatorBackend) -> None:
    qc = tutorial_circuit()
    w = np.random.default_rng(7).random(qc.num_parameters)
    expected = Statevector(qc.assign_parameters(w)).probabilities()  # Qiskit's qubit order
    gen = tutorial_generator(w)
    assert gen.num_weights == 84 and gen.n_qubits == 6
    p = await gen.probabilities(sim)
    assert p.dtype == np.float64 and p.shape == (64,)
    assert np.allclose(p, expected, atol=1e-12)
    converted = QuantumGenerator(
        Circuit.from_qiskit(qc), bounds=[(-2, 2), (-2, 2)], bits=[3, 3], weights=w
    )
    assert np.allclose(await converted.probabilities(sim), expected, atol=1e-12)


async def test_small_tutorial_generator_matches_qiskit(sim: SimulatorBackend) -> None:
    gen = small_generator()
    qc = QuantumCircuit(3)
    qc.h(qc.qubits)
    qc.compose(two_local(3, "circular", 1), inplace=True)
    expected = Statevector(qc.assign_parameters(gen.weights)).probabilities()
    assert np.allclose(await gen.probabilities(sim), expected, atol=1e-12)
    # On 3 qubits the circular CZs are TwoLocal's default "full" ones, in another order.
    full = QuantumGenerator(
        ry_cz_ansatz(3, 1, "full"), initial_state="uniform", weights=gen.weights
    )
    assert np.allclose(await full.probabilities(sim), expected, atol=1e-12)


async def test_qubit_zero_is_the_lowest_bit_and_the_first_dimension(sim: SimulatorBackend) -> None:
    c = Circuit(3, parameters=[Parameter("a")])
    c.ry(Parameter("a"), 0)  # RY(pi) on qubit 0 only: |001> = index 1
    gen = QuantumGenerator(c, bounds=[(0, 1), (10, 13)], bits=[1, 2], weights=[math.pi])
    p = await gen.probabilities(sim)
    assert np.argmax(p) == 1 and p[1] == pytest.approx(1.0)
    assert gen.grid.points()[1].tolist() == [1.0, 10.0]


async def test_normal_initial_state_prepares_the_discretized_density(sim: SimulatorBackend) -> None:
    grid = Grid([(0, 7)], [3])
    # Zero weights: RY(0) is the identity and CZ only adds phases.
    gen = QuantumGenerator(
        ry_cz_ansatz(3), grid, initial_state="normal", weights=np.zeros(6), seed=0
    )
    density = norm(3.0, 1.2).pdf(np.arange(8))
    prefix = initial_state("normal", grid, 3.0, 1.2)
    assert prefix is not None and prefix.num_parameters == 0
    custom = QuantumGenerator(ry_cz_ansatz(3), grid, initial_state=prefix, weights=np.zeros(6))
    assert np.allclose(await custom.probabilities(sim), density / density.sum(), atol=1e-12)
    default = norm(3.5, 7 / 6).pdf(np.arange(8))
    assert np.allclose(await gen.probabilities(sim), default / default.sum(), atol=1e-12)


@pytest.mark.parametrize("n", range(1, 11))
def test_walsh_transform_is_the_hadamard_matrix(n: int) -> None:
    x = np.random.default_rng(n).normal(size=(2**n, 3))
    assert np.allclose(_walsh(x, n), scipy.linalg.hadamard(2**n) @ x)


# ---------------------------------------------------------------- gradients
async def finite_difference_jacobian(
    gen: QuantumGenerator, backend: SimulatorBackend, h: float = 1e-6
) -> np.ndarray:
    w0 = gen.weights.copy()
    cols = []
    for j in range(gen.num_weights):
        step = np.zeros_like(w0)
        step[j] = h
        plus = await gen.probabilities(backend, weights=w0 + step)
        minus = await gen.probabilities(backend, weights=w0 - step)
        cols.append((plus - minus) / (2 * h))
    return np.stack(cols, axis=1)


async def test_vjp_and_jacobian_match_finite_differences(sim: SimulatorBackend) -> None:
    gen = QuantumGenerator(efficient_su2(4, reps=2), bounds=[(-1, 1), (0, 3)], bits=[2, 2], seed=11)
    fd = await finite_difference_jacobian(gen, sim)
    p, jac = await gen.jacobian(sim)
    assert jac.shape == (16, gen.num_weights)
    assert np.allclose(p, await gen.probabilities(sim), atol=1e-12)
    assert np.allclose(jac, fd, atol=1e-7)
    assert np.allclose(jac.sum(axis=0), 0.0, atol=1e-12)  # probabilities keep summing to 1
    v = np.random.default_rng(1).normal(size=16)
    for method in (None, "adjoint", "parameter-shift", "finite-diff"):
        assert np.allclose(await gen.vjp(sim, v, method=method), v @ fd, atol=1e-6), method
    _, shifted = await gen.jacobian(sim, method="parameter-shift")
    assert np.allclose(shifted, jac, atol=1e-12)


async def test_adjoint_vjp_is_one_adjoint_pass(sim: SimulatorBackend) -> None:
    gen = tutorial_generator(np.random.default_rng(7).random(84))
    calls: list[int] = []
    real = sim.compute_vjp

    async def counted(circuit: Any, values: Any, observables: Any, c: Any, **kw: Any) -> Any:
        calls.append(len(observables))
        return await real(circuit, values, observables, c, **kw)

    sim.compute_vjp = counted  # type: ignore[method-assign,assignment]
    v = np.random.default_rng(2).normal(size=64)
    g = await gen.vjp(sim, v)
    assert calls == [1]  # one observable, one backward pass (the simulator's VJP)
    _, jac = await gen.jacobian(sim)
    assert np.allclose(g, v @ jac, atol=1e-12)


# ---------------------------------------------------------------- shots
async def test_shot_probabilities_are_seeded_counts(sim: SimulatorBackend) -> None:
    gen = small_generator()
    exact = await gen.probabilities(sim)
    a = await gen.probabilities(sim, shots=1000, seed=5)
    assert np.allclose(a * 1000, np.rint(a * 1000), atol=1e-9)  # counts / shots
    assert a.sum() == pytest.approx(1.0, abs=1e-12) and np.all(a >= 0)
    assert np.array_equal(a, await gen.probabilities(sim, shots=1000, seed=5))
    assert not np.array_equal(a, await gen.probabilities(sim, shots=1000, seed=6))
    seeds = 40
    mean = np.mean([await gen.probabilities(sim, shots=1000, seed=s) for s in range(seeds)], axis=0)
    sigma = np.sqrt(exact * (1 - exact) / (1000 * seeds))
    assert np.all(np.abs(mean - exact) <= 5 * sigma + 1e-12)


async def test_shot_gradients_are_parameter_shift_over_counts(sim: SimulatorBackend) -> None:
    gen = small_generator()
    v = np.random.default_rng(4).normal(size=8)
    exact = await gen.vjp(sim, v)
    shots, seeds = 2000, 30
    runs = [await gen.vjp(sim, v, shots=shots, seed=s) for s in range(seeds)]
    assert np.array_equal(runs[0], await gen.vjp(sim, v, shots=shots, seed=0))
    # Each weight is used once by an RY: g = (v.p+ - v.p-) / 2, Var <= max|v|^2 / (2 shots).
    bound = 5 * np.max(np.abs(v)) * math.sqrt(0.5 / (shots * seeds))
    assert np.all(np.abs(np.mean(runs, axis=0) - exact) <= bound)
    p, jac = await gen.jacobian(sim, shots=shots, seed=1)
    assert p.sum() == pytest.approx(1.0) and np.allclose(p * shots, np.rint(p * shots))
    assert np.allclose(jac.sum(axis=0), 0.0, atol=1e-12)
    _, exact_jac = await gen.jacobian(sim)
    assert np.max(np.abs(jac - exact_jac)) < 0.1


async def test_shots_only_backend_batches_and_refuses_exact() -> None:
    gen = small_generator()
    async with NoExactSimulator() as qpu:
        with pytest.raises(GeneratorError, match="exact"):
            await gen.probabilities(qpu)
        with pytest.raises(GeneratorError, match="exact"):
            await gen.vjp(qpu, np.ones(8))
        g = await gen.vjp(qpu, np.arange(8.0), shots=200, seed=3)
        # 6 RY weights, two shifts each: 12 bindings in runs of at most 5.
        assert g.shape == (6,) and qpu.batches == [5, 5, 2]
        p = await gen.probabilities(qpu, shots=100, seed=1)
        assert p.sum() == pytest.approx(1.0)


# ---------------------------------------------------------------- sampling
async def test_samples_follow_the_probabilities(sim: SimulatorBackend) -> None:
    gen = QuantumGenerator(
        ry_cz_ansatz(3, reps=1, entanglement="circular"), bounds=[(0, 7)], bits=[3], seed=3
    )
    p = await gen.probabilities(sim)
    n = 20000
    assert np.min(p) * n >= 5  # chi-square's expected counts
    draws = await gen.sample(n, seed=1)
    assert draws.shape == (n, 1)
    index = gen.grid.to_index(draws)
    assert np.array_equal(gen.grid.points()[index], draws)  # grid values only
    counts = np.bincount(index, minlength=8)
    assert chisquare(counts, p * n).pvalue > 1e-3
    assert np.array_equal(draws, await gen.sample(n, seed=1, backend=sim))
    two_d = await tutorial_generator(np.random.default_rng(7).random(84)).sample(10, seed=0)
    assert two_d.shape == (10, 2)


# ---------------------------------------------------------------- grid
def test_grid_is_the_tutorials_grid_elements() -> None:
    coords = np.linspace(-2, 2, 8)
    grid_elements = np.transpose([np.tile(coords, 8), np.repeat(coords, 8)])
    grid = Grid([(-2, 2), (-2, 2)], [3, 3])
    assert (grid.dim, grid.n_qubits, grid.size) == (2, 6, 64)
    assert np.array_equal(grid.points(), grid_elements)
    assert np.array_equal(grid.values(1), coords)
    assert np.array_equal(grid.to_index(grid_elements), np.arange(64))


def test_integer_grid_indices_histogram_and_policies() -> None:
    grid = Grid([(0, 7)], [3])
    assert np.array_equal(grid.points()[:, 0], np.arange(8.0))
    data = np.array([0.0, 3.2, 3.6, 6.6, 7.0])
    assert grid.to_index(data).tolist() == [0, 3, 4, 7, 7]
    hist = grid.histogram(data[:, None])
    assert np.array_equal(hist, np.bincount([0, 3, 4, 7, 7], minlength=8) / 5)
    outside = np.array([-0.5, 2.0, 7.5])
    with pytest.raises(DataOutOfBoundsError, match="outside"):
        grid.to_index(outside)
    with pytest.raises(DataOutOfBoundsError):
        grid.histogram(outside, policy="refuse")
    assert grid.to_index(outside, policy="clip").tolist() == [0, 2, 7]
    assert grid.histogram(outside, policy="clip")[[0, 2, 7]].tolist() == [1 / 3] * 3
    for policy in ("refuse", "clip"):
        with pytest.raises(GridError, match="NaN"):
            grid.to_index([1.0, math.nan], policy=policy)
        with pytest.raises(GridError, match="NaN"):
            grid.to_index([math.inf], policy=policy)
    with pytest.raises(GridError, match="policy"):
        grid.to_index(data, policy="wrap")  # type: ignore[arg-type]
    with pytest.raises(GridError, match="shape"):
        Grid([(0, 1), (0, 1)], [1, 1]).to_index([0.5, 0.5])
    with pytest.raises(GridError, match="no samples"):
        grid.histogram(np.zeros((0, 1)))


def test_grid_contract_round_trip() -> None:
    grid = Grid([(-2, 2), (0, 1.5)], [3, 2])
    contract = json.loads(json.dumps(grid.to_dict()))
    assert contract == {"kind": "grid", "bounds": [[-2.0, 2.0], [0.0, 1.5]], "bits": [3, 2]}
    assert Grid.from_dict(contract) == grid
    with pytest.raises(GridError, match="not a grid"):
        Grid.from_dict({"kind": "angle"})
    with pytest.raises(GridError, match="bounds"):
        Grid.from_dict({"kind": "grid", "bits": [3]})


@pytest.mark.parametrize(
    ("bounds", "bits", "match"),
    [
        ([(1.0, 0.0)], [2], "reversed"),
        ([(1.0, 1.0)], [2], "empty"),
        ([], [], "empty"),
        ([(0.0, math.inf)], [2], "finite"),
        ([(math.nan, 1.0)], [2], "finite"),
        ([(0.0, 1.0, 2.0)], [2], "pairs"),
        ([(0.0, 1.0)], [0], "integers >= 1"),
        ([(0.0, 1.0)], [1.5], "integers >= 1"),
        ([(0.0, 1.0)], [True], "integers >= 1"),
        ([(0.0, 1.0)], [2, 2], "one each"),
        ([(0.0, 1.0)], 3, "sequence"),
    ],
)
def test_bad_grids(bounds: Any, bits: Any, match: str) -> None:
    with pytest.raises(GridError, match=match):
        Grid(bounds, bits)


# ---------------------------------------------------------------- bad generator inputs
async def test_bad_generator_inputs(sim: SimulatorBackend) -> None:
    with pytest.raises(GeneratorError, match="input parameters"):
        QuantumGenerator(hardware_efficient_circuit(2, 1))
    with pytest.raises(GeneratorError, match="sum to 4"):
        QuantumGenerator(ry_cz_ansatz(3), bounds=[(0, 1), (0, 1)], bits=[2, 2])
    with pytest.raises(GeneratorError, match="both bounds and bits"):
        QuantumGenerator(ry_cz_ansatz(3), bounds=[(0, 7)])
    with pytest.raises(GeneratorError, match="not both"):
        QuantumGenerator(ry_cz_ansatz(3), Grid([(0, 7)], [3]), bits=[3])
    with pytest.raises(GeneratorError, match="6 weights"):
        QuantumGenerator(ry_cz_ansatz(3), weights=np.zeros(5))
    with pytest.raises(GeneratorError, match="finite"):
        QuantumGenerator(ry_cz_ansatz(3), weights=[0, 0, 0, 0, 0, math.nan])
    with pytest.raises(GeneratorError, match="measurements"):
        QuantumGenerator(ry_cz_ansatz(3).copy().measure_all())
    with pytest.raises(GeneratorError, match=r"backends\.Circuit"):
        QuantumGenerator(tutorial_circuit())
    with pytest.raises(GridError):
        QuantumGenerator(ry_cz_ansatz(3), bounds=[(7, 0)], bits=[3])
    gen = small_generator()
    with pytest.raises(GeneratorError, match="6 weights"):
        gen.weights = np.zeros(7)
    for shots in (0, -5, 1.5, True):
        with pytest.raises(GeneratorError, match="shots"):
            await gen.probabilities(sim, shots=shots)  # type: ignore[arg-type]
        with pytest.raises(GeneratorError, match="shots"):
            await gen.vjp(sim, np.ones(8), shots=shots)  # type: ignore[arg-type]
    with pytest.raises(GeneratorError, match="8 finite"):
        await gen.vjp(sim, np.ones(7))
    with pytest.raises(GeneratorError, match="unknown gradient method"):
        await gen.vjp(sim, np.ones(8), method="backprop")
    with pytest.raises(GeneratorError, match="adjoint"):
        await gen.vjp(sim, np.ones(8), shots=100, method="adjoint")
    with pytest.raises(GeneratorError, match="parameter shift"):
        await gen.jacobian(sim, shots=100, method="finite-diff")
    with pytest.raises(GeneratorError, match="n must be"):
        await gen.sample(0, seed=1)
    # Every QGAN error is a GANError, a LearningError and a ValueError.
    assert issubclass(GeneratorError, GANError) and issubclass(GANError, LearningError)
    assert issubclass(DataOutOfBoundsError, ValueError)


async def test_born_registry_payload_rebuilds_the_generator(sim: SimulatorBackend) -> None:
    gen = small_generator(seed=9)
    payload = json.loads(json.dumps(gen.registry_payload(), default=lambda a: a.tolist()))
    assert gen.to_contract() == {**gen.grid.to_dict(), "generator": "born"}
    version = ModelVersion(
        "g", 1, {"weights": np.array(payload["parameters"]["weights"])},
        payload["architecture"], payload["encoding"], {}, {}, (), "", 0.0,
    )  # fmt: skip
    again = QuantumGenerator.from_registry(version)
    assert again.grid == gen.grid and again.circuit == gen.circuit
    assert np.array_equal(await again.probabilities(sim), await gen.probabilities(sim))
    state = gen.state_dict()
    gen.weights = np.zeros(6)
    gen.load_state_dict(state)
    assert np.array_equal(gen.weights, again.weights)


# ---------------------------------------------------------------- latent generator
def z_expectations(circuit: Circuit, values: np.ndarray) -> np.ndarray:
    sv = bound_statevector(circuit, values)
    n = circuit.num_qubits
    return np.array(
        [
            sv.expectation_value(SparsePauliOp("I" * (n - 1 - q) + "Z" + "I" * q)).real
            for q in range(n)
        ]
    )


async def test_latent_generator_expectations_and_jacobian(sim: SimulatorBackend) -> None:
    circuit = hardware_efficient_circuit(2, 2)  # inputs x0, x1, then 12 weights
    gen = LatentGenerator(circuit, latent_dim=2, seed=5)
    assert (gen.num_weights, gen.output_dim, gen.kind) == (12, 2, "latent")
    z = gen.draw_latent(4, np.random.default_rng(0))
    e, jac = await gen.expectations_and_jacobian(sim, z)
    assert e.shape == (4, 2) and jac.shape == (4, 2, 12)
    for b in range(4):
        assert np.allclose(e[b], z_expectations(circuit, np.r_[z[b], gen.weights]), atol=1e-12)
    w0, h = gen.weights.copy(), 1e-6
    for j in range(12):
        step = np.zeros(12)
        step[j] = h
        gen.weights = w0 + step
        plus = await gen.expectations(sim, z)
        gen.weights = w0 - step
        minus = await gen.expectations(sim, z)
        assert np.allclose(jac[:, :, j], (plus - minus) / (2 * h), atol=1e-7)
    gen.weights = w0
    _, shifted = await gen.expectations_and_jacobian(sim, z, method="parameter-shift")
    assert np.allclose(shifted, jac, atol=1e-12)
    uniform = LatentGenerator(circuit, latent_dim=2, latent="uniform")
    draws = uniform.draw_latent(1000, np.random.default_rng(1))
    assert draws.min() >= -math.pi and draws.max() <= math.pi and draws.std() > 1.5


async def test_latent_generator_head_and_samples(sim: SimulatorBackend) -> None:
    torch.manual_seed(0)
    head = torch.nn.Linear(2, 3).double()
    gen = LatentGenerator(hardware_efficient_circuit(2, 1), latent_dim=2, head=head, seed=1)
    assert gen.output_dim == 3
    samples = await gen.sample(16, seed=2)
    assert samples.shape == (16, 3)
    assert np.array_equal(samples, await gen.sample(16, seed=2, backend=sim))
    bare = LatentGenerator(hardware_efficient_circuit(2, 1), latent_dim=2, seed=1)
    e = await bare.sample(16, seed=2)
    with torch.no_grad():
        expected = head(torch.from_numpy(e)).numpy()
    assert np.allclose(samples, expected, atol=1e-12)
    payload = gen.registry_payload()
    version = ModelVersion(
        "l", 1, payload["parameters"], json.loads(json.dumps(payload["architecture"])),
        payload["encoding"], {}, {}, (), "", 0.0,
    )  # fmt: skip
    fresh = torch.nn.Linear(2, 3).double()
    again = LatentGenerator.from_registry(version, head=fresh)
    assert np.allclose(await again.sample(16, seed=2), samples, atol=1e-12)


def test_bad_latent_generator_inputs() -> None:
    circuit = hardware_efficient_circuit(2, 1)
    with pytest.raises(GeneratorError, match="exactly 3 input"):
        LatentGenerator(circuit, latent_dim=3)
    with pytest.raises(GeneratorError, match="latent_dim"):
        LatentGenerator(circuit, latent_dim=0)
    late = Circuit(1, parameters=[Parameter("w"), Parameter("x", "input")])
    late.ry(Parameter("w"), 0).rx(Parameter("x", "input"), 0)
    with pytest.raises(GeneratorError, match="ordered first"):
        LatentGenerator(late, latent_dim=1)
    with pytest.raises(GeneratorError, match="observables"):
        LatentGenerator(circuit, latent_dim=2, observables=["ZZZ"])
    with pytest.raises(GeneratorError, match="head takes 5"):
        LatentGenerator(circuit, latent_dim=2, head=torch.nn.Linear(5, 1))
    with pytest.raises(GeneratorError, match="latent must be"):
        LatentGenerator(circuit, latent_dim=2, latent="cauchy")  # type: ignore[arg-type]
    gen = LatentGenerator(circuit, latent_dim=2)
    with pytest.raises(GeneratorError, match="finite weights"):
        gen.weights = np.zeros(3)
    with pytest.raises(GeneratorError, match="latent noise"):
        gen._values(np.zeros((2, 3)))


# ---------------------------------------------------------------- discriminators
def test_mlp_discriminator_is_50_20_1_with_a_sigmoid() -> None:
    disc = mlp_discriminator(2, seed=0)
    linears = [m for m in disc if isinstance(m, torch.nn.Linear)]
    assert [(m.in_features, m.out_features) for m in linears] == [(2, 50), (50, 20), (20, 1)]
    relus = [m for m in disc if isinstance(m, torch.nn.LeakyReLU)]
    assert len(relus) == 2 and all(m.negative_slope == 0.2 for m in relus)
    assert isinstance(disc[-1], torch.nn.Sigmoid)
    out = disc(torch.randn(64, 2, generator=torch.Generator().manual_seed(1)))
    assert out.shape == (64, 1) and bool(((out > 0) & (out < 1)).all())
    assert input_width(disc) == 2
    critic = mlp_discriminator(1, (8,), sigmoid=False)
    assert isinstance(critic[-1], torch.nn.Linear) and input_width(critic) == 1
    assert input_width(torch.nn.Sequential(torch.nn.Tanh())) is None


def test_mlp_seed_is_reproducible_and_leaves_torch_alone() -> None:
    torch.manual_seed(123)
    before = torch.get_rng_state()
    a, b = mlp_discriminator(1, seed=4), mlp_discriminator(1, seed=4)
    assert torch.equal(torch.get_rng_state(), before)
    assert all(torch.equal(x, y) for x, y in zip(a.parameters(), b.parameters(), strict=True))
    c = mlp_discriminator(1, seed=5)
    assert not torch.equal(next(a.parameters()), next(c.parameters()))


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"input_dim": 0}, "input_dim"),
        ({"input_dim": 2, "hidden": (0,)}, "hidden"),
        ({"input_dim": 2, "hidden": (5.0,)}, "hidden"),
        ({"input_dim": 2, "seed": "x"}, "seed"),
    ],
)
def test_bad_mlp_settings(kwargs: dict[str, Any], match: str) -> None:
    with pytest.raises(DiscriminatorError, match=match):
        mlp_discriminator(**kwargs)


def test_quantum_discriminator_scores_in_zero_one() -> None:
    backend = SimulatorBackend(max_workers=1)
    layer = TorchQuantumLayer(hardware_efficient_circuit(2, 1), backend, ["IZ", "ZI"], weights=0)
    disc = QuantumDiscriminator(layer)
    assert input_width(disc) == 2
    x = torch.tensor([[0.1, 0.2], [0.9, -0.4], [0.0, 0.0]], dtype=torch.float64)
    out = disc(x)
    assert out.shape == (3, 1) and bool(((out > 0) & (out < 1)).all())
    out.sum().backward()
    assert layer.weights.grad is not None and disc.readout.weight.grad is not None
    model = QuantumModel(2, 1, seed=0)
    from_model = QuantumDiscriminator(model, backend=backend, sigmoid=False)
    assert input_width(from_model) == 2 and from_model(x).shape == (3, 1)
    with pytest.raises(DiscriminatorError, match="TorchQuantumLayer or a QuantumModel"):
        QuantumDiscriminator(torch.nn.Linear(2, 1))  # type: ignore[arg-type]
    with pytest.raises(DiscriminatorError, match="head"):
        QuantumDiscriminator(QuantumModel(2, 1, task="classification"))
    layer.close()
    from_model.layer.close()
