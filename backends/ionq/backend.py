"""IonQ's cloud simulator and QPUs as a :class:`~backends.base.Backend`, through either client."""

from __future__ import annotations

import asyncio
import collections
import importlib.util
import logging
import math
import time
from collections.abc import Awaitable, Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, TypeVar

import numpy as np
from numpy.typing import NDArray
from pydantic import SecretStr

from ..base import Backend, Capabilities, RunRequest, RunResult
from ..circuit import Circuit
from ..errors import (
    BackendError,
    BackendUnavailableError,
    CredentialsError,
    JobFailedError,
    JobTimeoutError,
    MissingDependencyError,
    ShotsError,
    TransientBackendError,
)
from ..observables import ObservableLike, as_observables
from ..simulator.statevector import pauli_terms
from .driver import INSTALL_HINT, Driver, JobSpec, JobState, RemoteCallError
from .results import (
    Distribution,
    binding_rng,
    histogram_counts,
    label_counts,
    parity_expectations,
    parse_distribution,
    sample_counts,
)
from .targets import DEFAULT_API_URL, NOISE_MODELS, TARGETS, IonQTarget, normalize_api_url
from .translate import NATIVE_GATES, DriverName, group_terms, job_circuit, lower

__all__ = ["IonQBackend"]

logger = logging.getLogger(__name__)

T = TypeVar("T")

_SDKS: dict[str, tuple[str, str]] = {
    "qiskit": ("qiskit_ionq", "qiskit-ionq"),
    "cirq": ("cirq_ionq", "cirq-ionq"),
}
#: Statuses after which a job changes no more.
_TERMINAL = frozenset({"completed", "failed", "canceled", "cancelled", "deleted"})
#: Shots sent with an exact-mode job: the ideal simulator returns exact probabilities
#: whatever the count, and IonQ needs at least one.
_EXACT_MODE_SHOTS = 1


@dataclass(frozen=True, slots=True)
class _Job:
    """One job of a run: binding ``binding``, measurement group ``group`` (or -1: counts)."""

    binding: int
    group: int
    circuit: Circuit


class IonQBackend(Backend):
    """IonQ's cloud simulator (``"simulator"``) or a QPU (``"qpu.aria-1"``, ``"qpu.forte-1"``).

    Jobs go through an official client, ``driver="qiskit"`` (qiskit-ionq) or ``"cirq"``
    (cirq-ionq), whose blocking calls run in a private thread pool, each under
    ``request_timeout_s``. Every binding (and, for observables, every group of
    qubit-wise commuting Pauli terms) is one job; at most ``max_concurrent_jobs`` are in
    flight. Jobs are polled with exponential backoff from ``poll_interval_s``; one
    without a result after ``job_timeout_s`` is cancelled and raises
    :class:`JobTimeoutError`, and cancelling the awaiting task cancels the remote jobs.
    429s, 5xxs and lost connections are retried ``max_retries`` times (a job submission
    only when IonQ cannot have created it: 429, 503 or no connection), then raise
    :class:`TransientBackendError` (or :class:`BackendUnavailableError` when IonQ could
    not be reached at all).

    The ideal simulator returns exact probabilities, so it offers exact expectations and
    counts are sampled from them with a seeded generator; QPUs and noisy simulation
    return measured frequencies, which are used as counts.

    ``api_key`` is kept as a :class:`pydantic.SecretStr` and appears in no repr, log or
    message. Without one the backend still validates and prices jobs (cost planning
    needs no account); running one raises :class:`CredentialsError` before anything is
    sent.
    """

    def __init__(
        self,
        target: str = "simulator",
        driver: DriverName = "qiskit",
        noise_model: str | None = None,
        *,
        api_key: str | SecretStr | None = None,
        api_url: str = DEFAULT_API_URL,
        job_timeout_s: float = 3600.0,
        poll_interval_s: float = 1.0,
        max_poll_interval_s: float = 30.0,
        request_timeout_s: float = 60.0,
        max_concurrent_jobs: int = 8,
        max_retries: int = 4,
        retry_backoff_s: float = 0.5,
        error_mitigation: bool | None = None,
        seed: int | None = None,
    ) -> None:
        spec = TARGETS.get(target)
        if spec is None:
            raise BackendError(
                f"unknown IonQ target {target!r}; choose one of {', '.join(sorted(TARGETS))}"
            )
        if driver not in _SDKS:
            raise BackendError(f"driver must be 'qiskit' or 'cirq', got {driver!r}")
        if noise_model is not None:
            if noise_model not in NOISE_MODELS:
                raise BackendError(
                    f"unknown noise model {noise_model!r}; IonQ offers "
                    f"{', '.join(sorted(NOISE_MODELS))}"
                )
            if not spec.is_simulator:
                raise BackendError("noise models apply to target='simulator' only")
        if error_mitigation is not None and spec.is_simulator:
            raise BackendError("error mitigation applies to QPU targets only")
        for label, value in (
            ("job_timeout_s", job_timeout_s),
            ("poll_interval_s", poll_interval_s),
            ("max_poll_interval_s", max_poll_interval_s),
            ("request_timeout_s", request_timeout_s),
        ):
            if not (isinstance(value, int | float) and math.isfinite(value) and value > 0):
                raise BackendError(f"{label} must be a positive number of seconds, got {value!r}")
        if max_concurrent_jobs < 1 or max_retries < 0 or retry_backoff_s < 0:
            raise BackendError(
                "max_concurrent_jobs must be >= 1, max_retries and retry_backoff_s >= 0"
            )
        self._api_key = _as_secret(api_key)
        module, distribution = _SDKS[driver]
        if importlib.util.find_spec(module) is None:
            raise MissingDependencyError(
                f"driver={driver!r} needs {distribution}; install it with: {INSTALL_HINT}"
            )
        self.target: IonQTarget = spec
        self.driver_name: DriverName = driver
        self.noise_model = noise_model
        self.error_mitigation = error_mitigation
        self.api_url = normalize_api_url(api_url)
        self.name = f"ionq-{target}"
        self.job_timeout_s = float(job_timeout_s)
        self.poll_interval_s = float(poll_interval_s)
        self.max_poll_interval_s = float(max_poll_interval_s)
        self.request_timeout_s = float(request_timeout_s)
        self.max_concurrent_jobs = int(max_concurrent_jobs)
        self.max_retries = int(max_retries)
        self.retry_backoff_s = float(retry_backoff_s)
        #: Rough typical queue wait in seconds, read by the BackendManager when ranking.
        self.typical_queue_s: float = spec.typical_queue_s
        #: Rough two-qubit gate fidelity, read by the BackendManager when ranking.
        self.fidelity: float = spec.fidelity if noise_model in (None, "ideal") else 0.99
        self._exact = spec.is_simulator and noise_model in (None, "ideal")
        self._capabilities = Capabilities(
            max_qubits=spec.max_qubits,
            native_gates=NATIVE_GATES,
            supports_exact=self._exact,
            supports_shots=True,
            max_shots=spec.max_shots,
            connectivity=None,  # trapped ions: all-to-all
        )
        self._seeds = np.random.SeedSequence(seed)
        self._driver: Driver | None = None
        self._driver_lock: asyncio.Lock | None = None
        self._executor: ThreadPoolExecutor | None = None
        self._gates: dict[asyncio.AbstractEventLoop, asyncio.Semaphore] = {}
        self._lowered: dict[str, Circuit] = {}
        self._job_ids: collections.deque[str] = collections.deque(maxlen=100_000)
        self._closed = False

    # ------------------------------------------------------------------ contract
    @property
    def capabilities(self) -> Capabilities:
        return self._capabilities

    @property
    def provider_job_ids(self) -> tuple[str, ...]:
        """Every IonQ job id this backend has created, oldest first (failed ones included)."""
        return tuple(self._job_ids)

    def _mitigation(self, shots: int) -> bool:
        return self.target.price.mitigation_on(shots, self.error_mitigation)

    def estimate_cost(self, circuit: Circuit, shots: int | None) -> float:
        """IonQ's price of one job of ``circuit`` as this backend's client submits it.

        QPU targets: ``minimum + 0.000220 x 1q gates x shots + 0.000975 x 2q gates x
        shots``, the minimum $12.4166, or $97.50 with error mitigation (IonQ's default
        from 500 shots). The simulator is free. Gates are counted after the rewrites the
        client needs (e.g. ``cz`` becomes ``h, cx, h`` for cirq-ionq).
        """
        if self.target.price.is_free:
            return 0.0
        shots = _EXACT_MODE_SHOTS if shots is None else shots
        return self.target.price.circuit_cost(
            self._lower(circuit), shots, error_mitigation=self._mitigation(shots)
        )

    def estimate_run_cost(
        self,
        circuit: Circuit,
        shots: int | None,
        observables: Sequence[ObservableLike] | ObservableLike | None = None,
        batch_size: int = 1,
    ) -> float:
        """The price of everything :meth:`run` would submit: one job per binding, and per
        group of qubit-wise commuting Pauli terms when ``observables`` are given (their
        basis rotations included), which :meth:`estimate_cost` (one job) does not see.
        """
        if self.target.price.is_free:
            return 0.0
        shots = _EXACT_MODE_SHOTS if shots is None else shots
        counts = self._lower(circuit).count_gates()
        if observables is None:
            rotations = [0]
        else:
            terms, _ = pauli_terms(tuple(as_observables(observables, circuit.num_qubits)))
            rotations = [
                group.basis.count("X") + 2 * group.basis.count("Y") for group in group_terms(terms)
            ]
        mitigation = self._mitigation(shots)
        per_binding = sum(
            self.target.price.job_cost(
                counts[1] + extra, counts[2], shots, error_mitigation=mitigation
            )
            for extra in rotations
        )
        return batch_size * per_binding

    async def fetch_cost_estimate(self, circuit: Circuit, shots: int) -> float:
        """IonQ's own estimate (``GET /jobs/estimate``) of one job of ``circuit``.

        cirq-ionq has no estimate call; with it the local price model answers.
        """
        lowered = self._lower(circuit)
        counts = lowered.count_gates()
        driver = await self._ready()
        value = await self._call(
            driver.estimate,
            self.target.name,
            counts[1],
            counts[2],
            circuit.num_qubits,
            shots,
            self._mitigation(shots),
            idempotent=True,
        )
        return self.estimate_cost(circuit, shots) if value is None else value

    def validate(self, circuit: Circuit, *args: Any, **kwargs: Any) -> RunRequest:
        request = super().validate(circuit, *args, **kwargs)
        if self.error_mitigation and request.shots is not None and request.shots < 500:
            raise ShotsError(
                f"IonQ's error mitigation needs at least 500 shots, got {request.shots}; "
                "give more shots or create the backend with error_mitigation=False"
            )
        return request

    async def _execute(self, request: RunRequest) -> RunResult:
        if self._closed:
            raise BackendError(f"this {type(self).__name__} is closed; create a new one")
        started = time.perf_counter()
        seed = request.seed
        if seed is None:
            seed = int(self._seeds.spawn(1)[0].generate_state(1)[0])
        circuit = request.circuit
        lowered = self._lower(circuit)
        terms, weights = (
            pauli_terms(request.observables) if request.observables is not None else ([], None)
        )
        groups = group_terms(terms)
        jobs: list[_Job] = []
        for b, values in enumerate(request.parameter_values):
            if request.observables is None:
                jobs.append(_Job(b, -1, job_circuit(lowered, values)))
            else:
                jobs.extend(
                    _Job(b, g, job_circuit(lowered, values, group.basis))
                    for g, group in enumerate(groups)
                )
        shots = request.shots if request.shots is not None else _EXACT_MODE_SHOTS
        ids: list[str] = []
        driver = await self._ready()
        distributions = await self._run_jobs(driver, jobs, shots, seed, circuit, ids)
        metadata: dict[str, Any] = {
            "target": self.target.name,
            "driver": self.driver_name,
            "noise_model": self.noise_model or "ideal",
            "provider_job_ids": ids,
            "jobs": len(jobs),
            "cost_usd": sum(self._job_cost(job.circuit, shots) for job in jobs),
            "seed": seed,
            "elapsed_s": time.perf_counter() - started,
        }
        if request.observables is None:
            measured = [(m.qubit, m.clbit) for m in circuit.measurements] or [
                (q, q) for q in range(circuit.num_qubits)
            ]
            width = 1 + max(c for _, c in measured)
            counts = [
                label_counts(dist[0], self._counts(dist, shots, seed, job.binding), measured, width)
                for job, dist in zip(jobs, distributions, strict=True)
            ]
            return RunResult(
                backend=self.name,
                batch_size=request.batch_size,
                shots=request.shots,
                counts=counts,
                metadata=metadata,
            )
        assert weights is not None
        values = np.ones((request.batch_size, len(terms)))  # identity terms stay 1
        for job, dist in zip(jobs, distributions, strict=True):
            group = groups[job.group]
            outcomes, probs = dist
            if request.shots is not None:
                counts_ = self._counts(dist, shots, seed, job.binding, job.group)
                probs = counts_ / shots
            masks = [terms[t].x_mask | terms[t].z_mask for t in group.terms]
            values[job.binding, list(group.terms)] = parity_expectations(outcomes, probs, masks)
        return RunResult(
            backend=self.name,
            batch_size=request.batch_size,
            shots=request.shots,
            expectations=values @ weights,
            metadata=metadata,
        )

    def _counts(self, dist: Distribution, shots: int, seed: int, *key: int) -> NDArray[np.int64]:
        # Exact probabilities are sampled; measured frequencies already are shots.
        if self._exact:
            return sample_counts(dist[1], shots, binding_rng(seed, *key))
        return histogram_counts(dist[1], shots)

    def _job_cost(self, circuit: Circuit, shots: int) -> float:
        if self.target.price.is_free:
            return 0.0
        return self.target.price.circuit_cost(
            circuit, shots, error_mitigation=self._mitigation(shots)
        )

    def _lower(self, circuit: Circuit) -> Circuit:
        key = circuit.content_hash()
        lowered = self._lowered.get(key)
        if lowered is None:
            if len(self._lowered) > 256:
                self._lowered.clear()
            lowered = self._lowered[key] = lower(circuit, self.driver_name)
        return lowered

    # ------------------------------------------------------------------ jobs
    async def _run_jobs(
        self,
        driver: Driver,
        jobs: list[_Job],
        shots: int,
        seed: int,
        circuit: Circuit,
        ids: list[str],
    ) -> list[Distribution]:
        gate = self._gate()
        tag = circuit.content_hash()[:12]
        out: list[Distribution | None] = [None] * len(jobs)

        async def one(index: int, job: _Job) -> None:
            spec = JobSpec(
                target=self.target.name,
                shots=shots,
                name=f"qdb {tag} b{job.binding} g{max(job.group, 0)}",
                noise_model=self.noise_model,
                noise_seed=_noise_seed(seed, job.binding, job.group) if not self._exact else None,
                error_mitigation=self.error_mitigation,
                metadata={"qdb_circuit": tag, "qdb_binding": str(job.binding)},
            )
            async with gate:
                out[index] = await self._run_job(driver, job.circuit, spec, ids)

        # A failing job cancels its siblings, and each cancels its remote job.
        async with asyncio.TaskGroup() as group:
            for index, job in enumerate(jobs):
                group.create_task(one(index, job))
        return [d for d in out if d is not None]

    async def _run_job(
        self, driver: Driver, circuit: Circuit, spec: JobSpec, ids: list[str]
    ) -> Distribution:
        job_id = await self._submit(driver, circuit, spec, ids)
        finished = False
        try:
            state = await self._wait(driver, job_id)
            finished = True
            data = await self._call(driver.probabilities, state, idempotent=True)
            return parse_distribution(data, circuit.num_qubits, job_id)
        except BaseException:
            if not finished:
                # Shielded: a cancelled task still gets its remote job cancelled.
                await asyncio.shield(self._cancel(driver, job_id))
            raise

    async def _submit(self, driver: Driver, circuit: Circuit, spec: JobSpec, ids: list[str]) -> str:
        def record(job_id: str) -> str:
            ids.append(job_id)
            self._job_ids.append(job_id)
            logger.debug("IonQ job %s created on %s (%s)", job_id, self.target.name, spec.name)
            return job_id

        for attempt in range(self.max_retries + 1):
            call = self._in_thread(driver.submit, circuit, spec)
            try:
                return record(await asyncio.wait_for(asyncio.shield(call), self.request_timeout_s))
            except asyncio.CancelledError:
                # The POST may still create the job: cancel it as soon as its id arrives.
                call.add_done_callback(lambda f: self._cancel_late(driver, f, record))
                raise
            except TimeoutError as exc:
                call.add_done_callback(lambda f: self._cancel_late(driver, f, record))
                raise TransientBackendError(
                    f"{self.name}: no answer to a job submission within "
                    f"{self.request_timeout_s:g} s (the job may exist; it will be cancelled "
                    "if it does)"
                ) from exc
            except RemoteCallError as exc:
                # Only retry what cannot have created a job: a 429/503 or no connection.
                safe = exc.status in (429, 503) or exc.sent is False
                if not safe or attempt == self.max_retries:
                    raise _final(self.name, exc) from exc
                await self._backoff(attempt, exc)
        raise AssertionError("unreachable")  # pragma: no cover

    def _cancel_late(
        self, driver: Driver, call: asyncio.Future[str], record: Callable[[str], str]
    ) -> None:
        if call.cancelled() or call.exception() is not None:
            return
        job_id = record(call.result())
        try:
            self._in_thread(driver.cancel, job_id).add_done_callback(_ignore)
        except RuntimeError:  # the loop or the pool is gone
            logger.warning("could not cancel IonQ job %s: the backend is shutting down", job_id)

    async def _wait(self, driver: Driver, job_id: str) -> JobState:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.job_timeout_s
        interval = self.poll_interval_s
        while True:
            state = await self._call(driver.status, job_id, idempotent=True)
            if state.status == "completed":
                return state
            if state.status in ("failed",):
                raise JobFailedError(f"IonQ job {job_id} failed: {state.failure or 'no message'}")
            if state.status in _TERMINAL:
                raise JobFailedError(f"IonQ job {job_id} ended {state.status} before finishing")
            left = deadline - loop.time()
            if left <= 0:
                raise JobTimeoutError(
                    f"IonQ job {job_id} had no result within {self.job_timeout_s:g} s "
                    f"(last status {state.status!r}); it was cancelled"
                )
            await asyncio.sleep(min(interval, left))
            interval = min(interval * 1.5, self.max_poll_interval_s)

    async def _cancel(self, driver: Driver, job_id: str) -> None:
        try:
            await self._call(driver.cancel, job_id, idempotent=True)
            logger.info("cancelled IonQ job %s", job_id)
        except Exception as exc:  # best effort: the original error is what matters
            logger.warning("could not cancel IonQ job %s: %s", job_id, exc)

    async def _call(self, fn: Callable[..., T], *args: Any, idempotent: bool) -> T:
        """``fn(*args)`` in the pool under ``request_timeout_s``, retried while it may be."""
        for attempt in range(self.max_retries + 1):
            try:
                return await asyncio.wait_for(self._in_thread(fn, *args), self.request_timeout_s)
            except TimeoutError:
                error = RemoteCallError(
                    f"{self.name}: no answer within {self.request_timeout_s:g} s", sent=True
                )
            except RemoteCallError as exc:
                error = exc
            if not idempotent or attempt == self.max_retries:
                raise _final(self.name, error)
            await self._backoff(attempt, error)
        raise AssertionError("unreachable")  # pragma: no cover

    async def _backoff(self, attempt: int, error: RemoteCallError) -> None:
        delay = self.retry_backoff_s * 2**attempt
        if error.retry_after is not None:
            delay = max(delay, error.retry_after)
        delay = min(delay, self.max_poll_interval_s)
        logger.info("%s: %s; retrying in %.3g s", self.name, error, delay)
        await asyncio.sleep(delay)

    def _in_thread(self, fn: Callable[..., T], *args: Any) -> asyncio.Future[T]:
        if self._executor is None:
            self._executor = ThreadPoolExecutor(
                self.max_concurrent_jobs + 2, thread_name_prefix="qdb-ionq"
            )
        return asyncio.get_running_loop().run_in_executor(self._executor, fn, *args)

    def _gate(self) -> asyncio.Semaphore:
        loop = asyncio.get_running_loop()
        gate = self._gates.get(loop)
        if gate is None:
            self._gates = {loop: asyncio.Semaphore(self.max_concurrent_jobs)}
            gate = self._gates[loop]
        return gate

    async def _ready(self) -> Driver:
        """The driver, built on first use (the clients do network calls when set up)."""
        if self._driver is not None:
            return self._driver
        if self._api_key is None:
            raise CredentialsError(_NO_KEY)
        if self._driver_lock is None:
            self._driver_lock = asyncio.Lock()
        async with self._driver_lock:
            if self._driver is None:
                # Imported here, on the event loop's thread, not in the pool: Qiskit 2.x
                # first imported by a thread that later exits makes the process segfault.
                if self.driver_name == "qiskit":
                    from .qiskit_driver import load_sdk
                else:
                    from .cirq_driver import load_sdk
                load_sdk()
                self._driver = await self._with_timeout(self._in_thread(self._make_driver))
        return self._driver

    async def _with_timeout(self, awaitable: Awaitable[T]) -> T:
        try:
            return await asyncio.wait_for(awaitable, self.request_timeout_s)
        except TimeoutError as exc:
            raise BackendUnavailableError(
                f"{self.name}: setting up the {self.driver_name} client took longer than "
                f"{self.request_timeout_s:g} s"
            ) from exc

    def _make_driver(self) -> Driver:
        assert self._api_key is not None
        key = self._api_key.get_secret_value()
        if self.driver_name == "qiskit":
            from .qiskit_driver import QiskitDriver

            return QiskitDriver(key, self.api_url, self.target.name)
        from .cirq_driver import CirqDriver

        return CirqDriver(key, self.api_url, self.target.name)

    async def aclose(self) -> None:
        self._closed = True
        executor, self._executor = self._executor, None
        if executor is not None:
            # Threads still blocked in a client call finish on their own; do not wait.
            executor.shutdown(wait=False, cancel_futures=True)

    def __repr__(self) -> str:
        noise = f", noise_model={self.noise_model!r}" if self.noise_model else ""
        return (
            f"IonQBackend(target={self.target.name!r}, driver={self.driver_name!r}{noise}, "
            f"api_url={self.api_url!r}, api_key={self._api_key!r})"
        )


_NO_KEY = "no IonQ API key: set IONQ_API_KEY in the settings or pass api_key= to IonQBackend"


def _as_secret(api_key: str | SecretStr | None) -> SecretStr | None:
    if api_key is None:
        return None
    if isinstance(api_key, SecretStr):
        api_key = api_key.get_secret_value()
    if not isinstance(api_key, str):
        raise CredentialsError(f"api_key must be a string or a SecretStr; {_NO_KEY}")
    return SecretStr(api_key.strip()) if api_key.strip() else None


def _noise_seed(seed: int, binding: int, group: int) -> int:
    # IonQ takes a 32-bit noise seed; derive one per job from the run's seed.
    state = np.random.SeedSequence(seed, spawn_key=(binding, group + 1)).generate_state(1)
    return int(state[0] & 0x7FFFFFFF)


def _final(name: str, error: RemoteCallError) -> BackendError:
    """What a call that will not be retried raises: unreachable, or merely transient."""
    if error.status is None and error.sent is False:
        return BackendUnavailableError(f"{name}: IonQ could not be reached: {error}")
    return error


def _ignore(future: asyncio.Future[Any]) -> None:
    if not future.cancelled():
        future.exception()  # retrieved, so asyncio does not log it as never retrieved
