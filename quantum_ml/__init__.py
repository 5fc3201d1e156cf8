"""How to learn: encoders, layers and models, gradients, optimizers, the trainer, the CLI.

``quantum_ml`` may import ``backends`` and ``quantum_db``. ``TorchQuantumLayer`` (the
PyTorch bridge in ``quantum_ml.torch_layer``) is exported lazily: ``import quantum_ml``
does not import torch, so the rest works without it, and the first use of the name
imports the module (which says how to install torch when it is missing).
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from .encoders import (
    EncoderKind,
    QuantumDataEncoder,
    ScalingKind,
    amplitude_state,
    state_preparation_circuit,
)
from .errors import (
    EncodingError,
    GradientError,
    GradientMethodError,
    HPOError,
    LearningError,
    ModelError,
    OptimizerError,
    QuantumDBError,
    TorchLayerError,
    TrainingError,
)
from .gradients import GradientMethod, QuantumGradientComputer, ShiftRule, shift_rule
from .hpo import MODEL_HYPERPARAMETERS, HPOResult, QuantumHPOSearch, Trial
from .models import QuantumModel, entangling_pairs
from .optimizers import SGD, SPSA, Adam, Optimizer, optimizer_from_state
from .trainer import History, QuantumTrainer, TrainingConfig

if TYPE_CHECKING:
    from .torch_layer import TorchQuantumLayer

__all__ = [
    "MODEL_HYPERPARAMETERS",
    "SGD",
    "SPSA",
    "Adam",
    "EncoderKind",
    "EncodingError",
    "GradientError",
    "GradientMethod",
    "GradientMethodError",
    "HPOError",
    "HPOResult",
    "History",
    "LearningError",
    "ModelError",
    "Optimizer",
    "OptimizerError",
    "QuantumDBError",
    "QuantumDataEncoder",
    "QuantumGradientComputer",
    "QuantumHPOSearch",
    "QuantumModel",
    "QuantumTrainer",
    "ScalingKind",
    "ShiftRule",
    "TorchLayerError",
    "TorchQuantumLayer",
    "TrainingConfig",
    "TrainingError",
    "Trial",
    "amplitude_state",
    "entangling_pairs",
    "optimizer_from_state",
    "shift_rule",
    "state_preparation_circuit",
]

#: Exported names whose modules are imported on first use (torch is an optional extra).
_LAZY: dict[str, str] = {"TorchQuantumLayer": ".torch_layer"}


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(module, __name__), name)
    globals()[name] = value  # later lookups skip this function
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
