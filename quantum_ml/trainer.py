"""The trainer's public names (the code lives in :mod:`quantum_ml.training`)."""

from __future__ import annotations

from .errors import TrainingError
from .training import (
    FORCE_PROGRESS_ENV,
    Callback,
    History,
    QuantumTrainer,
    StepCallback,
    TrainingConfig,
    loss_and_grad,
)

__all__ = [
    "FORCE_PROGRESS_ENV",
    "Callback",
    "History",
    "QuantumTrainer",
    "StepCallback",
    "TrainingConfig",
    "TrainingError",
    "loss_and_grad",
]
