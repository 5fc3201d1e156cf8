"""The BackendManager: which backend runs a job, within what budget, with what retries."""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from importlib.metadata import entry_points
from typing import Any, Literal

import numpy as np
from numpy.typing import ArrayLike, NDArray

from .accounting import (
    Accounting,
    Attachment,
    Budget,
    InMemoryAccounting,
    JobRecord,
    provider_job_sink,
)
from .base import Backend, RunRequest, RunResult, provider_bill
from .circuit import Circuit
from .errors import (
    BackendError,
    BackendUnavailableError,
    BudgetExceededError,
    CapacityError,
    InvalidBudgetError,
    RequestKeyError,
    SubmissionUnknownError,
    TransientBackendError,
    UnknownBackendError,
)
from .observables import ObservableLike
from .retry import RetryPolicy, retry_async
from .simulator import SimulatorBackend

__all__ = [
    "ENTRY_POINT_GROUP",
    "BackendManager",
    "Candidate",
    "DegradePolicy",
    "RetryPolicy",
    "Selection",
    "UnknownBackendError",
]

logger = logging.getLogger(__name__)

#: Backends other packages provide are found under this entry-point group.
ENTRY_POINT_GROUP = "quantum_db.backends"

Requirement = Literal["exact", "shots"]
Degradation = Literal["fewer_shots", "cheaper_backend", "simulator"]


@dataclass(frozen=True, slots=True)
class DegradePolicy:
    """What to try, in order, when a job does not fit its budget (empty: refuse it)."""

    steps: tuple[Degradation, ...] = ()
    #: ``fewer_shots`` never goes below this many shots.
    min_shots: int = 100


@dataclass(frozen=True, slots=True)
class Candidate:
    name: str
    estimated_cost: float
    queue_s: float
    fidelity: float


@dataclass(frozen=True, slots=True)
class Selection:
    """A ranked choice of backend and the reasons the others were turned down."""

    chosen: Candidate
    ranking: tuple[Candidate, ...]
    rejected: tuple[tuple[str, str], ...]

    def explain(self) -> str:
        lines = [
            f"chose {self.chosen.name} (est. ${self.chosen.estimated_cost:.4f}, "
            f"queue ~{self.chosen.queue_s:g} s, fidelity {self.chosen.fidelity:g})"
        ]
        lines += [
            f"  also capable: {c.name} (est. ${c.estimated_cost:.4f}, queue ~{c.queue_s:g} s)"
            for c in self.ranking[1:]
        ]
        lines += [f"  rejected {name}: {why}" for name, why in self.rejected]
        return "\n".join(lines)


@dataclass(slots=True)
class _Entry:
    backend: Backend
    concurrency: int
    semaphore: asyncio.Semaphore | None = field(default=None)

    def slots(self) -> asyncio.Semaphore:
        """The backend's concurrency limit (made on first use, inside the event loop)."""
        if self.semaphore is None:
            self.semaphore = asyncio.Semaphore(self.concurrency)
        return self.semaphore


def _retryable(exc: BaseException) -> bool:
    # A submission the provider may have acted on is never repeated, whatever its class.
    return isinstance(exc, TransientBackendError) and not isinstance(exc, SubmissionUnknownError)


def _check_request_key(request_key: object) -> None:
    # Stored in a 64-character column on both dialects; PostgreSQL refuses NUL in text.
    if request_key is not None and (
        not isinstance(request_key, str)
        or not 1 <= len(request_key) <= 64
        or not request_key.isprintable()
    ):
        raise RequestKeyError(
            "request_key must be a printable string of 1-64 characters (e.g. a hex digest of "
            f"what the job computes), got {request_key!r}"
        )


def _check_wrt(wrt: object, num_parameters: int) -> None:
    if wrt is None:
        return
    if isinstance(wrt, str | bytes) or not isinstance(wrt, Sequence):
        raise BackendError(f"wrt must be a sequence of parameter indices, got {wrt!r}")
    for index in wrt:
        if (
            isinstance(index, bool)
            or not isinstance(index, int | np.integer)
            or not 0 <= index < num_parameters
        ):
            raise BackendError(
                f"wrt must list parameter indices in 0..{num_parameters - 1}, got {index!r}"
            )


def _reattach_note(metadata: Mapping[str, Any], charged: float) -> str:
    """What the job's record says about how it was finished."""
    parts = [f"re-attached to {metadata.get('attached_jobs', 0)} provider job(s) of an earlier run"]
    resubmitted = metadata.get("resubmitted") or []
    if resubmitted:
        ended = metadata.get("ended_provider_jobs") or {}
        why = "; ".join(f"{slot}: {ended.get(slot, 'no result')}" for slot in resubmitted)
        parts.append(f"resubmitted {', '.join(resubmitted)} ({why})")
    submitted = metadata.get("submitted") or []
    if submitted:
        parts.append(f"submitted {', '.join(submitted)} (no job of the earlier run found)")
    lost = metadata.get("lost_provider_jobs") or []
    if lost:
        parts.append(f"the provider no longer knows {', '.join(lost)}")
    if charged > 0:
        parts.append(f"${charged:.4f} of it had been charged before (by a sweep or its run)")
    return "; ".join(parts)


def _new_job(
    backend: str,
    circuit: Circuit,
    shots: int | None,
    batch_size: int,
    cost: float,
    run_id: str | None,
    request_key: str | None,
) -> JobRecord:
    return JobRecord(
        id=uuid.uuid4().hex,
        backend=backend,
        circuit_hash=circuit.content_hash(),
        shots=shots,
        batch_size=batch_size,
        estimated_cost=cost,
        run_id=run_id,
        request_key=request_key,
    )


def representative_circuit(num_qubits: int, depth: int) -> Circuit:
    """A circuit of the given width and depth for pricing before the real one exists:
    each layer a rotation on every qubit and a CNOT chain."""
    circuit = Circuit(num_qubits)
    for _ in range(max(depth, 1)):
        for q in range(num_qubits):
            circuit.rx(0.5, q)
        for q in range(num_qubits - 1):
            circuit.cx(q, q + 1)
    return circuit


class BackendManager:
    """Named backends, the choice among them, and the rules every job goes through.

    ``select`` filters by capability and ranks by estimated cost, then typical queue time,
    then fidelity. ``run`` reserves the job's estimated cost against its budget before
    anything is sent (``accounting`` makes that atomic), runs it under a per-backend
    concurrency limit, falls back to ``fallback`` when a backend is down, charges the
    actual cost when the job ends (releasing it on failure or cancellation) and records
    every job. Transient failures are retried under ``retry`` (a
    :class:`~backends.retry.RetryPolicy`) only for backends that do not retry their own
    calls (``Backend.supports_own_retries``). A :class:`SubmissionUnknownError` is never
    retried nor sent elsewhere: the job is recorded ``unknown`` and keeps its reservation.

    A job run with a ``request_key`` can be found again: a caller that restarts after a
    crash and asks for the same key re-attaches to the provider jobs sent before (see
    :meth:`run`) instead of paying for them twice.
    """

    def __init__(
        self,
        backends: Mapping[str, Backend] | None = None,
        *,
        accounting: Accounting | None = None,
        retry: RetryPolicy | None = None,
        degrade: DegradePolicy | None = None,
        fallback: str | None = "simulator",
        concurrency: int = 8,
    ) -> None:
        self._entries: dict[str, _Entry] = {}
        self.accounting: Accounting = accounting if accounting is not None else InMemoryAccounting()
        self.retry = retry or RetryPolicy()
        self.degrade = degrade or DegradePolicy()
        self.fallback = fallback
        #: How long a failed or cancelled run waits for a submission still in flight
        #: before it records the job ``unknown`` (keeping its reservation).
        self.submission_wait_s = 60.0
        self._default_concurrency = concurrency
        #: Provider job ids being written to the accounting (see ``_provider_ids``).
        self._id_writes: set[asyncio.Task[None]] = set()
        for name, backend in (backends or {"simulator": SimulatorBackend()}).items():
            self.register(name, backend)

    # ------------------------------------------------------------------ registry
    def register(self, name: str, backend: Backend, *, concurrency: int | None = None) -> None:
        if not isinstance(backend, Backend):
            raise BackendError(
                f"{name!r}: expected a backends.Backend, got {type(backend).__name__}"
            )
        if name in self._entries:
            raise BackendError(f"a backend named {name!r} is already registered")
        limit = concurrency or self._default_concurrency
        if limit < 1:
            raise BackendError(f"concurrency must be >= 1, got {limit}")
        self._entries[name] = _Entry(backend, limit)

    def load(self, name: str, plugin: str | None = None, **options: Any) -> Backend:
        """Create a backend from an installed plug-in (entry point) and register it as ``name``."""
        wanted = plugin or name
        found = {ep.name: ep for ep in entry_points(group=ENTRY_POINT_GROUP)}
        if wanted not in found:
            installed = ", ".join(sorted(found)) or "none"
            raise UnknownBackendError(
                f"no backend plug-in named {wanted!r}; installed: {installed} "
                "(pip install 'quantum-db[all]' installs the Qiskit and IonQ backends)"
            )
        backend = found[wanted].load()(**options)
        self.register(name, backend)
        return backend  # type: ignore[no-any-return]

    def names(self) -> tuple[str, ...]:
        """The registered names, in registration order: what ``run(backend=...)`` accepts."""
        return tuple(self._entries)

    def get(self, name: str) -> Backend:
        try:
            return self._entries[name].backend
        except (KeyError, TypeError):  # TypeError: an unhashable name
            raise UnknownBackendError(
                f"no backend named {name!r}; the names run(backend=...) accepts here: "
                f"{', '.join(self._entries) or 'none'}"
            ) from None

    def _check_call(
        self,
        method: str,
        backend: object,
        budget: object,
        run_id: object,
        request_key: object,
        *,
        optional_backend: bool = False,
    ) -> None:
        """The arguments every job takes, checked before anything is recorded or sent."""
        if not isinstance(backend, str) and not (optional_backend and backend is None):
            raise UnknownBackendError(
                f"backend must be a backend's name (a string), got {backend!r}; the names "
                f"{method}(backend=...) accepts here: {', '.join(self._entries) or 'none'}"
            )
        if budget is not None and not isinstance(budget, Budget):
            raise InvalidBudgetError(f"budget must be a Budget(usd=..., name=...), got {budget!r}")
        if run_id is not None and (
            not isinstance(run_id, str) or not 1 <= len(run_id) <= 128 or not run_id.isprintable()
        ):
            raise BackendError(
                f"run_id must be a printable string of 1-128 characters, got {run_id!r}"
            )
        _check_request_key(request_key)

    # ------------------------------------------------------------------ choice
    def explain(
        self,
        n_qubits: int,
        *,
        depth: int = 1,
        shots: int | None = None,
        budget: Budget | float | None = None,
        spent: float = 0.0,
        require: Iterable[Requirement] = (),
        circuit: Circuit | None = None,
        batch_size: int = 1,
    ) -> Selection:
        """Rank the backends able to run the job; raise :class:`CapacityError` if none is."""
        needs = set(require)
        unknown = needs - {"exact", "shots"}
        if unknown:
            raise BackendError(f"unknown requirements {sorted(unknown)}; use 'exact' or 'shots'")
        limit = budget.usd if isinstance(budget, Budget) else budget
        priced = circuit if circuit is not None else representative_circuit(n_qubits, depth)
        capable: list[Candidate] = []
        rejected: list[tuple[str, str]] = []
        for name, entry in self._entries.items():
            caps = entry.backend.capabilities
            if caps.max_qubits < n_qubits:
                rejected.append((name, f"offers {caps.max_qubits} qubits, {n_qubits} needed"))
                continue
            if ("exact" in needs or shots is None) and not caps.supports_exact:
                rejected.append((name, "no exact mode (give shots)"))
                continue
            if ("shots" in needs or shots is not None) and not caps.supports_shots:
                rejected.append((name, "does not sample shots"))
                continue
            if shots is not None and caps.max_shots is not None and shots > caps.max_shots:
                rejected.append((name, f"at most {caps.max_shots} shots"))
                continue
            cost = entry.backend.estimate_run_cost(priced, shots, None, batch_size)
            if limit is not None and cost > limit - spent + 1e-9:
                rejected.append(
                    (name, f"est. ${cost:.4f} exceeds the ${max(limit - spent, 0):.4f} left")
                )
                continue
            capable.append(
                Candidate(
                    name,
                    cost,
                    float(getattr(entry.backend, "typical_queue_s", 0.0)),
                    float(getattr(entry.backend, "fidelity", 1.0)),
                )
            )
        if not capable:
            reasons = "; ".join(f"{n}: {why}" for n, why in rejected) or "no backends registered"
            raise CapacityError(f"no backend can run this job ({reasons})")
        ranking = tuple(sorted(capable, key=lambda c: (c.estimated_cost, c.queue_s, -c.fidelity)))
        return Selection(ranking[0], ranking, tuple(rejected))

    def select(
        self,
        n_qubits: int,
        depth: int = 1,
        shots: int | None = None,
        budget: Budget | float | None = None,
        require: Iterable[Requirement] = (),
    ) -> Backend:
        """The best backend for the job (see :meth:`explain` for the reasons)."""
        selection = self.explain(n_qubits, depth=depth, shots=shots, budget=budget, require=require)
        logger.info("backend selection: %s", selection.explain())
        return self.get(selection.chosen.name)

    # ------------------------------------------------------------------ running
    async def run(
        self,
        circuit: Circuit,
        parameter_values: ArrayLike | None = None,
        observables: Sequence[ObservableLike] | ObservableLike | None = None,
        shots: int | None = None,
        seed: int | None = None,
        *,
        backend: str | None = None,
        budget: Budget | None = None,
        run_id: str | None = None,
        request_key: str | None = None,
    ) -> RunResult:
        """Run a job on ``backend`` (or the best one), under ``budget``, with retries.

        ``request_key`` (1-64 printable characters, e.g. a hex digest of the run id,
        circuit, bindings, observables, shots and seed) names what the job computes and
        is recorded with it. When a job recorded under the same key reached its provider
        and nobody else is running it (its owner is gone, or it is this accounting's own
        job and its run has ended; see :meth:`Accounting.find_attachable`), that job is
        taken over instead of sent again: its provider jobs are waited for and read, only
        the parts without a live provider job are submitted (once), and its reservation is
        settled with what it cost, exactly once; what a sweep already charged for it is
        not charged again. The result's metadata then says ``reattached: True``. Backends
        that cannot re-attach (``Backend.supports_reattach``) run the job anew.
        """
        self._check_call("run", backend, budget, run_id, request_key, optional_backend=True)
        named = self._entries.get(backend) if isinstance(backend, str) else None
        if request_key is not None and (named is None or named.backend.supports_reattach()):
            attached = await self._reattach(
                request_key,
                backend,
                circuit,
                parameter_values,
                observables,
                shots,
                seed,
                budget,
                run_id,
            )
            if attached is not None:
                return attached
        name = backend
        if name is None:
            spent = await self.accounting.exposure(budget) if budget is not None else 0.0
            name = self.explain(
                circuit.num_qubits, shots=shots, budget=budget, spent=spent, circuit=circuit
            ).chosen.name
        try:
            return await self._run_on(
                name,
                circuit,
                parameter_values,
                observables,
                shots,
                seed,
                budget,
                run_id,
                request_key,
            )
        except BackendUnavailableError as exc:
            fallback = self.fallback
            if fallback is None or fallback == name or fallback not in self._entries:
                raise
            logger.warning(
                "backend %s is unavailable (%s); falling back to %s", name, exc, fallback
            )
            result = await self._run_on(
                fallback,
                circuit,
                parameter_values,
                observables,
                shots,
                seed,
                budget,
                run_id,
                request_key,
            )
            return replace(result, metadata={**result.metadata, "fallback_from": name})

    async def _run_on(
        self,
        name: str,
        circuit: Circuit,
        parameter_values: ArrayLike | None,
        observables: Sequence[ObservableLike] | ObservableLike | None,
        shots: int | None,
        seed: int | None,
        budget: Budget | None,
        run_id: str | None,
        request_key: str | None = None,
    ) -> RunResult:
        entry = self._entries.get(name)
        if entry is None:
            self.get(name)  # raises UnknownBackendError
            raise AssertionError  # pragma: no cover
        # Every input is checked before money or a network is involved.
        request = entry.backend.validate(circuit, parameter_values, observables, shots, seed)
        notes: dict[str, Any] = {}
        cost = entry.backend.estimate_run_cost(
            circuit,
            shots,
            observables if request.observables is not None else None,
            request.batch_size,
        )
        job = _new_job(name, circuit, shots, request.batch_size, cost, run_id, request_key)
        reserved = False
        if budget is not None and cost > 0:
            try:
                await self._reserve(budget, job, cost)
                reserved = True
            except BudgetExceededError:
                degraded = await self._degrade(
                    name, circuit, shots, budget, request.batch_size, observables
                )
                if degraded is None:
                    raise
                kind, value = degraded
                notes["degraded"] = f"{kind}: {value}"
                if kind == "fewer_shots":
                    return await self._with_note(
                        self._run_on(
                            name,
                            circuit,
                            parameter_values,
                            observables,
                            int(value),
                            seed,
                            budget,
                            run_id,
                            request_key,
                        ),
                        notes,
                    )
                return await self._with_note(
                    self._run_on(
                        str(value),
                        circuit,
                        parameter_values,
                        observables,
                        shots,
                        seed,
                        budget,
                        run_id,
                        request_key,
                    ),
                    notes,
                )
        submitted = time.monotonic()
        #: Requests the backend sent that may create a job (see ``report_submission``).
        submissions: list[asyncio.Future[Any]] = []
        local = self._is_local(entry.backend, reserved, cost)
        try:
            if not local:
                await self.accounting.record_job(job)
            async with entry.slots():
                started = time.monotonic()
                job.queue_latency_s = started - submitted
                # Recorded as sent only while the reservation is still held, so a sweep
                # that reclaimed it (a lapsed lease) can never have its money spent.
                if local:
                    job.status = "running"
                else:
                    await self.accounting.mark_sending(job, reserved=reserved)
                with provider_job_sink(self._provider_ids(job), submissions.append):
                    result = await self._with_retries(entry.backend, request, job)
                job.run_latency_s = time.monotonic() - started
        except SubmissionUnknownError as exc:
            # The provider may have created (and will bill) the job: the reservation stays
            # until a sweep finds the job at the provider or it expires; no fallback.
            job.status = "unknown"
            job.error = f"{type(exc).__name__}: {exc}"[:2000]
            await asyncio.shield(self.accounting.record_job(job))
            raise
        except BaseException as exc:
            job.status = "cancelled" if isinstance(exc, asyncio.CancelledError) else "failed"
            job.error = f"{type(exc).__name__}: {exc}"[:2000]
            # Shielded: a cancelled job still settles or releases its reservation and is
            # recorded. A job that reached its provider may bill even though it failed
            # here: it is charged what the provider reports, never simply released.
            await asyncio.shield(self._finish_failed(entry.backend, job, reserved, submissions))
            raise
        ids = result.metadata.get("provider_job_ids")
        if ids:
            job.provider_job_ids = [str(i) for i in ids]
        actual = float(result.metadata.get("cost_usd", cost))
        job.status = "completed"
        job.actual_cost = actual
        if local:
            self.accounting.record_job_later(job)  # type: ignore[attr-defined]
        else:
            await asyncio.shield(self._finish(job, reserved, actual))
        return replace(
            result,
            metadata={
                **result.metadata,
                **notes,
                "job_id": job.id,
                "backend_name": name,
                "estimated_cost_usd": cost,
            },
        )

    # ------------------------------------------------------------------ re-attach
    async def _reattach(
        self,
        request_key: str,
        backend: str | None,
        circuit: Circuit,
        parameter_values: ArrayLike | None,
        observables: Sequence[ObservableLike] | ObservableLike | None,
        shots: int | None,
        seed: int | None,
        budget: Budget | None,
        run_id: str | None,
    ) -> RunResult | None:
        """Finish the job recorded under ``request_key``, if one can be taken over;
        ``None``: there is none (or it cannot be), the job is to be run as usual."""
        found = await self.accounting.find_attachable(request_key)
        if found is None:
            return None
        entry = self._entries.get(found.backend)
        if entry is None or not entry.backend.supports_reattach():
            logger.info(
                "job %s of request key %s ran on %r, which cannot re-attach here; running it anew",
                found.id,
                request_key,
                found.backend,
            )
            return None
        notes: dict[str, Any] = {}
        same, used_shots = self._attached_shots(found, backend, shots, notes)
        if not same:
            return None
        request = entry.backend.validate(circuit, parameter_values, observables, used_shots, seed)
        if found.circuit_hash != circuit.content_hash() or found.batch_size != request.batch_size:
            logger.warning(
                "request key %s names job %s of another circuit or batch size; running anew "
                "(a request key must name one computation)",
                request_key,
                found.id,
            )
            return None
        attachment = await self.accounting.take_over(found)
        if attachment is None:  # taken by another caller first, or changed meanwhile
            logger.info("job %s of request key %s was taken over by another", found.id, request_key)
            return None
        logger.info(
            "re-attaching to job %s (request key %s, %d provider job(s))",
            found.id,
            request_key,
            len(found.provider_job_ids),
        )
        result = await self._run_attached(entry, request, attachment, budget, run_id)
        return replace(result, metadata={**result.metadata, **notes})

    def _attached_shots(
        self, found: JobRecord, backend: str | None, shots: int | None, notes: dict[str, Any]
    ) -> tuple[bool, int | None]:
        """Whether ``found`` is this request's job, and the shots to re-attach with.

        A job the degrade policy sent with fewer shots, or to another backend, is still
        the one the request made.
        """
        steps = self.degrade.steps
        if backend is not None and backend != found.backend:
            if found.backend != self.fallback and "cheaper_backend" not in steps:
                return False, shots
            notes["fallback_from"] = backend
        if found.shots == shots:
            return True, shots
        if (
            shots is not None
            and found.shots is not None
            and found.shots < shots
            and "fewer_shots" in steps
        ):
            notes["degraded"] = f"fewer_shots: {found.shots}"
            return True, found.shots
        return False, shots

    async def _run_attached(
        self,
        entry: _Entry,
        request: RunRequest,
        attachment: Attachment,
        budget: Budget | None,
        run_id: str | None,
    ) -> RunResult:
        job = attachment.job
        if run_id is not None:
            job.run_id = run_id
        charged = attachment.charged
        reserved = attachment.reserved
        # What has to be submitted again is reserved first, against the job's own budget
        # (or the caller's): a reservation a sweep closed is reopened for it.
        reserve_in = attachment.budget or budget

        async def before_submit(cost: float) -> None:
            nonlocal reserved
            if not reserved and reserve_in is not None and cost > 0:
                await self._reserve(reserve_in, job, cost)
                reserved = True
            await self.accounting.mark_sending(job, reserved=reserved)

        started = time.monotonic()
        submissions: list[asyncio.Future[Any]] = []
        try:
            async with entry.slots():
                job.queue_latency_s = time.monotonic() - started
                began = time.monotonic()
                with provider_job_sink(self._provider_ids(job), submissions.append):
                    result = await entry.backend.reattach(
                        request, list(job.provider_job_ids), before_submit=before_submit
                    )
                job.run_latency_s = time.monotonic() - began
        except SubmissionUnknownError as exc:
            job.status = "unknown"
            job.error = f"{type(exc).__name__}: {exc}"[:2000]
            await asyncio.shield(self.accounting.record_job(job))
            raise
        except BaseException as exc:
            job.status = "cancelled" if isinstance(exc, asyncio.CancelledError) else "failed"
            job.error = f"re-attached, then {type(exc).__name__}: {exc}"[:2000]
            await asyncio.shield(
                self._finish_failed(entry.backend, job, reserved, submissions, charged)
            )
            raise
        for provider_id in result.metadata.get("provider_job_ids") or ():
            if str(provider_id) not in job.provider_job_ids:
                job.provider_job_ids.append(str(provider_id))
        bill = await self._attached_bill(entry.backend, job, result, charged)
        job.status = "completed"
        job.actual_cost = bill
        job.error = _reattach_note(result.metadata, charged)[:2000]
        await asyncio.shield(self._finish(job, reserved, max(bill - charged, 0.0)))
        return replace(
            result,
            metadata={
                **result.metadata,
                "reattached": True,
                "job_id": job.id,
                "backend_name": job.backend,
                "estimated_cost_usd": job.estimated_cost,
            },
        )

    async def _attached_bill(
        self, backend: Backend, job: JobRecord, result: RunResult, charged: float
    ) -> float:
        """What a re-attached job cost in all: what its provider bills for every provider
        job it made (the earlier owner's included), else what the backend computes; and
        never less than what was charged before plus what was submitted now (a job the
        provider no longer knows is billed all the same)."""
        computed = float(result.metadata.get("cost_usd", job.estimated_cost))
        submitted = float(result.metadata.get("submitted_cost_usd", 0.0))
        if job.estimated_cost <= 0 and computed <= 0 and submitted <= 0:
            return 0.0
        billed = await self._provider_charge(backend, job)
        return max(computed if billed is None else billed, charged + submitted)

    # ------------------------------------------------------------------ exact derivatives
    async def adjoint_jacobian(
        self,
        circuit: Circuit,
        parameter_values: ArrayLike | None,
        observables: Sequence[ObservableLike] | ObservableLike,
        *,
        backend: str,
        wrt: Sequence[int] | None = None,
        run_id: str | None = None,
        request_key: str | None = None,
        budget: Budget | None = None,
    ) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
        """Exact expectations ``[B, K]`` and their Jacobian ``[B, K, P]`` by adjoint
        differentiation on ``backend`` (one that offers it: the built-in simulator), recorded
        as a job like :meth:`run` records one. It is priced as an exact run of the same
        bindings (free on the built-in simulator), reserved under ``budget`` before it
        starts and charged when it ends. See :meth:`SimulatorBackend.adjoint_jacobian`.
        """

        async def compute(target: Any, request: RunRequest) -> Any:
            return await target.adjoint_jacobian(
                request.circuit, request.parameter_values, list(request.observables or ()), wrt=wrt
            )

        out: tuple[NDArray[np.float64], NDArray[np.float64]] = await self._derivative_job(
            "adjoint_jacobian",
            "adjoint",
            circuit,
            parameter_values,
            observables,
            compute,
            backend=backend,
            wrt=wrt,
            run_id=run_id,
            request_key=request_key,
            budget=budget,
        )
        return out

    async def vjp(
        self,
        circuit: Circuit,
        parameter_values: ArrayLike | None,
        observables: Sequence[ObservableLike] | ObservableLike,
        cotangents: ArrayLike,
        *,
        backend: str,
        wrt: Sequence[int] | None = None,
        run_id: str | None = None,
        request_key: str | None = None,
        budget: Budget | None = None,
    ) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
        """Exact expectations ``[B, K]`` and the vector-Jacobian product ``[B, P]`` with
        ``cotangents`` ``[B, K]`` (see :meth:`Backend.compute_vjp`), recorded and priced as
        :meth:`adjoint_jacobian` is."""

        async def compute(target: Any, request: RunRequest) -> Any:
            return await target.compute_vjp(
                request.circuit,
                request.parameter_values,
                list(request.observables or ()),
                cotangents,
                wrt=wrt,
            )

        out: tuple[NDArray[np.float64], NDArray[np.float64]] = await self._derivative_job(
            "vjp",
            "vjp",
            circuit,
            parameter_values,
            observables,
            compute,
            backend=backend,
            wrt=wrt,
            run_id=run_id,
            request_key=request_key,
            budget=budget,
        )
        return out

    async def _derivative_job(
        self,
        call: str,
        method: str,
        circuit: Circuit,
        parameter_values: ArrayLike | None,
        observables: Sequence[ObservableLike] | ObservableLike,
        compute: Callable[[Any, RunRequest], Awaitable[Any]],
        *,
        backend: str,
        wrt: Sequence[int] | None,
        run_id: str | None,
        request_key: str | None,
        budget: Budget | None,
    ) -> Any:
        """One exact derivative computation of ``backend``, recorded, reserved and charged
        as one job."""
        self._check_call(call, backend, budget, run_id, request_key)
        target = self.get(backend)
        if not target.supports_derivatives(method, None):
            raise BackendError(
                f"{backend!r} ({type(target).__name__}) offers no {method} differentiation; "
                "use the built-in simulator, or parameter-shift gradients through run()"
            )
        # Every input is checked before anything is recorded.
        request = target.validate(circuit, parameter_values, observables)
        if not request.observables:
            raise BackendError(f"{method} differentiation needs at least one observable")
        _check_wrt(wrt, circuit.num_parameters)
        entry = self._entries[backend]
        cost = target.estimate_run_cost(
            request.circuit, None, list(request.observables), request.batch_size
        )
        job = _new_job(backend, circuit, None, request.batch_size, cost, run_id, request_key)
        reserved = False
        if budget is not None and cost > 0:
            await self._reserve(budget, job, cost)
            reserved = True
        submitted = time.monotonic()
        local = self._is_local(target, reserved, cost)
        try:
            if not local:
                await self.accounting.record_job(job)
            async with entry.slots():
                started = time.monotonic()
                job.queue_latency_s = started - submitted
                if local:
                    job.status = "running"
                else:
                    await self.accounting.mark_sending(job, reserved=reserved)
                out = await compute(target, request)
                job.run_latency_s = time.monotonic() - started
        except BaseException as exc:
            job.status = "cancelled" if isinstance(exc, asyncio.CancelledError) else "failed"
            job.error = f"{type(exc).__name__}: {exc}"[:2000]
            # A local computation bills nothing when it fails: its reservation is released.
            await asyncio.shield(self._finish(job, reserved, None))
            raise
        job.status = "completed"
        job.actual_cost = cost
        if local:
            self.accounting.record_job_later(job)  # type: ignore[attr-defined]
        else:
            await asyncio.shield(self._finish(job, reserved, cost))
        return out

    def _is_local(self, backend: Backend, reserved: bool, cost: float) -> bool:
        """A free job of a backend without a provider (the local simulators): nothing to
        bill or to find again after a crash, so it is recorded once, as it ends, with
        others (``Accounting.record_job_later``) instead of before and after it runs."""
        return (
            not reserved
            and cost == 0
            and not backend.supports_job_lookup()
            and hasattr(self.accounting, "record_job_later")
        )

    async def flush_jobs(self) -> None:
        """Write the job records the accounting holds back (see :meth:`_is_local`)."""
        flush = getattr(self.accounting, "flush_jobs", None)
        if flush is not None:
            await flush()

    async def _reserve(self, budget: Budget, job: JobRecord, cost: float) -> None:
        """Reserve, so that a cancellation at any moment can never leave a reservation behind.

        The reservation runs as its own task: if the caller is cancelled meanwhile, the
        task is allowed to finish and whatever it reserved is released.
        """
        task = asyncio.ensure_future(self.accounting.reserve(budget, job.id, cost))
        try:
            await asyncio.shield(task)
        except asyncio.CancelledError:
            await asyncio.shield(self._undo_reservation(task, job))
            raise

    async def _undo_reservation(self, task: asyncio.Future[None], job: JobRecord) -> None:
        try:
            await task
        except Exception:  # nothing was reserved
            return
        job.status = "cancelled"
        job.error = "cancelled before it was sent"
        await self.accounting.release(job.id)
        await self.accounting.record_job(job)

    @staticmethod
    async def _with_note(coro: Any, notes: dict[str, Any]) -> RunResult:
        result: RunResult = await coro
        return replace(result, metadata={**result.metadata, **notes})

    async def _finish(self, job: JobRecord, reserved: bool, actual: float | None) -> None:
        if reserved:
            if actual is None:
                await self.accounting.release(job.id)
            else:
                await self.accounting.settle(job.id, actual)
        await self.accounting.record_job(job)

    async def _finish_failed(
        self,
        backend: Backend,
        job: JobRecord,
        reserved: bool,
        submissions: Sequence[asyncio.Future[Any]],
        charged: float = 0.0,
    ) -> None:
        """Settle a job whose run failed or was cancelled; ``charged``: what was already
        charged for it (a re-attached job a sweep had settled)."""
        if reserved and not job.provider_job_ids:
            in_flight = [f for f in submissions if not f.done()]
            if in_flight:
                # A submission was on its way when the run failed or was cancelled: the
                # job may exist. Its id arrives (and the backend cancels it) when the
                # request settles; until then nothing may be released.
                await asyncio.wait(in_flight, timeout=self.submission_wait_s)
                if not job.provider_job_ids and not all(f.done() for f in in_flight):
                    job.status = "unknown"
                    job.error = (
                        f"{job.error} [a submission was still in flight after "
                        f"{self.submission_wait_s:g} s: the reservation is kept until the job "
                        "is found or expires]"
                    )[:2000]
                    await self.accounting.record_job(job)
                    return
        if reserved and job.provider_job_ids:
            await self._finish_reached(backend, job, charged)
        else:
            await self._finish(job, reserved, None)

    async def _finish_reached(self, backend: Backend, job: JobRecord, charged: float = 0.0) -> None:
        """Close a failed job that reached its provider with what the provider bills.

        When the provider cannot say yet (a job still running, no lookup, the provider
        down), the reservation is kept and the owner's sweep settles it later.
        """
        actual = await self._provider_charge(backend, job)
        if actual is None:
            job.error = (
                f"{job.error} [reached the provider: its reservation is kept until a sweep "
                "settles it with what the provider bills]"
            )[:2000]
            await self.accounting.record_job(job)
            return
        job.actual_cost = actual
        await self._finish(job, True, max(actual - charged, 0.0))

    @staticmethod
    async def _provider_charge(backend: Backend, job: JobRecord) -> float | None:
        if not backend.supports_job_lookup():
            return None
        try:
            found = [await backend.lookup_job(i) for i in job.provider_job_ids]
        except Exception as exc:  # the provider cannot be asked now: the sweep asks again
            logger.warning("could not look up the provider jobs of job %s: %s", job.id, exc)
            return None
        if not all(p.ended for p in found):
            return None
        return provider_bill(found, job.estimated_cost)

    async def _with_retries(self, backend: Backend, request: Any, job: JobRecord) -> RunResult:
        """Run ``request``, retrying transient failures here only for a backend that does
        not retry its own calls: an operation is retried in exactly one layer."""

        async def once() -> RunResult:
            return await backend.run(
                request.circuit,
                request.parameter_values,
                list(request.observables) if request.observables is not None else None,
                request.shots,
                request.seed,
            )

        if backend.supports_own_retries():
            return await once()
        try:
            return await retry_async(
                once,
                policy=self.retry,
                service=backend.name,
                operation="run",
                retryable=_retryable,
            )
        except TransientBackendError as exc:
            raise BackendUnavailableError(
                f"{backend.name} failed {self.retry.attempts} times in a row: {exc}"
            ) from exc

    async def _degrade(
        self,
        name: str,
        circuit: Circuit,
        shots: int | None,
        budget: Budget,
        batch: int,
        observables: Sequence[ObservableLike] | ObservableLike | None,
    ) -> tuple[str, int | str] | None:
        left = budget.usd - await self.accounting.exposure(budget)
        backend = self.get(name)
        for step in self.degrade.steps:
            if step == "fewer_shots" and shots is not None:
                best = None
                low, high = self.degrade.min_shots, shots - 1
                while low <= high:  # the most shots that still fit
                    mid = (low + high) // 2
                    if backend.estimate_run_cost(circuit, mid, observables, batch) <= left:
                        best, low = mid, mid + 1
                    else:
                        high = mid - 1
                if best is not None:
                    return "fewer_shots", best
            elif step in ("cheaper_backend", "simulator"):
                try:
                    options = self.explain(
                        circuit.num_qubits,
                        shots=shots,
                        budget=budget.usd,
                        spent=budget.usd - left,
                        circuit=circuit,
                        batch_size=batch,
                    ).ranking
                except CapacityError:
                    continue
                for option in options:
                    free = option.estimated_cost == 0
                    if option.name != name and (step == "cheaper_backend" or free):
                        return step, option.name
        return None

    def _provider_ids(self, job: JobRecord) -> Callable[[str], None]:
        """Where the backend reports each provider job id as soon as it exists: the id is
        written to the job's record at once, so a process killed mid-job leaves it behind
        for the sweeper to ask the provider about."""

        def sink(provider_job_id: str) -> None:
            if provider_job_id in job.provider_job_ids:
                return
            job.provider_job_ids.append(provider_job_id)
            task = asyncio.get_running_loop().create_task(
                self.accounting.record_provider_job(job.id, provider_job_id)
            )
            self._id_writes.add(task)
            task.add_done_callback(self._id_written)

        return sink

    def _id_written(self, task: asyncio.Task[None]) -> None:
        self._id_writes.discard(task)
        if not task.cancelled() and task.exception() is not None:
            # The final record of the job carries the id too; only the early copy is lost.
            logger.warning("could not record a provider job id early: %s", task.exception())

    async def aclose(self) -> None:
        try:
            await self.flush_jobs()
        except Exception as exc:  # the backends are closed all the same
            logger.warning("could not record the last local jobs: %s", exc)
        if self._id_writes:
            await asyncio.gather(*self._id_writes, return_exceptions=True)
        for entry in self._entries.values():
            await entry.backend.aclose()

    def __repr__(self) -> str:
        return f"BackendManager({', '.join(self._entries)})"
