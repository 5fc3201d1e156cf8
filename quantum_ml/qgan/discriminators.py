"""Discriminators: the 50-20-1 MLP of Zoufal et al., or a quantum one."""

from __future__ import annotations

import itertools
from collections.abc import Sequence

from backends.errors import MissingDependencyError

try:
    import torch
except ImportError as exc:  # the QGAN trains torch networks: say how to get torch
    raise MissingDependencyError(
        f"{__name__} needs PyTorch ({exc}): pip install 'quantum-db[torch]'"
    ) from exc

from backends.base import Backend

from ..errors import DiscriminatorError
from ..models import QuantumModel
from ..torch_layer import TorchQuantumLayer
from ..training.torch_task import _input_width

__all__ = ["QuantumDiscriminator", "input_width", "mlp_discriminator"]


def mlp_discriminator(
    input_dim: int,
    hidden: Sequence[int] = (50, 20),
    *,
    negative_slope: float = 0.2,
    sigmoid: bool = True,
    seed: int | None = None,
) -> torch.nn.Sequential:
    """``Linear - LeakyReLU - ... - Linear(1)`` and a ``Sigmoid`` (``sigmoid=False``: a
    WGAN critic), float32 like any ``nn`` layer.

    Initial weights come from torch's global generator, or with ``seed`` from a generator
    of their own (the global one is left as it was).
    """
    if isinstance(input_dim, bool) or not isinstance(input_dim, int) or input_dim < 1:
        raise DiscriminatorError(f"input_dim must be an integer >= 1, got {input_dim!r}")
    sizes = [input_dim, *hidden]
    if any(isinstance(h, bool) or not isinstance(h, int) or h < 1 for h in sizes[1:]):
        raise DiscriminatorError(f"hidden layer sizes must be integers >= 1, got {hidden!r}")
    if seed is not None and (isinstance(seed, bool) or not isinstance(seed, int)):
        raise DiscriminatorError(f"seed must be an integer or None, got {seed!r}")

    def build() -> torch.nn.Sequential:
        layers: list[torch.nn.Module] = []
        for a, b in itertools.pairwise(sizes):
            layers += [torch.nn.Linear(a, b), torch.nn.LeakyReLU(negative_slope)]
        layers.append(torch.nn.Linear(sizes[-1], 1))
        if sigmoid:
            layers.append(torch.nn.Sigmoid())
        return torch.nn.Sequential(*layers)

    if seed is None:
        return build()
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return build()


class QuantumDiscriminator(torch.nn.Module):
    """A quantum layer whose outputs a linear readout and a sigmoid turn into one
    probability per sample, ``[B, 1]`` in float64 (``sigmoid=False``: a critic's score).

    ``model_or_layer`` is a :class:`TorchQuantumLayer` (its inputs take the samples), or an
    angle-encoded :class:`QuantumModel` without a head, which is run as a layer on
    ``backend`` (default: a fresh :class:`SimulatorBackend`) from its current weights.
    """

    def __init__(
        self,
        model_or_layer: TorchQuantumLayer | QuantumModel,
        *,
        backend: Backend | None = None,
        sigmoid: bool = True,
    ) -> None:
        super().__init__()
        if isinstance(model_or_layer, QuantumModel):
            model = model_or_layer
            if model.encoding != "angle" or model.head_weight is not None:
                raise DiscriminatorError(
                    "a QuantumDiscriminator takes an angle-encoded QuantumModel without a task "
                    "head (the readout here is its head)"
                )
            if backend is None:
                from backends.simulator import SimulatorBackend

                backend = SimulatorBackend()
            layer = TorchQuantumLayer(
                model.circuit,
                backend,
                model.observables,
                weights=torch.tensor(model.weights, dtype=torch.float64),
            )
        elif isinstance(model_or_layer, TorchQuantumLayer):
            if backend is not None:
                raise DiscriminatorError("a TorchQuantumLayer runs on its own backend")
            layer = model_or_layer
        else:
            raise DiscriminatorError(
                "a QuantumDiscriminator wraps a TorchQuantumLayer or a QuantumModel, got "
                f"{type(model_or_layer).__name__}"
            )
        if layer.num_inputs < 1:
            raise DiscriminatorError("the quantum layer has no input parameters for the samples")
        self.layer = layer
        self.readout = torch.nn.Linear(layer.num_outputs, 1, dtype=torch.float64)
        self.sigmoid = sigmoid

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out: torch.Tensor = self.readout(self.layer(x.to(torch.float64)))
        return torch.sigmoid(out) if self.sigmoid else out


def input_width(module: torch.nn.Module) -> int | None:
    """The sample width a discriminator takes, where its first layer says so (the inputs
    of a quantum layer, a linear layer's ``in_features``); ``None`` when nothing says."""
    return _input_width(module)
