"""How to learn: encoders, layers and models, gradients, optimizers, the trainer, the CLI.

``quantum_ml`` may import ``backends`` and ``quantum_db``.
"""

__all__: list[str] = []
