"""Circuits and how to run them: the circuit model, the backend contract and the backends.

``backends`` is the lowest layer of quantum-db; it imports neither ``quantum_db`` nor
``quantum_ml``. ``IonQBackend`` and ``QiskitBackend`` are exported lazily: ``import
backends`` loads no SDK (Qiskit, Cirq, the IonQ clients, pydantic), and the first use
of either name imports its module.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from .accounting import (
    Accounting,
    Budget,
    InMemoryAccounting,
    JobRecord,
    provider_job_sink,
    report_provider_job,
    report_submission,
)
from .base import (
    Backend,
    Capabilities,
    ProviderJob,
    ProviderJobStatus,
    RunRequest,
    RunResult,
    as_parameter_values,
    provider_bill,
)
from .circuit import Circuit, Instruction, Measurement
from .cost import FREE, IONQ_ARIA, IONQ_FORTE, CostPlan, PriceModel, plan_training_cost
from .errors import (
    BackendError,
    BackendUnavailableError,
    BudgetExceededError,
    CapacityError,
    CircuitError,
    CostPlanError,
    CredentialsError,
    InvalidBudgetError,
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
    RemoteCallError,
    RequestKeyError,
    ReservationLostError,
    ShotsError,
    SimulatorMemoryError,
    SubmissionUnknownError,
    TooManyQubitsError,
    TransientBackendError,
    UnknownBackendError,
    UnknownGateError,
    UnsupportedInstructionError,
)
from .gates import GATES, GateSpec, gate_derivative, gate_spec
from .manager import ENTRY_POINT_GROUP, BackendManager, Candidate, DegradePolicy, Selection
from .observables import Observable, ObservableLike, PauliTerm, as_observables
from .parameters import Angle, AngleLike, Parameter, ParameterKind, as_angle
from .retry import RetryPolicy, retry_async, retry_sync
from .simulator import SimulatorBackend
from .templates import hardware_efficient_circuit, z_observables

if TYPE_CHECKING:
    from .aer import QiskitBackend
    from .ionq import IonQBackend

__all__ = [
    "ENTRY_POINT_GROUP",
    "FREE",
    "GATES",
    "IONQ_ARIA",
    "IONQ_FORTE",
    "Accounting",
    "Angle",
    "AngleLike",
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
    "CostPlanError",
    "CredentialsError",
    "DegradePolicy",
    "GateSpec",
    "InMemoryAccounting",
    "Instruction",
    "InvalidBudgetError",
    "IonQBackend",
    "JobFailedError",
    "JobRecord",
    "JobTimeoutError",
    "Measurement",
    "MissingDependencyError",
    "NonFiniteParameterError",
    "Observable",
    "ObservableError",
    "ObservableLike",
    "Parameter",
    "ParameterCountError",
    "ParameterExpressionError",
    "ParameterKind",
    "ParameterValueError",
    "PauliTerm",
    "PriceModel",
    "ProviderJob",
    "ProviderJobStatus",
    "QiskitBackend",
    "QuantumDBError",
    "QubitIndexError",
    "RemoteCallError",
    "RequestKeyError",
    "ReservationLostError",
    "RetryPolicy",
    "RunRequest",
    "RunResult",
    "Selection",
    "ShotsError",
    "SimulatorBackend",
    "SimulatorMemoryError",
    "SubmissionUnknownError",
    "TooManyQubitsError",
    "TransientBackendError",
    "UnknownBackendError",
    "UnknownGateError",
    "UnsupportedInstructionError",
    "as_angle",
    "as_observables",
    "as_parameter_values",
    "gate_derivative",
    "gate_spec",
    "hardware_efficient_circuit",
    "plan_training_cost",
    "provider_bill",
    "provider_job_sink",
    "report_provider_job",
    "report_submission",
    "retry_async",
    "retry_sync",
    "z_observables",
]

#: Exported names whose modules are imported on first use, so that ``import backends``
#: stays free of the SDKs those modules reach for.
_LAZY: dict[str, str] = {"IonQBackend": ".ionq", "QiskitBackend": ".aer"}


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(module, __name__), name)
    globals()[name] = value  # later lookups skip this function
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
