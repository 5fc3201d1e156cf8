"""The Qiskit backend on real Aer (and a generic BackendV2) against the built-in simulator."""

from __future__ import annotations

import asyncio
import math
import sys

import numpy as np
import pytest
from qiskit.providers.fake_provider import GenericBackendV2
from qiskit.transpiler import CouplingMap
from qiskit_aer.noise import NoiseModel, depolarizing_error

from backends import (
    BackendError,
    Circuit,
    MissingDependencyError,
    Observable,
    Parameter,
    ShotsError,
    SimulatorBackend,
    SimulatorMemoryError,
    TooManyQubitsError,
)
from backends.aer import QiskitBackend
from backends.gates import GATES
from backends.templates import hardware_efficient_circuit, z_observables

from .looptools import longest_stall
from .randomcircuits import random_circuit
from .sampling import assert_chi_square, expected_distribution

PAULIS = np.array(list("IXYZ"))

#: GenericBackendV2.run builds an Aer noise model of itself on first use; without noise
#: information (so that it simulates ideally) Aer warns that there is no T1/T2 to model.
no_qubit_properties_warning = pytest.mark.filterwarnings(
    "ignore:Qiskit backend .* has no QubitProperties:UserWarning"
)


def random_labels(rng: np.random.Generator, n: int, count: int) -> list[str]:
    return ["".join(rng.choice(PAULIS, n)) for _ in range(count)]


def random_observables(rng: np.random.Generator, n: int) -> list[Observable]:
    """Three random Pauli strings, a weighted sum of three more, and one with an identity."""
    weighted = Observable([(lab, float(rng.normal())) for lab in random_labels(rng, n, 3)])
    return [
        *(Observable.pauli(lab) for lab in random_labels(rng, n, 3)),
        weighted,
        Observable([("I" * n, 0.75), ("Z" * n, -1.5)]),
    ]


async def reference_and_sigma(
    circuit: Circuit, values: np.ndarray, observables: list[Observable], shots: int
) -> tuple[np.ndarray, np.ndarray]:
    """Exact expectations from the built-in simulator, and the standard deviation of a
    shot estimate that samples every Pauli term ``shots`` times, independently."""
    labels = sorted({t.label for o in observables for t in o.terms})
    async with SimulatorBackend() as sim:
        result = await sim.run(circuit, values, observables=labels)
    assert result.expectations is not None
    term = {lab: result.expectations[:, i] for i, lab in enumerate(labels)}
    exact = np.stack([sum(t.coeff * term[t.label] for t in o.terms) for o in observables], axis=1)
    variance = np.stack(
        [sum(t.coeff**2 * (1 - term[t.label] ** 2) for t in o.terms) for o in observables], axis=1
    )
    return exact, np.sqrt(variance / shots)


# ---------------------------------------------------------------- exact mode


@pytest.mark.parametrize("case", range(16))
async def test_exact_expectations_match_the_simulator(case: int) -> None:
    rng = np.random.default_rng(3000 + case)
    n = 1 + case % 6
    circuit = random_circuit(
        rng, n, int(rng.integers(24, 48)), num_params=int(rng.integers(1, 5)), measure=case % 3 == 0
    )
    values = rng.uniform(-2 * math.pi, 2 * math.pi, (4, circuit.num_parameters))
    observables = random_observables(rng, n)
    async with QiskitBackend() as aer, SimulatorBackend() as sim:
        got = await aer.run(circuit, values, observables=observables)
        want = await sim.run(circuit, values, observables=observables)
    assert got.expectations is not None and want.expectations is not None
    assert got.expectations.shape == (4, len(observables))
    assert got.expectations is not None and want.expectations is not None
    np.testing.assert_allclose(got.expectations, want.expectations, atol=1e-10, rtol=0)
    assert got.backend == "aer"
    assert got.shots is None


async def test_parameters_bind_by_name_not_by_qiskit_order() -> None:
    # Qiskit sorts parameters by name; the circuit model binds them in declaration order.
    rng = np.random.default_rng(8)
    names = ["zeta", "alpha", "p10", "p2", "mid"]
    circuit = random_circuit(rng, 3, 40, num_params=5, parameter_names=names)
    values = rng.uniform(-math.pi, math.pi, (3, 5))
    async with QiskitBackend() as aer, SimulatorBackend() as sim:
        got = await aer.run(circuit, values, observables=z_observables(3))
        want = await sim.run(circuit, values, observables=z_observables(3))
    assert got.expectations is not None and want.expectations is not None
    np.testing.assert_allclose(got.expectations, want.expectations, atol=1e-10, rtol=0)


async def test_parameterized_controlled_rotations_are_bound() -> None:
    # Aer on its own runs a parameterized crx/cry/crz at angle 0 (qiskit-aer#2323).
    t = Parameter("t")
    circuit = Circuit(2).h(0).crx(t, 0, 1).cry(0.5 * t, 1, 0).crz(t + 0.3, 0, 1)
    values = np.array([[0.4], [2.2], [-1.3]])
    observables = ["ZZ", "XY", "IZ", "YX"]
    async with QiskitBackend() as aer, SimulatorBackend() as sim:
        got = await aer.run(circuit, values, observables=observables)
        want = await sim.run(circuit, values, observables=observables)
        counts = await aer.run(circuit.copy().measure_all(), [[math.pi]], shots=2000, seed=1)
    assert got.expectations is not None and want.expectations is not None
    np.testing.assert_allclose(got.expectations, want.expectations, atol=1e-10, rtol=0)
    assert counts.counts is not None
    assert_chi_square(counts.counts[0], expected_distribution(circuit, [math.pi]), 2000)


async def test_unused_parameters_and_parameter_free_batches() -> None:
    a, b = Parameter("a"), Parameter("b")
    circuit = Circuit(2, parameters=[a, b]).ry(b, 1).cx(1, 0)  # "a" never appears
    values = np.array([[9.0, 0.3], [-4.0, 1.1]])
    fixed = Circuit(1).ry(0.7, 0)
    async with QiskitBackend() as aer:
        got = await aer.run(circuit, values, observables=["ZZ", "ZI"])
        flat = await aer.run(fixed, np.zeros((3, 0)), observables=["Z", "X"])
    assert got.expectations is not None
    np.testing.assert_allclose(got.expectations[:, 0], [1.0, 1.0], atol=1e-10)
    np.testing.assert_allclose(got.expectations[:, 1], np.cos(values[:, 1]), atol=1e-10)
    assert flat.expectations is not None
    np.testing.assert_allclose(flat.expectations, [[math.cos(0.7), math.sin(0.7)]] * 3, atol=1e-10)


# ---------------------------------------------------------------- shots


@pytest.mark.parametrize("case", range(6))
async def test_counts_follow_the_born_rule(case: int) -> None:
    rng = np.random.default_rng(4000 + case)
    n = 1 + case % 5
    circuit = random_circuit(rng, n, 30, num_params=2, measure=case % 2 == 0)
    values = rng.uniform(-math.pi, math.pi, (2, 2))
    shots = 20_000
    async with QiskitBackend() as aer:
        result = await aer.run(circuit, values, shots=shots, seed=case)
    assert result.counts is not None
    assert len(result.counts) == 2
    for row, counts in enumerate(result.counts):
        expected = expected_distribution(circuit, values[row])
        assert {len(k) for k in counts} == {len(next(iter(expected)))}
        assert_chi_square(counts, expected, shots)


async def test_counts_use_sparse_classical_bits() -> None:
    circuit = Circuit(3).x(0).x(2).measure(2, 0).measure(0, 3)
    async with QiskitBackend() as aer:
        result = await aer.run(circuit, shots=10, seed=1)
    assert result.counts == [{"1001": 10}]


async def test_counts_are_seeded() -> None:
    circuit = hardware_efficient_circuit(4, 2)
    values = np.random.default_rng(5).uniform(0, 1, (5, circuit.num_parameters))
    async with QiskitBackend(seed=1) as aer:
        a = await aer.run(circuit, values, shots=300, seed=42)
        b = await aer.run(circuit, values, shots=300, seed=42)
        c = await aer.run(circuit, values, shots=300, seed=43)
        first = await aer.run(circuit, values, shots=300)
        again = await aer.run(circuit, values, shots=300, seed=first.metadata["seed"])
    assert a.counts == b.counts
    assert a.counts != c.counts
    assert first.counts == again.counts
    assert a.metadata["seed"] == 42


async def test_parameter_free_batch_samples_each_binding() -> None:
    # Aer runs a parameter-free circuit once whatever the bindings' shape; each binding
    # must still get a sample of its own.
    async with QiskitBackend() as aer:
        result = await aer.run(Circuit(2).h(0).h(1), np.zeros((4, 0)), shots=400, seed=3)
    assert result.counts is not None
    assert len(result.counts) == 4
    for counts in result.counts:
        assert sum(counts.values()) == 400
        assert set(counts) == {"00", "01", "10", "11"}
    assert len({tuple(sorted(c.items())) for c in result.counts}) == 4


@pytest.mark.parametrize("case", range(4))
async def test_shot_estimates_are_within_statistics(case: int) -> None:
    rng = np.random.default_rng(5000 + case)
    n = 2 + case % 3
    circuit = random_circuit(rng, n, 30, num_params=3)
    values = rng.uniform(-math.pi, math.pi, (3, 3))
    observables = random_observables(rng, n)
    shots = 4000
    async with QiskitBackend() as aer:
        result = await aer.run(circuit, values, observables=observables, shots=shots, seed=case)
        again = await aer.run(circuit, values, observables=observables, shots=shots, seed=case)
    assert result.expectations is not None
    np.testing.assert_array_equal(result.expectations, again.expectations)
    exact, sigma = await reference_and_sigma(circuit, values, observables, shots)
    assert np.all(np.abs(result.expectations - exact) <= 5 * sigma + 1e-12)


async def test_each_pauli_term_is_measured_with_all_the_shots() -> None:
    # Like the built-in simulator: an estimate of one Pauli is (2 * plus - shots) / shots.
    rng = np.random.default_rng(11)
    circuit = random_circuit(rng, 3, 30, num_params=2)
    values = rng.uniform(-math.pi, math.pi, (5, 2))
    shots = 777
    async with QiskitBackend() as aer:
        result = await aer.run(circuit, values, observables=["XYZ", "IZI"], shots=shots, seed=4)
    assert result.expectations is not None
    plus = (result.expectations + 1) * shots / 2
    np.testing.assert_allclose(plus, np.round(plus), atol=1e-9)


# ---------------------------------------------------------------- noise


def depolarizing_cx(p: float) -> NoiseModel:
    model = NoiseModel()
    model.add_all_qubit_quantum_error(depolarizing_error(p, 2), ["cx"])
    return model


async def test_depolarizing_noise_shrinks_bell_correlations_by_the_closed_form() -> None:
    p = 0.2
    bell = Circuit(2).h(0).cx(0, 1)
    async with QiskitBackend(noise_model=depolarizing_cx(p)) as noisy:
        assert noisy.name == "aer-noisy"
        assert noisy.capabilities.supports_exact
        exact = await noisy.run(bell, observables=["ZZ", "XX", "YY", "ZI"])
        shots = 20_000
        sampled = await noisy.run(bell, observables=["ZZ", "XX"], shots=shots, seed=7)
        counts = await noisy.run(bell.copy().measure_all(), shots=shots, seed=7)
    # (1 - p) rho + p I/4: every correlation of the Bell state scales by 1 - p.
    assert exact.expectations is not None
    closed_form = np.array([[1 - p, 1 - p, -(1 - p), 0.0]])
    np.testing.assert_allclose(exact.expectations, closed_form, atol=1e-10)
    assert sampled.expectations is not None
    sigma = math.sqrt((1 - (1 - p) ** 2) / shots)
    assert np.all(np.abs(sampled.expectations[0] - (1 - p)) < 5 * sigma)
    assert counts.counts is not None
    expected = {"00": (1 - p) / 2 + p / 4, "11": (1 - p) / 2 + p / 4, "01": p / 4, "10": p / 4}
    assert_chi_square(counts.counts[0], expected, shots)


async def test_noisy_trajectory_methods_have_no_exact_mode() -> None:
    async with QiskitBackend(method="statevector", noise_model=depolarizing_cx(0.1)) as noisy:
        assert not noisy.capabilities.supports_exact
        with pytest.raises(ShotsError, match="no exact mode"):
            await noisy.run(Circuit(2).h(0).cx(0, 1), observables=["ZZ"])


async def test_exact_noisy_runs_are_bounded_by_the_density_matrix() -> None:
    circuit = Circuit(8).h(0).cx(0, 7)
    async with QiskitBackend(noise_model=depolarizing_cx(0.1), max_memory_bytes=1 << 20) as noisy:
        assert noisy.capabilities.max_qubits == 15  # the state vector still fits for shots
        with pytest.raises(SimulatorMemoryError, match="density matrix"):
            await noisy.run(circuit, observables=["Z" + "I" * 6 + "Z"])
        sampled = await noisy.run(circuit, observables=["Z" + "I" * 6 + "Z"], shots=2000, seed=1)
    assert sampled.expectations is not None
    assert abs(sampled.expectations[0, 0] - 0.9) < 5 * math.sqrt((1 - 0.81) / 2000)


# ---------------------------------------------------------------- generic BackendV2


def line_backend() -> GenericBackendV2:
    return GenericBackendV2(
        num_qubits=5, seed=17, coupling_map=CouplingMap.from_line(5), noise_info=False
    )


def test_generic_backend_capabilities() -> None:
    backend = QiskitBackend(line_backend())
    caps = backend.capabilities
    assert backend.name == "generic_backend_5q"
    assert caps.max_qubits == 5
    assert not caps.supports_exact
    assert caps.supports_shots
    assert caps.native_gates == {"cx", "id", "rz", "sx", "x"}
    line = {(i, i + 1) for i in range(4)} | {(i + 1, i) for i in range(4)}
    assert caps.connectivity == frozenset(line)
    assert backend.estimate_cost(Circuit(2).h(0), 1000) == 0.0


@no_qubit_properties_warning
@pytest.mark.parametrize("case", range(3))
async def test_generic_backend_agrees_with_the_simulator(case: int) -> None:
    rng = np.random.default_rng(6000 + case)
    n = 3 + case % 2
    # Two-qubit gates between any qubits: the line coupling map forces routing (SWAPs).
    circuit = random_circuit(rng, n, 30, num_params=2)
    values = rng.uniform(-math.pi, math.pi, (2, 2))
    observables = random_observables(rng, n)
    shots = 4000
    async with QiskitBackend(line_backend()) as generic:
        result = await generic.run(circuit, values, observables=observables, shots=shots, seed=2)
        counts = await generic.run(circuit, values, shots=20_000, seed=2)
    assert result.expectations is not None
    exact, sigma = await reference_and_sigma(circuit, values, observables, shots)
    assert np.all(np.abs(result.expectations - exact) <= 5 * sigma + 1e-12)
    assert counts.counts is not None
    for row, c in enumerate(counts.counts):
        assert_chi_square(c, expected_distribution(circuit, values[row]), 20_000)


@no_qubit_properties_warning
async def test_generic_backend_counts_are_seeded() -> None:
    circuit = Circuit(3).h(0).cx(0, 2).ry(Parameter("t"), 1).measure_all()
    async with QiskitBackend(line_backend()) as generic:
        a = await generic.run(circuit, [[0.4], [1.9]], shots=500, seed=9)
        b = await generic.run(circuit, [[0.4], [1.9]], shots=500, seed=9)
    assert a.counts == b.counts


async def test_too_many_qubits_for_the_backend_fail_before_anything_runs() -> None:
    async with QiskitBackend(line_backend()) as generic:
        with pytest.raises(TooManyQubitsError, match="at most 5"):
            await generic.run(Circuit(6).h(0).measure_all(), shots=100)
        with pytest.raises(ShotsError, match="no exact mode"):
            await generic.run(Circuit(2).h(0), observables=["ZZ"])
        assert generic._executor is None
        assert not generic._cache


# ---------------------------------------------------------------- the rest of the contract


def test_aer_capabilities() -> None:
    caps = QiskitBackend().capabilities
    assert caps.supports_exact and caps.supports_shots
    assert caps.native_gates >= set(GATES)
    assert caps.connectivity is None
    assert not {"measure", "save_expval", "kraus"} & caps.native_gates


async def test_memory_budget_refuses_wide_circuits_before_running() -> None:
    async with QiskitBackend(max_memory_bytes=1 << 20) as small:
        assert small.capabilities.max_qubits == 15
        with pytest.raises(SimulatorMemoryError, match="memory budget"):
            await small.run(Circuit(16).h(0), observables=["I" * 15 + "Z"])
        assert small._executor is None


@pytest.mark.xfail(
    strict=True,
    reason="qiskit-aer 0.18.2 holds the GIL while it executes (a 16-qubit batch holds it for "
    "~0.4 s), so a worker thread cannot keep the event loop free; running Aer in a process "
    "pool would. Strict: this starts failing, as a reminder, once Aer releases the GIL.",
)
async def test_event_loop_stays_responsive_while_aer_runs() -> None:
    circuit = hardware_efficient_circuit(17, 3)
    values = np.random.default_rng(0).uniform(0, 1, (64, circuit.num_parameters))
    async with QiskitBackend() as aer:
        result, stall, duration = await longest_stall(
            aer.run(circuit, values, observables=z_observables(17))
        )
    assert result.expectations is not None
    assert stall < max(0.25, duration / 2), (stall, duration)


async def test_concurrent_runs_agree_with_sequential_runs() -> None:
    rng = np.random.default_rng(21)
    circuits = [random_circuit(rng, 3, 25, num_params=2) for _ in range(4)]
    values = rng.uniform(-math.pi, math.pi, (3, 2))
    async with QiskitBackend(max_concurrent=2) as aer:
        together = await asyncio.gather(
            *(aer.run(c, values, observables=["ZZZ", "XIY"]) for c in circuits),
            *(aer.run(c, values, shots=200, seed=5) for c in circuits),
        )
        alone = [await aer.run(c, values, observables=["ZZZ", "XIY"]) for c in circuits]
        alone += [await aer.run(c, values, shots=200, seed=5) for c in circuits]
    for a, b in zip(together, alone, strict=True):
        assert a.counts == b.counts
        if a.expectations is not None:
            np.testing.assert_array_equal(a.expectations, b.expectations)


async def test_closed_backend_refuses_runs() -> None:
    aer = QiskitBackend()
    await aer.aclose()
    with pytest.raises(BackendError, match="closed"):
        await aer.run(Circuit(1).h(0), observables=["Z"])


@pytest.mark.parametrize(
    "kwargs",
    [
        {"method": "unitary"},
        {"optimization_level": 4},
        {"max_concurrent": 0},
        {"max_memory_bytes": 0},
    ],
)
def test_bad_options(kwargs: dict[str, object]) -> None:
    with pytest.raises(BackendError):
        QiskitBackend(**kwargs)  # type: ignore[arg-type]


def test_options_of_the_default_simulator_need_no_backend() -> None:
    with pytest.raises(BackendError, match="set them on the backend"):
        QiskitBackend(line_backend(), method="statevector")
    with pytest.raises(BackendError, match="BackendV2"):
        QiskitBackend(object())


def test_missing_aer_names_the_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "qiskit_aer", None)
    with pytest.raises(MissingDependencyError, match=r"pip install 'quantum-db\[qiskit\]'"):
        QiskitBackend()
