"""Circuits and how to run them: the circuit model, the backend contract and the backends.

``backends`` is the lowest layer of quantum-db; it imports neither ``quantum_db`` nor
``quantum_ml``.
"""

from .accounting import Accounting, Budget, InMemoryAccounting, JobRecord
from .aer import QiskitBackend
from .base import Backend, Capabilities, RunRequest, RunResult
from .circuit import Circuit, Instruction, Measurement
from .cost import CostPlan, PriceModel, plan_training_cost
from .errors import (
    BackendError,
    BackendUnavailableError,
    BudgetExceededError,
    CapacityError,
    CircuitError,
    CredentialsError,
    JobFailedError,
    JobTimeoutError,
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
    TransientBackendError,
    UnknownGateError,
    UnsupportedInstructionError,
)
from .gates import GATES, GateSpec
from .manager import (
    BackendManager,
    Candidate,
    DegradePolicy,
    RetryPolicy,
    Selection,
    UnknownBackendError,
)
from .observables import Observable, PauliTerm
from .parameters import Angle, Parameter
from .simulator import SimulatorBackend

__all__ = [
    "GATES",
    "Accounting",
    "Angle",
    "Backend",
    "BackendError",
    "BackendManager",
    "BackendUnavailableError",
    "Budget",
    "BudgetExceededError",
    "Candidate",
    "Capabilities",
    "CapacityError",
    "Circuit",
    "CircuitError",
    "CostPlan",
    "CredentialsError",
    "DegradePolicy",
    "GateSpec",
    "InMemoryAccounting",
    "Instruction",
    "JobFailedError",
    "JobRecord",
    "JobTimeoutError",
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
    "PriceModel",
    "QiskitBackend",
    "QuantumDBError",
    "QubitIndexError",
    "RetryPolicy",
    "RunRequest",
    "RunResult",
    "Selection",
    "ShotsError",
    "SimulatorBackend",
    "SimulatorMemoryError",
    "TooManyQubitsError",
    "TransientBackendError",
    "UnknownBackendError",
    "UnknownGateError",
    "UnsupportedInstructionError",
    "plan_training_cost",
]
