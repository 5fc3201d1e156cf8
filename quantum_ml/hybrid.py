"""A hybrid classifier factory: Linear -> variational circuit -> Linear, seeded, registrable."""

from __future__ import annotations

import math

from backends.errors import MissingDependencyError

try:
    import torch
except ImportError as exc:  # the module is part of the torch bridge: say how to get torch
    raise MissingDependencyError(
        f"{__name__} needs PyTorch ({exc}): pip install 'quantum-db[torch]'"
    ) from exc

from backends.simulator import SimulatorBackend

from .errors import ModelError
from .models import QuantumModel
from .torch_layer import TorchQuantumLayer
from .torch_models import torch_factory

__all__ = ["hybrid_classifier"]

#: Seeds must suit ``numpy.random.default_rng`` and ``torch.Generator.manual_seed`` alike.
_MAX_SEED = 2**63 - 1


def _count(value: object, what: str, minimum: int, maximum: int | None = None) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise ModelError(f"{what} must be an integer, got {value!r}")
    if value < minimum or (maximum is not None and value > maximum):
        bound = f">= {minimum}" if maximum is None else f"in [{minimum}, {maximum}]"
        raise ModelError(f"{what} must be {bound}, got {value}")
    return value


def _seeded_linear(n_in: int, n_out: int, generator: torch.Generator) -> torch.nn.Linear:
    """A float32 ``Linear`` drawn from ``generator``, in PyTorch's default ranges.

    Made on the meta device first (as ``torch.nn.utils.skip_init`` does), so that its
    default initialisation draws nothing from torch's global generator.
    """
    layer = torch.nn.Linear(n_in, n_out, device="meta", dtype=torch.float32).to_empty(device="cpu")
    bound = 1.0 / math.sqrt(n_in)
    with torch.no_grad():
        layer.weight.uniform_(-bound, bound, generator=generator)
        layer.bias.uniform_(-bound, bound, generator=generator)
    return layer


@torch_factory
def hybrid_classifier(
    n_features: int,
    n_qubits: int = 4,
    layers: int = 3,
    n_outputs: int = 2,
    seed: int = 0,
) -> torch.nn.Sequential:
    """``Sequential(Linear(n_features, n_qubits), TorchQuantumLayer, Linear(n_qubits, n_outputs))``.

    With ``n = n_qubits``, ``L = layers`` and a sample ``f`` (float32, ``[n_features]``):

    1. ``x = W1 @ f + b1`` (module ``"0"``, float32, ``[n]``).
    2. Module ``"1"``: the circuit of ``QuantumModel(n, L).circuit`` on ``n`` qubits from
       ``|0…0>``: ``RY(x[q])`` on each qubit ``q`` (the ``"input"`` parameters
       ``x0..x{n-1}``); then ``L`` times: on each qubit ``q = 0..n-1`` in turn
       ``RX(w[k])``, ``RY(w[k+1])``, ``RZ(w[k+2])`` with ``k = 3 * (l * n + q)``, then
       ``CX(0, 1), CX(1, 2), …, CX(n-2, n-1)`` (control, target). ``R_P(t) =
       exp(-i t P / 2)``. The outputs are ``<Z_q>`` for ``q = 0..n-1`` (output ``q`` is
       qubit ``q``; as Pauli strings qubit 0 is the rightmost letter). ``w`` is the
       float64 parameter ``"1.weights"`` of ``3 * L * n`` entries. Computed exactly on
       ``SimulatorBackend()``, gradients by the adjoint method.
    3. ``logits = W2 @ z + b2`` (module ``"2"``, float32, ``[n_outputs]``).

    Initial values, all from ``seed`` (torch's global generator is not touched):
    ``w = numpy.random.default_rng(seed).uniform(0, 2π, 3 * L * n)`` (which is
    ``QuantumModel(n, L, seed=seed).weights``); ``W1, b1, W2, b2`` in that order from
    ``torch.Generator().manual_seed(seed)``, each ``U(-1/sqrt(fan_in), 1/sqrt(fan_in))``.

    The module records this factory and its arguments, so ``db.models.register(name,
    TorchModel(net))`` stores it without naming the factory.
    """
    _count(n_features, "n_features", 1)
    _count(layers, "layers", 1)
    _count(n_outputs, "n_outputs", 1)
    _count(seed, "seed", 0, _MAX_SEED)
    backend = SimulatorBackend()
    _count(n_qubits, "n_qubits", 1, backend.capabilities.max_qubits)
    generator = torch.Generator().manual_seed(seed)
    encoder = _seeded_linear(n_features, n_qubits, generator)
    circuit_model = QuantumModel(n_qubits, layers, seed=seed)
    quantum = TorchQuantumLayer(
        circuit_model.circuit,
        backend,
        circuit_model.observables,
        weights=torch.from_numpy(circuit_model.weights),
    )
    head = _seeded_linear(n_qubits, n_outputs, generator)
    return torch.nn.Sequential(encoder, quantum, head)
