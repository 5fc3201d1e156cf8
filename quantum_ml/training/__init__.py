"""Training: one trainer for QuantumModels and torch modules, its config, state and callbacks.

``config`` (TrainingConfig), ``losses``, ``state`` (TrainingState, History), ``callbacks``,
``execution`` (every circuit through the BackendManager), ``tasks`` (what is trained) and
``trainer`` (the loop) each do one job.
"""

from __future__ import annotations

from .callbacks import (
    FORCE_PROGRESS_ENV,
    Callback,
    EarlyStopping,
    LambdaCallback,
    ProgressBar,
    ReduceLROnPlateau,
    TorchLRScheduler,
    TrainingContext,
)
from .config import TrainingConfig
from .execution import ManagedBackend, request_key
from .losses import loss_and_grad
from .state import History, TrainingState
from .trainer import QuantumTrainer, StepCallback

__all__ = [
    "FORCE_PROGRESS_ENV",
    "Callback",
    "EarlyStopping",
    "History",
    "LambdaCallback",
    "ManagedBackend",
    "ProgressBar",
    "QuantumTrainer",
    "ReduceLROnPlateau",
    "StepCallback",
    "TorchLRScheduler",
    "TrainingConfig",
    "TrainingContext",
    "TrainingState",
    "loss_and_grad",
    "request_key",
]
