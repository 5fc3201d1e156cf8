"""The built-in statevector simulator: a thin backend over pure simulation functions."""

from .backend import SimulatorBackend

__all__ = ["SimulatorBackend"]
