"""How to learn: encoders, layers and models, gradients, optimizers, the trainer, the CLI.

``quantum_ml`` may import ``backends`` and ``quantum_db``.
"""

from .gradients import (
    GradientError,
    GradientMethod,
    GradientMethodError,
    QuantumGradientComputer,
    ShiftRule,
    shift_rule,
)

__all__ = [
    "GradientError",
    "GradientMethod",
    "GradientMethodError",
    "QuantumGradientComputer",
    "ShiftRule",
    "shift_rule",
]
