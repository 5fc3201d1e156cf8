"""How to learn: encoders, layers and models, gradients, optimizers, the trainer, the CLI.

``quantum_ml`` may import ``backends`` and ``quantum_db``. The PyTorch bridge lives in
``quantum_ml.torch_layer`` (``TorchQuantumLayer``), imported on its own so that the rest
works without torch installed.
"""

from .encoders import EncodingError, QuantumDataEncoder
from .gradients import (
    GradientError,
    GradientMethod,
    GradientMethodError,
    QuantumGradientComputer,
    ShiftRule,
    shift_rule,
)
from .hpo import HPOError, HPOResult, QuantumHPOSearch
from .models import ModelError, QuantumModel
from .optimizers import SGD, SPSA, Adam, Optimizer, OptimizerError, optimizer_from_state
from .trainer import History, QuantumTrainer, TrainingConfig, TrainingError

__all__ = [
    "SGD",
    "SPSA",
    "Adam",
    "EncodingError",
    "GradientError",
    "GradientMethod",
    "GradientMethodError",
    "HPOError",
    "HPOResult",
    "History",
    "ModelError",
    "Optimizer",
    "OptimizerError",
    "QuantumDataEncoder",
    "QuantumGradientComputer",
    "QuantumHPOSearch",
    "QuantumModel",
    "QuantumTrainer",
    "ShiftRule",
    "TrainingConfig",
    "TrainingError",
    "optimizer_from_state",
    "shift_rule",
]
