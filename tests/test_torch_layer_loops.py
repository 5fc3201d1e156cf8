"""How TorchQuantumLayer drives its backend: in the calling thread on the simulator, on
the portal thread from inside a running loop or for other backends."""

from __future__ import annotations

import asyncio
import gc
import threading
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import torch

from backends.aer import QiskitBackend
from backends.simulator import SimulatorBackend
from backends.templates import hardware_efficient_circuit, z_observables
from quantum_ml.torch_layer import TorchQuantumLayer


def _inputs(seed: int, batch: int = 3) -> torch.Tensor:
    return torch.rand(batch, 3, dtype=torch.float64, generator=torch.Generator().manual_seed(seed))


def _layer() -> TorchQuantumLayer:
    return TorchQuantumLayer(
        hardware_efficient_circuit(3, 2), SimulatorBackend(), z_observables(3), weights=5
    )


def _portal_threads() -> int:
    return sum(t.name == "TorchQuantumLayer-portal" for t in threading.enumerate())


async def _expected(layer: TorchQuantumLayer, x: torch.Tensor) -> np.ndarray:
    w = layer.weights.detach().numpy()
    values = np.hstack([x.numpy(), np.repeat(w[None], len(x), axis=0)])
    result = await SimulatorBackend().run(layer.circuit, values, z_observables(3))
    assert result.expectations is not None
    return np.asarray(result.expectations)


def test_simulator_forward_from_plain_code_needs_no_portal_thread() -> None:
    layer = _layer()
    before = _portal_threads()
    x = _inputs(0).requires_grad_(True)
    out = layer(x)
    out.sum().backward()
    assert layer._portal is None
    assert _portal_threads() == before
    assert x.grad is not None and layer.weights.grad is not None
    np.testing.assert_allclose(
        out.detach().numpy(), asyncio.run(_expected(layer, x.detach())), rtol=0, atol=1e-12
    )
    layer.close()


async def test_inside_a_running_loop_the_portal_gives_the_same_numbers() -> None:
    layer = _layer()
    x = _inputs(1)
    with torch.no_grad():
        here = layer(x)  # a running loop in this thread: the portal thread runs it
    assert layer._portal is not None
    with torch.no_grad():
        in_thread = await asyncio.to_thread(layer, x)  # no loop there: driven in that thread
    torch.testing.assert_close(here, in_thread, rtol=0, atol=0)
    np.testing.assert_allclose(here.numpy(), await _expected(layer, x), rtol=0, atol=1e-12)
    layer.close()


def test_each_calling_thread_gets_its_own_loop_and_close_closes_them() -> None:
    layer = _layer()
    xs = [_inputs(seed) for seed in range(8)]
    with torch.no_grad():
        sequential = [layer(x) for x in xs]
        with ThreadPoolExecutor(4) as pool:
            concurrent = list(pool.map(layer, xs))
    for a, b in zip(sequential, concurrent, strict=True):
        torch.testing.assert_close(a, b, rtol=0, atol=0)
    loops = list(layer._thread_loops._loops)
    assert 2 <= len(loops) <= 5  # this thread's and one per pool thread that took work
    layer.close()
    assert all(loop.is_closed() for loop in loops)
    with torch.no_grad():  # usable again: a new loop
        torch.testing.assert_close(layer(xs[0]), sequential[0], rtol=0, atol=0)
    layer.close()


def test_a_collected_layer_closes_its_loops() -> None:
    layer = _layer()
    with torch.no_grad():
        layer(_inputs(2))
    (loop,) = layer._thread_loops._loops
    del layer
    gc.collect()
    assert loop.is_closed()


def test_other_backends_keep_the_portal() -> None:
    layer = TorchQuantumLayer(
        hardware_efficient_circuit(2, 1), QiskitBackend(), z_observables(2), weights=3
    )
    with torch.no_grad():
        out = layer(_inputs(3)[:, :2])
    assert out.shape == (3, 2)
    assert layer._portal is not None
    assert not layer._thread_loops._loops
    layer.close()
