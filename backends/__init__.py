"""Circuits and how to run them: the circuit model, the backend contract and the backends.

``backends`` is the lowest layer of quantum-db; it imports neither ``quantum_db`` nor
``quantum_ml``.
"""

from .base import Backend, Capabilities, RunRequest, RunResult
from .circuit import Circuit, Instruction, Measurement
from .errors import (
    BackendError,
    CapacityError,
    CircuitError,
    MissingDependencyError,
    NonFiniteParameterError,
    ObservableError,
    ParameterCountError,
    ParameterExpressionError,
    ParameterValueError,
    QuantumDBError,
    QubitIndexError,
    ShotsError,
    SimulatorMemoryError,
    TooManyQubitsError,
    UnknownGateError,
    UnsupportedInstructionError,
)
from .gates import GATES, GateSpec
from .manager import BackendManager, UnknownBackendError
from .observables import Observable, PauliTerm
from .parameters import Angle, Parameter
from .simulator import SimulatorBackend

__all__ = [
    "GATES",
    "Angle",
    "Backend",
    "BackendError",
    "BackendManager",
    "Capabilities",
    "CapacityError",
    "Circuit",
    "CircuitError",
    "GateSpec",
    "Instruction",
    "Measurement",
    "MissingDependencyError",
    "NonFiniteParameterError",
    "Observable",
    "ObservableError",
    "Parameter",
    "ParameterCountError",
    "ParameterExpressionError",
    "ParameterValueError",
    "PauliTerm",
    "QuantumDBError",
    "QubitIndexError",
    "RunRequest",
    "RunResult",
    "ShotsError",
    "SimulatorBackend",
    "SimulatorMemoryError",
    "TooManyQubitsError",
    "UnknownBackendError",
    "UnknownGateError",
    "UnsupportedInstructionError",
]
