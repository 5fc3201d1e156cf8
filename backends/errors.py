"""The exception hierarchy of the ``backends`` package.

Every error the project raises derives from :class:`QuantumDBError`; it lives here, in the
lowest layer, so that ``quantum_db`` and ``quantum_ml`` can derive their own roots from it
without importing upward. Errors caused by bad input also derive from ``ValueError`` so that
generic callers can catch them the usual way.

    QuantumDBError
    └── BackendError                      root of this package
        ├── CircuitError (ValueError)     a circuit that cannot be built as asked
        │   ├── QubitIndexError           qubit or clbit index out of range / repeated
        │   ├── UnknownGateError          gate name not in the gate set
        │   ├── UnsupportedInstructionError  a foreign (Qiskit) instruction we cannot express
        │   └── ParameterExpressionError  an angle that is not affine in one parameter
        ├── ParameterValueError (ValueError)  bad parameter bindings
        │   ├── ParameterCountError       wrong number of values per binding
        │   └── NonFiniteParameterError   NaN or infinity among the values
        ├── ObservableError (ValueError)  a Pauli observable of the wrong width or alphabet
        ├── ShotsError (ValueError)       shots that are not a positive integer
        ├── CapacityError                 the job does not fit the backend
        │   └── TooManyQubitsError (ValueError)  more qubits than the backend offers
        │       └── SimulatorMemoryError  the state vector would not fit in memory
        ├── MissingDependencyError (ImportError)  an optional SDK is not installed
        ├── CredentialsError              an API key is missing or refused
        ├── UnknownBackendError (LookupError)  no backend registered under that name
        ├── TransientBackendError         a retryable failure (429, 5xx, a dropped connection)
        │   └── RemoteCallError           one failed HTTP call: its status, Retry-After, and
        │                                 whether the request was sent at all
        ├── BackendUnavailableError       the backend cannot be reached (retries exhausted)
        ├── SubmissionUnknownError        a submission failed after the provider may have
        │                                 created the job: never repeated, reservation kept
        ├── JobFailedError                the provider ran the job and reports it failed
        │   └── JobTimeoutError           no result within the job's timeout (job cancelled)
        ├── BudgetExceededError           the job's estimated cost does not fit the budget
        ├── ReservationLostError          the job's reservation was reclaimed before it was
        │                                 sent (its owner's lease lapsed): nothing was sent
        ├── CostPlanError (ValueError)    a training configuration that cannot be planned
        ├── RequestKeyError (ValueError)  a job's request key that cannot be stored
        └── InvalidBudgetError (ValueError)  a budget that is not a finite USD amount >= 0
                                          with a name of 1-128 characters
"""

from __future__ import annotations

__all__ = [
    "BackendError",
    "BackendUnavailableError",
    "BudgetExceededError",
    "CapacityError",
    "CircuitError",
    "CostPlanError",
    "CredentialsError",
    "InvalidBudgetError",
    "JobFailedError",
    "JobTimeoutError",
    "MissingDependencyError",
    "NonFiniteParameterError",
    "ObservableError",
    "ParameterCountError",
    "ParameterExpressionError",
    "ParameterValueError",
    "QuantumDBError",
    "QubitIndexError",
    "RemoteCallError",
    "RequestKeyError",
    "ReservationLostError",
    "ShotsError",
    "SimulatorMemoryError",
    "SubmissionUnknownError",
    "TooManyQubitsError",
    "TransientBackendError",
    "UnknownBackendError",
    "UnknownGateError",
    "UnsupportedInstructionError",
]


class QuantumDBError(Exception):
    """Root of every error raised by quantum-db."""


class BackendError(QuantumDBError):
    """Root of the errors raised by the ``backends`` package."""


class CircuitError(BackendError, ValueError):
    """A circuit that cannot be built or converted as asked."""


class QubitIndexError(CircuitError):
    """A qubit or classical bit index outside the circuit, or used twice in one gate."""


class UnknownGateError(CircuitError):
    """A gate name that is not part of the circuit model's gate set."""


class UnsupportedInstructionError(CircuitError):
    """A foreign instruction (e.g. from a Qiskit circuit) with no equivalent here."""


class ParameterExpressionError(CircuitError):
    """An angle that is not of the form ``a * parameter + b``."""


class ParameterValueError(BackendError, ValueError):
    """Parameter bindings that cannot be used for a run."""


class ParameterCountError(ParameterValueError):
    """The number of values per binding differs from the circuit's parameter count."""


class NonFiniteParameterError(ParameterValueError):
    """A parameter value is NaN or infinite."""


class ObservableError(BackendError, ValueError):
    """An observable of the wrong width, with a bad character, or with bad weights."""


class ShotsError(BackendError, ValueError):
    """A shot count that is not a positive integer (or above the backend's limit)."""


class CapacityError(BackendError):
    """The job does not fit what the backend can run."""


class TooManyQubitsError(CapacityError, ValueError):
    """The circuit is wider than the backend's ``capabilities.max_qubits``."""


class SimulatorMemoryError(TooManyQubitsError):
    """The state vector of the circuit would not fit in the simulator's memory budget."""


class MissingDependencyError(BackendError, ImportError):
    """An optional SDK is needed for this call; the message gives the pip command."""


class CredentialsError(BackendError):
    """An API key is missing or was refused; the message names the setting to fix."""


class UnknownBackendError(BackendError, LookupError):
    """No backend registered (or installed as a plug-in) under that name."""


class TransientBackendError(BackendError):
    """A failure worth retrying: rate limiting (429), a 5xx, a dropped connection."""


class RemoteCallError(TransientBackendError):
    """A call that failed in a way worth retrying: 429, a 5xx, a timeout, a lost connection.

    ``status`` is the HTTP status (None when no answer came back); ``sent`` is False
    when no connection was made (nothing reached the provider), True when the request may
    have been acted on, None when the client does not say. ``retry_after`` is the
    server's ``Retry-After`` in seconds, which :mod:`backends.retry` honours.
    """

    def __init__(
        self,
        message: str,
        *,
        status: int | None = None,
        retry_after: float | None = None,
        sent: bool | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.retry_after = retry_after
        self.sent = sent


class BackendUnavailableError(BackendError):
    """The backend could not be reached, even after retries."""


class SubmissionUnknownError(BackendError):
    """A job submission failed in a way that may still have created (and will bill) the job.

    It is never retried: a second submission could run, and bill, the job twice. The
    budget reservation is kept until the job is found at the provider or its lease expires.
    """


class ReservationLostError(BackendError):
    """The job's reservation was reclaimed by a sweep before the job was sent.

    It happens when the owner's lease lapsed (its event loop was blocked for longer than
    the lease's TTL) and another process swept it. Nothing was sent; run the job again.
    """


class JobFailedError(BackendError):
    """The provider accepted the job but reports that it failed."""


class JobTimeoutError(JobFailedError):
    """The job had no result within its timeout; it was cancelled at the provider."""


class BudgetExceededError(BackendError):
    """The job's estimated cost does not fit what is left of the budget; nothing was sent."""


class CostPlanError(BackendError, ValueError):
    """Epochs, samples, batch size or evaluation counts a cost plan cannot be made of."""


class RequestKeyError(BackendError, ValueError):
    """A request key that is not a printable string of 1-64 characters."""


class InvalidBudgetError(BackendError, ValueError):
    """A budget whose amount is not a finite number of USD >= 0, or whose name is not a
    string of 1-128 characters."""
