"""The blocking interface both IonQ client wrappers offer, and the errors they raise."""

from __future__ import annotations

import importlib
from collections.abc import Mapping
from dataclasses import dataclass, field
from email.utils import parsedate_to_datetime
from types import ModuleType
from typing import Any, Protocol

from ..circuit import Circuit
from ..errors import MissingDependencyError, RemoteCallError

__all__ = [
    "INSTALL_HINT",
    "Driver",
    "JobSpec",
    "JobState",
    "RemoteCallError",
    "connection_never_made",
    "import_sdk",
    "job_state",
    "retry_after_seconds",
]

INSTALL_HINT = "pip install 'quantum-db[ionq]'"


def import_sdk(module: str, distribution: str) -> ModuleType:
    """Import an IonQ client, or say how to install it."""
    try:
        return importlib.import_module(module)
    except ImportError as exc:
        raise MissingDependencyError(
            f"the IonQ backend needs {distribution}; install it with: {INSTALL_HINT}"
        ) from exc


@dataclass(frozen=True, slots=True)
class JobSpec:
    """Everything about a job besides its circuit."""

    target: str
    shots: int
    name: str
    noise_model: str | None = None
    noise_seed: int | None = None
    error_mitigation: bool | None = None
    metadata: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class JobState:
    """A job as ``GET /jobs/{id}`` describes it."""

    id: str
    status: str
    failure: str | None = None
    results_url: str | None = None
    #: The ``name`` and ``metadata`` the job was created with (how a re-attaching run
    #: tells which of its parts a job is).
    name: str | None = None
    metadata: Mapping[str, str] = field(default_factory=dict)


def job_state(job_id: str, data: object) -> JobState:
    """Read status, failure, result URL, name and metadata from a v0.4 job object."""
    if not isinstance(data, Mapping):
        return JobState(job_id, "unknown", failure=f"unexpected job payload {data!r:.200}")
    failure = data.get("failure")
    message: str | None = None
    if isinstance(failure, Mapping):
        # v0.4 says {"code", "message"}; both clients still read v0.3's "error".
        text = failure.get("message") or failure.get("error") or "no message"
        code = failure.get("code")
        message = f"{code}: {text}" if code else str(text)
    results = data.get("results")
    url = None
    if isinstance(results, Mapping):
        probabilities = results.get("probabilities")
        if isinstance(probabilities, Mapping) and isinstance(probabilities.get("url"), str):
            url = probabilities["url"]
    name = data.get("name")
    metadata = data.get("metadata")
    return JobState(
        str(data.get("id", job_id)),
        str(data.get("status", "unknown")),
        message,
        url,
        name=name if isinstance(name, str) else None,
        metadata={str(k): str(v) for k, v in metadata.items()}
        if isinstance(metadata, Mapping)
        else {},
    )


def retry_after_seconds(headers: Any) -> float | None:
    """The ``Retry-After`` header in seconds (a number or an HTTP date), if any."""
    value = headers.get("Retry-After") if headers is not None else None
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        from datetime import UTC, datetime

        return max(0.0, (parsedate_to_datetime(value) - datetime.now(UTC)).total_seconds())
    except (TypeError, ValueError):
        return None


def connection_never_made(exc: BaseException) -> bool:
    """True when ``exc`` (a requests error) means no connection was made: nothing was sent."""
    import socket

    from urllib3.exceptions import NewConnectionError  # requests' own transport

    stack: list[BaseException] = [exc]
    seen: set[int] = set()
    while stack:
        err = stack.pop()
        if id(err) in seen:
            continue
        seen.add(id(err))
        if isinstance(err, NewConnectionError | ConnectionRefusedError | socket.gaierror):
            return True
        stack.extend(a for a in err.args if isinstance(a, BaseException))
        reason = getattr(err, "reason", None)
        if isinstance(reason, BaseException):
            stack.append(reason)
        for linked in (err.__cause__, err.__context__):
            if linked is not None:
                stack.append(linked)
    return False


class Driver(Protocol):
    """One official IonQ client, called synchronously (the backend runs it in threads).

    Implementations translate the client's exceptions into the package's errors:
    :class:`RemoteCallError` for what may be retried, ``CredentialsError`` for a refused
    key, ``JobFailedError`` for a refused or failed job.
    """

    name: str

    def prepare(self, circuit: Circuit, spec: JobSpec) -> Any:
        """What :meth:`submit` sends to create a job for ``circuit`` (bound, measured on
        every qubit): the serialized request. No network call."""

    def submit(self, request: Any) -> str:
        """Create the job of a request :meth:`prepare` built; return its id."""

    def status(self, job_id: str) -> JobState:
        """The job's current state."""

    def probabilities(self, state: JobState) -> object:
        """The completed job's ``{"<decimal outcome>": probability}``."""

    def cancel(self, job_id: str) -> None:
        """Ask IonQ to cancel the job."""

    def cost(self, job_id: str) -> object:
        """``GET /jobs/{id}/cost``: ``{"estimated_cost": {...}, "cost": {"value", "unit"}}``
        (``cost`` once IonQ has billed the job)."""

    def estimate(
        self,
        target: str,
        one_qubit: int,
        two_qubit: int,
        qubits: int,
        shots: int,
        error_mitigation: bool,
    ) -> float | None:
        """IonQ's own cost estimate in USD, or None when the client has no such call."""
