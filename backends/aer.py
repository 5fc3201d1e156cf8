"""Qiskit Aer, or any Qiskit ``BackendV2``, as a backend: transpile once, run the V2 primitives."""

from __future__ import annotations

import asyncio
import copy
import functools
import math
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import numpy as np
from numpy.typing import ArrayLike, NDArray

from .base import Backend, Capabilities, RunRequest, RunResult
from .circuit import Circuit
from .cost import FREE, PriceModel
from .errors import (
    BackendError,
    CapacityError,
    JobFailedError,
    MissingDependencyError,
    SimulatorMemoryError,
)
from .memory import available_memory
from .observables import Observable, ObservableLike

__all__ = ["QiskitBackend"]

_INSTALL = "pip install 'quantum-db[qiskit]'"
#: Aer methods that run every circuit of the gate set, with or without measurements.
_METHODS = ("automatic", "statevector", "density_matrix", "matrix_product_state")
#: How many qubits' worth of amplitudes each method stores per qubit (2^n or 4^n entries).
_STATE_EXPONENT = {"automatic": 1, "statevector": 1, "density_matrix": 2}
#: Working memory as a multiple of the state: the state plus Aer's sampling buffers.
_WORKING_SET_FACTOR = 2
#: Transpiled circuits kept per backend; training runs reuse a handful of circuits.
_CACHE_SIZE = 256
#: Parity (popcount mod 2) of every byte, to read a Pauli estimate from packed samples.
_BYTE_PARITY = np.array([bin(b).count("1") & 1 for b in range(256)], dtype=np.uint8)


def _import_qiskit() -> None:
    try:
        import qiskit  # noqa: F401
    except ImportError as exc:  # pragma: no cover - depends on the environment
        raise MissingDependencyError(f"QiskitBackend needs Qiskit: {_INSTALL}") from exc


def _aer_simulator_class() -> Any:
    try:
        from qiskit_aer import AerSimulator
    except ImportError as exc:  # pragma: no cover - depends on the environment
        raise MissingDependencyError(f"the Aer simulator needs qiskit-aer: {_INSTALL}") from exc
    return AerSimulator


def _is_aer(backend: Any) -> bool:
    try:
        from qiskit_aer import AerSimulator
    except ImportError:  # pragma: no cover - a generic backend works without Aer
        return False
    return isinstance(backend, AerSimulator)


def _is_noisy(noise_model: Any) -> bool:
    return noise_model is not None and not noise_model.is_ideal()


def _native_gates(target: Any) -> frozenset[str]:
    """The target's unitary gates, leaving out measurements, directives and save instructions."""
    from qiskit.circuit import Gate

    names = set()
    for name in target.operation_names:
        op = target.operation_from_name(name)
        if isinstance(op, Gate) or (isinstance(op, type) and issubclass(op, Gate)):
            names.add(str(name))
    return frozenset(names)


def _connectivity(coupling_map: Any, num_qubits: int) -> frozenset[tuple[int, int]] | None:
    if coupling_map is None:
        return None
    edges = frozenset((int(a), int(b)) for a, b in coupling_map.get_edges())
    # A complete graph is all-to-all; say so the way the other backends do.
    return None if len(edges) == num_qubits * (num_qubits - 1) else edges


def _unmeasured(circuit: Circuit) -> Any:
    qc = circuit.to_qiskit()
    if circuit.measurements:
        # Expectations are of the state before the terminal measurements.
        qc.remove_final_measurements()
    return qc


def _measured(circuit: Circuit) -> Any:
    return (circuit if circuit.measurements else circuit.copy().measure_all()).to_qiskit()


def _pauli_circuit(circuit: Circuit, label: str) -> Any:
    """``circuit`` rotated into the eigenbasis of Pauli ``label``, its support measured."""
    from qiskit.circuit import ClassicalRegister

    qc = _unmeasured(circuit)
    support = [q for q, c in enumerate(reversed(label)) if c != "I"]
    parity = ClassicalRegister(len(support), "parity")
    qc.add_register(parity)
    for k, q in enumerate(support):
        pauli = label[-1 - q]
        if pauli == "Y":
            qc.sdg(q)
        if pauli in "XY":
            qc.h(q)
        qc.measure(q, parity[k])
    return qc


def _bindable_on_aer(tqc: Any) -> Any:
    """``tqc`` with its parameterized controlled gates expanded into their definitions.

    Aer finds the gates to bind through ``Instruction.is_parameterized()``, which misses
    the parameter a controlled gate keeps on its base gate, so ``crx``, ``cry``, ``crz``,
    ``cp``, ... run at angle 0 (Qiskit/qiskit-aer#2323, #2391, #2403). Their definitions
    use single-qubit rotations and ``cx``, which Aer binds correctly.
    """
    from qiskit.circuit import ControlledGate, ParameterExpression

    for _ in range(8):  # multi-controlled gates unfold a level at a time
        names = {
            item.operation.name
            for item in tqc.data
            if isinstance(item.operation, ControlledGate)
            and any(isinstance(v, ParameterExpression) for v in item.operation.params)
        }
        if not names:
            return tqc
        tqc = tqc.decompose(gates_to_decompose=sorted(names))
    raise BackendError("controlled gates did not unfold into gates Aer binds correctly")


def _sparse_pauli_op(observable: Observable) -> Any:
    from qiskit.quantum_info import SparsePauliOp

    return SparsePauliOp.from_list([(t.label, t.coeff) for t in observable.terms])


def _bindings(tqc: Any, circuit: Circuit, values: NDArray[np.float64]) -> NDArray[np.float64]:
    """The columns of ``values`` for the parameters the transpiled circuit still has."""
    columns = [circuit.parameter_index(p.name) for p in tqc.parameters]
    return values[:, columns]


def _sampler_pubs(tqc: Any, circuit: Circuit, values: NDArray[np.float64]) -> list[tuple[Any, ...]]:
    """One PUB over all bindings, or one PUB per binding for a circuit without parameters.

    Aer's SamplerV2 runs a parameter-free circuit once whatever the bindings' shape and
    fills the other bindings with zeros, so each binding gets a PUB of its own there.
    """
    if tqc.num_parameters == 0:
        return [(tqc,)] * values.shape[0]
    names = tuple(p.name for p in tqc.parameters)
    return [(tqc, {names: _bindings(tqc, circuit, values)})]


def _per_binding(results: Sequence[Any], register: str, batch: int) -> list[Any]:
    """One ``BitArray`` per binding from the results of :func:`_sampler_pubs`'s PUBs."""
    if len(results) == batch and results[0].data[register].shape == ():
        return [r.data[register] for r in results]
    (only,) = results
    bits = only.data[register]
    return [bits[i] for i in range(batch)]


def _parity_estimate(bits: Any) -> float:
    """``<Z...Z>`` over the measured bits: ``1 - 2 * (fraction of odd-parity shots)``."""
    packed = np.asarray(bits.array, dtype=np.uint8)
    odd = _BYTE_PARITY[np.bitwise_xor.reduce(packed, axis=-1)]
    return 1.0 - 2.0 * float(odd.mean())


class QiskitBackend(Backend):
    """Qiskit Aer (the default) or any Qiskit ``BackendV2`` behind the backend contract.

    Without ``backend`` an ``AerSimulator`` is built with ``method`` and ``noise_model``.
    Circuits are transpiled to the backend's target once per circuit (parameters kept
    symbolic, so one transpile serves every binding) and run through the V2 primitives:
    exact expectations through Aer's ``EstimatorV2`` at precision 0, counts through Aer's
    ``SamplerV2`` (``BackendSamplerV2`` for other backends). Shot-estimated expectations
    measure each Pauli term with ``shots`` shots in a basis-rotated copy of the circuit,
    like the built-in simulator; Aer's own precision setting would only add Gaussian noise
    to the exact value.

    Exact mode needs a noiseless Aer method that keeps the state, or, with a noise model,
    the density matrix: noisy exact expectations are ``Tr(rho P)`` from a density-matrix
    copy of the simulator, so they need memory for ``4^n`` entries. Other backends (and
    noisy trajectory methods) sample only. ``max_memory_bytes`` bounds the state (default:
    half the memory available at construction); a wider circuit raises
    :class:`SimulatorMemoryError` before anything runs. At most ``max_concurrent`` runs
    execute at once, in worker threads, each using Aer's own OpenMP parallelism; a
    cancelled run stops waiting at once, while its simulation (which Aer cannot interrupt)
    finishes in the background.
    """

    def __init__(
        self,
        backend: Any = None,
        *,
        method: str = "automatic",
        noise_model: Any = None,
        seed: int | None = None,
        optimization_level: int = 1,
        max_concurrent: int = 2,
        max_memory_bytes: int | None = None,
    ) -> None:
        _import_qiskit()
        if optimization_level not in (0, 1, 2, 3):
            raise BackendError(f"optimization_level must be 0, 1, 2 or 3, got {optimization_level}")
        if isinstance(max_concurrent, bool) or not isinstance(max_concurrent, int):
            raise BackendError(f"max_concurrent must be a positive integer, got {max_concurrent!r}")
        if max_concurrent < 1:
            raise BackendError(f"max_concurrent must be a positive integer, got {max_concurrent}")
        budget = max_memory_bytes if max_memory_bytes is not None else available_memory() // 2
        if budget <= 0:
            raise BackendError(f"max_memory_bytes must be positive, got {budget}")
        self.max_memory_bytes = int(budget)
        if backend is None:
            if method not in _METHODS:
                raise BackendError(f"method must be one of {', '.join(_METHODS)}; got {method!r}")
            backend = _aer_simulator_class()(method=method, noise_model=noise_model)
            self.name = "aer-noisy" if _is_noisy(noise_model) else "aer"
        else:
            if method != "automatic" or noise_model is not None:
                raise BackendError(
                    "method and noise_model configure the default AerSimulator; set them on the "
                    "backend you pass instead, e.g. AerSimulator(method=..., noise_model=...)"
                )
            from qiskit.providers import BackendV2

            if not isinstance(backend, BackendV2):
                raise BackendError(f"expected a Qiskit BackendV2, got {type(backend).__name__}")
            self.name = str(backend.name)
        self.backend = backend
        self.price: PriceModel = FREE
        self._aer = _is_aer(backend)
        self._seeds = np.random.SeedSequence(seed)
        self._max_concurrent = max_concurrent
        self._executor: ThreadPoolExecutor | None = None
        self._closed = False
        self._cache: dict[tuple[str, str], Any] = {}
        self._cache_lock = threading.Lock()
        # A pass manager is not documented as thread-safe; transpiles are rare (cached).
        self._transpile_lock = threading.Lock()
        from qiskit.transpiler import generate_preset_pass_manager

        self._pass_manager = generate_preset_pass_manager(
            optimization_level=optimization_level, backend=backend, seed_transpiler=0
        )
        self._exact_backend, self._exact_limit = self._exact_setup()
        self._capabilities, self._memory_limited = self._describe()

    # ------------------------------------------------------------------ capabilities
    def _memory_qubits(self, method: str) -> int | None:
        """The widest state of ``method`` that fits ``max_memory_bytes`` (None: not 2^n)."""
        exponent = _STATE_EXPONENT.get(method)
        if exponent is None:
            return None
        item = 8 if getattr(self.backend.options, "precision", "double") == "single" else 16
        amplitudes = self.max_memory_bytes / (item * _WORKING_SET_FACTOR)
        return max(1, int(math.log2(amplitudes) // exponent))

    def _exact_setup(self) -> tuple[Any, int | None]:
        """The simulator for exact expectations (None: no exact mode) and its width limit."""
        if not self._aer:
            return None, None
        method = str(self.backend.options.method)
        if not _is_noisy(getattr(self.backend.options, "noise_model", None)):
            return (self.backend if method in _METHODS else None), None
        if method not in ("automatic", "density_matrix"):
            # Noisy statevector or MPS runs sample trajectories: no exact value to offer.
            return None, None
        exact = copy.deepcopy(self.backend)
        exact.set_options(method="density_matrix")
        fits = self._memory_qubits("density_matrix")
        assert fits is not None
        return exact, min(int(exact.num_qubits), fits)

    def _describe(self) -> tuple[Capabilities, bool]:
        width = int(self.backend.num_qubits)
        memory = self._memory_qubits(str(self.backend.options.method)) if self._aer else None
        max_qubits = width if memory is None else min(width, memory)
        caps = Capabilities(
            max_qubits=max_qubits,
            native_gates=_native_gates(self.backend.target),
            supports_exact=self._exact_backend is not None,
            supports_shots=True,
            connectivity=_connectivity(self.backend.coupling_map, width),
        )
        return caps, memory is not None and memory < width

    @property
    def capabilities(self) -> Capabilities:
        return self._capabilities

    def estimate_cost(self, circuit: Circuit, shots: int | None) -> float:
        return 0.0 if shots is None else self.price.circuit_cost(circuit, shots)

    def validate(
        self,
        circuit: Circuit,
        parameter_values: ArrayLike | None = None,
        observables: Sequence[ObservableLike] | ObservableLike | None = None,
        shots: int | None = None,
        seed: int | None = None,
    ) -> RunRequest:
        n = circuit.num_qubits if isinstance(circuit, Circuit) else 0
        if self._memory_limited and n > self._capabilities.max_qubits:
            raise SimulatorMemoryError(
                f"simulating {n} qubits on {self.name} needs more than its memory budget of "
                f"{self.max_memory_bytes / 2**30:.3g} GiB (at most "
                f"{self._capabilities.max_qubits} qubits); use fewer qubits or a larger "
                "max_memory_bytes"
            )
        request = super().validate(circuit, parameter_values, observables, shots, seed)
        if request.shots is None and self._exact_limit is not None and n > self._exact_limit:
            raise SimulatorMemoryError(
                f"exact noisy expectations of {n} qubits need a 2^{n} x 2^{n} density matrix, "
                f"over {self.name}'s budget (at most {self._exact_limit} qubits); give shots to "
                "estimate them from sampled trajectories, or use fewer qubits"
            )
        return request

    # ------------------------------------------------------------------ running
    async def _execute(self, request: RunRequest) -> RunResult:
        if self._closed:
            raise BackendError(f"this QiskitBackend ({self.name}) is closed; create a new one")
        if self._executor is None:
            self._executor = ThreadPoolExecutor(self._max_concurrent, thread_name_prefix="qdb-aer")
        seed = request.seed
        if request.shots is not None and seed is None:
            seed = int(self._seeds.spawn(1)[0].generate_state(1)[0])
        started = time.perf_counter()
        loop = asyncio.get_running_loop()
        # The private pool's size is the concurrency limit, and keeps the loop free.
        expectations, counts = await loop.run_in_executor(
            self._executor, self._run_blocking, request, seed
        )
        metadata: dict[str, Any] = {"elapsed_s": time.perf_counter() - started}
        if self._aer:
            metadata["method"] = str(self.backend.options.method)
        if seed is not None:
            metadata["seed"] = seed
        return RunResult(
            backend=self.name,
            batch_size=request.batch_size,
            shots=request.shots,
            expectations=expectations,
            counts=counts,
            metadata=metadata,
        )

    def _run_blocking(
        self, request: RunRequest, seed: int | None
    ) -> tuple[NDArray[np.float64] | None, list[dict[str, int]] | None]:
        from qiskit.exceptions import QiskitError

        try:
            if request.observables is None:
                assert request.shots is not None
                assert seed is not None
                return None, self._counts(request, request.shots, seed)
            if request.shots is None:
                return self._exact(request, request.observables), None
            assert seed is not None
            return self._estimate(request, request.observables, request.shots, seed), None
        except QiskitError as exc:
            raise _translate(exc, self.name) from exc

    def _transpiled(self, circuit: Circuit, role: str, build: Callable[[], Any]) -> Any:
        key = (circuit.content_hash(), role)
        with self._cache_lock:
            hit = self._cache.get(key)
        if hit is not None:
            return hit
        logical = build()
        from qiskit.transpiler.exceptions import TranspilerError

        try:
            with self._transpile_lock:
                physical = self._pass_manager.run(logical)
        except TranspilerError as exc:
            raise CapacityError(
                f"{circuit!r} cannot be transpiled to {self.name}'s target: {exc}"
            ) from exc
        if self._aer:
            physical = _bindable_on_aer(physical)
        with self._cache_lock:
            if len(self._cache) >= _CACHE_SIZE:
                self._cache.clear()
            self._cache[key] = physical
        return physical

    def _sampler(self, seed: int) -> Any:
        if self._aer:
            from qiskit_aer.primitives import SamplerV2

            return SamplerV2.from_backend(self.backend, seed=seed)
        from qiskit.primitives import BackendSamplerV2

        return BackendSamplerV2(backend=self.backend, options={"seed_simulator": seed})

    def _exact(self, request: RunRequest, observables: Sequence[Observable]) -> NDArray[np.float64]:
        from qiskit_aer.primitives import EstimatorV2

        circuit = request.circuit
        tqc = self._transpiled(circuit, "unmeasured", lambda: _unmeasured(circuit))
        ops = [_sparse_pauli_op(o).apply_layout(tqc.layout, tqc.num_qubits) for o in observables]
        estimator = EstimatorV2.from_backend(self._exact_backend)
        if tqc.num_parameters == 0:
            pub: tuple[Any, ...] = (tqc, ops)
        else:
            names = tuple(p.name for p in tqc.parameters)
            # Bindings [B, 1, P] against observables [n_obs] broadcast to [B, n_obs].
            values = _bindings(tqc, circuit, request.parameter_values)[:, None, :]
            pub = (tqc, ops, {names: values})
        (result,) = estimator.run([pub], precision=0.0).result()
        evs = np.asarray(result.data.evs, dtype=np.float64)
        return np.array(np.broadcast_to(evs, (request.batch_size, len(observables))))

    def _estimate(
        self, request: RunRequest, observables: Sequence[Observable], shots: int, seed: int
    ) -> NDArray[np.float64]:
        circuit = request.circuit
        labels = sorted({t.label for o in observables for t in o.terms if t.label.strip("I")})
        pubs: list[tuple[Any, ...]] = []
        spans: dict[str, slice] = {}
        for label in labels:
            rotated = functools.partial(_pauli_circuit, circuit, label)
            tqc = self._transpiled(circuit, f"pauli:{label}", rotated)
            start = len(pubs)
            pubs.extend(_sampler_pubs(tqc, circuit, request.parameter_values))
            spans[label] = slice(start, len(pubs))
        batch = request.batch_size
        # The identity is +1 in every shot; it needs no circuit.
        estimates = {"I" * circuit.num_qubits: np.ones(batch)}
        if pubs:
            results = list(self._sampler(seed).run(pubs, shots=shots).result())
            for label, span in spans.items():
                bits = _per_binding(results[span], "parity", batch)
                estimates[label] = np.array([_parity_estimate(b) for b in bits])
        out = np.zeros((batch, len(observables)))
        for j, obs in enumerate(observables):
            for term in obs.terms:
                out[:, j] += term.coeff * estimates[term.label]
        return out

    def _counts(self, request: RunRequest, shots: int, seed: int) -> list[dict[str, int]]:
        circuit = request.circuit
        tqc = self._transpiled(circuit, "measured", lambda: _measured(circuit))
        (register,) = (r.name for r in tqc.cregs)
        pubs = _sampler_pubs(tqc, circuit, request.parameter_values)
        results = list(self._sampler(seed).run(pubs, shots=shots).result())
        return [
            {str(k): int(v) for k, v in bits.get_counts().items()}
            for bits in _per_binding(results, register, request.batch_size)
        ]

    async def aclose(self) -> None:
        self._closed = True
        with self._cache_lock:
            self._cache.clear()
        executor, self._executor = self._executor, None
        if executor is not None:
            await asyncio.get_running_loop().run_in_executor(None, executor.shutdown, True)

    def __repr__(self) -> str:
        return (
            f"QiskitBackend(name={self.name!r}, max_qubits={self._capabilities.max_qubits}, "
            f"exact={self._capabilities.supports_exact})"
        )


def _translate(exc: Exception, name: str) -> Exception:
    """A Qiskit or Aer failure as one of this package's errors."""
    message = str(exc)
    if "memory" in message.lower():
        return SimulatorMemoryError(f"{name} ran out of memory: {message}")
    return JobFailedError(f"{name} failed to run the job: {message}")
