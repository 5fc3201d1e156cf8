"""A thin wrapper around qiskit-ionq: submit, poll, fetch and cancel IonQ jobs (blocking)."""

from __future__ import annotations

import os
import threading
import warnings
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any
from urllib.parse import urlsplit

from ..circuit import Circuit
from ..errors import BackendError, CredentialsError, JobFailedError
from .driver import (
    JobSpec,
    JobState,
    RemoteCallError,
    connection_never_made,
    import_sdk,
    job_state,
    retry_after_seconds,
)

__all__ = ["QiskitDriver", "load_sdk"]

# qiskit-ionq sizes its backend objects with an unauthenticated GET to
# ``{IONQ_API_URL or the public API}/backends/{name}``, ignoring the provider's url=.
# While a driver is built these variables point at our API root; the lock keeps two
# drivers from interleaving, and the previous values are restored straight after.
_URL_VARIABLES = ("IONQ_API_URL", "QISKIT_IONQ_API_URL")
_ENVIRONMENT_LOCK = threading.Lock()


@contextmanager
def _api_url_for_sizing(url: str) -> Iterator[None]:
    with _ENVIRONMENT_LOCK:
        saved = {name: os.environ.get(name) for name in _URL_VARIABLES}
        os.environ.update(dict.fromkeys(_URL_VARIABLES, url))
        try:
            yield
        finally:
            for name, value in saved.items():
                if value is None:
                    os.environ.pop(name, None)
                else:
                    os.environ[name] = value


def load_sdk() -> None:
    """Import qiskit-ionq and the parts of it the driver uses (see ``IonQBackend._ready``)."""
    import_sdk("qiskit_ionq", "qiskit-ionq")
    import_sdk("qiskit_ionq.ionq_job", "qiskit-ionq")
    import_sdk("qiskit_ionq.constants", "qiskit-ionq")
    import_sdk("qiskit_ionq.helpers", "qiskit-ionq")


def _once(method: Callable[..., Any]) -> Callable[..., Any]:
    """The client method without its retry decorator (``functools.wraps`` keeps it).

    The decorator retries GETs forever and ``POST /jobs`` on 5xx (a duplicate job), and
    warns on every attempt; the backend retries with bounds of its own instead.
    """
    return getattr(method, "__wrapped__", method)


class QiskitDriver:
    """Jobs through ``qiskit_ionq``: its provider, backend, job and client objects."""

    name = "qiskit"

    def __init__(self, api_key: str, api_url: str, target: str) -> None:
        qiskit_ionq = import_sdk("qiskit_ionq", "qiskit-ionq")
        from qiskit_ionq.exceptions import IonQError

        self._target = target
        self._api_version = urlsplit(api_url).path.rsplit("/", 1)[-1]
        try:
            with _api_url_for_sizing(api_url), warnings.catch_warnings():
                # The provider warns about the user's transpiler level (we send QIS gates
                # as they are) and about backend sizes it could not read (we keep our own).
                warnings.filterwarnings("ignore", module=r"qiskit_ionq(\.|$)")
                provider = qiskit_ionq.IonQProvider(token=api_key, url=api_url)
                self._backend = provider.get_backend(target, gateset="qis")
            self._client = self._backend.client
        except IonQError as exc:
            raise BackendError(f"qiskit-ionq could not set up {target}: {exc}") from exc
        from qiskit_ionq.ionq_client import IonQClient

        self._retrieve = _once(IonQClient.retrieve_job)
        self._results = _once(IonQClient.get_results)
        self._cancel = _once(IonQClient.cancel_job)

    def prepare(self, circuit: Circuit, spec: JobSpec) -> str:
        from qiskit_ionq.constants import ErrorMitigation
        from qiskit_ionq.helpers import qiskit_to_ionq
        from qiskit_ionq.ionq_job import IonQJob

        args: dict[str, Any] = {
            **self._backend.options.__dict__,
            "shots": spec.shots,
            "name": spec.name,
            "noise_model": spec.noise_model or "ideal",
            "extra_metadata": dict(spec.metadata),
            "extra_query_params": {},
            "error_mitigation": {
                None: None,
                True: ErrorMitigation.DEBIASING,
                False: ErrorMitigation.NO_DEBIASING,
            }[spec.error_mitigation],
        }
        if self._target == "simulator" and spec.noise_seed is not None:
            # The client takes the noise seed from the shared backend options only; a
            # per-job top-level "noise" (its extra_query_params hook) avoids mutating them.
            args["extra_query_params"] = {
                "noise": {"model": spec.noise_model or "ideal", "seed": spec.noise_seed}
            }
        job = IonQJob(
            self._backend, None, self._client, circuit=circuit.to_qiskit(), passed_args=args
        )
        # IonQClient.submit_job serializes the job and posts it in one call; here they are
        # its two halves, so that the job can be serialized before it has a slot.
        with _translated("serializing the circuit"):
            body: str = qiskit_to_ionq(
                job.circuit,
                job.backend(),
                job._passed_args,
                job.extra_query_params,
                job.extra_metadata,
            )
        return body

    def submit(self, request: str) -> str:
        import requests
        from qiskit_ionq.exceptions import IonQAPIError

        client = self._client
        with _translated("submitting a job"):
            # IonQClient.submit_job's POST, its headers and its errors.
            response = requests.post(
                client.make_path("jobs"), data=request, headers=client.api_headers, timeout=30
            )
            IonQAPIError.raise_for_status(response)
            return str(response.json()["id"])

    def status(self, job_id: str) -> JobState:
        with _translated(f"reading job {job_id}"):
            return job_state(job_id, self._retrieve(self._client, job_id))

    def probabilities(self, state: JobState) -> object:
        # The client joins this to its root and then strips the first version segment,
        # so a URL built here starts with one, as IonQ's do ("/v0.4/jobs/{id}/...").
        url = state.results_url or (f"/{self._api_version}/jobs/{state.id}/results/probabilities")
        with _translated(f"fetching the results of job {state.id}"):
            result: object = self._results(self._client, results_url=url)
        return result

    def cancel(self, job_id: str) -> None:
        with _translated(f"cancelling job {job_id}"):
            self._cancel(self._client, job_id)

    def cost(self, job_id: str) -> object:
        from qiskit_ionq.exceptions import IonQAPIError

        # qiskit-ionq has no call for it: its plain GET, the client's headers and errors.
        with _translated(f"reading the cost of job {job_id}"):
            response = self._client.get_with_retry(
                self._client.make_path("jobs", job_id, "cost"), headers=self._client.api_headers
            )
            IonQAPIError.raise_for_status(response)
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
        with _translated("asking for a cost estimate"):
            estimate = self._client.estimate_job(
                backend=target,
                oneq_gates=one_qubit,
                twoq_gates=two_qubit,
                qubits=qubits,
                shots=shots,
                error_mitigation=error_mitigation,
            )
        return None if estimate.cost is None else float(estimate.cost)

    def __repr__(self) -> str:
        return f"QiskitDriver(target={self._target!r})"


@contextmanager
def _translated(action: str) -> Iterator[None]:
    """Map qiskit-ionq's and requests' exceptions onto the package's errors."""
    import requests
    from qiskit_ionq.exceptions import (
        IonQAPIError,
        IonQCredentialsError,
        IonQError,
        IonQRetriableError,
    )

    try:
        yield
    except IonQRetriableError as exc:
        cause = getattr(exc, "_cause", None) or exc.__cause__
        if isinstance(cause, IonQAPIError):
            raise _from_status(action, cause.status_code, cause.message, cause.headers) from exc
        if isinstance(cause, BaseException):
            raise _from_connection(action, cause) from exc
        raise RemoteCallError(f"IonQ: {action} failed: {exc}") from exc
    except IonQAPIError as exc:
        raise _from_status(action, exc.status_code, exc.message, exc.headers) from exc
    except IonQCredentialsError as exc:
        raise CredentialsError(f"IonQ refused the credentials while {action}: {exc}") from exc
    except requests.exceptions.RequestException as exc:
        raise _from_connection(action, exc) from exc
    except IonQError as exc:
        raise BackendError(f"IonQ: {action} failed: {exc}") from exc


def _from_status(action: str, status: int, message: object, headers: Any) -> BackendError:
    text = f"IonQ answered {status} while {action}: {message}"
    if status in (401, 403):
        return CredentialsError(
            f"{text}; check the IonQ API key (IONQ_API_KEY or QDB_IONQ_API_KEY, or api_key=)"
        )
    if status in (408, 409, 425, 429) or status >= 500:
        return RemoteCallError(
            text, status=status, retry_after=retry_after_seconds(headers), sent=True
        )
    return JobFailedError(text)


def _from_connection(action: str, exc: BaseException) -> RemoteCallError:
    sent = not connection_never_made(exc)
    what = "lost the connection or timed out" if sent else "could not connect"
    return RemoteCallError(f"IonQ: {what} while {action} ({type(exc).__name__})", sent=sent)
