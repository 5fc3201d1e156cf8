"""A thin wrapper around cirq-ionq: submit, poll, fetch and cancel IonQ jobs (blocking)."""

from __future__ import annotations

import re
import socket
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from http import HTTPStatus
from typing import Any
from urllib.parse import urlsplit

from ..circuit import Circuit
from ..errors import BackendError, CredentialsError, JobFailedError
from .driver import JobSpec, JobState, RemoteCallError, import_sdk, job_state

__all__ = ["CirqDriver", "load_sdk"]

_GAVE_UP = re.compile(r"Reached maximum number of retries\. Last error: (?P<reason>.*)", re.S)
_PHRASES = {s.phrase.lower(): int(s) for s in HTTPStatus}


def load_sdk() -> None:
    """Import cirq-ionq and Cirq (see ``IonQBackend._ready``)."""
    import_sdk("cirq", "cirq-core")
    import_sdk("cirq_ionq", "cirq-ionq")


class CirqDriver:
    """Jobs through ``cirq_ionq``: its ``Service``, serializer and the client it builds.

    ``Service.create_job`` posts the job and then reads it back; when the read fails the
    new job's id is lost. So jobs are created, read and cancelled through the client the
    service holds (``Service._client``), which returns each answer as it comes.
    """

    name = "cirq"

    def __init__(self, api_key: str, api_url: str, target: str) -> None:
        cirq_ionq = import_sdk("cirq_ionq", "cirq-ionq")
        import_sdk("cirq", "cirq-core")
        self._target = target
        # max_retry_seconds=0: the client would otherwise retry 429/5xx and lost
        # connections for an hour; the backend retries with bounds of its own.
        self._service = cirq_ionq.Service(
            remote_host=api_url,
            api_key=api_key,
            default_target="simulator" if target == "simulator" else "qpu",
            max_retry_seconds=0,
        )
        self._client = self._service._client
        # The client keeps only scheme and host of remote_host and appends /v0.4 itself;
        # pointing it at the full root keeps any path prefix (a proxy) api_url has.
        self._client.url = api_url
        self._serializer = cirq_ionq.Serializer()

    def prepare(self, circuit: Circuit, spec: JobSpec) -> tuple[Any, JobSpec]:
        noise: dict[str, Any] | None = None
        if self._target == "simulator":
            noise = {"model": spec.noise_model or "ideal"}
            if spec.noise_seed is not None:
                noise["seed"] = spec.noise_seed
        with _translated("serializing the circuit", self._reachable):
            program = self._serializer.serialize_single_circuit(
                circuit.to_cirq(),
                noise=noise,
                error_mitigation=None
                if spec.error_mitigation is None
                else {"debiasing": spec.error_mitigation},
                metadata=dict(spec.metadata),
            )
        return program, spec

    def submit(self, request: tuple[Any, JobSpec]) -> str:
        program, spec = request
        with _translated("submitting a job", self._reachable):
            # cirq-ionq sends shots (and metadata.shots) as strings.
            response = self._client.create_job(
                serialized_program=program,
                repetitions=spec.shots,
                target=spec.target,
                name=spec.name,
            )
        return str(response["id"])

    def status(self, job_id: str) -> JobState:
        with _translated(f"reading job {job_id}", self._reachable):
            return job_state(job_id, self._client.get_job(job_id))

    def probabilities(self, state: JobState) -> object:
        # Single-circuit jobs only: the client's batch_mode flag (set by create_job for
        # the whole client) would send this to .../aggregated.
        with _translated(f"fetching the results of job {state.id}", self._reachable):
            result: object = self._client.get_results(state.id)
        return result

    def cancel(self, job_id: str) -> None:
        with _translated(f"cancelling job {job_id}", self._reachable):
            self._client.cancel_job(job_id)

    def cost(self, job_id: str) -> object:
        import requests

        client = self._client
        # cirq-ionq has no call for it: a request through the client's own error handling.
        with _translated(f"reading the cost of job {job_id}", self._reachable):
            response = client._make_request(
                lambda: requests.get(f"{client.url}/jobs/{job_id}/cost", headers=client.headers),
                {},
            )
            result: object = response.json()
        return result

    def estimate(
        self,
        target: str,
        one_qubit: int,
        two_qubit: int,
        qubits: int,
        shots: int,
        error_mitigation: bool,
    ) -> float | None:
        return None  # cirq-ionq has no cost-estimate call

    def _reachable(self) -> bool:
        """Whether IonQ's host accepts a TCP connection right now.

        cirq-ionq reports a refused connection and a dropped one alike; a refused probe
        tells that nothing can have reached IonQ (so even a job submission may be retried).
        """
        parts = urlsplit(self._client.url)
        port = parts.port or (443 if parts.scheme == "https" else 80)
        try:
            with socket.create_connection((parts.hostname or "", port), timeout=5):
                return True
        except OSError:
            return False

    def __repr__(self) -> str:
        return f"CirqDriver(target={self._target!r})"


@contextmanager
def _translated(action: str, reachable: Callable[[], bool]) -> Iterator[None]:
    """Map cirq-ionq's exceptions onto the package's errors."""
    from cirq_ionq.ionq_exceptions import IonQException, IonQNotFoundException

    try:
        yield
    except IonQNotFoundException as exc:
        raise JobFailedError(f"IonQ: {action}: not found ({exc})") from exc
    except IonQException as exc:
        status = exc.status_code
        # The client's message carries the whole request body: keep the start of it.
        text = f"IonQ answered {status} while {action}: {str(exc)[:500]}"
        if status in (401, 403):
            raise CredentialsError(
                f"{text}; check the IonQ API key (IONQ_API_KEY or QDB_IONQ_API_KEY, or api_key=)"
            ) from exc
        if status is not None and (status in (408, 409, 425, 429) or status >= 500):
            raise RemoteCallError(text, status=status, sent=True) from exc
        raise JobFailedError(text) from exc
    except TimeoutError as exc:
        raise _gave_up(action, str(exc), reachable) from exc
    except ValueError as exc:
        # The serializer refuses gates it cannot express (lower() should prevent it).
        raise BackendError(f"cirq-ionq could not serialize the circuit: {exc}") from exc


def _gave_up(action: str, message: str, reachable: Callable[[], bool]) -> RemoteCallError:
    """Read what cirq-ionq's retry loop saw last: an HTTP reason phrase or a request error.

    With retries off it reports only that (no status code, no Retry-After header), and
    a refused connection reads the same as a dropped one.
    """
    match = _GAVE_UP.search(message)
    reason: Any = match.group("reason").strip() if match else message
    status = _PHRASES.get(str(reason).lower())
    if status is not None:
        return RemoteCallError(
            f"IonQ answered {status} ({reason}) while {action}", status=status, sent=True
        )
    sent = reachable()
    what = "the connection failed" if sent else "could not connect"
    return RemoteCallError(f"IonQ: {what} while {action} ({reason})", sent=sent)
