"""The backend contract: what every backend offers, and the checks every run goes through."""

from __future__ import annotations

import abc
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any, Literal, Self

import numpy as np
from numpy.typing import ArrayLike, NDArray

from .circuit import Circuit
from .errors import (
    BackendError,
    NonFiniteParameterError,
    ParameterCountError,
    ParameterValueError,
    ShotsError,
    TooManyQubitsError,
)
from .observables import Observable, ObservableLike, as_observables

__all__ = [
    "Backend",
    "Capabilities",
    "ProviderJob",
    "ProviderJobStatus",
    "RunRequest",
    "RunResult",
    "as_parameter_values",
    "provider_bill",
]

ProviderJobStatus = Literal["queued", "running", "completed", "failed", "cancelled"]
_PROVIDER_JOB_STATUSES = frozenset({"queued", "running", "completed", "failed", "cancelled"})


@dataclass(frozen=True, slots=True)
class ProviderJob:
    """A job as its provider describes it: found by the sweeper for an owner that is gone.

    ``cost_usd`` is what the provider bills (or has billed) for it, ``None`` while it
    does not say.
    """

    id: str
    status: ProviderJobStatus
    cost_usd: float | None = None

    def __post_init__(self) -> None:
        if self.status not in _PROVIDER_JOB_STATUSES:
            raise BackendError(
                f"a provider job's status is one of {sorted(_PROVIDER_JOB_STATUSES)}, "
                f"got {self.status!r}"
            )

    @property
    def ended(self) -> bool:
        return self.status in ("completed", "failed", "cancelled")


def provider_bill(found: Sequence[ProviderJob], estimate: float) -> float:
    """What the provider bills for a job made of the provider jobs ``found`` (all ended).

    A completed provider job whose cost the provider does not state is charged the
    job's whole ``estimate``: it ran, and charging nothing could let a budget overspend.
    """
    amount = sum(p.cost_usd or 0.0 for p in found)
    if any(p.status == "completed" and p.cost_usd is None for p in found):
        amount = max(amount, estimate)
    return float(amount)


#: Awaited by :meth:`Backend.reattach` with the estimated cost (USD) of the jobs it is
#: about to submit, before any is sent; it may refuse by raising (e.g. the budget is spent).
SubmitHook = Callable[[float], Awaitable[None]]


@dataclass(frozen=True, slots=True)
class Capabilities:
    """What a backend can run. Frozen: a backend's capabilities are data, not behaviour."""

    max_qubits: int
    native_gates: frozenset[str]
    supports_exact: bool
    supports_shots: bool
    max_batch: int | None = None
    max_shots: int | None = None
    #: Qubit pairs a two-qubit gate may act on; ``None`` means all-to-all.
    connectivity: frozenset[tuple[int, int]] | None = None


@dataclass(frozen=True, slots=True)
class RunRequest:
    """A validated run: ``parameter_values`` is float64 ``[B, P]``, finite."""

    circuit: Circuit
    parameter_values: NDArray[np.float64]
    observables: tuple[Observable, ...] | None
    shots: int | None
    seed: int | None

    @property
    def batch_size(self) -> int:
        return int(self.parameter_values.shape[0])


@dataclass(frozen=True, slots=True)
class RunResult:
    """The outcome of one run.

    ``expectations`` is ``[B, n_observables]`` for an expectation run (exact, or estimated
    from ``shots``); ``counts`` is one ``{bitstring: count}`` per binding for a sampling run,
    bit strings in Qiskit's order (classical bit 0 rightmost).
    """

    backend: str
    batch_size: int
    shots: int | None
    expectations: NDArray[np.float64] | None = None
    counts: list[dict[str, int]] | None = None
    metadata: dict[str, Any] = field(default_factory=dict)


#: The largest seed a run accepts: seeds are recorded as signed 64-bit integers.
_SEED_MAX = 2**63 - 1


#: Shots are stored as a 64-bit integer with the job.
_SHOTS_MAX = 2**63 - 1


def _as_shots(shots: object, limit: int | None) -> int:
    if isinstance(shots, bool) or not isinstance(shots, int | np.integer):
        raise ShotsError(f"shots must be a positive integer, got {shots!r}")
    if shots <= 0:
        raise ShotsError(f"shots must be a positive integer, got {shots}")
    if limit is not None and shots > limit:
        raise ShotsError(f"{shots} shots exceed this backend's limit of {limit}")
    if shots > _SHOTS_MAX:
        raise ShotsError(f"{shots} shots are more than any job can take (at most 2**63 - 1)")
    return int(shots)


def as_parameter_values(circuit: Circuit, values: ArrayLike | None) -> NDArray[np.float64]:
    """``values`` as a finite float64 ``[B, P]`` array for ``circuit``, or a specific error."""
    p = circuit.num_parameters
    if values is None:
        if p:
            raise ParameterCountError(
                f"the circuit has {p} parameters ({', '.join(x.name for x in circuit.parameters)})"
                " but no parameter_values were given"
            )
        return np.zeros((1, 0))
    try:
        array = np.asarray(values, dtype=np.float64)
    except (TypeError, ValueError) as exc:
        raise ParameterValueError(
            f"parameter_values must be a real array of shape [B, {p}]: {exc}"
        ) from None
    if array.ndim == 1:
        array = array[None, :] if p else array.reshape(-1, 0)
    if array.ndim != 2:
        raise ParameterValueError(
            f"parameter_values must have shape [B, {p}], got an array of shape {array.shape}"
        )
    if array.shape[1] != p:
        raise ParameterCountError(
            f"each binding needs {p} values (one per circuit parameter), got {array.shape[1]}"
        )
    if array.shape[0] == 0:
        raise ParameterValueError("parameter_values holds no bindings (B = 0)")
    if not np.all(np.isfinite(array)):
        bad = np.argwhere(~np.isfinite(array))[0]
        raise NonFiniteParameterError(
            f"parameter value [{bad[0]}, {bad[1]}] ({circuit.parameters[bad[1]].name}) is "
            f"{array[bad[0], bad[1]]}; values must be finite"
        )
    return np.ascontiguousarray(array)


class Backend(abc.ABC):
    """A place circuits run. Subclasses implement :meth:`_execute` and ``capabilities``.

    ``run`` validates every input the same way for every backend before anything is
    executed, so a bad call never reaches a device (or a bill).
    """

    name: str = "backend"

    @property
    @abc.abstractmethod
    def capabilities(self) -> Capabilities:
        """What this backend can run."""

    @abc.abstractmethod
    async def _execute(self, request: RunRequest) -> RunResult:
        """Run a validated request."""

    def estimate_cost(self, circuit: Circuit, shots: int | None) -> float:
        """Estimated price in USD of one job of ``circuit`` with ``shots`` (0 when free)."""
        return 0.0

    def estimate_run_cost(
        self,
        circuit: Circuit,
        shots: int | None,
        observables: Sequence[ObservableLike] | ObservableLike | None = None,
        batch_size: int = 1,
    ) -> float:
        """Price of everything one :meth:`run` submits; what budgets reserve.

        The default is one job per binding; a backend that sends more (e.g. one job per
        measurement basis of an expectation run) overrides it.
        """
        return self.estimate_cost(circuit, shots) * batch_size

    def supports_own_retries(self) -> bool:
        """Whether :meth:`run` already retries its own remote calls under a retry policy.

        A BackendManager retries only backends that do not, so that no call is retried in
        two layers (a retried retry multiplies the attempts, and could repeat a paid job).
        """
        return False

    def validate(
        self,
        circuit: Circuit,
        parameter_values: ArrayLike | None = None,
        observables: Sequence[ObservableLike] | ObservableLike | None = None,
        shots: int | None = None,
        seed: int | None = None,
    ) -> RunRequest:
        """Check a run against the contract and this backend's capabilities."""
        caps = self.capabilities
        if not isinstance(circuit, Circuit):
            raise ParameterValueError(f"expected a backends.Circuit, got {type(circuit).__name__}")
        if circuit.num_qubits > caps.max_qubits:
            raise TooManyQubitsError(
                f"the circuit has {circuit.num_qubits} qubits but {self.name} offers at most "
                f"{caps.max_qubits}"
            )
        values = as_parameter_values(circuit, parameter_values)
        if caps.max_batch is not None and values.shape[0] > caps.max_batch:
            raise ParameterValueError(
                f"{values.shape[0]} bindings exceed {self.name}'s max batch of {caps.max_batch}"
            )
        obs = (
            None if observables is None else tuple(as_observables(observables, circuit.num_qubits))
        )
        if shots is not None:
            shots = _as_shots(shots, caps.max_shots)
            if not caps.supports_shots:
                raise ShotsError(f"{self.name} does not sample shots; call run without shots")
        elif obs is None:
            raise ShotsError("a run needs observables (expectations), shots (counts), or both")
        elif not caps.supports_exact:
            raise ShotsError(f"{self.name} has no exact mode; give shots to estimate expectations")
        if seed is not None and (isinstance(seed, bool) or not isinstance(seed, int | np.integer)):
            raise ParameterValueError(f"seed must be an integer or None, got {seed!r}")
        if seed is not None and not 0 <= int(seed) <= _SEED_MAX:
            # NumPy refuses negative seeds, and job records store seeds as 64-bit integers.
            raise ParameterValueError(f"seed must be in [0, 2**63 - 1], got {seed}")
        return RunRequest(circuit, values, obs, shots, None if seed is None else int(seed))

    async def run(
        self,
        circuit: Circuit,
        parameter_values: ArrayLike | None = None,
        observables: Sequence[ObservableLike] | ObservableLike | None = None,
        shots: int | None = None,
        seed: int | None = None,
    ) -> RunResult:
        """Run ``circuit`` for every binding in ``parameter_values`` (shape ``[B, P]``).

        With ``observables`` and no ``shots``: exact expectations ``[B, n_obs]``. With
        ``shots`` and no observables: per-binding counts. With both: expectations estimated
        from ``shots`` measurements of each Pauli term.
        """
        request = self.validate(circuit, parameter_values, observables, shots, seed)
        return await self._execute(request)

    # ------------------------------------------------------------------ derivatives
    #: Methods the gradient engine computes from :meth:`run` on any backend.
    SAMPLED_DERIVATIVES: tuple[str, ...] = ("parameter-shift", "finite-diff", "spsa")

    def supports_derivatives(self, method: str, shots: int | None = None) -> bool:
        """Whether gradients by ``method`` can be had from this backend at ``shots``, in
        the spirit of PennyLane's ``Device.supports_derivatives``.

        ``"parameter-shift"``, ``"finite-diff"`` and ``"spsa"`` are computed from
        :meth:`run` on every backend. ``"adjoint"`` (:meth:`adjoint_jacobian`) and
        ``"vjp"`` (:meth:`compute_vjp`) are exact methods a backend offers itself: the
        built-in simulator, without shots.
        """
        return method in self.SAMPLED_DERIVATIVES

    async def adjoint_jacobian(
        self,
        circuit: Circuit,
        parameter_values: ArrayLike | None,
        observables: Sequence[ObservableLike] | ObservableLike,
        *,
        wrt: Sequence[int] | None = None,
    ) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
        """Exact ``(expectations [B, K], jacobian [B, K, P])``, where
        :meth:`supports_derivatives` says ``"adjoint"``; the default refuses."""
        raise BackendError(
            f"{self.name!r} ({type(self).__name__}) offers no adjoint differentiation; use "
            "the built-in simulator, or parameter-shift gradients through run()"
        )

    async def compute_vjp(
        self,
        circuit: Circuit,
        parameter_values: ArrayLike | None,
        observables: Sequence[ObservableLike] | ObservableLike,
        cotangents: ArrayLike,
        *,
        wrt: Sequence[int] | None = None,
    ) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
        """Exact ``(expectations [B, K], vjp [B, P])`` with ``vjp[b, p] = sum_k
        cotangents[b, k] d<O_k>_b / d theta_p``, where :meth:`supports_derivatives` says
        ``"vjp"``; the default refuses."""
        raise BackendError(
            f"{self.name!r} ({type(self).__name__}) offers no vector-Jacobian product; use "
            "the built-in simulator, or contract parameter-shift Jacobians"
        )

    def supports_job_lookup(self) -> bool:
        """Whether :meth:`lookup_job` can ask the provider about a job by its id."""
        return False

    async def lookup_job(self, provider_job_id: str) -> ProviderJob:
        """The provider's view of one of its jobs (status and billed cost).

        Backends that send jobs to a provider which bills them override this and
        :meth:`supports_job_lookup`; the default says it is not supported.
        """
        raise BackendError(f"{self.name} cannot look up provider jobs")

    async def cancel_job(self, provider_job_id: str) -> None:
        """Ask the provider to cancel one of its jobs (where :meth:`supports_job_lookup`)."""
        raise BackendError(f"{self.name} cannot cancel provider jobs")

    def supports_reattach(self) -> bool:
        """Whether :meth:`reattach` can finish a run from the provider jobs it had sent."""
        return False

    async def reattach(
        self,
        request: RunRequest,
        provider_job_ids: Sequence[str],
        *,
        before_submit: SubmitHook | None = None,
    ) -> RunResult:
        """Finish ``request`` from provider jobs an earlier run of it created.

        The result is the one :meth:`run` would return. Jobs still queued, running or
        completed at the provider are waited for and read, never sent again; only the
        parts of the request with no such job are submitted, once, after
        ``before_submit`` was awaited with their estimated cost. Backends whose provider
        keeps jobs override this and :meth:`supports_reattach`; by default it is not
        supported (a BackendManager then simply runs the request again).
        """
        raise BackendError(f"{self.name} cannot re-attach to provider jobs; run the job again")

    async def aclose(self) -> None:  # noqa: B027 - optional hook, nothing to release by default
        """Release what the backend holds (threads, connections)."""

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()

    def __repr__(self) -> str:
        caps = self.capabilities
        return f"{type(self).__name__}(name={self.name!r}, max_qubits={caps.max_qubits})"
