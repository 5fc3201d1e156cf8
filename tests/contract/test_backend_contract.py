"""The backend contract, run against every backend in ``BACKEND_FACTORIES``.

Expected values are closed forms, so each backend is checked against mathematics rather
than against another backend's output.
"""

from __future__ import annotations

import math

import numpy as np
import pytest

from backends import (
    Backend,
    BackendError,
    Capabilities,
    Circuit,
    NonFiniteParameterError,
    ObservableError,
    Parameter,
    ParameterCountError,
    ShotsError,
    TooManyQubitsError,
)


def bell() -> Circuit:
    return Circuit(2).h(0).cx(0, 1)


def ry_circuit() -> Circuit:
    theta = Parameter("theta")
    return Circuit(1).ry(theta, 0)


async def test_capabilities_are_frozen_data(backend: Backend) -> None:
    caps = backend.capabilities
    assert isinstance(caps, Capabilities)
    assert caps.max_qubits >= 2
    assert caps.supports_exact or caps.supports_shots
    with pytest.raises(AttributeError):
        caps.max_qubits = 1  # type: ignore[misc]


async def test_bell_expectations_match_closed_form(backend: Backend, exact_tol: float) -> None:
    result = await backend.run(bell(), observables=["ZZ", "XX", "YY", "ZI", "IZ"])
    assert result.expectations is not None
    assert result.expectations.shape == (1, 5)
    np.testing.assert_allclose(result.expectations[0], [1, 1, -1, 0, 0], atol=exact_tol)


async def test_batched_rotation_matches_cosine(backend: Backend, exact_tol: float) -> None:
    thetas = np.linspace(-math.pi, math.pi, 17)
    result = await backend.run(ry_circuit(), thetas[:, None], observables=["Z", "X"])
    assert result.expectations is not None
    assert result.expectations.shape == (17, 2)
    np.testing.assert_allclose(result.expectations[:, 0], np.cos(thetas), atol=exact_tol)
    np.testing.assert_allclose(result.expectations[:, 1], np.sin(thetas), atol=exact_tol)


async def test_weighted_observable(backend: Backend, exact_tol: float) -> None:
    from backends import Observable

    obs = Observable([("ZZ", 0.5), ("XX", -2.0), ("II", 0.25)])
    result = await backend.run(bell(), observables=[obs])
    assert result.expectations is not None
    np.testing.assert_allclose(result.expectations, [[0.5 - 2.0 + 0.25]], atol=exact_tol)


async def test_counts_per_binding(backend: Backend) -> None:
    circuit = Circuit(3).x(0).ry(Parameter("t"), 2).measure_all()
    result = await backend.run(circuit, [[0.0], [math.pi]], shots=200, seed=5)
    assert result.counts is not None
    assert len(result.counts) == 2
    assert result.counts[0] == {"001": 200}  # qubit 0 is the rightmost bit
    assert result.counts[1] == {"101": 200}


async def test_counts_are_seeded(backend: Backend) -> None:
    circuit = bell().copy().measure_all()
    a = await backend.run(circuit, shots=500, seed=3)
    b = await backend.run(circuit, shots=500, seed=3)
    assert a.counts == b.counts
    assert a.counts is not None
    assert set(a.counts[0]) <= {"00", "11"}
    assert sum(a.counts[0].values()) == 500


async def test_unmeasured_circuit_is_measured_on_all_qubits(backend: Backend) -> None:
    result = await backend.run(Circuit(2).x(1), shots=10, seed=1)
    assert result.counts == [{"10": 10}]


async def test_shot_estimated_expectations(backend: Backend) -> None:
    thetas = np.array([[0.3], [2.0]])
    shots = 4000
    result = await backend.run(ry_circuit(), thetas, observables=["Z"], shots=shots, seed=9)
    assert result.expectations is not None
    exact = np.cos(thetas[:, 0])
    sigma = np.sqrt((1 - exact**2) / shots)
    assert np.all(np.abs(result.expectations[:, 0] - exact) < 5 * sigma + 1e-12)


async def test_cost_estimate_is_non_negative(backend: Backend) -> None:
    assert backend.estimate_cost(bell(), 100) >= 0.0


@pytest.mark.parametrize(
    ("values", "error"),
    [
        ([[0.1, 0.2]], ParameterCountError),
        ([[float("nan")]], NonFiniteParameterError),
        ([[float("inf")]], NonFiniteParameterError),
        (None, ParameterCountError),
    ],
)
async def test_bad_parameter_values(
    backend: Backend, values: object, error: type[Exception]
) -> None:
    with pytest.raises(error):
        await backend.run(ry_circuit(), values, observables=["Z"])  # type: ignore[arg-type]


@pytest.mark.parametrize("label", ["ZZZ", "Z", "ZQ", "zz", ""])
async def test_bad_observables(backend: Backend, label: str) -> None:
    with pytest.raises(ObservableError):
        await backend.run(bell(), observables=[label])


@pytest.mark.parametrize("shots", [0, -5, 1.5, True])
async def test_bad_shots(backend: Backend, shots: object) -> None:
    with pytest.raises(ShotsError):
        await backend.run(bell(), shots=shots)  # type: ignore[arg-type]


async def test_neither_observables_nor_shots(backend: Backend) -> None:
    with pytest.raises(ShotsError):
        await backend.run(bell())


async def test_too_many_qubits(backend: Backend) -> None:
    wide = Circuit(backend.capabilities.max_qubits + 1).h(0)
    with pytest.raises(TooManyQubitsError):
        await backend.run(wide, observables=["Z" + "I" * backend.capabilities.max_qubits])


async def test_errors_share_the_root(backend: Backend) -> None:
    with pytest.raises(BackendError):
        await backend.run(bell(), observables=["ZZZ"])


async def test_parameterized_controlled_rotation(backend: Backend, exact_tol: float) -> None:
    """<Z_1> after H(0), CRY(θ)(0 -> 1) is (1 + cos θ) / 2; with X(0) first it is cos θ."""
    theta = Parameter("theta")
    thetas = np.array([[0.3], [1.7], [-2.4]])
    plus = Circuit(2).h(0).cry(theta, 0, 1)
    one = Circuit(2).x(0).crx(2 * theta + 0.5, 0, 1).crz(theta, 0, 1)
    a = await backend.run(plus, thetas, observables=["ZI"])
    b = await backend.run(one, thetas, observables=["ZI", "ZZ"])
    assert a.expectations is not None and b.expectations is not None
    t = thetas[:, 0]
    np.testing.assert_allclose(a.expectations[:, 0], (1 + np.cos(t)) / 2, atol=exact_tol)
    # CRZ on the target leaves <Z> alone; with the control in |1>, <ZZ> = -<Z_1>.
    np.testing.assert_allclose(b.expectations[:, 0], np.cos(2 * t + 0.5), atol=exact_tol)
    np.testing.assert_allclose(b.expectations[:, 1], -np.cos(2 * t + 0.5), atol=exact_tol)
