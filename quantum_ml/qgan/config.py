"""The settings of a QuantumGAN run: :class:`GANConfig`."""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from typing import Any, Literal

from ..errors import GANConfigError
from .losses import LOSSES

__all__ = ["GANConfig"]

Update = Literal["alternating", "simultaneous"]


def _positive_int(value: object, name: str, *, minimum: int = 1) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise GANConfigError(f"{name} must be an integer >= {minimum}, got {value!r}")


def _positive(value: object, name: str, *, allow_zero: bool = False) -> None:
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise GANConfigError(f"{name} must be a finite number, got {value!r}")
    if value < 0 or (value == 0 and not allow_zero):
        raise GANConfigError(f"{name} must be {'>= 0' if allow_zero else '> 0'}, got {value!r}")


@dataclass(frozen=True)
class GANConfig:
    """How a :class:`~quantum_ml.qgan.QuantumGAN` trains.

    One *step* is ``d_steps`` discriminator updates then ``g_steps`` generator updates on
    one batch of data (``update="alternating"``), or one update of each from the same
    forward pass (``"simultaneous"``, as the Qiskit Machine Learning torch tutorial does).
    ``batch_size=None`` trains on the whole data distribution every step (one step per
    epoch); otherwise the data is shuffled per epoch (from ``seed`` and the epoch) and each
    batch is a step. ``shots=None`` is exact (simulator); otherwise every generator
    distribution is measured with ``shots`` and its gradient is parameter shift.
    """

    epochs: int = 100
    loss: str = "non-saturating"
    generator_lr: float = 0.01
    discriminator_lr: float = 0.01
    generator_optimizer: str = "adam"
    discriminator_optimizer: str = "adam"
    generator_optimizer_kwargs: Mapping[str, Any] = field(default_factory=dict)
    discriminator_optimizer_kwargs: Mapping[str, Any] = field(default_factory=dict)
    d_steps: int = 1
    g_steps: int = 1
    update: Update = "alternating"
    batch_size: int | None = None
    shots: int | None = None
    seed: int = 0
    gp_weight: float = 10.0
    mmd_bandwidths: tuple[float, ...] | None = None
    gradient_method: str | None = None
    #: A generator parameter with ``|grad|`` above this counts as active (gradient flow).
    grad_threshold: float = 1e-7
    #: Checkpoint every this many epochs (and at the last one, and at every stop).
    checkpoint_every: int = 1
    #: Data outside the generator's bounds: ``"refuse"`` (an error) or ``"clip"``.
    data_policy: Literal["refuse", "clip"] = "refuse"
    budget_usd: float | None = None
    budget_name: str = "qgan"
    progress: bool = False
    #: Weight of the diversity penalty in the generator's loss (0: none).
    diversity_weight: float = 0.0
    #: The epoch metric the best checkpoint follows.
    monitor: str = "relative_entropy"
    monitor_mode: Literal["min", "max"] = "min"
    #: Samples drawn per epoch to measure a latent generator (and for its metrics grid).
    eval_samples: int = 512
    #: Bits per dimension of the grid a latent generator's samples are binned on.
    metric_bits: int = 4
    #: Stop with ``nan_loss`` when a loss is NaN or infinite (before it is applied).
    stop_on_nan: bool = True

    def __post_init__(self) -> None:
        _positive_int(self.epochs, "epochs")
        if self.loss not in LOSSES:
            raise GANConfigError(f"unknown loss {self.loss!r}; choose one of {', '.join(LOSSES)}")
        _positive(self.generator_lr, "generator_lr")
        _positive(self.discriminator_lr, "discriminator_lr")
        _positive_int(self.d_steps, "d_steps (the D:G step ratio)")
        _positive_int(self.g_steps, "g_steps")
        if self.update not in ("alternating", "simultaneous"):
            raise GANConfigError(
                f"update must be 'alternating' or 'simultaneous', got {self.update!r}"
            )
        if self.update == "simultaneous" and (self.d_steps, self.g_steps) != (1, 1):
            raise GANConfigError("update='simultaneous' takes one step of each (d_steps=g_steps=1)")
        if self.batch_size is not None:
            _positive_int(self.batch_size, "batch_size")
        if self.shots is not None:
            _positive_int(self.shots, "shots")
        _positive_int(self.seed, "seed", minimum=0)
        _positive(self.gp_weight, "gp_weight", allow_zero=True)
        if self.mmd_bandwidths is not None:
            if len(self.mmd_bandwidths) == 0:
                raise GANConfigError("mmd_bandwidths must hold at least one bandwidth, or be None")
            for b in self.mmd_bandwidths:
                _positive(b, "an MMD bandwidth")
        if self.gradient_method not in (None, "adjoint", "parameter-shift", "finite-diff"):
            raise GANConfigError(
                f"gradient_method must be None, 'adjoint', 'parameter-shift' or 'finite-diff', "
                f"got {self.gradient_method!r}"
            )
        if self.gradient_method == "adjoint" and self.shots is not None:
            raise GANConfigError("the adjoint gradient is exact: it takes shots=None")
        _positive(self.grad_threshold, "grad_threshold", allow_zero=True)
        _positive_int(self.checkpoint_every, "checkpoint_every")
        if self.data_policy not in ("refuse", "clip"):
            raise GANConfigError(
                f"data_policy must be 'refuse' or 'clip', got {self.data_policy!r}"
            )
        if self.budget_usd is not None:
            _positive(self.budget_usd, "budget_usd")
        _positive(self.diversity_weight, "diversity_weight", allow_zero=True)
        if self.monitor_mode not in ("min", "max"):
            raise GANConfigError(f"monitor_mode must be 'min' or 'max', got {self.monitor_mode!r}")
        _positive_int(self.eval_samples, "eval_samples", minimum=2)
        _positive_int(self.metric_bits, "metric_bits")
        for which in ("generator", "discriminator"):
            name = getattr(self, f"{which}_optimizer")
            if not isinstance(name, str):
                raise GANConfigError(f"{which}_optimizer must be a torch.optim name, got {name!r}")
            from ..training.config import torch_optimizer_class

            try:
                torch_optimizer_class(name)
            except Exception as exc:
                raise GANConfigError(f"{which}_optimizer: {exc}") from None

    def to_dict(self) -> dict[str, Any]:
        """Every setting, as JSON-storable values (stored with the run)."""
        out = asdict(self)
        out["generator_optimizer_kwargs"] = dict(self.generator_optimizer_kwargs)
        out["discriminator_optimizer_kwargs"] = dict(self.discriminator_optimizer_kwargs)
        if self.mmd_bandwidths is not None:
            out["mmd_bandwidths"] = [float(b) for b in self.mmd_bandwidths]
        for key, value in list(out.items()):
            if isinstance(value, tuple):
                out[key] = list(value)
        return out


#: Settings that change the numbers a run computes: a resume must keep them.
MATH_SETTINGS = (
    "loss",
    "generator_optimizer",
    "discriminator_optimizer",
    "generator_optimizer_kwargs",
    "discriminator_optimizer_kwargs",
    "update",
    "batch_size",
    "seed",
    "gp_weight",
    "mmd_bandwidths",
    "gradient_method",
    "data_policy",
    "eval_samples",
    "metric_bits",
)
