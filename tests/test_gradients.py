"""Gradients (parameter shift, adjoint, finite differences, SPSA) against independent references."""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import Sequence
from typing import Any

import numpy as np
import pytest
from numpy.typing import NDArray
from qiskit.quantum_info import SparsePauliOp, Statevector

from backends import Capabilities, Circuit, Observable, SimulatorBackend
from backends.base import Backend, RunRequest, RunResult
from backends.errors import ParameterCountError, ParameterValueError, QuantumDBError
from backends.parameters import Parameter
from quantum_ml.gradients import GradientMethodError, QuantumGradientComputer
from tests.randomcircuits import random_circuit, to_qiskit_reference

OBSERVABLES: dict[int, list[Observable]] = {}


def _observables(n: int) -> list[Observable]:
    """Two observables on ``n`` qubits: a weighted sum of Pauli strings and one string."""
    if n not in OBSERVABLES:
        a = "Z" * n
        b = "X" + "I" * (n - 2) + "Y" if n > 1 else "X"
        c = ("XZY" * n)[:n]
        OBSERVABLES[n] = [Observable([(a, 0.7), (b, -1.3)]), Observable.pauli(c)]
    return OBSERVABLES[n]


def _qiskit_expectations(
    circuit: Circuit, values: NDArray[np.float64], observables: Sequence[Observable]
) -> NDArray[np.float64]:
    """``[B, n_obs]`` via plain Qiskit ``Statevector`` on gate-by-gate reference circuits."""
    ops = [
        SparsePauliOp([t.label for t in o.terms], [t.coeff for t in o.terms]) for o in observables
    ]
    out = np.empty((values.shape[0], len(ops)))
    for b, row in enumerate(values):
        sv = Statevector(to_qiskit_reference(circuit, list(row), measurements=False))
        out[b] = [sv.expectation_value(op).real for op in ops]
    return out


def _qiskit_finite_diff(
    circuit: Circuit,
    values: NDArray[np.float64],
    observables: Sequence[Observable],
    h: float = 1e-5,
) -> NDArray[np.float64]:
    b, p = values.shape
    jac = np.zeros((b, len(observables), p))
    for j in range(p):
        plus, minus = values.copy(), values.copy()
        plus[:, j] += h
        minus[:, j] -= h
        jac[:, :, j] = (
            _qiskit_expectations(circuit, plus, observables)
            - _qiskit_expectations(circuit, minus, observables)
        ) / (2 * h)
    return jac


def _cases(count: int, seed: int = 1234) -> list[tuple[Circuit, NDArray[np.float64]]]:
    rng = np.random.default_rng(seed)
    cases = []
    for k in range(count):
        n = 2 + k % 4
        circuit = random_circuit(rng, n, 26 + int(rng.integers(0, 8)), num_params=2 + k % 3)
        cases.append((circuit, rng.uniform(-2 * np.pi, 2 * np.pi, (2, circuit.num_parameters))))
    return cases


CASES = _cases(52)


@pytest.fixture
async def simulator() -> Any:
    async with SimulatorBackend(max_workers=2) as backend:
        yield backend


class CountingSimulator(SimulatorBackend):
    """A simulator that records each ``run`` call's batch size (and an optional max batch)."""

    def __init__(self, max_batch: int | None = None) -> None:
        super().__init__(max_workers=2)
        self.batches: list[int] = []
        self._max_batch = max_batch

    @property
    def capabilities(self) -> Capabilities:
        return dataclasses.replace(super().capabilities, max_batch=self._max_batch)

    async def run(
        self, circuit: Circuit, parameter_values: Any = None, *args: Any, **kw: Any
    ) -> RunResult:
        self.batches.append(int(np.asarray(parameter_values).shape[0]))
        return await super().run(circuit, parameter_values, *args, **kw)


class RemoteLike(Backend):
    """A non-simulator backend with a small max batch and concurrent jobs in flight."""

    name = "remote-like"

    def __init__(self, inner: SimulatorBackend) -> None:
        self._inner = inner
        self.in_flight = 0
        self.peak = 0

    @property
    def capabilities(self) -> Capabilities:
        return dataclasses.replace(self._inner.capabilities, max_batch=5)

    async def _execute(self, request: RunRequest) -> RunResult:
        self.in_flight += 1
        self.peak = max(self.peak, self.in_flight)
        try:
            await asyncio.sleep(0.01)
            return await self._inner._execute(request)
        finally:
            self.in_flight -= 1


def test_random_cases_cover_the_gate_set() -> None:
    used = {inst.name for circuit, _ in CASES for inst in circuit.instructions}
    assert {"crx", "cry", "crz", "u", "p", "rxx", "ryy", "rzz"} <= used
    reused = 0
    scaled = 0
    for circuit, _ in CASES:
        names = [a.parameter.name for i in circuit.instructions for a in i.angles if a.parameter]
        reused += len(names) > len(set(names))
        scaled += any(
            a.parameter is not None and a.coeff != 1.0
            for i in circuit.instructions
            for a in i.angles
        )
    assert reused >= 50
    assert scaled >= 50


async def test_parameter_shift_matches_qiskit_finite_differences(simulator: Any) -> None:
    grad = QuantumGradientComputer("parameter-shift")
    for circuit, values in CASES:
        obs = _observables(circuit.num_qubits)
        value, jac = await grad.value_and_jacobian(simulator, circuit, values, obs)
        assert jac.shape == (2, 2, circuit.num_parameters)
        assert jac.dtype == np.float64
        np.testing.assert_allclose(value, _qiskit_expectations(circuit, values, obs), atol=1e-10)
        np.testing.assert_allclose(jac, _qiskit_finite_diff(circuit, values, obs), atol=1e-6)


async def test_adjoint_matches_parameter_shift(simulator: Any) -> None:
    shift = QuantumGradientComputer("parameter-shift")
    adjoint = QuantumGradientComputer("adjoint")
    for circuit, values in CASES:
        obs = _observables(circuit.num_qubits)
        v1, j1 = await shift.value_and_jacobian(simulator, circuit, values, obs)
        v2, j2 = await adjoint.value_and_jacobian(simulator, circuit, values, obs)
        np.testing.assert_allclose(v2, v1, atol=1e-10)
        np.testing.assert_allclose(j2, j1, atol=1e-9)


async def test_finite_diff_matches_exact(simulator: Any) -> None:
    exact = QuantumGradientComputer("adjoint")
    fd = QuantumGradientComputer("finite-diff")
    for circuit, values in CASES[:10]:
        obs = _observables(circuit.num_qubits)
        np.testing.assert_allclose(
            await fd.jacobian(simulator, circuit, values, obs),
            await exact.jacobian(simulator, circuit, values, obs),
            atol=1e-6,
        )


# ----------------------------------------------------------------- PennyLane reference
def _pennylane_jacobian(
    circuit: Circuit, values: NDArray[np.float64], observables: Sequence[Observable]
) -> NDArray[np.float64]:
    import pennylane as qml
    from pennylane import numpy as pnp

    n = circuit.num_qubits
    dev = qml.device("default.qubit", wires=n)
    fixed = {
        "h": qml.Hadamard,
        "x": qml.PauliX,
        "y": qml.PauliY,
        "z": qml.PauliZ,
        "s": qml.S,
        "t": qml.T,
        "sx": qml.SX,
        "cx": qml.CNOT,
        "cy": qml.CY,
        "cz": qml.CZ,
        "swap": qml.SWAP,
    }
    rotations = {
        "rx": qml.RX,
        "ry": qml.RY,
        "rz": qml.RZ,
        "p": qml.PhaseShift,
        "u": qml.U3,
        "crx": qml.CRX,
        "cry": qml.CRY,
        "crz": qml.CRZ,
        "rxx": qml.IsingXX,
        "ryy": qml.IsingYY,
        "rzz": qml.IsingZZ,
    }
    single = {"X": qml.PauliX, "Y": qml.PauliY, "Z": qml.PauliZ}

    def pauli_word(label: str) -> Any:
        ops = [single[c](n - 1 - i) for i, c in enumerate(label) if c != "I"]
        return qml.prod(*ops) if len(ops) > 1 else (ops[0] if ops else qml.Identity(0))

    measured = [
        qml.dot([t.coeff for t in o.terms], [pauli_word(t.label) for t in o.terms])
        for o in observables
    ]
    index = {p.name: i for i, p in enumerate(circuit.parameters)}

    @qml.qnode(dev, diff_method="backprop")
    def qnode(theta: Any) -> Any:
        for inst in circuit.instructions:
            wires = list(inst.qubits)
            if inst.name in fixed:
                fixed[inst.name](wires=wires)
            elif inst.name in ("sdg", "tdg"):
                qml.adjoint(qml.S if inst.name == "sdg" else qml.T)(wires=wires)
            else:
                angles = [
                    a.offset
                    if a.parameter is None
                    else a.coeff * theta[index[a.parameter.name]] + a.offset
                    for a in inst.angles
                ]
                rotations[inst.name](*angles, wires=wires)
        return [qml.expval(m) for m in measured]

    def stacked(theta: Any) -> Any:
        return qml.math.stack(qnode(theta))

    out = np.empty((values.shape[0], len(observables), values.shape[1]))
    for b, row in enumerate(values):
        out[b] = np.asarray(qml.jacobian(stacked)(pnp.array(row, requires_grad=True)))
    return out


# autograd's backward pass through PennyLane's complex state casts to real internally.
@pytest.mark.filterwarnings("ignore::numpy.exceptions.ComplexWarning")
async def test_agrees_with_pennylane(simulator: Any) -> None:
    """An independent implementation on every one of the 52 random circuits."""
    grad = QuantumGradientComputer("parameter-shift")
    for circuit, values in CASES:
        obs = _observables(circuit.num_qubits)
        ours = await grad.jacobian(simulator, circuit, values, obs)
        np.testing.assert_allclose(ours, _pennylane_jacobian(circuit, values, obs), atol=1e-8)


# ----------------------------------------------------------------- handwritten checks
async def test_controlled_rotation_four_term_rule(simulator: Any) -> None:
    # <Z_target> after H(control), CRX(θ) on |+>|0>: (1 + cos θ) / 2, derivative -sin θ / 2.
    theta = Parameter("theta")
    circuit = Circuit(2).h(0).crx(theta, 0, 1)
    values = np.array([[0.3], [1.7], [-2.4]])
    for method in ("parameter-shift", "adjoint"):
        jac = await QuantumGradientComputer(method).jacobian(simulator, circuit, values, ["ZI"])
        np.testing.assert_allclose(jac[:, 0, 0], -np.sin(values[:, 0]) / 2, atol=1e-12)


async def test_scaled_and_reused_parameter(simulator: Any) -> None:
    # RY(2θ + 0.1) then RY(-0.5θ): <Z> = cos(1.5θ + 0.1), derivative -1.5 sin(1.5θ + 0.1).
    theta = Parameter("theta")
    circuit = Circuit(1).ry(2 * theta + 0.1, 0).ry(-0.5 * theta, 0)
    values = np.array([[0.4], [-1.1]])
    for method in ("parameter-shift", "adjoint", "finite-diff"):
        jac = await QuantumGradientComputer(method).jacobian(simulator, circuit, values, ["Z"])
        np.testing.assert_allclose(jac[:, 0, 0], -1.5 * np.sin(1.5 * values[:, 0] + 0.1), atol=1e-8)


async def test_wrt_zeroes_other_columns_and_saves_evaluations() -> None:
    circuit, values = CASES[3]
    obs = _observables(circuit.num_qubits)
    async with CountingSimulator() as backend:
        full = await QuantumGradientComputer().jacobian(backend, circuit, values, obs)
        part = await QuantumGradientComputer().jacobian(backend, circuit, values, obs, wrt=[1])
    np.testing.assert_allclose(part[:, :, 1], full[:, :, 1], atol=1e-12)
    assert np.all(part[:, :, [0, *range(2, circuit.num_parameters)]] == 0)
    assert backend.batches[1] < backend.batches[0]


async def test_circuit_without_parameters(simulator: Any) -> None:
    circuit = Circuit(2).h(0).cx(0, 1)
    for method in ("parameter-shift", "adjoint", "finite-diff", "spsa"):
        value, jac = await QuantumGradientComputer(method).value_and_jacobian(
            simulator, circuit, np.zeros((3, 0)), ["ZZ"]
        )
        assert jac.shape == (3, 1, 0)
        np.testing.assert_allclose(value, 1.0, atol=1e-12)


# ----------------------------------------------------------------- batching
async def test_one_batched_run_for_the_whole_gradient() -> None:
    circuit, values = CASES[5]
    obs = _observables(circuit.num_qubits)
    async with CountingSimulator() as backend:
        await QuantumGradientComputer().jacobian(backend, circuit, values, obs)
        await QuantumGradientComputer("finite-diff").jacobian(backend, circuit, values, obs)
    assert len(backend.batches) == 2
    assert backend.batches[1] == 2 * (1 + 2 * circuit.num_parameters)


async def test_batches_split_into_concurrent_runs_under_max_batch(simulator: Any) -> None:
    circuit, values = CASES[7]
    obs = _observables(circuit.num_qubits)
    reference = await QuantumGradientComputer().jacobian(simulator, circuit, values, obs)
    async with CountingSimulator(max_batch=7) as backend:
        jac = await QuantumGradientComputer().jacobian(backend, circuit, values, obs)
    assert len(backend.batches) > 1
    assert max(backend.batches) <= 7
    np.testing.assert_allclose(jac, reference, atol=1e-12)


async def test_remote_backend_gets_concurrent_jobs(simulator: Any) -> None:
    circuit, values = CASES[2]
    obs = _observables(circuit.num_qubits)
    reference = await QuantumGradientComputer().jacobian(simulator, circuit, values, obs)
    remote = RemoteLike(simulator)
    jac = await QuantumGradientComputer().jacobian(remote, circuit, values, obs)
    np.testing.assert_allclose(jac, reference, atol=1e-12)
    assert remote.peak > 1
    limited = RemoteLike(simulator)
    await QuantumGradientComputer(max_concurrency=2).jacobian(limited, circuit, values, obs)
    assert limited.peak == 2


# ----------------------------------------------------------------- stochastic modes
async def test_parameter_shift_with_shots_is_within_statistical_bounds(simulator: Any) -> None:
    circuit, values = CASES[1]
    obs = [Observable.pauli("Z" * circuit.num_qubits)]
    shots = 20000
    exact = await QuantumGradientComputer("adjoint").jacobian(simulator, circuit, values, obs)
    grad = QuantumGradientComputer()
    first = await grad.jacobian(simulator, circuit, values, obs, shots=shots, seed=11)
    again = await grad.jacobian(simulator, circuit, values, obs, shots=shots, seed=11)
    np.testing.assert_array_equal(first, again)  # seeded: reproducible
    # Each shifted expectation has standard deviation <= 1/sqrt(shots); a parameter's
    # estimate sums coeff_k * c_r * f over occurrences k and shift terms r.
    sigma_f = 1 / np.sqrt(shots)
    bound = np.zeros(circuit.num_parameters)
    index = {p.name: i for i, p in enumerate(circuit.parameters)}
    for inst in circuit.instructions:
        for a in inst.angles:
            if a.parameter is not None:
                bound[index[a.parameter.name]] += a.coeff**2 * 0.5  # sum of c_r² <= 1/2
    sigma = sigma_f * np.sqrt(bound)
    assert np.all(np.abs(first - exact) <= 5 * sigma + 1e-12)
    assert np.any(first != exact)


async def test_spsa_is_unbiased_on_average(simulator: Any) -> None:
    circuit, values = CASES[0]
    obs = _observables(circuit.num_qubits)
    exact = await QuantumGradientComputer("adjoint").jacobian(simulator, circuit, values, obs)
    samples = 4000
    spsa = QuantumGradientComputer("spsa", n_samples=samples, step=1e-3)
    estimate = await spsa.jacobian(simulator, circuit, values, obs, seed=3)
    # Per sample, component i is g_i + sum_{j != i} g_j d_j d_i: variance |g|² - g_i².
    spread = np.sqrt(np.sum(exact**2, axis=-1, keepdims=True) - exact**2) / np.sqrt(samples)
    assert np.all(np.abs(estimate - exact) <= 5 * spread + 1e-6)
    single = QuantumGradientComputer("spsa", n_samples=1)
    one = await single.jacobian(simulator, circuit, values, obs, seed=3)
    np.testing.assert_array_equal(
        one, await single.jacobian(simulator, circuit, values, obs, seed=3)
    )


# ----------------------------------------------------------------- bad input
def test_unknown_method() -> None:
    with pytest.raises(GradientMethodError, match="unknown gradient method"):
        QuantumGradientComputer("backprop")
    assert issubclass(GradientMethodError, QuantumDBError)


async def test_adjoint_refuses_shots_and_other_backends(simulator: Any) -> None:
    circuit, values = CASES[0]
    obs = _observables(circuit.num_qubits)
    adjoint = QuantumGradientComputer("adjoint")
    with pytest.raises(GradientMethodError, match="takes no shots"):
        await adjoint.jacobian(simulator, circuit, values, obs, shots=100)
    with pytest.raises(GradientMethodError, match="SimulatorBackend"):
        await adjoint.jacobian(RemoteLike(simulator), circuit, values, obs)


async def test_wrong_parameter_values(simulator: Any) -> None:
    circuit, values = CASES[0]
    obs = _observables(circuit.num_qubits)
    grad = QuantumGradientComputer()
    with pytest.raises(ParameterCountError):
        await grad.jacobian(simulator, circuit, values[:, :-1], obs)
    with pytest.raises(ParameterValueError):
        await grad.jacobian(simulator, circuit, values[None], obs)
    with pytest.raises(ParameterValueError):
        await grad.jacobian(simulator, circuit, np.full_like(values, np.nan), obs)
    with pytest.raises(ParameterValueError, match="wrt"):
        await grad.jacobian(simulator, circuit, values, obs, wrt=[circuit.num_parameters])


# ---------------------------------------------------------------- the evaluation plan
class _CountingPricedSimulator(SimulatorBackend):
    """The simulator at $0.01 per binding, with a small max batch; it counts what it runs."""

    def __init__(self) -> None:
        super().__init__()
        self.runs: list[int] = []

    @property
    def capabilities(self) -> Capabilities:
        return dataclasses.replace(super().capabilities, max_batch=7)

    def estimate_cost(self, circuit: Circuit, shots: int | None) -> float:
        return 0.01

    async def _execute(self, request: RunRequest) -> RunResult:
        self.runs.append(request.batch_size)
        return await super()._execute(request)


@pytest.mark.parametrize("method", ["parameter-shift", "finite-diff", "spsa", "adjoint"])
async def test_the_plan_says_what_a_gradient_sends_and_what_it_costs(method: str) -> None:
    from backends.templates import hardware_efficient_circuit

    circuit = hardware_efficient_circuit(2, 1)
    values = np.random.default_rng(3).uniform(0, 1, (3, circuit.num_parameters))
    wrt = [i for i, p in enumerate(circuit.parameters) if p.kind == "weight"][:4]
    backend = _CountingPricedSimulator()
    computer = QuantumGradientComputer(method, n_samples=2)
    plan = computer.plan(backend, circuit, len(values), wrt=wrt)
    await computer.value_and_jacobian(backend, circuit, values, ["ZI", "IZ"], wrt=wrt, seed=1)
    cost = plan.cost(backend, ["ZI", "IZ"], None)
    if method == "adjoint":
        # No run: the simulator differentiates the bindings directly, one (priced) job.
        assert backend.runs == [] and (plan.rows, plan.runs) == (3, 1)
        assert cost == pytest.approx(0.03)
        return
    assert plan.rows == sum(backend.runs) and plan.runs == len(backend.runs) > 1
    assert all(rows <= plan.chunk for rows in backend.runs)
    assert cost == pytest.approx(0.01 * sum(backend.runs))
    expected_rows = {
        "parameter-shift": 3 * (1 + 2 * 4),  # each weight appears once: two shifts each
        "finite-diff": 3 * (1 + 2 * 4),
        "spsa": 3 * (1 + 2 * 2),
    }[method]
    assert sum(backend.runs) == expected_rows
