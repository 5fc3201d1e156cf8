"""quantum_ml.monitoring.quantum_metrics against independent references.

States, partial traces, entropies and fidelities are checked against
``qiskit.quantum_info`` with the same qubit labels (qubit 0 = least significant bit in
both), circuit counts against ``QuantumCircuit.count_ops()`` / ``depth()`` of circuits
built gate by gate from Qiskit's library, gradient statistics against plain Python
loops, and the shot-noise SNR against seeded binomial shot draws.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import pytest
from qiskit import QuantumCircuit, transpile
from qiskit.circuit import ParameterVector
from qiskit.circuit.library.standard_gates import get_standard_gate_name_mapping
from qiskit.quantum_info import SparsePauliOp, Statevector, entropy, partial_trace
from qiskit.quantum_info import state_fidelity as qiskit_fidelity

from backends import Circuit, Parameter
from backends.aer import QiskitBackend
from backends.gates import GATES
from backends.ionq import IonQBackend
from backends.ionq.translate import NATIVE_GATES
from backends.simulator import SimulatorBackend
from quantum_ml.errors import QuantumMetricError
from quantum_ml.monitoring.quantum_metrics import (
    BarrenPlateauFit,
    barren_plateau_fit,
    basis_gates_for,
    circuit_metrics,
    circuit_statevector,
    empirical_snr,
    entanglement_entropy,
    entanglement_profile,
    gradient_statistics,
    reduced_density_matrix,
    shot_noise_snr,
    state_fidelity,
    transpiled_circuit_metrics,
)
from tests.randomcircuits import random_circuit, to_qiskit_reference

ATOL = 1e-10
BASIS = ["cx", "rz", "sx", "x"]


# ---------------------------------------------------------------------- helpers
def random_state(rng: np.random.Generator, n: int) -> np.ndarray:
    """A Haar-like random pure state of ``n`` qubits (normalized complex Gaussian)."""
    v: np.ndarray = rng.normal(size=1 << n) + 1j * rng.normal(size=1 << n)
    return v / float(np.linalg.norm(v))


def product_state(rng: np.random.Generator, n: int) -> np.ndarray:
    """A random product state: qubit 0 is the rightmost (last) Kronecker factor."""
    state = np.ones(1, dtype=complex)
    for _ in range(n):
        state = np.kron(random_state(rng, 1), state)
    return state


def ghz(n: int) -> np.ndarray:
    state = np.zeros(1 << n, dtype=complex)
    state[0] = state[-1] = 1 / math.sqrt(2)
    return state


def ry_cz_ansatz(n: int, layers: int) -> Circuit:
    """Layers of RY on every qubit, then a CZ chain; parameters t0, t1, ... in order."""
    params = [Parameter(f"t{i}") for i in range(n * layers)]
    circuit = Circuit(n, parameters=params, name="ry_cz")
    k = 0
    for _ in range(layers):
        for q in range(n):
            circuit.ry(params[k], q)
            k += 1
        for q in range(n - 1):
            circuit.cz(q, q + 1)
    return circuit


def ry_cz_qiskit(n: int, layers: int) -> QuantumCircuit:
    """The same ansatz built directly in Qiskit (independent of our converters)."""
    theta = ParameterVector("t", n * layers)
    qc = QuantumCircuit(n)
    k = 0
    for _ in range(layers):
        for q in range(n):
            qc.ry(theta[k], q)
            k += 1
        for q in range(n - 1):
            qc.cz(q, q + 1)
    return qc


def zz01(states: np.ndarray) -> np.ndarray:
    """<Z0 Z1> of each row: the parity of bits 0 and 1 of the amplitude index."""
    index = np.arange(states.shape[-1])
    sign = 1 - 2 * ((index ^ (index >> 1)) & 1)
    values: np.ndarray = (np.abs(states) ** 2) @ sign
    return values


def parameter_shift_gradients(circuit: Circuit, thetas: np.ndarray) -> np.ndarray:
    """Exact d<Z0 Z1>/d theta_k of RY angles (shift pi/2) for each row of ``thetas``."""
    s, p = thetas.shape
    shift = np.pi / 2 * np.eye(p)
    rows = np.concatenate([thetas[:, None] + shift, thetas[:, None] - shift], axis=1)
    e = zz01(circuit_statevector(circuit, rows.reshape(-1, p))).reshape(s, 2, p)
    gradients: np.ndarray = (e[:, 0] - e[:, 1]) / 2
    return gradients


def counts_by_width(qc: QuantumCircuit) -> dict[int, int]:
    """One- and two-qubit gate counts of ``qc`` from ``count_ops()``."""
    standard = get_standard_gate_name_mapping()
    widths = {1: 0, 2: 0}
    for name, count in qc.count_ops().items():
        widths[standard[name].num_qubits] += count
    return widths


# ---------------------------------------------------------------------- statevectors
def test_qubit_zero_is_the_least_significant_bit_as_in_qiskit() -> None:
    state = circuit_statevector(Circuit(3).x(0))
    np.testing.assert_allclose(state, Statevector.from_label("001").data, atol=0)
    rho = reduced_density_matrix(state, [0])
    np.testing.assert_allclose(rho, [[0, 0], [0, 1]], atol=0)  # qubit 0 is |1>
    np.testing.assert_allclose(reduced_density_matrix(state, [1, 2])[0, 0], 1.0)


@pytest.mark.parametrize("case", range(8))
def test_circuit_statevector_matches_qiskit(case: int) -> None:
    rng = np.random.default_rng(100 + case)
    n = 1 + case % 5
    circuit = random_circuit(rng, n, 30, num_params=3, measure=case % 2 == 0)
    values = rng.uniform(-math.pi, math.pi, (4, 3))
    states = circuit_statevector(circuit, values)
    assert states.shape == (4, 1 << n)
    for row, v in zip(states, values, strict=True):
        ref = Statevector(to_qiskit_reference(circuit, list(v), measurements=False))
        np.testing.assert_allclose(row, ref.data, atol=ATOL, rtol=0)
    single = circuit_statevector(circuit, values[1])
    assert single.shape == (1 << n,)
    np.testing.assert_allclose(single, states[1], atol=ATOL, rtol=0)


def test_fidelity_matches_qiskit() -> None:
    rng = np.random.default_rng(1)
    for n in range(1, 7):
        a, b = random_state(rng, n), random_state(rng, n)
        got = state_fidelity(a, b)
        assert isinstance(got, float)
        assert got == pytest.approx(qiskit_fidelity(Statevector(a), Statevector(b)), abs=ATOL)
        assert state_fidelity(a, a) == pytest.approx(1.0, abs=ATOL)


def test_fidelity_of_batches_row_by_row_and_against_one_state() -> None:
    rng = np.random.default_rng(2)
    a = np.stack([random_state(rng, 4) for _ in range(5)])
    b = np.stack([random_state(rng, 4) for _ in range(5)])
    rows = state_fidelity(a, b)
    assert isinstance(rows, np.ndarray)
    assert rows.shape == (5,)
    ref = [qiskit_fidelity(Statevector(x), Statevector(y)) for x, y in zip(a, b, strict=True)]
    np.testing.assert_allclose(rows, ref, atol=ATOL)
    against_one = state_fidelity(a, b[0])
    ref = [qiskit_fidelity(Statevector(x), Statevector(b[0])) for x in a]
    np.testing.assert_allclose(against_one, ref, atol=ATOL)
    np.testing.assert_allclose(state_fidelity(b[0], a), against_one, atol=ATOL)


def test_fidelity_of_circuit_states() -> None:
    rng = np.random.default_rng(3)
    circuit = random_circuit(rng, 3, 25, num_params=2)
    v, w = rng.uniform(-3, 3, 2), rng.uniform(-3, 3, 2)
    ref = qiskit_fidelity(
        Statevector(to_qiskit_reference(circuit, list(v), measurements=False)),
        Statevector(to_qiskit_reference(circuit, list(w), measurements=False)),
    )
    got = state_fidelity(circuit_statevector(circuit, v), circuit_statevector(circuit, w))
    assert got == pytest.approx(ref, abs=ATOL)


# ---------------------------------------------------------------------- partial traces
@pytest.mark.parametrize("n", range(1, 7))
def test_reduced_density_matrix_matches_partial_trace(n: int) -> None:
    rng = np.random.default_rng(10 + n)
    state = random_state(rng, n)
    for _ in range(6):
        k = int(rng.integers(1, n + 1))
        keep = [int(q) for q in rng.choice(n, size=k, replace=False)]  # any order
        traced = [q for q in range(n) if q not in keep]
        ref = partial_trace(Statevector(state), traced).data
        got = reduced_density_matrix(state, keep)
        np.testing.assert_allclose(got, ref, atol=ATOL, rtol=0)
        np.testing.assert_allclose(reduced_density_matrix(state, sorted(keep)), got, atol=0)


# ---------------------------------------------------------------------- entropies
@pytest.mark.parametrize("n", range(2, 8))
def test_entanglement_entropy_matches_qiskit(n: int) -> None:
    rng = np.random.default_rng(20 + n)
    for state in (random_state(rng, n), product_state(rng, n), ghz(n)):
        for _ in range(4):
            k = int(rng.integers(1, n))
            subsystem = [int(q) for q in rng.choice(n, size=k, replace=False)]
            rest = [q for q in range(n) if q not in subsystem]
            rho = partial_trace(Statevector(state), rest)
            assert entanglement_entropy(state, subsystem) == pytest.approx(
                entropy(rho, base=2), abs=ATOL
            )
            assert entanglement_entropy(state, subsystem, base=math.e) == pytest.approx(
                entropy(rho, base=math.e), abs=ATOL
            )
            # A pure state's two sides are equally entangled.
            assert entanglement_entropy(state, rest) == pytest.approx(
                entanglement_entropy(state, subsystem), abs=ATOL
            )


def test_entanglement_entropy_known_values() -> None:
    bell = ghz(2)
    assert entanglement_entropy(bell, [0]) == pytest.approx(1.0, abs=ATOL)
    assert entanglement_entropy(bell, [1], base=math.e) == pytest.approx(math.log(2), abs=ATOL)
    assert entanglement_entropy(bell, [1], base=np.int64(4)) == pytest.approx(0.5, abs=ATOL)
    assert entanglement_entropy(ghz(5), [0, 1]) == pytest.approx(1.0, abs=ATOL)
    assert entanglement_entropy(product_state(np.random.default_rng(0), 4), [1, 3]) == (
        pytest.approx(0.0, abs=ATOL)
    )
    assert entanglement_entropy(random_state(np.random.default_rng(0), 3), [0, 1, 2]) == 0.0


@pytest.mark.parametrize("n", range(1, 8))
def test_entanglement_profile_matches_qiskit(n: int) -> None:
    rng = np.random.default_rng(30 + n)
    w = np.zeros(1 << n, dtype=complex)
    w[[1 << q for q in range(n)]] = 1 / math.sqrt(n)
    for state in (random_state(rng, n), product_state(rng, n), ghz(n), w):
        profile = entanglement_profile(state)
        assert list(profile) == [
            *(f"entanglement/qubit_{q}" for q in range(n)),
            ("entanglement/half_chain"),
        ]
        sv = Statevector(state)
        for q in range(n):
            ref = entropy(partial_trace(sv, [i for i in range(n) if i != q]), base=2)
            assert profile[f"entanglement/qubit_{q}"] == pytest.approx(ref, abs=ATOL)
        half = n // 2
        ref = entropy(partial_trace(sv, list(range(half, n))), base=2) if half else 0.0
        assert profile["entanglement/half_chain"] == pytest.approx(ref, abs=ATOL)


def test_entanglement_profile_of_a_circuit_state() -> None:
    circuit = Circuit(3).h(0).cx(0, 1)  # qubits 0 and 1 in a Bell pair, qubit 2 apart
    profile = entanglement_profile(circuit_statevector(circuit))
    assert profile == pytest.approx(
        {
            "entanglement/qubit_0": 1.0,
            "entanglement/qubit_1": 1.0,
            "entanglement/qubit_2": 0.0,
            "entanglement/half_chain": 1.0,
        },
        abs=ATOL,
    )


# ---------------------------------------------------------------------- circuit metrics
@pytest.mark.parametrize("case", range(6))
def test_circuit_metrics_match_count_ops_and_depth(case: int) -> None:
    rng = np.random.default_rng(40 + case)
    n = 2 + case % 4
    circuit = random_circuit(rng, n, 35, num_params=2, measure=True)
    ref = to_qiskit_reference(circuit, [0.3, -1.2], measurements=False)
    counts = counts_by_width(ref)
    metrics = circuit_metrics(circuit)
    assert metrics["circuit/depth"] == ref.depth()
    assert metrics["circuit/gates_1q"] == counts[1]
    assert metrics["circuit/gates_2q"] == counts[2]
    assert metrics["circuit/parameters"] == 2


def test_circuit_metrics_count_parameters_like_qiskit() -> None:
    circuit, ref = ry_cz_ansatz(4, 3), ry_cz_qiskit(4, 3)
    metrics = circuit_metrics(circuit)
    counts = counts_by_width(ref)
    assert metrics == {
        "circuit/depth": float(ref.depth()),
        "circuit/gates_1q": float(counts[1]),
        "circuit/gates_2q": float(counts[2]),
        "circuit/parameters": float(ref.num_parameters),
    }


@pytest.mark.parametrize("coupling", [None, [(0, 1), (1, 0), (1, 2), (2, 1), (2, 3), (3, 2)]])
def test_transpiled_metrics_match_qiskit_transpile(coupling: list[tuple[int, int]] | None) -> None:
    rng = np.random.default_rng(50)
    circuit = random_circuit(rng, 4, 40, num_params=3, measure=True)
    metrics = transpiled_circuit_metrics(circuit, BASIS, coupling_map=coupling, seed=7)
    qc = circuit.to_qiskit()
    qc.remove_final_measurements()
    edges = None if coupling is None else [list(e) for e in coupling]
    ref = transpile(
        qc, basis_gates=BASIS, coupling_map=edges, optimization_level=1, seed_transpiler=7
    )
    counts = counts_by_width(ref)
    assert metrics == {
        "circuit/transpiled_depth": float(ref.depth()),
        "circuit/transpiled_gates_1q": float(counts[1]),
        "circuit/transpiled_gates_2q": float(counts[2]),
        "circuit/transpiled_parameters": float(ref.num_parameters),
    }
    assert transpiled_circuit_metrics(circuit, BASIS, coupling_map=coupling, seed=7) == metrics


def test_transpiled_metrics_closed_forms() -> None:
    swap = transpiled_circuit_metrics(Circuit(2).swap(0, 1), BASIS)
    assert swap["circuit/transpiled_gates_2q"] == 3  # a SWAP is three CNOTs
    assert swap["circuit/transpiled_depth"] == 3
    theta = Parameter("theta")
    ry = transpiled_circuit_metrics(Circuit(1).ry(theta, 0), BASIS)
    assert ry["circuit/transpiled_parameters"] == 1  # kept symbolic
    assert ry["circuit/transpiled_gates_2q"] == 0
    # A triangle of CNOTs does not fit a line: routing must add SWAPs (3 CNOTs each).
    triangle = Circuit(3).cx(0, 1).cx(1, 2).cx(0, 2)
    line = [(0, 1), (1, 0), (1, 2), (2, 1)]
    routed = transpiled_circuit_metrics(triangle, BASIS, coupling_map=line)
    assert routed["circuit/transpiled_gates_2q"] > 3
    assert transpiled_circuit_metrics(triangle, BASIS)["circuit/transpiled_gates_2q"] == 3


async def test_basis_gates_of_our_backends() -> None:
    from qiskit_ionq.helpers import GATESET_MAP

    standard = set(get_standard_gate_name_mapping())
    async with (
        SimulatorBackend(max_workers=1) as sim,
        QiskitBackend() as aer,
        IonQBackend(api_key="not-a-key", api_url="http://127.0.0.1:9") as ionq,
    ):
        assert basis_gates_for(sim) == sorted(GATES)  # our gate names are Qiskit's
        aer_basis = basis_gates_for(aer)
        assert set(aer_basis) <= set(aer.backend.target.operation_names) & standard
        assert {"cx", "rz", "sx", "u", "measure"} & set(aer_basis) == {"cx", "rz", "sx", "u"}
        ionq_basis = basis_gates_for(ionq)
        assert ionq_basis == sorted(NATIVE_GATES)
        assert set(ionq_basis) <= set(GATESET_MAP["qis"])  # what qiskit-ionq serializes
        assert not {"p", "u"} & set(ionq_basis)
        circuit = random_circuit(np.random.default_rng(60), 3, 30, num_params=2)
        for basis in (basis_gates_for(sim), aer_basis, ionq_basis):
            metrics = transpiled_circuit_metrics(circuit, basis)
            assert metrics["circuit/transpiled_gates_2q"] >= 1


# ---------------------------------------------------------------------- gradients
def test_gradient_statistics_match_loops() -> None:
    rng = np.random.default_rng(70)
    g = rng.normal(0.1, 0.5, (9, 6)) * rng.uniform(0.1, 2, 6)
    groups = {"first": [0, 1, 2], "odd": [5, 3, 1], "one": [4]}
    stats = gradient_statistics(g, groups)
    rows = g.tolist()
    for name, cols in {**groups, "all": list(range(6))}.items():
        got = stats if name != "all" else gradient_statistics(g)
        values = [row[k] for row in rows for k in cols]
        variances = [statistics.variance([row[k] for row in rows]) for k in cols]
        norms = [math.sqrt(sum(row[k] ** 2 for k in cols)) for row in rows]
        assert got[f"grad/{name}/mean"] == pytest.approx(sum(values) / len(values), abs=1e-12)
        assert got[f"grad/{name}/variance"] == pytest.approx(statistics.fmean(variances), abs=1e-12)
        assert got[f"grad/{name}/norm_mean"] == pytest.approx(statistics.fmean(norms), abs=1e-12)
    assert set(gradient_statistics(g)) == {
        "grad/all/mean",
        "grad/all/variance",
        "grad/all/norm_mean",
    }


# ---------------------------------------------------------------------- barren plateaus
def test_barren_plateau_fit_of_an_exact_exponential() -> None:
    widths = np.arange(2, 12)
    fit = barren_plateau_fit(widths, 2.0**-widths)
    assert isinstance(fit, BarrenPlateauFit)
    assert fit.slope == pytest.approx(-math.log(2), abs=1e-12)
    assert fit.decay_rate == pytest.approx(math.log(2), abs=1e-12)
    assert fit.intercept == pytest.approx(0.0, abs=1e-12)
    assert fit.r_squared == pytest.approx(1.0, abs=1e-12)
    assert fit.plateau
    assert not barren_plateau_fit(widths, 2.0**-widths, min_decay_rate=1.0).plateau
    with pytest.raises(AttributeError):
        fit.slope = 0.0  # type: ignore[misc]


def test_barren_plateau_fit_without_decay() -> None:
    flat = barren_plateau_fit([2, 3, 4, 5], [0.2, 0.2, 0.2, 0.2])
    assert flat.slope == pytest.approx(0.0, abs=1e-12)
    assert flat.r_squared == 0.0
    assert not flat.plateau
    rng = np.random.default_rng(80)
    noisy = barren_plateau_fit(np.arange(2, 10), 0.1 * rng.uniform(0.5, 1.5, 8))
    assert not noisy.plateau  # no trend: a poor fit, whatever its slope


def test_parameter_shift_gradient_matches_qiskit_statevectors() -> None:
    n, layers = 3, 2
    circuit, ref = ry_cz_ansatz(n, layers), ry_cz_qiskit(n, layers)
    rng = np.random.default_rng(90)
    theta = rng.uniform(0, 2 * np.pi, circuit.num_parameters)
    zz = SparsePauliOp("IZZ")  # Z on qubits 0 and 1: qubit 0 is the rightmost letter

    def expectation(values: np.ndarray) -> float:
        bound = ref.assign_parameters(dict(zip(ref.parameters, values, strict=True)))
        return float(Statevector(bound).expectation_value(zz).real)

    assert zz01(circuit_statevector(circuit, theta)) == pytest.approx(expectation(theta), abs=ATOL)
    shift = np.pi / 2 * np.eye(theta.size)
    expected = [(expectation(theta + d) - expectation(theta - d)) / 2 for d in shift]
    got = parameter_shift_gradients(circuit, theta[None, :])[0]
    np.testing.assert_allclose(got, expected, atol=ATOL)


def test_gradient_variance_of_random_ry_cz_circuits_decays_with_width() -> None:
    rng = np.random.default_rng(2018)
    widths = list(range(2, 7))
    variances = []
    for n in widths:
        circuit = ry_cz_ansatz(n, layers=n)
        thetas = rng.uniform(0, 2 * np.pi, (100, circuit.num_parameters))
        stats = gradient_statistics(parameter_shift_gradients(circuit, thetas))
        variances.append(stats["grad/all/variance"])
    assert np.all(np.diff(variances) < 0), variances
    fit = barren_plateau_fit(widths, variances)
    assert fit.slope < 0
    assert fit.r_squared > 0.9
    assert fit.plateau


# ---------------------------------------------------------------------- shot noise
def test_shot_noise_snr_matches_binomial_shot_draws() -> None:
    rng = np.random.default_rng(100)
    expectations = np.array([-0.9, -0.4, 0.0, 0.25, 0.7])
    shots = 200
    repeats = 20_000
    # Each repeat estimates <O> from `shots` ±1 outcomes: +1 with probability (1 + <O>) / 2.
    plus = rng.binomial(shots, (1 + expectations) / 2, size=(repeats, expectations.size))
    estimates = 2 * plus / shots - 1
    closed = shot_noise_snr(expectations, shots)
    measured = empirical_snr(estimates, axis=0)
    assert isinstance(closed, np.ndarray)
    assert isinstance(measured, np.ndarray)
    np.testing.assert_allclose(measured, closed, rtol=0.03, atol=0.03)
    np.testing.assert_allclose(
        estimates.std(axis=0, ddof=1), np.sqrt((1 - expectations**2) / shots), rtol=0.03
    )


def test_shot_noise_snr_closed_form_and_edges() -> None:
    assert shot_noise_snr(0.6, 100) == pytest.approx(0.6 / math.sqrt(0.64 / 100))
    assert isinstance(shot_noise_snr(0.6, 100), float)
    assert shot_noise_snr(1.0, 10) == math.inf
    assert shot_noise_snr(-1.0, 10) == math.inf
    assert shot_noise_snr(0.0, 10) == 0.0
    grid = shot_noise_snr(np.array([[0.5], [-0.5]]), np.array([100, 400]))
    np.testing.assert_allclose(grid, 0.5 / np.sqrt(0.75 / np.array([[100, 400], [100, 400]])))
    assert empirical_snr([1.0, 1.0, 1.0]) == math.inf
    assert empirical_snr([0.0, 0.0]) == 0.0
    assert empirical_snr([[1.0, 2.0], [2.0, 2.0]], axis=1) == pytest.approx(
        [1.5 / math.sqrt(0.5), math.inf]
    )


# ---------------------------------------------------------------------- bad inputs
BELL = ghz(2)

BAD_INPUTS: list[tuple[Callable[..., Any], tuple[Any, ...], dict[str, Any], str]] = [
    (state_fidelity, ([1, 0, 0], [1, 0, 0]), {}, "has 3 amplitudes"),
    (state_fidelity, ([1.0], [1.0]), {}, "has 1 amplitudes"),
    (state_fidelity, ([], BELL), {}, "a is empty"),
    (state_fidelity, (BELL, [np.nan, 1, 0, 0]), {}, "b holds NaN or infinity"),
    (state_fidelity, ([1, 1], [1, 0]), {}, "a is not normalized"),
    (state_fidelity, (BELL, [1, 0]), {}, "different widths"),
    (state_fidelity, (np.stack([BELL] * 2), np.stack([BELL] * 3)), {}, "same number of rows"),
    (state_fidelity, (np.ones((2, 2, 2)), BELL), {}, "1-D state or a 2-D batch"),
    (state_fidelity, (["a", "b"], BELL), {}, "complex amplitudes"),
    (state_fidelity, (BELL, BELL), {"atol": -1.0}, "atol must be"),
    (reduced_density_matrix, (BELL, [2]), {}, "qubit 2 in keep is out of range for a 2-qubit"),
    (reduced_density_matrix, (BELL, [0, 0]), {}, r"names qubit \[0\] more than once"),
    (reduced_density_matrix, (BELL, 0), {}, "single index"),
    (reduced_density_matrix, (BELL, [True]), {}, "integer qubit indices"),
    (reduced_density_matrix, (BELL, []), {}, "keep is empty"),
    (reduced_density_matrix, (np.stack([BELL] * 2), [0]), {}, "must be a 1-D state"),
    (entanglement_entropy, (BELL, [0], 1), {}, "base must be"),
    (entanglement_entropy, (BELL, [0], -2.0), {}, "base must be"),
    (entanglement_entropy, (BELL, [0], True), {}, "base must be"),
    (entanglement_entropy, (BELL, [-1]), {}, "qubit -1 in subsystem is out of range"),
    (entanglement_entropy, (BELL, "0"), {}, "sequence of qubit indices"),
    (entanglement_profile, (2 * BELL,), {}, r"not normalized: <psi\|psi> = 4"),
    (circuit_metrics, ("h 0",), {}, "expected a backends.Circuit"),
    (circuit_statevector, (Circuit(1).ry(Parameter("a"), 0), [1.0, 2.0]), {}, "cannot bind"),
    (circuit_statevector, (Circuit(1).ry(Parameter("a"), 0), [np.nan]), {}, "must be finite"),
    (circuit_statevector, (None,), {}, "expected a backends.Circuit"),
    (transpiled_circuit_metrics, (Circuit(1).h(0), "cx"), {}, "sequence of gate names"),
    (transpiled_circuit_metrics, (Circuit(1).h(0), []), {}, "non-empty sequence"),
    (transpiled_circuit_metrics, (Circuit(1).h(0), ["cx", "mcz"]), {}, r"\['mcz'\].*standard"),
    (transpiled_circuit_metrics, (Circuit(1).h(0), BASIS), {"seed": -1}, "seed must be"),
    (transpiled_circuit_metrics, (Circuit(2).cx(0, 1), ["rz", "sx"]), {}, "cannot be transpiled"),
    (
        transpiled_circuit_metrics,
        (Circuit(3).cx(0, 2), BASIS),
        {"coupling_map": [(0, 1)]},
        "cannot be transpiled to basis .* on the given coupling map",
    ),
    (
        transpiled_circuit_metrics,
        (Circuit(2).cx(0, 1), BASIS),
        {"coupling_map": [(0, 0)]},
        "distinct non-negative",
    ),
    (transpiled_circuit_metrics, (Circuit(2), BASIS), {"coupling_map": []}, "has no edges"),
    (basis_gates_for, (object(),), {}, "not a backend with native gates"),
    (gradient_statistics, ([1.0, 2.0],), {}, r"2-D array \[samples, parameters\]"),
    (gradient_statistics, (np.ones((1, 3)),), {}, "holds 1 draw"),
    (gradient_statistics, (np.zeros((0, 3)),), {}, "gradients is empty"),
    (gradient_statistics, ([[1.0, np.inf], [1.0, 2.0]],), {}, "NaN or infinity"),
    (
        gradient_statistics,
        (np.ones((2, 3)), {"a": [5]}),
        {},
        "parameter 5 in group 'a' is out of range for 3 parameters",
    ),
    (gradient_statistics, (np.ones((2, 3)), {"a": []}), {}, "group 'a' is empty"),
    (gradient_statistics, (np.ones((2, 3)), {"a": [1, 1]}), {}, "more than once"),
    (gradient_statistics, (np.ones((2, 3)), {"": [1]}), {}, "non-empty strings"),
    (gradient_statistics, (np.ones((2, 3)), {}), {}, "non-empty mapping"),
    (barren_plateau_fit, ([1, 2, 3], [0.1, 0.2]), {}, "differ in length"),
    (barren_plateau_fit, ([1, 2], [0.1, 0.2]), {}, "at least 3"),
    (barren_plateau_fit, ([1, 2, 3], [0.1, 0.0, 0.2]), {}, r"> 0 .* variance 1 \(width 2\)"),
    (barren_plateau_fit, ([2, 2, 2], [0.1, 0.2, 0.3]), {}, "2 distinct values"),
    (barren_plateau_fit, ([1, 2, np.nan], [0.1, 0.2, 0.3]), {}, "widths holds NaN"),
    (barren_plateau_fit, ([[1, 2, 3]], [[0.1, 0.2, 0.3]]), {}, "must be 1-D"),
    (barren_plateau_fit, ([1, 2, 3], [0.3, 0.2, 0.1]), {"min_r_squared": 2}, r"in \[0, 1\]"),
    (barren_plateau_fit, ([1, 2, 3], [0.3, 0.2, 0.1]), {"min_decay_rate": -1}, ">= 0"),
    (shot_noise_snr, (1.5, 100), {}, r"lies in \[-1, 1\]"),
    (shot_noise_snr, (0.5, 0), {}, "positive integers"),
    (shot_noise_snr, (0.5, 10.5), {}, "positive integers"),
    (shot_noise_snr, (np.nan, 10), {}, "expectation holds NaN"),
    (shot_noise_snr, ([0.1, 0.2], [10, 20, 30]), {}, "do not broadcast"),
    (empirical_snr, ([1.0],), {}, "at least 2"),
    (empirical_snr, ([1.0, 2.0],), {"axis": 1}, "axis 1 is out of range"),
    (empirical_snr, ([],), {}, "samples is empty"),
    (empirical_snr, ([1.0, np.nan],), {}, "samples holds NaN"),
]


@pytest.mark.parametrize(
    ("function", "args", "kwargs", "match"),
    BAD_INPUTS,
    ids=[f"{f.__name__}-{i}" for i, (f, *_) in enumerate(BAD_INPUTS)],
)
def test_bad_inputs_raise_quantum_metric_error(
    function: Callable[..., Any], args: Sequence[Any], kwargs: dict[str, Any], match: str
) -> None:
    with pytest.raises(QuantumMetricError, match=match) as info:
        function(*args, **kwargs)
    assert isinstance(info.value, ValueError)


def test_barren_plateau_fit_equals_scipy_linregress() -> None:
    from scipy.stats import linregress

    rng = np.random.default_rng(11)
    for _ in range(20):
        widths = np.arange(2, 2 + int(rng.integers(3, 9)), dtype=float)
        variances = np.exp(-rng.uniform(0, 1) * widths + rng.normal(scale=0.3, size=widths.size))
        fit = barren_plateau_fit(widths, variances)
        ref = linregress(widths, np.log(variances))
        assert fit.slope == pytest.approx(ref.slope, rel=1e-12, abs=1e-12)
        assert fit.intercept == pytest.approx(ref.intercept, rel=1e-12, abs=1e-12)
        assert fit.r_squared == pytest.approx(ref.rvalue**2, rel=1e-12, abs=1e-12)
