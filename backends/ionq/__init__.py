"""IonQ's cloud simulator and QPUs (Aria, Forte) through qiskit-ionq or cirq-ionq."""

from .backend import IonQBackend

__all__ = ["IonQBackend"]
