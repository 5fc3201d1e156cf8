"""Optimizers against torch.optim's implementations, and exact resume from a checkpoint."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from quantum_db.serialization import pack_state, unpack_state
from quantum_ml.optimizers import SGD, SPSA, Adam, Optimizer, OptimizerError, optimizer_from_state


def gradients(seed: int, steps: int, size: int) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    return [rng.normal(size=size) for _ in range(steps)]


@pytest.mark.parametrize(
    ("ours", "theirs"),
    [
        (lambda: SGD(lr=0.1), lambda p: torch.optim.SGD([p], lr=0.1)),
        (lambda: SGD(lr=0.05, momentum=0.9), lambda p: torch.optim.SGD([p], lr=0.05, momentum=0.9)),
        (
            lambda: SGD(lr=0.05, momentum=0.8, nesterov=True),
            lambda p: torch.optim.SGD([p], lr=0.05, momentum=0.8, nesterov=True),
        ),
        (lambda: Adam(lr=0.01), lambda p: torch.optim.Adam([p], lr=0.01)),
        (
            lambda: Adam(lr=0.003, betas=(0.8, 0.99), eps=1e-6),
            lambda p: torch.optim.Adam([p], lr=0.003, betas=(0.8, 0.99), eps=1e-6),
        ),
    ],
)
def test_matches_torch_optim(ours, theirs) -> None:  # type: ignore[no-untyped-def]
    start = np.random.default_rng(0).normal(size=7)
    opt: Optimizer = ours()
    params = start.copy()
    p = torch.tensor(start.copy(), dtype=torch.float64, requires_grad=True)
    reference = theirs(p)
    for grad in gradients(1, 50, 7):
        params = opt.step(params, grad)
        p.grad = torch.tensor(grad, dtype=torch.float64)
        reference.step()
    np.testing.assert_allclose(params, p.detach().numpy(), rtol=1e-12, atol=1e-14)


@pytest.mark.parametrize(
    "make", [lambda: SGD(lr=0.1, momentum=0.9), lambda: Adam(lr=0.02), lambda: SPSA(lr=0.3)]
)
def test_resume_from_a_checkpointed_state_is_bitwise_exact(make) -> None:  # type: ignore[no-untyped-def]
    grads = gradients(2, 40, 5)
    uninterrupted = make()
    params = np.zeros(5)
    for g in grads:
        params = uninterrupted.step(params, g)

    first = make()
    resumed_params = np.zeros(5)
    for g in grads[:17]:
        resumed_params = first.step(resumed_params, g)
    blob = pack_state({"optimizer": first.state_dict(), "params": resumed_params})
    restored = unpack_state(blob)
    second = optimizer_from_state(restored["optimizer"])
    resumed_params = restored["params"]
    for g in grads[17:]:
        resumed_params = second.step(resumed_params, g)
    assert np.array_equal(resumed_params, params)  # bit for bit
    assert second.steps == 40


def test_spsa_gains_follow_spall_and_minimize_a_quadratic() -> None:
    opt = SPSA(lr=0.5, c=0.2, alpha=0.602, gamma=0.101, stability=2.0)
    assert opt.gain() == pytest.approx(0.5 / 3.0**0.602)
    assert opt.perturbation() == pytest.approx(0.2)
    target = np.array([1.0, -2.0, 0.5])
    rng = np.random.default_rng(4)
    x = np.zeros(3)
    for _ in range(400):
        c = opt.perturbation()
        delta = rng.choice([-1.0, 1.0], size=3)
        f = lambda v: float(np.sum((v - target) ** 2))  # noqa: E731
        estimate = (f(x + c * delta) - f(x - c * delta)) / (2 * c) * delta
        x = opt.step(x, estimate)
    assert np.allclose(x, target, atol=0.05)
    assert opt.perturbation() == pytest.approx(0.2 / 401**0.101)


@pytest.mark.parametrize(
    "build",
    [
        lambda: SGD(lr=0),
        lambda: SGD(lr=-1),
        lambda: SGD(momentum=-0.1),
        lambda: SGD(nesterov=True),
        lambda: Adam(betas=(1.0, 0.9)),
        lambda: Adam(eps=0),
        lambda: SPSA(c=float("nan")),
    ],
)
def test_bad_settings(build) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(OptimizerError):
        build()


def test_bad_steps_change_nothing() -> None:
    opt = Adam(lr=0.1)
    params = np.ones(3)
    params = opt.step(params, np.ones(3))
    before = opt.state_dict()
    with pytest.raises(OptimizerError, match="shape"):
        opt.step(params, np.ones(4))
    with pytest.raises(OptimizerError, match="NaN"):
        opt.step(params, np.array([1.0, np.nan, 0.0]))
    after = opt.state_dict()
    assert after["steps"] == before["steps"] == 1
    np.testing.assert_array_equal(after["m"], before["m"])
    with pytest.raises(OptimizerError):
        SGD().load_state_dict(before)
    with pytest.raises(OptimizerError):
        optimizer_from_state({"kind": "lbfgs"})
