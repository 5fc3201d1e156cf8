"""The exception root shared by every quantum-db package (defined in the lowest layer)."""

from backends.errors import QuantumDBError

__all__ = ["QuantumDBError"]
