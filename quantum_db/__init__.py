"""What is kept: the SQL registry, vector stores, datasets and loaders, models, checkpoints.

``quantum_db`` may import ``backends``; it never imports ``quantum_ml``.
"""

from .errors import QuantumDBError

__all__ = ["QuantumDBError"]
