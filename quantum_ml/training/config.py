"""``TrainingConfig``: the settings of a training run, checked when they are made."""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

from ..errors import TrainingError, UnknownComponentError
from .losses import check_loss_name

__all__ = ["RESUMABLE_SETTINGS", "OptimizerSpec", "TrainingConfig", "math_settings"]

#: ``"adam"``, ``"sgd"``, ``"spsa"`` (the NumPy optimizers of :class:`QuantumModel`), any
#: ``torch.optim`` class by name (``"AdamW"``, ``"RMSprop"``...), or a factory
#: ``params -> torch.optim.Optimizer``.
OptimizerSpec = str | Callable[..., Any]

_NUMPY_OPTIMIZERS = ("adam", "sgd", "spsa")
_GRADIENT_METHODS = ("adjoint", "parameter-shift", "finite-diff", "spsa")
#: Settings that do not change the trained parameters: a run may resume with other values.
RESUMABLE_SETTINGS = ("progress", "budget_usd", "budget_name", "allow_encoding_mismatch")


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _finite_number(value: object) -> bool:
    return (
        isinstance(value, int | float)
        and not isinstance(value, bool)
        and math.isfinite(float(value))
    )


def torch_optimizer_class(name: str) -> type[Any]:
    """The ``torch.optim`` optimizer class called ``name`` (case-insensitive)."""
    import torch

    classes = {
        n.lower(): getattr(torch.optim, n)
        for n in dir(torch.optim)
        if isinstance(getattr(torch.optim, n), type)
        and issubclass(getattr(torch.optim, n), torch.optim.Optimizer)
        and n != "Optimizer"
    }
    found: type[Any] | None = classes.get(name.lower())
    if found is None:
        raise UnknownComponentError(
            f"no optimizer named {name!r}: use 'adam', 'sgd', 'spsa' or a torch.optim class "
            f"({', '.join(sorted(c.__name__ for c in classes.values()))})"
        )
    return found


def _check_optimizer_name(name: str) -> None:
    if name in _NUMPY_OPTIMIZERS:
        return
    try:
        torch_optimizer_class(name)
    except ImportError:  # pragma: no cover - torch is an extra
        raise UnknownComponentError(
            f"optimizer {name!r} is not one of {_NUMPY_OPTIMIZERS}, and torch (which has the "
            "others) is not installed: pip install 'quantum-db[torch]'"
        ) from None


_SCHEDULER_ALIASES = {"plateau": "ReduceLROnPlateau"}


def torch_scheduler_class(name: str) -> type[Any]:
    """The ``torch.optim.lr_scheduler`` class called ``name`` (or ``"plateau"``)."""
    from torch.optim import lr_scheduler

    wanted = _SCHEDULER_ALIASES.get(name, name)
    classes = {
        n.lower(): getattr(lr_scheduler, n)
        for n in dir(lr_scheduler)
        if isinstance(getattr(lr_scheduler, n), type)
        and (
            issubclass(getattr(lr_scheduler, n), lr_scheduler.LRScheduler)
            or n == "ReduceLROnPlateau"
        )
        and n not in ("LRScheduler", "_LRScheduler", "SequentialLR", "ChainedScheduler")
    }
    found: type[Any] | None = classes.get(wanted.lower())
    if found is None:
        raise UnknownComponentError(
            f"no LR scheduler named {name!r}: use 'plateau' or a torch.optim.lr_scheduler "
            f"class ({', '.join(sorted(c.__name__ for c in classes.values()))})"
        )
    return found


def _factory_name(factory: Callable[..., Any]) -> str:
    module = getattr(factory, "__module__", None) or "?"
    qualname = getattr(factory, "__qualname__", None) or type(factory).__name__
    return f"{module}:{qualname}"


@dataclass(frozen=True, slots=True)
class TrainingConfig:
    """Settings of a training run; invalid values raise :class:`TrainingError`.

    ``optimizer`` and ``loss`` name the optimizer and loss (see :data:`OptimizerSpec`;
    losses are ``"cross-entropy"``, ``"mse"``, ``"bce"`` for every model, and any loss of
    ``torch.nn.functional`` by name for torch modules). ``scheduler`` names a
    ``torch.optim.lr_scheduler`` class (``scheduler_kwargs`` its arguments) or
    ``"plateau"``, which lowers the learning rate by ``factor`` after ``patience`` epochs
    without improvement of ``monitor`` for every model.

    ``gradient_method`` ``None`` picks ``"adjoint"`` on an exact simulator (no ``shots``),
    ``"spsa"`` with the SPSA optimizer, else ``"parameter-shift"``. ``patience`` (epochs
    without an improvement of more than ``min_delta`` in ``monitor``) enables early
    stopping. A step whose gradient norm is below ``max_grad_norm_vanishing`` stops the run
    (``0`` disables that); a loss that is NaN, infinite or above ``max_loss`` stops it too.
    ``budget_usd`` bounds what the run's jobs may cost (reserved job by job by the
    BackendManager, which degrades by its policy when it runs out).
    """

    learning_rate: float = 0.05
    epochs: int = 10
    optimizer: OptimizerSpec = "adam"
    optimizer_kwargs: Mapping[str, Any] = field(default_factory=dict)
    loss: str = "cross-entropy"
    scheduler: str | None = None
    scheduler_kwargs: Mapping[str, Any] = field(default_factory=dict)
    gradient_method: str | None = None
    checkpoint_every: int = 10
    seed: int = 0
    patience: int | None = None
    min_delta: float = 0.0
    monitor: str = "val_loss"
    max_grad_norm_vanishing: float = 1e-8
    max_loss: float = 1e6
    shots: int | None = None
    momentum: float = 0.0
    progress: bool = False
    budget_usd: float | None = None
    budget_name: str = "training"
    allow_encoding_mismatch: bool = False

    def __post_init__(self) -> None:
        if not _finite_number(self.learning_rate) or self.learning_rate <= 0:
            raise TrainingError(f"learning_rate must be > 0, got {self.learning_rate!r}")
        if not _is_int(self.epochs) or self.epochs < 1:
            raise TrainingError(f"epochs must be an integer >= 1, got {self.epochs!r}")
        if isinstance(self.optimizer, str):
            _check_optimizer_name(self.optimizer)
        elif not callable(self.optimizer):
            raise TrainingError(
                f"optimizer must be a name or a factory params -> optimizer, got {self.optimizer!r}"
            )
        for name in ("optimizer_kwargs", "scheduler_kwargs"):
            value = getattr(self, name)
            if not isinstance(value, Mapping) or not all(isinstance(k, str) for k in value):
                raise TrainingError(f"{name} must be a mapping of names to values, got {value!r}")
        if not isinstance(self.loss, str):
            raise TrainingError(f"loss must be a loss's name, got {self.loss!r}")
        check_loss_name(self.loss)
        if self.scheduler is not None:
            if not isinstance(self.scheduler, str):
                raise TrainingError(f"scheduler must be a name or None, got {self.scheduler!r}")
            if self.scheduler != "plateau":
                try:
                    torch_scheduler_class(self.scheduler)
                except ImportError:  # pragma: no cover - torch is an extra
                    raise UnknownComponentError(
                        f"scheduler {self.scheduler!r} needs torch: pip install "
                        "'quantum-db[torch]' (or use scheduler='plateau')"
                    ) from None
        if self.gradient_method is not None and self.gradient_method not in _GRADIENT_METHODS:
            raise TrainingError(
                f"gradient_method must be one of {_GRADIENT_METHODS} or None, "
                f"got {self.gradient_method!r}"
            )
        if not _is_int(self.checkpoint_every) or self.checkpoint_every < 1:
            raise TrainingError(
                f"checkpoint_every must be an integer >= 1, got {self.checkpoint_every!r}"
            )
        if not _is_int(self.seed) or not 0 <= self.seed < 2**63:
            raise TrainingError(f"seed must be an integer in [0, 2**63), got {self.seed!r}")
        if self.patience is not None and (not _is_int(self.patience) or self.patience < 1):
            raise TrainingError(f"patience must be an integer >= 1 or None, got {self.patience!r}")
        if not _finite_number(self.min_delta) or self.min_delta < 0:
            raise TrainingError(f"min_delta must be >= 0, got {self.min_delta!r}")
        if self.monitor not in ("train_loss", "val_loss", "train_accuracy", "val_accuracy"):
            raise TrainingError(
                "monitor must be one of train_loss, val_loss, train_accuracy, val_accuracy, "
                f"got {self.monitor!r}"
            )
        if not _finite_number(self.max_grad_norm_vanishing) or self.max_grad_norm_vanishing < 0:
            raise TrainingError(
                f"max_grad_norm_vanishing must be >= 0, got {self.max_grad_norm_vanishing!r}"
            )
        if not _finite_number(self.max_loss) or self.max_loss <= 0:
            raise TrainingError(f"max_loss must be a finite number > 0, got {self.max_loss!r}")
        if self.shots is not None and (not _is_int(self.shots) or self.shots < 1):
            raise TrainingError(f"shots must be a positive integer or None, got {self.shots!r}")
        if not _finite_number(self.momentum) or not 0 <= self.momentum < 1:
            raise TrainingError(f"momentum must be in [0, 1), got {self.momentum!r}")
        if self.momentum != 0 and not (
            isinstance(self.optimizer, str) and self.optimizer.lower() == "sgd"
        ):
            raise TrainingError("momentum applies to optimizer='sgd' only (a factory sets its own)")
        if self.gradient_method == "adjoint" and self.shots is not None:
            raise TrainingError("gradient_method='adjoint' is exact and takes no shots")
        for flag in ("progress", "allow_encoding_mismatch"):
            if not isinstance(getattr(self, flag), bool):
                raise TrainingError(f"{flag} must be a bool, got {getattr(self, flag)!r}")
        if self.budget_usd is not None and (
            not _finite_number(self.budget_usd) or self.budget_usd < 0
        ):
            raise TrainingError(
                f"budget_usd must be a finite amount >= 0 or None, got {self.budget_usd!r}"
            )
        if not isinstance(self.budget_name, str) or not 1 <= len(self.budget_name) <= 128:
            raise TrainingError(f"budget_name must be 1-128 characters, got {self.budget_name!r}")

    def to_dict(self) -> dict[str, Any]:
        """The settings as JSON values (a factory optimizer as ``"module:qualname"``)."""
        out: dict[str, Any] = {}
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            if f.name == "optimizer" and not isinstance(value, str):
                value = _factory_name(value)
            elif isinstance(value, Mapping):
                value = dict(value)
            out[f.name] = value
        return out

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> TrainingConfig:
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = set(data) - names
        if unknown:
            raise TrainingError(f"unknown training settings {sorted(unknown)}")
        return cls(**dict(data))

    @property
    def monitor_mode(self) -> Literal["min", "max"]:
        return "max" if self.monitor.endswith("accuracy") else "min"


def math_settings(settings: Mapping[str, Any]) -> dict[str, Any]:
    """The settings that decide the trained parameters (those a resume must keep)."""
    return {k: v for k, v in settings.items() if k not in RESUMABLE_SETTINGS}
