"""Quantum generators: a Born machine over a grid, and a latent-noise generator.

:class:`QuantumGenerator` is a quantum circuit Born machine: its output is the measured
distribution over the ``2**n`` basis states, each standing for a point of a
:class:`~quantum_ml.qgan.grid.Grid`. On an exact backend the distribution is the exact
probabilities (the ``2**n`` diagonal Z strings of one run, mapped by a Walsh-Hadamard
transform), otherwise counts over ``shots``. Its vector-Jacobian product
``sum_k v_k dp_k/dθ`` is the gradient of the one diagonal observable
``sum_k v_k |k><k| = sum_S c_S Z_S``: one adjoint pass on the simulator. With shots it is
the parameter-shift rule over counts, every shifted circuit in one concurrent batch.

:class:`LatentGenerator` takes latent noise into its circuit's input parameters and gives
a continuous sample per draw: the expectations of its observables, optionally through a
classical torch head.
"""

from __future__ import annotations

import asyncio
import functools
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

import numpy as np
import scipy.linalg
from numpy.typing import ArrayLike, NDArray

from backends.base import Backend
from backends.circuit import Circuit
from backends.errors import ObservableError
from backends.observables import Observable, ObservableLike, as_observables
from backends.parameters import Angle, Parameter
from backends.simulator import SimulatorBackend
from backends.templates import z_observables

from ..errors import GeneratorError
from ..gradients import (
    QuantumGradientComputer,
    _chain_matrix,
    _occurrence_angles,
    _occurrences,
    _split_circuit,
    shift_rule,
    supports_adjoint,
)
from ..training.torch_task import _input_width
from .ansatz import compose
from .ansatz import initial_state as _initial_state
from .grid import Grid

if TYPE_CHECKING:
    import torch

    from quantum_db.models import ModelVersion

__all__ = [
    "MAX_BORN_QUBITS",
    "LatentGenerator",
    "QuantumGenerator",
    "circuit_from_dict",
    "circuit_to_dict",
]

Array = NDArray[np.float64]
_BORN_KIND = "quantum_ml.QuantumGenerator"
_LATENT_KIND = "quantum_ml.LatentGenerator"
_METHODS = ("adjoint", "parameter-shift", "finite-diff", "spsa")
#: The exact distribution reads all 2**n diagonal Z strings: keep n small.
MAX_BORN_QUBITS = 12


# --------------------------------------------------------------------------- helpers
def circuit_to_dict(circuit: Circuit) -> dict[str, Any]:
    """A circuit as JSON-storable data, gate by gate (what the registry keeps)."""

    def angle(a: Angle) -> list[Any]:
        return [a.coeff, a.parameter.name if a.parameter is not None else None, a.offset]

    return {
        "num_qubits": circuit.num_qubits,
        "name": circuit.name,
        "global_phase": circuit.global_phase,
        "parameters": [[p.name, p.kind] for p in circuit.parameters],
        "instructions": [
            [i.name, list(i.qubits), [angle(a) for a in i.angles]] for i in circuit.instructions
        ],
    }


def circuit_from_dict(data: Mapping[str, Any]) -> Circuit:
    """The circuit :func:`circuit_to_dict` describes."""
    try:
        params = {name: Parameter(name, kind) for name, kind in data["parameters"]}
        c = Circuit(
            int(data["num_qubits"]),
            parameters=list(params.values()),
            global_phase=float(data["global_phase"]),
            name=str(data["name"]),
        )
        for name, qubits, angles in data["instructions"]:
            c.append(
                name,
                qubits,
                [Angle(float(k), None if p is None else params[p], float(o)) for k, p, o in angles],
            )
    except (KeyError, TypeError, ValueError) as exc:
        raise GeneratorError(f"not a stored circuit: {exc!r}") from None
    return c


def _check_shots(shots: object) -> int | None:
    if shots is None:
        return None
    if isinstance(shots, bool) or not isinstance(shots, int | np.integer) or shots < 1:
        raise GeneratorError(f"shots must be an integer >= 1 or None (exact), got {shots!r}")
    return int(shots)


def _check_count(n: object, what: str) -> int:
    if isinstance(n, bool) or not isinstance(n, int | np.integer) or n < 1:
        raise GeneratorError(f"{what} must be an integer >= 1, got {n!r}")
    return int(n)


def _check_seed(seed: object) -> int:
    if isinstance(seed, bool) or not isinstance(seed, int | np.integer) or seed < 0:
        raise GeneratorError(f"seed must be an integer >= 0, got {seed!r}")
    return int(seed)


def _choose_method(
    backend: Backend, shots: int | None, method: str | None, *, counts: bool = False
) -> str:
    """The gradient method: adjoint when exact on the simulator, else parameter shift.
    ``counts``: with shots, gradients come from counts, by parameter shift only."""
    if method is None:
        return "adjoint" if supports_adjoint(backend) and shots is None else "parameter-shift"
    if method not in _METHODS:
        raise GeneratorError(f"unknown gradient method {method!r}; choose one of {_METHODS}")
    if counts and shots is not None and method != "parameter-shift":
        raise GeneratorError(
            f"with shots a Born machine's gradient is parameter shift over counts, not {method!r}"
        )
    if method == "adjoint" and shots is not None:
        raise GeneratorError("the adjoint method is exact: call it with shots=None")
    if method == "adjoint" and not supports_adjoint(backend):
        raise GeneratorError(f"the adjoint method needs the simulator, not {backend.name!r}")
    return method


def _check_exact(backend: Backend) -> None:
    if not backend.capabilities.supports_exact:
        raise GeneratorError(f"{backend.name} has no exact mode: give shots")


def _z_label(mask: int, n: int) -> str:
    return "".join("Z" if mask >> q & 1 else "I" for q in reversed(range(n)))


#: Up to this width the transform is a product with scipy's cached Hadamard matrix
#: (``4**n`` entries: 512 KiB at 8 qubits); wider, the fast transform.
_DENSE_WALSH_QUBITS = 8


@functools.cache
def _hadamard(n: int) -> Array:
    matrix: Array = scipy.linalg.hadamard(1 << n).astype(np.float64)
    return matrix


def _walsh(x: Array, n: int) -> Array:
    """``sum_S (-1)^popcount(k & S) x[S]`` for every ``k``, along axis 0 of ``x``."""
    if n <= _DENSE_WALSH_QUBITS:
        out: Array = _hadamard(n) @ np.asarray(x, dtype=np.float64)
        return out
    # One butterfly per qubit, O(n 2**n): scipy has only the dense matrix.
    rest = x.shape[1:]
    h = np.asarray(x, dtype=np.float64).reshape((2,) * n + rest)
    for axis in range(n):
        a, b = np.take(h, 0, axis=axis), np.take(h, 1, axis=axis)
        h = np.stack((a + b, a - b), axis=axis)
    return h.reshape(x.shape)


def _seeds(seed: int | None, parts: int) -> list[int | None]:
    if parts == 1 or seed is None:
        return [seed] * parts
    return [int(s.generate_state(1)[0]) for s in np.random.SeedSequence(seed).spawn(parts)]


@dataclass(frozen=True, slots=True)
class _ShiftPlan:
    """The parameter-shift evaluations of a circuit: each gate angle gets a parameter of
    its own in ``circuit`` (measured on every qubit); evaluation ``e`` shifts angle
    ``index[e]`` by ``shifts[e]`` and weighs it by ``coeffs[e]``; ``chain`` maps angle
    gradients to weight gradients."""

    circuit: Circuit
    index: NDArray[np.intp]
    shifts: Array
    coeffs: Array
    chain: Array
    occurrences: tuple[Any, ...]

    @classmethod
    def of(cls, circuit: Circuit) -> _ShiftPlan:
        occ = _occurrences(circuit)
        split = _split_circuit(circuit, occ).measure_all()
        evals = [
            (k, s, c)
            for k, o in enumerate(occ)
            for s, c in zip(shift_rule(o.gate).shifts, shift_rule(o.gate).coeffs, strict=True)
        ]
        return cls(
            split,
            np.array([e[0] for e in evals], dtype=np.intp),
            np.array([e[1] for e in evals], dtype=np.float64),
            np.array([e[2] for e in evals], dtype=np.float64),
            _chain_matrix(occ, circuit.num_parameters),
            tuple(occ),
        )

    def rows(self, weights: Array, *, with_base: bool) -> Array:
        """The angle bindings ``[E (+1), K]``: the unshifted one first when ``with_base``."""
        base = _occurrence_angles(list(self.occurrences), weights[None, :])
        rows = np.repeat(base, self.index.size, axis=0)
        rows[np.arange(self.index.size), self.index] += self.shifts
        return np.concatenate([base, rows]) if with_base else rows


# --------------------------------------------------------------------------- Born machine
class QuantumGenerator:
    """A Born machine: ``initial_state`` then ``circuit`` (weights only), over a grid.

    The grid is ``grid``, or ``Grid(bounds, bits)``, or by default the integers
    ``0 .. 2**n - 1`` in one dimension; its bits must sum to the circuit's qubits.
    ``initial_state`` is ``"uniform"`` (H on every qubit), ``"normal"`` (a discretized
    normal on a 1-D grid), a parameter-free :class:`Circuit`, or ``None``. Weights bind the
    circuit's parameters in their order; they default to ``uniform(-pi, pi)`` from ``seed``.
    """

    kind = "born"

    def __init__(
        self,
        circuit: Circuit,
        grid: Grid | None = None,
        *,
        bounds: Sequence[tuple[float, float]] | None = None,
        bits: Sequence[int] | None = None,
        initial_state: str | Circuit | None = None,
        weights: ArrayLike | None = None,
        seed: int = 0,
    ) -> None:
        if not isinstance(circuit, Circuit):
            raise GeneratorError(
                "a generator is built from a backends.Circuit (Circuit.from_qiskit converts a "
                f"Qiskit one), got {type(circuit).__name__}"
            )
        inputs = circuit.parameters_of_kind("input")
        if inputs:
            raise GeneratorError(
                "a Born machine's circuit takes weights only, but it has input parameters "
                f"({', '.join(p.name for p in inputs)}); use a LatentGenerator for latent noise"
            )
        if circuit.measurements:
            raise GeneratorError(
                "give the generator's circuit without measurements: it measures every qubit"
            )
        n = circuit.num_qubits
        if n > MAX_BORN_QUBITS:
            raise GeneratorError(f"a Born machine is limited to {MAX_BORN_QUBITS} qubits, got {n}")
        if grid is None:
            if bounds is None and bits is None:
                grid = Grid([(0.0, float(2**n - 1))], [n])
            elif bounds is None or bits is None:
                raise GeneratorError("give both bounds and bits (or a Grid)")
            else:
                grid = Grid(bounds, bits)
        elif not isinstance(grid, Grid) or bounds is not None or bits is not None:
            raise GeneratorError("give a Grid, or bounds and bits, not both")
        if grid.n_qubits != n:
            raise GeneratorError(
                f"the bits per dimension {list(grid.bits)} sum to {grid.n_qubits} qubits, but the "
                f"circuit has {n}: they must be equal"
            )
        if isinstance(initial_state, Circuit):
            prefix: Circuit | None = initial_state
            self.initial_state: str | None = "circuit"
        else:
            prefix = _initial_state(initial_state, grid)
            self.initial_state = initial_state
        self.grid = grid
        self.ansatz = circuit
        #: The whole circuit: the initial state, then the ansatz.
        self.circuit = compose(prefix, circuit)
        self.n_qubits = n
        self._z = [_z_label(m, n) for m in range(2**n)]
        # Built once: a run then skips parsing 2**n labels.
        self._z_obs = [Observable.pauli(label) for label in self._z]
        self._measured = self.circuit.copy().measure_all()
        self._bit_index = {format(k, f"0{n}b"): k for k in range(2**n)}
        self._shift_plan: _ShiftPlan | None = None
        self._weights = np.zeros(self.num_weights)
        if weights is None:
            weights = np.random.default_rng(seed).uniform(-math.pi, math.pi, self.num_weights)
        self.weights = weights

    # ------------------------------------------------------------------ weights
    @property
    def num_weights(self) -> int:
        return self.circuit.num_parameters

    @property
    def weights(self) -> Array:
        """The circuit's weights, float64 ``[W]`` (set: checked, copied)."""
        return self._weights

    @weights.setter
    def weights(self, value: ArrayLike) -> None:
        self._weights = self._checked_weights(value)

    def _checked_weights(self, value: ArrayLike | None) -> Array:
        if value is None:
            return self._weights
        try:
            w = np.array(value, dtype=np.float64)
        except (TypeError, ValueError) as exc:
            raise GeneratorError(f"weights must be numbers: {exc}") from None
        if w.shape != (self.num_weights,):
            raise GeneratorError(
                f"the generator has {self.num_weights} weights, got shape {w.shape}"
            )
        if not np.all(np.isfinite(w)):
            raise GeneratorError("weights must be finite")
        return w

    # ------------------------------------------------------------------ distribution
    def _from_counts(self, counts: Mapping[str, int], shots: int) -> Array:
        # Bit strings are Qiskit's (clbit 0 rightmost), clbit q measured qubit q. The
        # table lookup is what keeps a parameter-shift batch's counts cheap to read.
        lookup = self._bit_index
        try:
            index = np.fromiter((lookup[b] for b in counts), np.intp, len(counts))
        except KeyError:  # another spelling, e.g. registers separated by spaces
            index = np.array([int(b.replace(" ", ""), 2) for b in counts], dtype=np.intp)
        if index.size and index.max() >= self.grid.size:
            raise GeneratorError(f"counts name outcomes beyond the {self.n_qubits} qubits")
        values = np.fromiter(counts.values(), np.float64, len(counts))
        return np.bincount(index, weights=values, minlength=self.grid.size) / shots

    async def _counts(
        self, backend: Backend, circuit: Circuit, rows: Array, shots: int, seed: int | None
    ) -> Array:
        """Probabilities ``[R, 2**n]`` from ``shots`` counts of every binding in ``rows``:
        one run, or concurrent runs of at most the backend's ``max_batch`` bindings."""
        size = max(1, backend.capabilities.max_batch or rows.shape[0])
        starts = list(range(0, rows.shape[0], size))

        async def one(start: int, part_seed: int | None) -> list[dict[str, int]]:
            result = await backend.run(circuit, rows[start : start + size], None, shots, part_seed)
            if result.counts is None:
                raise GeneratorError(f"{backend.name} returned no counts")
            return result.counts

        parts = await asyncio.gather(
            *(one(s, z) for s, z in zip(starts, _seeds(seed, len(starts)), strict=True))
        )
        return np.stack([self._from_counts(c, shots) for part in parts for c in part])

    async def probabilities(
        self,
        backend: Backend,
        *,
        shots: int | None = None,
        seed: int | None = None,
        weights: ArrayLike | None = None,
    ) -> Array:
        """The distribution over the ``2**n`` basis states (index bit ``q`` is qubit ``q``):
        exact (``shots=None``) or ``counts / shots``. ``weights`` overrides :attr:`weights`."""
        shots = _check_shots(shots)
        w = self._checked_weights(weights)
        if shots is not None:
            counted = await self._counts(backend, self._measured, w[None, :], shots, seed)
            return np.asarray(counted[0], dtype=np.float64)
        _check_exact(backend)
        result = await backend.run(self.circuit, w[None, :], self._z_obs)
        assert result.expectations is not None
        p = _walsh(np.asarray(result.expectations[0], dtype=np.float64), self.n_qubits)
        # Exact up to rounding: clip the ~1e-17 negatives.
        out: Array = np.clip(p / self.grid.size, 0.0, None)
        return out

    def _shifts(self) -> _ShiftPlan:
        if self._shift_plan is None:
            self._shift_plan = _ShiftPlan.of(self.circuit)
        return self._shift_plan

    async def jacobian(
        self,
        backend: Backend,
        *,
        shots: int | None = None,
        seed: int | None = None,
        method: str | None = None,
        weights: ArrayLike | None = None,
    ) -> tuple[Array, Array]:
        """``(p [2**n], dp/dθ [2**n, W])``; with shots both come from counts of one batch
        (the unshifted circuit and every parameter-shifted one)."""
        shots = _check_shots(shots)
        w = self._checked_weights(weights)
        how = _choose_method(backend, shots, method, counts=True)
        if shots is not None:
            plan = self._shifts()
            probs = await self._counts(
                backend, plan.circuit, plan.rows(w, with_base=True), shots, seed
            )
            angle_jac = np.zeros((plan.chain.shape[0], self.grid.size))
            np.add.at(angle_jac, plan.index, plan.coeffs[:, None] * probs[1:])
            return probs[0], angle_jac.T @ plan.chain
        _check_exact(backend)
        exp, jac = await QuantumGradientComputer(how).value_and_jacobian(
            backend, self.circuit, w[None, :], self._z_obs
        )
        size = self.grid.size
        p = np.clip(_walsh(exp[0], self.n_qubits) / size, 0.0, None)
        return p, _walsh(jac[0], self.n_qubits) / size

    async def vjp(
        self,
        backend: Backend,
        v: ArrayLike,
        *,
        shots: int | None = None,
        seed: int | None = None,
        method: str | None = None,
        weights: ArrayLike | None = None,
    ) -> Array:
        """``sum_k v_k dp_k/dθ``, float64 ``[W]``.

        Exact: the gradient of the one observable ``sum_k v_k |k><k|`` (one adjoint pass on
        the simulator). With shots: parameter shift, each shifted circuit's probabilities
        from its counts, all shifted circuits in one batch.
        """
        shots = _check_shots(shots)
        w = self._checked_weights(weights)
        try:
            vec = np.asarray(v, dtype=np.float64)
        except (TypeError, ValueError) as exc:
            raise GeneratorError(f"v must be numbers: {exc}") from None
        if vec.shape != (self.grid.size,) or not np.all(np.isfinite(vec)):
            raise GeneratorError(f"v must be {self.grid.size} finite numbers, got {vec.shape}")
        how = _choose_method(backend, shots, method, counts=True)
        if shots is not None:
            plan = self._shifts()
            if plan.index.size == 0:
                return np.zeros(self.num_weights)
            probs = await self._counts(
                backend, plan.circuit, plan.rows(w, with_base=False), shots, seed
            )
            per_angle = np.bincount(
                plan.index, weights=plan.coeffs * (probs @ vec), minlength=plan.chain.shape[0]
            )
            return np.asarray(per_angle @ plan.chain, dtype=np.float64)
        _check_exact(backend)
        # sum_k v_k p_k = sum_S c_S <Z_S> with c = T^T v (T is symmetric): one observable.
        coeffs = _walsh(vec, self.n_qubits) / self.grid.size
        terms = [(label, float(c)) for label, c in zip(self._z, coeffs, strict=True) if c != 0.0]
        observable = Observable(terms or [(self._z[0], 0.0)])
        # A vector-Jacobian product with the one cotangent 1: on the simulator one backward
        # pass on the compiled kernels (the adjoint Jacobian's walk is the NumPy one).
        _, vjp = await QuantumGradientComputer(how).value_and_vjp(
            backend, self.circuit, w[None, :], [observable], np.ones((1, 1))
        )
        return np.asarray(vjp[0], dtype=np.float64)

    async def sample(
        self,
        n: int,
        *,
        seed: int,
        backend: Backend | None = None,
        shots: int | None = None,
    ) -> Array:
        """``n`` grid points drawn from the generator's distribution, ``[n, dim]``: its
        exact probabilities on a private simulator when ``backend`` is None, else those
        :meth:`probabilities` gives on ``backend`` with ``shots``."""
        n = _check_count(n, "n")
        run_seed, draw_seed = np.random.SeedSequence(_check_seed(seed)).generate_state(2)
        run = int(run_seed) if shots is not None else None
        if backend is None:
            async with SimulatorBackend(max_workers=1) as sim:
                p = await self.probabilities(sim, shots=shots, seed=run)
        else:
            p = await self.probabilities(backend, shots=shots, seed=run)
        index = np.random.default_rng(int(draw_seed)).choice(self.grid.size, size=n, p=p / p.sum())
        return np.asarray(self.grid.points()[index], dtype=np.float64)

    # ------------------------------------------------------------------ registry
    def to_contract(self) -> dict[str, Any]:
        """The encoding contract: the grid's (:meth:`Grid.to_dict`) and the generator kind."""
        return {**self.grid.to_dict(), "generator": self.kind}

    def architecture(self) -> dict[str, Any]:
        """What rebuilds the generator: its whole circuit gate by gate, the grid, n_qubits."""
        return {
            "kind": _BORN_KIND,
            "generator": self.kind,
            "circuit": circuit_to_dict(self.circuit),
            "grid": self.grid.to_dict(),
            "initial_state": self.initial_state,
            "n_qubits": self.n_qubits,
        }

    def registry_payload(self) -> dict[str, Any]:
        """Weights, architecture and contract, as ``db.models.register`` reads them."""
        return {
            "parameters": {"weights": self.weights.copy()},
            "architecture": self.architecture(),
            "encoding": self.to_contract(),
        }

    @classmethod
    def from_registry(cls, version: ModelVersion) -> QuantumGenerator:
        """The generator a registry version holds (circuit, grid and weights)."""
        arch = version.architecture
        if arch.get("kind") != _BORN_KIND:
            raise GeneratorError(
                f"model {version.name!r} v{version.version} is not a QuantumGenerator"
            )
        # The stored circuit already holds the initial state.
        gen = cls(
            circuit_from_dict(arch["circuit"]),
            Grid.from_dict(arch["grid"]),
            weights=version.parameters["weights"],
        )
        gen.initial_state = arch.get("initial_state")
        return gen

    def state_dict(self) -> dict[str, Any]:
        return {"weights": self.weights.copy()}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        if "weights" not in state:
            raise GeneratorError("the state holds no 'weights'")
        self.weights = state["weights"]

    def __repr__(self) -> str:
        return (
            f"QuantumGenerator({self.n_qubits} qubits, {self.num_weights} weights, {self.grid!r})"
        )


# --------------------------------------------------------------------------- latent noise
def _observable_terms(obs: Observable) -> list[list[Any]]:
    return [[t.label, t.coeff] for t in obs.terms]


class LatentGenerator:
    """Latent noise in, a continuous sample out.

    The circuit's first ``latent_dim`` parameters are inputs (kind ``"input"``) fed the
    noise ``z`` (``latent="normal"``: ``N(0, 1)``; ``"uniform"``: ``U(-pi, pi)``); the rest
    are weights. A sample is the expectations of ``observables`` (default ``<Z_i>`` on
    every qubit), mapped by ``head`` (a torch module trained with the generator) if given.
    """

    kind = "latent"

    def __init__(
        self,
        circuit: Circuit,
        *,
        latent_dim: int,
        observables: Sequence[ObservableLike] | None = None,
        head: torch.nn.Module | None = None,
        seed: int = 0,
        weights: ArrayLike | None = None,
        latent: Literal["normal", "uniform"] = "normal",
    ) -> None:
        if not isinstance(circuit, Circuit):
            raise GeneratorError(
                f"a generator is built from a backends.Circuit, got {type(circuit).__name__}"
            )
        latent_dim = _check_count(latent_dim, "latent_dim")
        kinds = [p.kind for p in circuit.parameters]
        if kinds[:latent_dim] != ["input"] * latent_dim or "input" in kinds[latent_dim:]:
            raise GeneratorError(
                f"the circuit must have exactly {latent_dim} input parameters, ordered first "
                f"(it has {kinds.count('input')}: {kinds})"
            )
        if latent not in ("normal", "uniform"):
            raise GeneratorError(f"latent must be 'normal' or 'uniform', got {latent!r}")
        try:
            obs = as_observables(
                list(observables) if observables is not None else z_observables(circuit.num_qubits),
                circuit.num_qubits,
            )
        except ObservableError as exc:
            raise GeneratorError(f"bad observables: {exc}") from None
        self.circuit = circuit
        self.latent_dim = latent_dim
        self.latent: Literal["normal", "uniform"] = latent
        self.observables: list[Observable] = obs
        self.head = head
        self.n_qubits = circuit.num_qubits
        self.output_dim = len(obs)
        if head is not None:
            width = _input_width(head)
            if width is not None and width != len(obs):
                raise GeneratorError(
                    f"the head takes {width} inputs, the circuit gives {len(obs)} expectations"
                )
            features = [getattr(m, "out_features", None) for m in head.modules()]
            outs = [k for k in features if isinstance(k, int)]
            if outs:
                self.output_dim = outs[-1]
        self._weights = np.zeros(self.num_weights)
        if weights is None:
            weights = np.random.default_rng(seed).uniform(-math.pi, math.pi, self.num_weights)
        self.weights = weights

    @property
    def num_weights(self) -> int:
        return self.circuit.num_parameters - self.latent_dim

    @property
    def weights(self) -> Array:
        return self._weights

    @weights.setter
    def weights(self, value: ArrayLike) -> None:
        try:
            w = np.array(value, dtype=np.float64)
        except (TypeError, ValueError) as exc:
            raise GeneratorError(f"weights must be numbers: {exc}") from None
        if w.shape != (self.num_weights,) or not np.all(np.isfinite(w)):
            raise GeneratorError(
                f"the generator has {self.num_weights} finite weights, got shape {w.shape}"
            )
        self._weights = w

    def draw_latent(self, n: int, rng: np.random.Generator) -> Array:
        """``n`` noise vectors ``[n, latent_dim]`` from ``rng``."""
        n = _check_count(n, "n")
        if self.latent == "normal":
            return rng.normal(size=(n, self.latent_dim))
        return rng.uniform(-math.pi, math.pi, (n, self.latent_dim))

    def _values(self, z: ArrayLike) -> Array:
        zz = np.asarray(z, dtype=np.float64)
        if zz.ndim != 2 or zz.shape[1] != self.latent_dim or not np.all(np.isfinite(zz)):
            raise GeneratorError(
                f"latent noise must be finite, of shape [B, {self.latent_dim}], got {zz.shape}"
            )
        return np.hstack([zz, np.broadcast_to(self._weights, (len(zz), self.num_weights))])

    async def expectations(
        self, backend: Backend, z: ArrayLike, *, shots: int | None = None, seed: int | None = None
    ) -> Array:
        """The expectations ``[B, O]`` for the noise ``z`` ``[B, latent_dim]``."""
        shots = _check_shots(shots)
        if shots is None:
            _check_exact(backend)
        result = await backend.run(self.circuit, self._values(z), self.observables, shots, seed)
        assert result.expectations is not None
        return np.asarray(result.expectations, dtype=np.float64)

    async def expectations_and_jacobian(
        self,
        backend: Backend,
        z: ArrayLike,
        *,
        shots: int | None = None,
        seed: int | None = None,
        method: str | None = None,
    ) -> tuple[Array, Array]:
        """``(E [B, O], dE/dθ [B, O, W])`` (the noise is not differentiated)."""
        shots = _check_shots(shots)
        how = _choose_method(backend, shots, method)
        if shots is None:
            _check_exact(backend)
        wrt = list(range(self.latent_dim, self.circuit.num_parameters))
        exp, jac = await QuantumGradientComputer(how).value_and_jacobian(
            backend,
            self.circuit,
            self._values(z),
            self.observables,
            shots=shots,
            seed=seed,
            wrt=wrt,
        )
        return exp, np.ascontiguousarray(jac[:, :, self.latent_dim :])

    async def sample(
        self, n: int, *, seed: int, backend: Backend | None = None, shots: int | None = None
    ) -> Array:
        """``n`` samples ``[n, output_dim]``: fresh noise from ``seed`` through the circuit
        (on a private simulator when ``backend`` is None) and the head."""
        n = _check_count(n, "n")
        noise_seed, run_seed = np.random.SeedSequence(_check_seed(seed)).generate_state(2)
        z = self.draw_latent(n, np.random.default_rng(int(noise_seed)))
        run = int(run_seed) if shots is not None else None
        if backend is None:
            async with SimulatorBackend(max_workers=1) as sim:
                e = await self.expectations(sim, z, shots=shots, seed=run)
        else:
            e = await self.expectations(backend, z, shots=shots, seed=run)
        if self.head is None:
            return e
        import torch

        floating = [p for p in self.head.parameters() if p.is_floating_point()]
        dtype = floating[0].dtype if floating else torch.float64
        with torch.no_grad():
            out = self.head(torch.from_numpy(e).to(dtype))
        return np.asarray(out.to(torch.float64).numpy(), dtype=np.float64).reshape(n, -1)

    # ------------------------------------------------------------------ registry
    def to_contract(self) -> dict[str, Any]:
        return {
            "generator": self.kind,
            "latent_dim": self.latent_dim,
            "latent": self.latent,
            "output_dim": self.output_dim,
        }

    def architecture(self) -> dict[str, Any]:
        """The circuit gate by gate, the noise, the observables; the head by its class."""
        return {
            "kind": _LATENT_KIND,
            "generator": self.kind,
            "circuit": circuit_to_dict(self.circuit),
            "latent_dim": self.latent_dim,
            "latent": self.latent,
            "observables": [_observable_terms(o) for o in self.observables],
            "head": None if self.head is None else type(self.head).__name__,
            "output_dim": self.output_dim,
        }

    def registry_payload(self) -> dict[str, Any]:
        """Weights (and the head's tensors as ``head.<name>``), architecture, contract."""
        parameters: dict[str, Any] = {"weights": self.weights.copy()}
        if self.head is not None:
            for key, tensor in self.head.state_dict().items():
                parameters[f"head.{key}"] = tensor.detach().cpu().numpy().copy()
        return {
            "parameters": parameters,
            "architecture": self.architecture(),
            "encoding": self.to_contract(),
        }

    @classmethod
    def from_registry(
        cls, version: ModelVersion, head: torch.nn.Module | None = None
    ) -> LatentGenerator:
        """The generator a registry version holds; a stored head's tensors are loaded
        into ``head`` (a module built like the trained one)."""
        arch = version.architecture
        if arch.get("kind") != _LATENT_KIND:
            raise GeneratorError(f"model {version.name!r} v{version.version} is no LatentGenerator")
        if (arch.get("head") is None) != (head is None):
            raise GeneratorError(
                f"the stored generator has head {arch.get('head')!r}: pass a module like it "
                "as head (or none when it has none)"
            )
        gen = cls(
            circuit_from_dict(arch["circuit"]),
            latent_dim=int(arch["latent_dim"]),
            observables=[Observable((label, c) for label, c in o) for o in arch["observables"]],
            head=head,
            weights=version.parameters["weights"],
            latent=arch["latent"],
        )
        if head is not None:
            import torch

            state = {
                key[5:]: torch.from_numpy(np.array(value))
                for key, value in version.parameters.items()
                if key.startswith("head.")
            }
            head.load_state_dict(state, strict=True)
        return gen

    def state_dict(self) -> dict[str, Any]:
        return {"weights": self.weights.copy()}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        if "weights" not in state:
            raise GeneratorError("the state holds no 'weights'")
        self.weights = state["weights"]

    def __repr__(self) -> str:
        return (
            f"LatentGenerator({self.n_qubits} qubits, latent_dim={self.latent_dim}, "
            f"{self.num_weights} weights, output_dim={self.output_dim})"
        )
