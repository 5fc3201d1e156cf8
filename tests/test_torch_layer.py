"""Tests of the PyTorch quantum layer: gradients, training, state, and the sync/async bridge."""

from __future__ import annotations

import asyncio
import copy
import pickle
from collections.abc import Iterator

import numpy as np
import pytest
import torch

from backends.errors import QuantumDBError
from backends.simulator import SimulatorBackend
from backends.templates import hardware_efficient_circuit, z_observables
from quantum_ml.torch_layer import TorchLayerError, TorchQuantumLayer

OBS2 = ["IZ", "XX"]


@pytest.fixture
def layer() -> Iterator[TorchQuantumLayer]:
    q = TorchQuantumLayer(hardware_efficient_circuit(2, 1), SimulatorBackend(), OBS2, weights=7)
    yield q
    q.close()


def _inputs(seed: int = 0, batch: int = 2, width: int = 2) -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed)
    return torch.rand(batch, width, dtype=torch.float64, generator=gen)


def test_defaults_and_shapes(layer: TorchQuantumLayer) -> None:
    assert layer.gradient.method == "adjoint"
    assert (layer.num_inputs, layer.num_weights, layer.num_outputs) == (2, 6, 2)
    assert isinstance(layer.weights, torch.nn.Parameter)
    assert layer.weights.shape == (6,)
    assert layer(_inputs()).shape == (2, 2)
    assert layer(_inputs()[0]).shape == (2,)
    shots_layer = TorchQuantumLayer(
        hardware_efficient_circuit(2, 1), SimulatorBackend(), OBS2, shots=100, seed=1
    )
    assert shots_layer.gradient.method == "parameter-shift"


def test_gradcheck_inputs_and_weights(layer: TorchQuantumLayer) -> None:
    x = _inputs().requires_grad_(True)
    assert torch.autograd.gradcheck(lambda x, w: layer(x), (x, layer.weights))


async def test_forward_matches_backend_run(layer: TorchQuantumLayer) -> None:
    x = _inputs(3)
    out = layer(x)  # sync forward from inside a running event loop
    values = np.concatenate([x.numpy(), np.repeat(layer.weights.detach().numpy()[None], 2, 0)], 1)
    result = await SimulatorBackend().run(layer.circuit, values, OBS2)
    assert result.expectations is not None
    np.testing.assert_allclose(out.detach().numpy(), result.expectations, rtol=0, atol=1e-12)


def test_backward_matches_finite_differences(layer: TorchQuantumLayer) -> None:
    x = _inputs(5).requires_grad_(True)
    c = torch.tensor([[0.3, -1.2], [0.7, 0.4]], dtype=torch.float64)
    (layer(x) * c).sum().backward()
    assert x.grad is not None and layer.weights.grad is not None
    analytic = torch.cat([x.grad.flatten(), layer.weights.grad])

    h = 1e-6
    flat = torch.cat([x.detach().flatten(), layer.weights.detach()])
    w0 = layer.weights.detach().clone()

    def loss(v: torch.Tensor) -> float:
        with torch.no_grad():
            layer.weights.copy_(v[4:])
            return float((layer(v[:4].reshape(2, 2)) * c).sum())

    numeric = torch.zeros_like(flat)
    for i in range(flat.numel()):
        e = torch.zeros_like(flat)
        e[i] = h
        numeric[i] = (loss(flat + e) - loss(flat - e)) / (2 * h)
    with torch.no_grad():
        layer.weights.copy_(w0)
    torch.testing.assert_close(analytic, numeric, rtol=0, atol=1e-6)


def test_parameter_shift_equals_adjoint() -> None:
    circuit = hardware_efficient_circuit(3, 1)
    obs = z_observables(3)[:2]
    grads = []
    for method in ("adjoint", "parameter-shift"):
        q = TorchQuantumLayer(circuit, SimulatorBackend(), obs, weights=11, gradient_method=method)
        x = _inputs(2, width=3).requires_grad_(True)
        (q(x) ** 2).sum().backward()
        assert x.grad is not None and q.weights.grad is not None
        grads.append(torch.cat([x.grad.flatten(), q.weights.grad]))
        q.close()
    torch.testing.assert_close(grads[0], grads[1], rtol=0, atol=1e-9)


def test_float32_inputs_give_float32_outputs(layer: TorchQuantumLayer) -> None:
    x = _inputs().float().requires_grad_(True)
    out = layer(x)
    assert out.dtype == torch.float32
    out.sum().backward()
    assert x.grad is not None and x.grad.dtype == torch.float32
    assert layer.weights.grad is not None and layer.weights.grad.dtype == torch.float64


def _model(seed: int) -> torch.nn.Sequential:
    torch.manual_seed(seed)
    quantum = TorchQuantumLayer(
        hardware_efficient_circuit(3, 2), SimulatorBackend(), z_observables(3), weights=seed
    )
    return torch.nn.Sequential(
        torch.nn.Linear(4, 3), torch.nn.Tanh(), quantum, torch.nn.Linear(3, 2)
    )


def _close(model: torch.nn.Sequential) -> None:
    for m in model:
        if isinstance(m, TorchQuantumLayer):
            m.close()


def test_hybrid_training_and_state_dict_round_trip() -> None:
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(32, 4, generator=gen)
    y = (x @ torch.tensor([1.0, -1.0, 0.5, 0.0]) > 0).long()

    model = _model(1)
    opt = torch.optim.Adam(model.parameters(), lr=0.1)
    loss_fn = torch.nn.CrossEntropyLoss()
    losses = []
    for _ in range(30):
        opt.zero_grad()
        loss = loss_fn(model(x), y)
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < 0.7 * losses[0], losses

    state = model.state_dict()
    assert {k for k in state if k.startswith("2.")} == {"2.weights"}
    fresh = _model(2)
    with torch.no_grad():
        assert not torch.equal(fresh(x), model(x))
    fresh.load_state_dict(state)
    with torch.no_grad():
        torch.testing.assert_close(fresh(x), model(x), rtol=0, atol=0)
    _close(model)
    _close(fresh)


def test_pickle_and_deepcopy_drop_the_portal(layer: TorchQuantumLayer) -> None:
    x = _inputs()
    with torch.no_grad():
        expected = layer(x)
    for clone in (pickle.loads(pickle.dumps(layer)), copy.deepcopy(layer)):
        assert clone._portal is None
        with torch.no_grad():
            torch.testing.assert_close(clone(x), expected, rtol=0, atol=0)
        clone.close()


def test_close_and_reuse(layer: TorchQuantumLayer) -> None:
    x = _inputs()
    with torch.no_grad():
        first = layer(x)
        layer.close()
        layer.close()  # idempotent
        torch.testing.assert_close(layer(x), first, rtol=0, atol=0)


async def test_concurrent_loop_stays_usable(layer: TorchQuantumLayer) -> None:
    out = await asyncio.to_thread(layer, _inputs())
    assert out.shape == (2, 2)
    assert layer(_inputs()).shape == (2, 2)


@pytest.mark.parametrize("shape", [(2, 3), (2, 1), (2, 2, 2), (0, 2)])
def test_bad_input_shape_raises(layer: TorchQuantumLayer, shape: tuple[int, ...]) -> None:
    with pytest.raises(TorchLayerError, match="inputs"):
        layer(torch.zeros(shape, dtype=torch.float64))


def test_bad_arguments_raise(layer: TorchQuantumLayer) -> None:
    assert issubclass(TorchLayerError, QuantumDBError)
    assert issubclass(TorchLayerError, ValueError)
    with pytest.raises(TorchLayerError, match="floating-point"):
        layer(torch.zeros(2, 2, dtype=torch.int64))
    with pytest.raises(TorchLayerError, match="6 weight parameters"):
        TorchQuantumLayer(
            hardware_efficient_circuit(2, 1), SimulatorBackend(), OBS2, weights=torch.zeros(5)
        )
