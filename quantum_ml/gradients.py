"""Gradients of circuit expectation values: parameter shift, adjoint, SPSA, finite differences."""

from __future__ import annotations

import asyncio
import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal, get_args

import numpy as np
from numpy.typing import ArrayLike, NDArray

from backends.base import Backend, as_parameter_values
from backends.circuit import Circuit
from backends.errors import ParameterValueError
from backends.observables import Observable, ObservableLike, as_observables
from backends.parameters import Parameter

from .errors import GradientError, GradientMethodError

__all__ = [
    "EvaluationPlan",
    "GradientError",
    "GradientMethod",
    "GradientMethodError",
    "QuantumGradientComputer",
    "ShiftRule",
    "shift_rule",
    "supports_adjoint",
]

GradientMethod = Literal["parameter-shift", "adjoint", "spsa", "finite-diff"]
_METHODS: tuple[str, ...] = get_args(GradientMethod)

Array = NDArray[np.float64]


# --------------------------------------------------------------------------- shift rules
@dataclass(frozen=True, slots=True)
class ShiftRule:
    """``d f / d angle = sum_r coeffs[r] * f(angle + shifts[r])`` (exact for the gate)."""

    shifts: tuple[float, ...]
    coeffs: tuple[float, ...]


_HALF_PI = math.pi / 2
#: Rotations ``exp(-i a G / 2)`` with ``G² = I`` (two eigenvalues of the generator, ±1/2).
_TWO_TERM = ShiftRule((_HALF_PI, -_HALF_PI), (0.5, -0.5))
_C_PLUS = (math.sqrt(2) + 1) / (4 * math.sqrt(2))
_C_MINUS = (math.sqrt(2) - 1) / (4 * math.sqrt(2))
#: Controlled rotations: generator eigenvalues {0, ±1/2} need the four-term rule.
_FOUR_TERM = ShiftRule(
    (_HALF_PI, -_HALF_PI, 3 * _HALF_PI, -3 * _HALF_PI),
    (_C_PLUS, -_C_PLUS, -_C_MINUS, _C_MINUS),
)
# ``p`` and ``u``'s phase angles equal RZ rotations up to an angle-dependent global phase,
# which expectations do not see, so they take the two-term rule as well.
_RULES: dict[str, ShiftRule] = {
    **dict.fromkeys(("rx", "ry", "rz", "rxx", "ryy", "rzz", "p", "u"), _TWO_TERM),
    **dict.fromkeys(("crx", "cry", "crz"), _FOUR_TERM),
}


def shift_rule(gate: str) -> ShiftRule:
    """The exact parameter-shift rule of any angle of ``gate``."""
    try:
        return _RULES[gate]
    except KeyError:
        raise GradientError(f"gate {gate!r} has no parameter-shift rule") from None


# --------------------------------------------------------------------------- occurrences
@dataclass(frozen=True, slots=True)
class _Occurrence:
    """One parameterized gate angle: ``coeff * theta[param] + offset``."""

    instruction: int
    slot: int
    gate: str
    param: int
    coeff: float
    offset: float


def _occurrences(circuit: Circuit) -> list[_Occurrence]:
    index = {p.name: i for i, p in enumerate(circuit.parameters)}
    out: list[_Occurrence] = []
    for i, inst in enumerate(circuit.instructions):
        for s, a in enumerate(inst.angles):
            if a.parameter is not None and a.coeff != 0.0:
                out.append(_Occurrence(i, s, inst.name, index[a.parameter.name], a.coeff, a.offset))
    return out


def _occurrence_angles(occ: Sequence[_Occurrence], values: Array) -> Array:
    """Angles ``[B, K]`` of the occurrences for the bindings ``values`` ``[B, P]``."""
    if not occ:
        return np.zeros((values.shape[0], 0))
    params = np.array([o.param for o in occ], dtype=np.intp)
    coeffs = np.array([o.coeff for o in occ])
    offsets = np.array([o.offset for o in occ])
    angles: Array = values[:, params] * coeffs + offsets
    return angles


def _chain_matrix(occ: Sequence[_Occurrence], num_params: int) -> Array:
    """``M[k, p] = coeff_k`` when occurrence ``k`` uses parameter ``p``: the chain rule."""
    m = np.zeros((len(occ), num_params))
    for k, o in enumerate(occ):
        m[k, o.param] += o.coeff
    return m


#: Split circuits by the content hash of their source, so that a training loop's every
#: step reuses one (and the backend's plan and tape for it, which it finds by the split
#: circuit's own hash: computing that hash costs more than the arithmetic of a small run).
_SPLITS: dict[str, tuple[list[_Occurrence], Circuit]] = {}


def _split(circuit: Circuit) -> tuple[list[_Occurrence], Circuit]:
    key = circuit.content_hash()
    found = _SPLITS.get(key)
    if found is None:
        if len(_SPLITS) >= 64:
            _SPLITS.pop(next(iter(_SPLITS)))
        occ = _occurrences(circuit)
        found = _SPLITS[key] = (occ, _split_circuit(circuit, occ))
    return found


def _split_circuit(circuit: Circuit, occ: Sequence[_Occurrence]) -> Circuit:
    """``circuit`` with each occurrence's angle replaced by a fresh parameter of its own."""
    fresh = {(o.instruction, o.slot): Parameter(f"__grad_{k}") for k, o in enumerate(occ)}
    derived = Circuit(
        circuit.num_qubits,
        parameters=list(fresh.values()),
        global_phase=circuit.global_phase,
        name=f"{circuit.name}__split",
    )
    for i, inst in enumerate(circuit.instructions):
        angles: list[Parameter | float] = []
        for s, a in enumerate(inst.angles):
            p = fresh.get((i, s))
            # Every other angle is constant (no parameter, or a zero coefficient).
            angles.append(p if p is not None else a.offset)
        derived.append(inst.name, inst.qubits, angles)
    return derived


def supports_adjoint(backend: Backend) -> bool:
    """Whether ``backend`` differentiates exactly by the adjoint method (its
    ``supports_derivatives("adjoint")``: the simulator, or a backend standing for it)."""
    return backend.supports_derivatives("adjoint", None)


@dataclass(frozen=True, slots=True)
class EvaluationPlan:
    """What one gradient computation sends to a backend: ``rows`` bindings of ``circuit``
    (the circuit as the method runs it), in ``runs`` calls of at most ``chunk`` rows."""

    circuit: Circuit
    rows: int
    runs: int
    chunk: int

    def cost(
        self,
        backend: Backend,
        observables: Sequence[ObservableLike] | ObservableLike,
        shots: int | None,
    ) -> float:
        """The estimated USD price of every run of the plan on ``backend``."""
        full, rest = divmod(self.rows, self.chunk)
        total = full * backend.estimate_run_cost(self.circuit, shots, observables, self.chunk)
        if rest:
            total += backend.estimate_run_cost(self.circuit, shots, observables, rest)
        return float(total)


# --------------------------------------------------------------------------- the computer
class QuantumGradientComputer:
    """Jacobians ``d<O_j>/d theta_p`` of a circuit's expectations, ``[B, n_obs, P]``.

    ``method``:

    * ``"parameter-shift"`` (default): exact shift rules per gate angle (two-term for
      rotations, ``p`` and ``u``; four-term for ``crx``/``cry``/``crz``), combined by the
      chain rule for affine and reused parameters. Every shifted binding of every input
      goes to the backend in one batch (split into concurrent runs only above the backend's
      ``max_batch`` or ``chunk_size``). Works exactly or with shots, on any backend.
    * ``"adjoint"``: exact adjoint differentiation on the simulator's fused plan
      (:meth:`SimulatorBackend.adjoint_jacobian`); :class:`SimulatorBackend` without shots
      only.
    * ``"finite-diff"``: central differences with step ``step`` (default ``1e-5``: the
      truncation error ``~h²`` and the round-off ``~1e-16/h`` both stay near ``1e-10``, so
      exact results agree with the analytic gradient to about ``1e-8``).
    * ``"spsa"``: ``n_samples`` simultaneous perturbations along seeded Rademacher
      directions with step ``step`` (default ``1e-2``); unbiased up to ``O(step²)``.
    """

    def __init__(
        self,
        method: str = "parameter-shift",
        *,
        step: float | None = None,
        n_samples: int = 1,
        chunk_size: int | None = None,
        max_concurrency: int | None = None,
    ) -> None:
        if method not in _METHODS:
            raise GradientMethodError(
                f"unknown gradient method {method!r}; choose one of {', '.join(_METHODS)}"
            )
        self.method: str = method
        default_step = 1e-2 if method == "spsa" else 1e-5
        self.step = float(default_step if step is None else step)
        if not math.isfinite(self.step) or self.step <= 0:
            raise GradientError(f"step must be a positive finite number, got {step!r}")
        if isinstance(n_samples, bool) or not isinstance(n_samples, int) or n_samples < 1:
            raise GradientError(f"n_samples must be a positive integer, got {n_samples!r}")
        self.n_samples = n_samples
        if chunk_size is not None and chunk_size < 1:
            raise GradientError(f"chunk_size must be positive, got {chunk_size!r}")
        self.chunk_size = chunk_size
        self.max_concurrency = max_concurrency

    def __repr__(self) -> str:
        return f"QuantumGradientComputer(method={self.method!r})"

    # ------------------------------------------------------------------ public API
    async def jacobian(
        self,
        backend: Backend,
        circuit: Circuit,
        parameter_values: ArrayLike,
        observables: Sequence[ObservableLike] | ObservableLike,
        *,
        shots: int | None = None,
        seed: int | None = None,
        wrt: Sequence[int] | None = None,
    ) -> Array:
        """``d<O_j>/d theta_p`` for every binding: float64 ``[B, n_obs, P]``.

        ``wrt`` lists the parameter indices to differentiate; the other columns are zero
        and cost no evaluations (e.g. for data inputs).
        """
        _, jac = await self.value_and_jacobian(
            backend, circuit, parameter_values, observables, shots=shots, seed=seed, wrt=wrt
        )
        return jac

    async def value_and_jacobian(
        self,
        backend: Backend,
        circuit: Circuit,
        parameter_values: ArrayLike,
        observables: Sequence[ObservableLike] | ObservableLike,
        *,
        shots: int | None = None,
        seed: int | None = None,
        wrt: Sequence[int] | None = None,
    ) -> tuple[Array, Array]:
        """``(expectations [B, n_obs], jacobian [B, n_obs, P])`` from the same evaluations."""
        values = as_parameter_values(circuit, parameter_values)
        obs = tuple(as_observables(observables, circuit.num_qubits))
        if not obs:
            raise ParameterValueError("a gradient needs at least one observable")
        wanted = _check_wrt(wrt, circuit.num_parameters)
        if self.method == "adjoint":
            return await self._adjoint(backend, circuit, values, obs, shots, wanted)
        if self.method == "parameter-shift":
            return await self._parameter_shift(backend, circuit, values, obs, shots, seed, wanted)
        if self.method == "finite-diff":
            return await self._finite_diff(backend, circuit, values, obs, shots, seed, wanted)
        return await self._spsa(backend, circuit, values, obs, shots, seed, wanted)

    async def value_and_vjp(
        self,
        backend: Backend,
        circuit: Circuit,
        parameter_values: ArrayLike,
        observables: Sequence[ObservableLike] | ObservableLike,
        cotangents: ArrayLike,
        *,
        shots: int | None = None,
        seed: int | None = None,
        wrt: Sequence[int] | None = None,
    ) -> tuple[Array, Array]:
        """``(expectations [B, n_obs], vjp [B, P])`` with ``vjp[b] = sum_k c[b, k]
        d<O_k>_b/d theta``: what a loss gradient or a torch ``grad_output`` needs.

        With ``method="adjoint"`` on a backend offering ``"vjp"``
        (``backend.supports_derivatives("vjp", shots)``) this is one exact backward pass
        per binding, of the summed observable. Otherwise it is this computer's Jacobian
        contracted with the cotangents, measured only on the observables the cotangents
        weigh (a column of zeros is not measured: its expectations come back NaN), so no
        shots are spent on what the loss ignores.
        """
        values = as_parameter_values(circuit, parameter_values)
        obs = tuple(as_observables(observables, circuit.num_qubits))
        if not obs:
            raise ParameterValueError("a gradient needs at least one observable")
        c = np.asarray(cotangents, dtype=np.float64)
        if c.shape != (values.shape[0], len(obs)) or not np.all(np.isfinite(c)):
            raise GradientError(
                f"cotangents must be finite numbers of shape [bindings, observables] = "
                f"[{values.shape[0]}, {len(obs)}], got shape {list(c.shape)}"
            )
        wanted = _check_wrt(wrt, circuit.num_parameters)
        if self.method == "adjoint" and shots is None and backend.supports_derivatives("vjp"):
            result: tuple[Array, Array] = await backend.compute_vjp(
                circuit, values, obs, c, wrt=sorted(wanted)
            )
            return result
        weighed = np.flatnonzero(np.any(c != 0, axis=0))
        expectations = np.full((values.shape[0], len(obs)), np.nan)
        if weighed.size == 0:
            return expectations, np.zeros(values.shape)
        exp, jac = await self.value_and_jacobian(
            backend,
            circuit,
            values,
            [obs[i] for i in weighed],
            shots=shots,
            seed=seed,
            wrt=sorted(wanted),
        )
        expectations[:, weighed] = exp
        return expectations, np.einsum("bk,bkp->bp", c[:, weighed], jac)

    def plan(
        self,
        backend: Backend,
        circuit: Circuit,
        n_bindings: int,
        *,
        wrt: Sequence[int] | None = None,
    ) -> EvaluationPlan:
        """What :meth:`value_and_jacobian` sends to ``backend`` for ``n_bindings`` bindings
        of ``circuit``, without running anything. The adjoint method is one job over the
        bindings themselves (priced, by the BackendManager, as an exact run of them)."""
        wanted = _check_wrt(wrt, circuit.num_parameters)
        if self.method == "adjoint":
            return EvaluationPlan(circuit, n_bindings, 1 if n_bindings else 0, max(n_bindings, 1))
        run_circuit = circuit
        if self.method == "parameter-shift":
            occ = _occurrences(circuit)
            run_circuit = _split_circuit(circuit, occ)
            per = 1 + sum(len(shift_rule(o.gate).shifts) for o in occ if o.param in wanted)
        elif self.method == "finite-diff":
            per = 1 + 2 * len(wanted)
        else:
            per = 1 + 2 * self.n_samples
        rows = per * n_bindings
        chunk = self._chunk(backend, rows)
        return EvaluationPlan(run_circuit, rows, -(-rows // chunk) if rows else 0, chunk)

    def _chunk(self, backend: Backend, rows: int) -> int:
        limits = [x for x in (backend.capabilities.max_batch, self.chunk_size) if x is not None]
        return max(min(limits) if limits else rows, 1)

    # ------------------------------------------------------------------ evaluation
    async def _evaluate(
        self,
        backend: Backend,
        circuit: Circuit,
        rows: Array,
        obs: tuple[Observable, ...],
        shots: int | None,
        seed: int | None,
    ) -> Array:
        """Expectations ``[R, n_obs]`` of all ``rows``: one run, or concurrent chunks."""
        size = self._chunk(backend, rows.shape[0])
        starts = list(range(0, rows.shape[0], size))
        if len(starts) == 1:
            seeds: list[int | None] = [seed]
        elif seed is None:
            seeds = [None] * len(starts)
        else:
            seeds = [
                int(s.generate_state(1)[0]) for s in np.random.SeedSequence(seed).spawn(len(starts))
            ]
        gate = asyncio.Semaphore(self.max_concurrency or len(starts))

        async def one(start: int, chunk_seed: int | None) -> Array:
            async with gate:
                result = await backend.run(
                    circuit, rows[start : start + size], obs, shots=shots, seed=chunk_seed
                )
            if result.expectations is None:
                raise GradientError(f"{backend.name} returned no expectation values")
            return np.asarray(result.expectations, dtype=np.float64)

        parts = await asyncio.gather(*(one(s, z) for s, z in zip(starts, seeds, strict=True)))
        return np.concatenate(parts, axis=0)

    async def _parameter_shift(
        self,
        backend: Backend,
        circuit: Circuit,
        values: Array,
        obs: tuple[Observable, ...],
        shots: int | None,
        seed: int | None,
        wanted: set[int],
    ) -> tuple[Array, Array]:
        b, p = values.shape
        occ, derived = _split(circuit)
        base = _occurrence_angles(occ, values)  # [B, K]
        # Each evaluation e: (occurrence, shift, coefficient); e = 0 is the unshifted one.
        evals: list[tuple[int, float, float]] = []
        for k, o in enumerate(occ):
            if o.param in wanted:
                rule = shift_rule(o.gate)
                evals.extend((k, s, c) for s, c in zip(rule.shifts, rule.coeffs, strict=True))
        table = np.array(evals, dtype=np.float64).reshape(-1, 3)
        ks, shifts, coeffs = table[:, 0].astype(np.intp), table[:, 1], table[:, 2]
        rows = np.repeat(base[None], 1 + len(evals), axis=0)  # [E, B, K]
        rows[1 + np.arange(len(evals)), :, ks] += shifts[:, None]
        flat = rows.reshape(-1, len(occ)) if occ else np.zeros((rows.shape[0] * b, 0))
        out = await self._evaluate(backend, derived, flat, obs, shots, seed)
        f = out.reshape(1 + len(evals), b, len(obs))
        angle_grad = np.zeros((len(occ), b, len(obs)))  # [K, B, O]
        np.add.at(angle_grad, ks, coeffs[:, None, None] * f[1:])
        jac = angle_grad.transpose(1, 2, 0) @ _chain_matrix(occ, p)
        return f[0].copy(), np.ascontiguousarray(jac)

    async def _finite_diff(
        self,
        backend: Backend,
        circuit: Circuit,
        values: Array,
        obs: tuple[Observable, ...],
        shots: int | None,
        seed: int | None,
        wanted: set[int],
    ) -> tuple[Array, Array]:
        b, p = values.shape
        cols = sorted(wanted)
        rows = np.repeat(values[None], 1 + 2 * len(cols), axis=0)  # [E, B, P]
        for j, c in enumerate(cols):
            rows[1 + 2 * j, :, c] += self.step
            rows[2 + 2 * j, :, c] -= self.step
        flat = rows.reshape(rows.shape[0] * b, p)
        out = await self._evaluate(backend, circuit, flat, obs, shots, seed)
        f = out.reshape(-1, b, len(obs))
        jac = np.zeros((b, len(obs), p))
        for j, c in enumerate(cols):
            jac[:, :, c] = (f[1 + 2 * j] - f[2 + 2 * j]) / (2 * self.step)
        return f[0].copy(), jac

    async def _spsa(
        self,
        backend: Backend,
        circuit: Circuit,
        values: Array,
        obs: tuple[Observable, ...],
        shots: int | None,
        seed: int | None,
        wanted: set[int],
    ) -> tuple[Array, Array]:
        b, p = values.shape
        rng = np.random.default_rng(seed)
        mask = np.zeros(p)
        mask[sorted(wanted)] = 1.0
        # Directions [S, B, P] in {-1, +1} (zero on parameters left out).
        delta = rng.choice([-1.0, 1.0], size=(self.n_samples, b, p)) * mask
        plus = values[None] + self.step * delta
        minus = values[None] - self.step * delta
        stacked = np.concatenate([values[None], plus, minus], axis=0)  # [1 + 2S, B, P]
        rows = stacked.reshape(stacked.shape[0] * b, p)
        run_seed = None if seed is None else int(rng.integers(2**63 - 1))
        out = await self._evaluate(backend, circuit, rows, obs, shots, run_seed)
        f = out.reshape(-1, b, len(obs))
        s = self.n_samples
        diff = (f[1 : 1 + s] - f[1 + s :]) / (2 * self.step)  # [S, B, O]
        # 1 / delta_i == delta_i for Rademacher directions.
        jac = np.einsum("sbo,sbp->bop", diff, delta) / s
        return f[0].copy(), np.ascontiguousarray(jac)

    async def _adjoint(
        self,
        backend: Backend,
        circuit: Circuit,
        values: Array,
        obs: tuple[Observable, ...],
        shots: int | None,
        wanted: set[int],
    ) -> tuple[Array, Array]:
        if not supports_adjoint(backend):
            raise GradientMethodError(
                f"adjoint differentiation needs the exact SimulatorBackend, not {backend.name!r}; "
                "use method='parameter-shift' on other backends"
            )
        if shots is not None:
            raise GradientMethodError(
                "adjoint differentiation is exact and takes no shots; call it with shots=None "
                "or use method='parameter-shift' to estimate gradients from shots"
            )
        result: tuple[Array, Array] = await backend.adjoint_jacobian(
            circuit, values, obs, wrt=sorted(wanted)
        )
        return result


# --------------------------------------------------------------------------- validation
def _check_wrt(wrt: Sequence[int] | None, num_params: int) -> set[int]:
    if wrt is None:
        return set(range(num_params))
    out: set[int] = set()
    for i in wrt:
        if isinstance(i, bool) or not isinstance(i, int | np.integer) or not 0 <= i < num_params:
            raise ParameterValueError(
                f"wrt must list parameter indices in 0..{num_params - 1}, got {i!r}"
            )
        out.add(int(i))
    return out
