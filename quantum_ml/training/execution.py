"""Every circuit a trainer runs goes through the BackendManager: :class:`ManagedBackend`.

The gradient engine, :meth:`QuantumModel.forward` and routed :class:`TorchQuantumLayer`\\ s
call ``backend.run``; handing them a :class:`ManagedBackend` makes each of those runs a
:meth:`BackendManager.run` of the backend it names, under the run's budget and id, with the
manager's rules: a job row per run, reservation before sending, the actual cost charged,
retries, fallback and the degrade policy. Each run carries a *request key* naming what it
computes (run, circuit, bindings, observables, shots, seed), so a run restarted after a
crash recomputes the same keys and the manager re-attaches to the jobs already sent.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from numpy.typing import ArrayLike, NDArray

from backends.accounting import Budget
from backends.base import Backend, Capabilities, RunRequest, RunResult, as_parameter_values
from backends.circuit import Circuit
from backends.errors import BackendError
from backends.manager import BackendManager
from backends.observables import ObservableLike, as_observables

__all__ = ["Degradation", "ManagedBackend", "request_key"]


def request_key(
    scope: str,
    circuit: Circuit,
    values: NDArray[np.float64],
    observables: Sequence[ObservableLike] | ObservableLike | None,
    shots: int | None,
    seed: int | None,
) -> str:
    """A SHA-256 hex digest of what a run computes, within ``scope`` (the run's id)."""
    digest = hashlib.sha256()
    digest.update(scope.encode())
    digest.update(b"\0" + circuit.content_hash().encode())
    digest.update(b"\0" + np.ascontiguousarray(values, dtype=np.float64).tobytes())
    digest.update(repr(values.shape).encode())
    if observables is not None:
        obs = as_observables(observables, circuit.num_qubits)
        digest.update(b"\0" + repr([repr(o) for o in obs]).encode())
    digest.update(f"\0{shots}\0{seed}".encode())
    return digest.hexdigest()


@dataclass(frozen=True, slots=True)
class Degradation:
    """A job the manager ran otherwise than asked, because the budget ran short."""

    backend: str
    how: str  # e.g. "fewer_shots: 300" or "simulator: simulator"


@dataclass(slots=True)
class _Tally:
    cost_usd: float = 0.0
    degradations: list[Degradation] = field(default_factory=list)
    fallbacks: list[str] = field(default_factory=list)


class ManagedBackend(Backend):
    """A registered backend of ``manager``, every run going through ``manager.run``.

    It stands for the backend ``name`` (capabilities, prices and validation are its own).
    :meth:`drain` returns and resets what its runs cost and how many were degraded.
    """

    def __init__(
        self,
        manager: BackendManager,
        name: str,
        *,
        budget: Budget | None = None,
        run_id: str | None = None,
    ) -> None:
        self.manager = manager
        self.inner = manager.get(name)
        self.name = name
        self.budget = budget
        self.run_id = run_id
        self._tally = _Tally()
        #: Shots measured by every run so far (bindings x shots): what a run sampled.
        self.shots_run = 0

    @property
    def capabilities(self) -> Capabilities:
        return self.inner.capabilities

    def estimate_cost(self, circuit: Circuit, shots: int | None) -> float:
        return self.inner.estimate_cost(circuit, shots)

    def estimate_run_cost(
        self,
        circuit: Circuit,
        shots: int | None,
        observables: Sequence[ObservableLike] | ObservableLike | None = None,
        batch_size: int = 1,
    ) -> float:
        return self.inner.estimate_run_cost(circuit, shots, observables, batch_size)

    def validate(self, *args: Any, **kwargs: Any) -> RunRequest:
        return self.inner.validate(*args, **kwargs)

    async def _execute(self, request: RunRequest) -> RunResult:  # pragma: no cover - run() is
        raise BackendError("a ManagedBackend runs through its manager")  # overridden

    def _key(
        self,
        circuit: Circuit,
        values: NDArray[np.float64],
        observables: Sequence[ObservableLike] | ObservableLike | None,
        shots: int | None,
        seed: int | None,
    ) -> str | None:
        if self.run_id is None:
            return None
        return request_key(self.run_id, circuit, values, observables, shots, seed)

    async def run(
        self,
        circuit: Circuit,
        parameter_values: ArrayLike | None = None,
        observables: Sequence[ObservableLike] | ObservableLike | None = None,
        shots: int | None = None,
        seed: int | None = None,
    ) -> RunResult:
        values = as_parameter_values(circuit, parameter_values)
        result = await self.manager.run(
            circuit,
            values,
            observables,
            shots,
            seed,
            backend=self.name,
            budget=self.budget,
            run_id=self.run_id,
            request_key=self._key(circuit, values, observables, shots, seed),
        )
        meta = result.metadata
        if shots is not None:
            self.shots_run += int(result.shots or shots) * len(values)
        tally = self._tally
        tally.cost_usd += float(meta.get("cost_usd", meta.get("estimated_cost_usd", 0.0)) or 0.0)
        if "degraded" in meta:
            tally.degradations.append(
                Degradation(str(meta.get("backend_name", self.name)), str(meta["degraded"]))
            )
        if "fallback_from" in meta:
            tally.fallbacks.append(str(meta["fallback_from"]))
        return result

    def supports_derivatives(self, method: str, shots: int | None = None) -> bool:
        return self.inner.supports_derivatives(method, shots)

    async def compute_vjp(
        self,
        circuit: Circuit,
        parameter_values: ArrayLike | None,
        observables: Sequence[ObservableLike] | ObservableLike,
        cotangents: ArrayLike,
        *,
        wrt: Sequence[int] | None = None,
    ) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
        """The simulator's exact vector-Jacobian product, recorded as a job by the manager."""
        values = as_parameter_values(circuit, parameter_values)
        out = await self.manager.vjp(
            circuit,
            values,
            observables,
            cotangents,
            backend=self.name,
            wrt=wrt,
            run_id=self.run_id,
            request_key=_with_cotangents(
                self._key(circuit, values, observables, None, None), cotangents
            ),
            budget=self.budget,
        )
        self._tally.cost_usd += self.inner.estimate_run_cost(
            circuit, None, observables, len(values)
        )
        return out

    async def adjoint_jacobian(
        self,
        circuit: Circuit,
        parameter_values: ArrayLike | None,
        observables: Sequence[ObservableLike] | ObservableLike,
        *,
        wrt: Sequence[int] | None = None,
    ) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
        """The simulator's exact adjoint jacobian, recorded as a (free) job by the manager."""
        values = as_parameter_values(circuit, parameter_values)
        out = await self.manager.adjoint_jacobian(
            circuit,
            values,
            observables,
            backend=self.name,
            wrt=wrt,
            run_id=self.run_id,
            request_key=self._key(circuit, values, observables, None, None),
            budget=self.budget,
        )
        self._tally.cost_usd += self.inner.estimate_run_cost(
            circuit, None, observables, len(values)
        )
        return out

    def drain(self) -> tuple[float, list[Degradation], list[str]]:
        """``(cost_usd, degradations, fallbacks)`` of the runs since the last drain."""
        tally, self._tally = self._tally, _Tally()
        return tally.cost_usd, tally.degradations, tally.fallbacks

    def __repr__(self) -> str:
        return f"ManagedBackend({self.name!r}, run_id={self.run_id!r})"


def _with_cotangents(key: str | None, cotangents: ArrayLike) -> str | None:
    """A VJP computes something else than the Jacobian of the same bindings: its key
    covers the cotangents too."""
    if key is None:
        return None
    c = np.ascontiguousarray(cotangents, dtype=np.float64)
    return hashlib.sha256(key.encode() + b"vjp" + c.tobytes()).hexdigest()
