"""IonQ's cloud simulator and QPUs as a :class:`~backends.base.Backend`, through either client."""

from __future__ import annotations

import asyncio
import importlib.util
import math
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from numpy.typing import NDArray
from pydantic import SecretStr

from ..base import (
    Backend,
    Capabilities,
    ProviderJob,
    ProviderJobStatus,
    RunRequest,
    RunResult,
    SubmitHook,
)
from ..circuit import Circuit
from ..errors import (
    BackendError,
    BackendUnavailableError,
    CredentialsError,
    JobFailedError,
    MissingDependencyError,
    ShotsError,
)
from ..observables import ObservableLike, PauliTerm, as_observables
from ..settings import IONQ_KEY_VARIABLES, IonQSettings
from ..simulator.statevector import pauli_terms
from .driver import INSTALL_HINT, Driver, JobSpec
from .jobs import JobPolicy, JobRunner
from .results import (
    Distribution,
    binding_rng,
    histogram_counts,
    label_counts,
    parity_expectations,
    sample_counts,
)
from .targets import (
    BACKEND_NAMES,
    DEFAULT_API_URL,
    NOISE_MODELS,
    TARGETS,
    IonQTarget,
    normalize_api_url,
)
from .translate import NATIVE_GATES, DriverName, MeasurementGroup, group_terms, job_circuit, lower

__all__ = ["IonQBackend"]


_SDKS: dict[str, tuple[str, str]] = {
    "qiskit": ("qiskit_ionq", "qiskit-ionq"),
    "cirq": ("cirq_ionq", "cirq-ionq"),
}
#: Shots sent with an exact-mode job: the ideal simulator returns exact probabilities
#: whatever the count, and IonQ needs at least one.
_EXACT_MODE_SHOTS = 1


@dataclass(frozen=True, slots=True)
class _Job:
    """One job of a run: binding ``binding``, measurement group ``group`` (or -1: counts)."""

    binding: int
    group: int
    circuit: Circuit


@dataclass(frozen=True, slots=True)
class _Plan:
    """A run as the jobs it is made of, and what reading their results needs."""

    jobs: list[_Job]
    specs: list[JobSpec]
    seed: int
    shots: int
    terms: list[PauliTerm]
    weights: NDArray[np.float64] | None
    groups: list[MeasurementGroup]


#: IonQ's statuses of a job that changes no more.
_ENDED_STATUSES = frozenset({"completed", "failed", "canceled", "cancelled", "deleted"})


class IonQBackend(Backend):
    """IonQ's cloud simulator (``"simulator"``) or a QPU (``"qpu.aria-1"``, ``"qpu.forte-1"``).

    Jobs go through an official client, ``driver="qiskit"`` (qiskit-ionq) or ``"cirq"``
    (cirq-ionq), whose blocking calls run in a private thread pool, each under
    ``request_timeout_s``. Every binding (and, for observables, every group of
    qubit-wise commuting Pauli terms) is one job; at most ``max_concurrent_jobs`` are in
    flight. Jobs are polled with exponential backoff from ``poll_interval_s``; one
    without a result after ``job_timeout_s`` is cancelled and raises
    :class:`JobTimeoutError`, and cancelling the awaiting task cancels the remote jobs.
    429s, 5xxs and lost connections are retried ``max_retries`` times under one
    :class:`~backends.retry.RetryPolicy`, then raise :class:`TransientBackendError` (or
    :class:`BackendUnavailableError` when IonQ could not be reached at all). The backend
    retries its own calls (``supports_own_retries``), so a BackendManager does not
    retry it again. A job submission is repeated only when IonQ cannot have created the
    job (a 429, a 503, no connection); any other failed submission raises
    :class:`SubmissionUnknownError` and is not repeated, since it could be billed twice.

    The ideal simulator returns exact probabilities, so it offers exact expectations and
    counts are sampled from them with a seeded generator; QPUs and noisy simulation
    return measured frequencies, which are used as counts.

    Without ``api_key`` the key is read from ``QDB_IONQ_API_KEY`` or ``IONQ_API_KEY``,
    without ``api_url`` the API root from ``QDB_IONQ_API_URL`` (default IonQ's public
    API), when the backend is built. The key is kept as a :class:`pydantic.SecretStr`
    and appears in no repr, log or message; an empty or blank one raises
    :class:`CredentialsError` at once. Without any key the backend still validates and
    prices jobs (cost planning needs no account); running one raises
    :class:`CredentialsError` before anything is sent.
    """

    def __init__(
        self,
        target: str = "simulator",
        driver: DriverName = "qiskit",
        noise_model: str | None = None,
        *,
        api_key: str | SecretStr | None = None,
        api_url: str | None = None,
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
        self.policy = JobPolicy(
            job_timeout_s=job_timeout_s,
            poll_interval_s=poll_interval_s,
            max_poll_interval_s=max_poll_interval_s,
            request_timeout_s=request_timeout_s,
            max_concurrent_jobs=max_concurrent_jobs,
            max_retries=max_retries,
            retry_backoff_s=retry_backoff_s,
        )
        environment = IonQSettings.from_environment() if None in (api_key, api_url) else None
        if api_key is not None:
            self._api_key = _as_secret(api_key, "api_key")
        else:
            assert environment is not None
            self._api_key = _as_secret(environment.api_key, " or ".join(IONQ_KEY_VARIABLES))
        if api_url is None:
            assert environment is not None
            api_url = environment.api_url or DEFAULT_API_URL
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
        self.name = BACKEND_NAMES[target]
        #: Rough typical queue wait in seconds, read by the BackendManager when ranking.
        self.typical_queue_s: float = spec.typical_queue_s
        #: Rough two-qubit gate fidelity, read by the BackendManager when ranking.
        self.fidelity: float = _fidelity(spec, noise_model)
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
        self._runner = JobRunner(self.name, self.policy)
        self._driver: Driver | None = None
        self._driver_lock: asyncio.Lock | None = None
        self._lowered: dict[str, Circuit] = {}
        self._closed = False

    # ------------------------------------------------------------------ contract
    @property
    def capabilities(self) -> Capabilities:
        return self._capabilities

    @property
    def provider_job_ids(self) -> tuple[str, ...]:
        """Every IonQ job id this backend has created, oldest first (failed ones included)."""
        return self._runner.job_ids

    def supports_own_retries(self) -> bool:
        """True: every IonQ call is retried by the backend's JobRunner, and only there."""
        return True

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
        value = await self._runner.call(
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
        plan = self._plan(request)
        ids: list[str] = []
        distributions: list[Distribution] = []
        if plan.jobs:  # observables of identities alone need no job
            driver = await self._ready()
            distributions = await self._runner.run(
                driver,
                [(job.circuit, spec) for job, spec in zip(plan.jobs, plan.specs, strict=True)],
                ids,
            )
        return self._result(request, plan, distributions, ids, started)

    # ------------------------------------------------------------------ re-attach
    def supports_reattach(self) -> bool:
        """True: IonQ keeps jobs, and each one's name tells which part of a run it is."""
        return True

    async def reattach(
        self,
        request: RunRequest,
        provider_job_ids: Sequence[str],
        *,
        before_submit: SubmitHook | None = None,
    ) -> RunResult:
        """Finish ``request`` from the IonQ jobs an earlier run of it created.

        Each job is read (``GET /jobs/{id}``) and placed by its name (``qdb {circuit}
        b{binding} g{group}``). A part whose job is queued, running or completed is
        waited for and read, never sent again; a part whose job ended ``failed`` or
        ``canceled`` is submitted once more (``resubmitted`` in the metadata), as is a
        part with no job of this run (``submitted``; e.g. the earlier run never sent it,
        or IonQ no longer knows its job: ``lost_provider_jobs``). Jobs that fail from here
        on fail the run as in :meth:`run`. A live job of another run among the ids is an
        error: nothing is then sent.
        """
        if self._closed:
            raise BackendError(f"this {type(self).__name__} is closed; create a new one")
        started = time.perf_counter()
        plan = self._plan(request)
        slot_of = {spec.name: index for index, spec in enumerate(plan.specs)}
        driver = await self._ready()
        live: dict[int, tuple[str, str]] = {}  # slot -> (IonQ id, status)
        ended: dict[int, str] = {}  # slot -> why its job gave no result
        lost: list[str] = []
        for provider_id in dict.fromkeys(str(i) for i in provider_job_ids):
            try:
                state = await self._runner.call(
                    driver.status, provider_id, idempotent=True, operation="status"
                )
            except JobFailedError:  # a 404 (or another refusal): IonQ no longer has it
                lost.append(provider_id)
                continue
            slot = slot_of.get(state.name or "")
            status = state.status.lower()
            if slot is None:
                if status not in _ENDED_STATUSES:
                    raise BackendError(
                        f"IonQ job {provider_id} ({state.name!r}, {status}) is not one of the "
                        "jobs of this run, yet it was recorded for it; nothing was sent. "
                        "Was the same request key used for another computation?"
                    )
                continue
            if status in _ENDED_STATUSES - {"completed"}:
                ended.setdefault(slot, f"{provider_id} ended {status}")
                continue
            # Of two live jobs for one part (not made by this package), a completed one wins.
            if slot not in live or (status == "completed" and live[slot][1] != "completed"):
                live[slot] = (provider_id, status)
        missing = [index for index in range(len(plan.jobs)) if index not in live]
        submitted_cost = sum(
            self._job_cost(plan.jobs[index].circuit, plan.shots) for index in missing
        )
        if missing and before_submit is not None:
            await before_submit(submitted_cost)
        ids: list[str] = []
        distributions = await self._runner.resume(
            driver,
            [
                (job.circuit, spec, live[index][0] if index in live else None)
                for index, (job, spec) in enumerate(zip(plan.jobs, plan.specs, strict=True))
            ],
            ids,
        )
        result = self._result(
            request, plan, distributions, [*dict.fromkeys([*provider_job_ids, *ids])], started
        )
        label = [f"b{job.binding} g{max(job.group, 0)}" for job in plan.jobs]
        result.metadata.update(
            reattached=True,
            attached_jobs=len(live),
            resubmitted=[label[index] for index in missing if index in ended],
            submitted=[label[index] for index in missing if index not in ended],
            lost_provider_jobs=lost,
            ended_provider_jobs={label[index]: why for index, why in ended.items()},
            submitted_cost_usd=submitted_cost,
        )
        return result

    # ------------------------------------------------------------------ results
    def _plan(self, request: RunRequest) -> _Plan:
        """Every job ``request`` is made of, with the specs they are (or were) sent with."""
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
        return _Plan(
            jobs=jobs,
            specs=self._specs(jobs, shots, seed, circuit),
            seed=seed,
            shots=shots,
            terms=terms,
            weights=weights,
            groups=groups,
        )

    def _result(
        self,
        request: RunRequest,
        plan: _Plan,
        distributions: Sequence[Distribution],
        ids: list[str],
        started: float,
    ) -> RunResult:
        circuit, jobs, shots, seed = request.circuit, plan.jobs, plan.shots, plan.seed
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
        terms, weights, groups = plan.terms, plan.weights, plan.groups
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
    def _specs(self, jobs: list[_Job], shots: int, seed: int, circuit: Circuit) -> list[JobSpec]:
        tag = circuit.content_hash()[:12]
        return [
            JobSpec(
                target=self.target.name,
                shots=shots,
                name=f"qdb {tag} b{job.binding} g{max(job.group, 0)}",
                noise_model=self.noise_model,
                noise_seed=None if self._exact else _noise_seed(seed, job.binding, job.group),
                error_mitigation=self.error_mitigation,
                metadata={
                    "qdb_circuit": tag,
                    "qdb_binding": str(job.binding),
                    "qdb_group": str(max(job.group, 0)),
                },
            )
            for job in jobs
        ]

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
                timeout = self.policy.request_timeout_s
                try:
                    async with asyncio.timeout(timeout):  # not wait_for: see JobRunner
                        self._driver = await self._runner.in_thread(self._make_driver)
                except TimeoutError as exc:
                    raise BackendUnavailableError(
                        f"{self.name}: setting up the {self.driver_name} client took longer "
                        f"than {timeout:g} s"
                    ) from exc
        return self._driver

    def _make_driver(self) -> Driver:
        assert self._api_key is not None
        key = self._api_key.get_secret_value()
        if self.driver_name == "qiskit":
            from .qiskit_driver import QiskitDriver

            return QiskitDriver(key, self.api_url, self.target.name)
        from .cirq_driver import CirqDriver

        return CirqDriver(key, self.api_url, self.target.name)

    # ------------------------------------------------------------------ lookup
    def supports_job_lookup(self) -> bool:
        return True

    async def lookup_job(self, provider_job_id: str) -> ProviderJob:
        """IonQ's status of the job (``GET /jobs/{id}``) and its billed cost
        (``GET /jobs/{id}/cost``: ``cost`` once billed; ``None`` before)."""
        driver = await self._ready()
        state = await self._runner.call(
            driver.status, provider_job_id, idempotent=True, operation="status"
        )
        status = _PROVIDER_STATUS.get(state.status)
        if status is None:
            raise BackendError(
                f"IonQ reports job {provider_job_id} as {state.status!r}, a status this "
                "backend does not know"
            )
        cost: float | None = None
        if status in ("completed", "failed", "cancelled"):
            data = await self._runner.call(
                driver.cost, provider_job_id, idempotent=True, operation="cost"
            )
            cost = _billed_cost(data)
        return ProviderJob(id=state.id or provider_job_id, status=status, cost_usd=cost)

    async def cancel_job(self, provider_job_id: str) -> None:
        driver = await self._ready()
        await self._runner.call(driver.cancel, provider_job_id, idempotent=True, operation="cancel")

    async def aclose(self) -> None:
        self._closed = True
        self._runner.close()

    def __repr__(self) -> str:
        noise = f", noise_model={self.noise_model!r}" if self.noise_model else ""
        return (
            f"IonQBackend(target={self.target.name!r}, driver={self.driver_name!r}{noise}, "
            f"api_url={self.api_url!r}, api_key={self._api_key!r})"
        )


_NO_KEY = "no IonQ API key: set IONQ_API_KEY or QDB_IONQ_API_KEY, or pass api_key="


def _as_secret(api_key: str | SecretStr | None, source: str) -> SecretStr | None:
    """The key, stripped (a pasted key often ends in a newline); a blank one is refused."""
    if api_key is None:
        return None
    if isinstance(api_key, SecretStr):
        api_key = api_key.get_secret_value()
    if not isinstance(api_key, str):
        raise CredentialsError(
            f"api_key must be a string or a SecretStr, got {type(api_key).__name__}; {_NO_KEY}"
        )
    if not api_key.strip():
        raise CredentialsError(
            f"the IonQ API key given by {source} is empty or only whitespace; "
            "set IONQ_API_KEY or QDB_IONQ_API_KEY to your key, or pass api_key="
        )
    return SecretStr(api_key.strip())


def _fidelity(target: IonQTarget, noise_model: str | None) -> float:
    # A noisy simulation is as faithful as the QPU family its noise model imitates.
    if noise_model is None or noise_model == "ideal":
        return target.fidelity
    family = f"qpu.{noise_model.split('-')[0]}-"
    qpu = next((t for t in TARGETS.values() if t.name.startswith(family)), None)
    return qpu.fidelity if qpu is not None else 0.97


#: IonQ's job statuses (v0.4, and v0.3's spellings) as the backend contract names them.
_PROVIDER_STATUS: dict[str, ProviderJobStatus] = {
    "submitted": "queued",
    "ready": "queued",
    "queued": "queued",
    "started": "running",
    "running": "running",
    "completed": "completed",
    "failed": "failed",
    "canceled": "cancelled",
    "cancelled": "cancelled",
    "deleted": "cancelled",
}


def _billed_cost(data: object) -> float | None:
    """The USD amount of ``GET /jobs/{id}/cost``'s ``cost`` (absent until IonQ bills)."""
    if not isinstance(data, dict):
        return None
    cost = data.get("cost")
    value = cost.get("value") if isinstance(cost, dict) else cost
    if isinstance(value, bool) or not isinstance(value, int | float | str):
        return None
    try:
        amount = float(value)
    except ValueError:
        return None
    return amount if math.isfinite(amount) and amount >= 0 else None


def _noise_seed(seed: int, binding: int, group: int) -> int:
    # IonQ takes a 32-bit noise seed; derive one per job from the run's seed.
    state = np.random.SeedSequence(seed, spawn_key=(binding, group + 1)).generate_state(1)
    return int(state[0] & 0x7FFFFFFF)
