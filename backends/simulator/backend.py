"""The built-in exact statevector simulator as a :class:`~backends.base.Backend`."""

from __future__ import annotations

import asyncio
import math
import os
import threading
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from types import TracebackType
from typing import Any, Literal

import numpy as np
from numpy.typing import ArrayLike, NDArray
from threadpoolctl import ThreadpoolController

from ..base import Backend, Capabilities, RunRequest, RunResult
from ..circuit import Circuit
from ..errors import BackendError, SimulatorMemoryError
from ..gates import GATES
from ..memory import available_memory
from ..observables import Observable, ObservableLike
from . import kernels
from .adjoint import adjoint_jacobian, adjoint_vjp
from .dense import DENSE_MAX_QUBITS, DenseProgram, compile_dense, dense_bytes, dense_jacobian
from .execution import ChunkResult, ChunkSettings, ChunkWork, plan_chunks, simulate_chunk
from .plan import SimulationPlan, compile_plan
from .statevector import PauliMeasurement
from .tape import SHARE_BYTES, Tape, compile_tape, tape_order, tape_term_values
from .twins import find_twins, rotation_columns

__all__ = ["SimulatorBackend"]

#: Working memory per amplitude, as a multiple of the state itself: the state, the
#: temporaries of a gate application and the probabilities computed at the end.
_WORKING_SET_FACTOR = 4
#: Bytes of state rows evolved together by one thread (see ``iter_final_states``): small
#: enough to stay in a core's cache at 16+ qubits, large enough that narrow circuits still
#: run thousands of bindings per numpy call.
_ROWS_BYTES = 2 << 20
#: From this width on a simulated row costs enough to look for twins (see ``twins``).
_TWIN_MIN_QUBITS = 10
#: Bytes of state rows (psi and its lambda rows) in one adjoint task.
_ADJOINT_TASK_BYTES = 16 << 20
#: The same for a vector-Jacobian product on the compiled kernels, which stream every
#: row once per qubit: a task's rows should stay in the cache shared by the cores.
_COMPILED_VJP_TASK_BYTES = 2 << 20
#: Dense differentiation (see ``dense``) holding at most this many bytes runs right on the
#: calling event loop: it takes about a millisecond, and a hand-off to a worker thread
#: and back costs a good part of that.
_INLINE_DENSE_BYTES = 4 << 20
#: Exact runs whose states take at most this many bytes run on the calling event loop.
_INLINE_RUN_BYTES = 64 << 10
#: Widest circuit an exact run takes through the compiled tape (see ``_tape``).
_TAPE_MAX_QUBITS = 14


def _shares_a_prefix(tape: Tape, values: NDArray[np.float64]) -> bool:
    """Whether two bindings agree on the first angle the tape reads, so that sorting and
    saving states can pay (a parameter-shift batch); distinct inputs run straight."""
    if values.shape[0] < 2 or not tape.columns.size:
        return False
    first = values[:, tape.columns[0]].tolist()
    return len(set(first)) < len(first)


class _SingleThreadedBlas:
    """Holds numpy's BLAS to one thread while any simulation runs, then restores it.

    The simulator already runs one chunk per core; BLAS threads on top of that would
    oversubscribe the cores, and its small products gain nothing from threads anyway
    (measured: 1.9 s instead of 2.8 s for a 16-qubit parameter-shift gradient on two
    cores). Reference-counted, so overlapping runs restore the user's setting only when
    the last one ends.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._active = 0
        self._controller: ThreadpoolController | None = None
        self._limiter: object | None = None

    def __enter__(self) -> None:
        with self._lock:
            if self._active == 0:
                if self._controller is None:
                    self._controller = ThreadpoolController()
                self._limiter = self._controller.limit(limits=1, user_api="blas")
            self._active += 1

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        with self._lock:
            self._active -= 1
            if self._active == 0 and self._limiter is not None:
                self._limiter.restore_original_limits()  # type: ignore[attr-defined]
                self._limiter = None


_BLAS = _SingleThreadedBlas()


class SimulatorBackend(Backend):
    """Exact statevector simulation, vectorized over a batch of parameter bindings.

    ``precision`` selects complex128 (default) or complex64 amplitudes. ``max_memory_bytes``
    bounds the working set (default: half of the memory available at construction); a
    circuit whose state would not fit raises :class:`SimulatorMemoryError` before anything
    is allocated. ``seed`` seeds shot sampling when a run gives no seed of its own.
    Simulation runs in a private thread pool, so the event loop stays responsive.
    """

    name = "simulator"

    def __init__(
        self,
        *,
        precision: Literal["double", "single"] = "double",
        max_memory_bytes: int | None = None,
        max_workers: int | None = None,
        seed: int | None = None,
    ) -> None:
        if precision not in ("double", "single"):
            raise BackendError(f"precision must be 'double' or 'single', got {precision!r}")
        self._dtype: type[np.complexfloating] = (
            np.complex128 if precision == "double" else np.complex64
        )
        self.precision = precision
        budget = max_memory_bytes if max_memory_bytes is not None else available_memory() // 2
        if budget <= 0:
            raise BackendError(f"max_memory_bytes must be positive, got {budget}")
        self.max_memory_bytes = int(budget)
        self._workers = max_workers or os.cpu_count() or 1
        self._executor: ThreadPoolExecutor | None = None
        self._closed = False
        self._seeds = np.random.SeedSequence(seed)
        self._plans: dict[tuple[str, bool], tuple[SimulationPlan, dict[int, float]]] = {}
        self._dense_programs: dict[str, DenseProgram] = {}
        self._tapes: dict[str, Tape | None] = {}
        self._measurements: dict[tuple[Any, ...], PauliMeasurement] = {}
        item = np.dtype(self._dtype).itemsize
        self._capabilities = Capabilities(
            max_qubits=max(1, int(math.log2(self.max_memory_bytes / (item * _WORKING_SET_FACTOR)))),
            native_gates=frozenset(GATES),
            supports_exact=True,
            supports_shots=True,
        )

    @property
    def capabilities(self) -> Capabilities:
        return self._capabilities

    def _state_bytes(self, num_qubits: int) -> int:
        return (1 << num_qubits) * np.dtype(self._dtype).itemsize * _WORKING_SET_FACTOR

    def validate(self, circuit: Circuit, *args: object, **kwargs: object) -> RunRequest:
        if isinstance(circuit, Circuit) and circuit.num_qubits > self._capabilities.max_qubits:
            need = self._state_bytes(circuit.num_qubits)
            raise SimulatorMemoryError(
                f"simulating {circuit.num_qubits} qubits needs about {need / 2**30:.3g} GiB of "
                f"working memory, over this simulator's budget of "
                f"{self.max_memory_bytes / 2**30:.3g} GiB (at most "
                f"{self._capabilities.max_qubits} qubits); use fewer qubits, "
                "precision='single', or a larger max_memory_bytes"
            )
        return super().validate(circuit, *args, **kwargs)  # type: ignore[arg-type]

    def _plan(self, circuit: Circuit) -> tuple[SimulationPlan, dict[int, float]]:
        """The circuit's fused plan and its single-rotation parameters, cached by content."""
        compiled = kernels.compiled_enabled(self._dtype)
        key = (circuit.content_hash(), compiled)
        cached = self._plans.get(key)
        if cached is None:
            if len(self._plans) > 256:
                self._plans.clear()
            plan = compile_plan(circuit, compiled)
            cached = self._plans[key] = (plan, rotation_columns(circuit))
        return cached

    def _dense_program(self, circuit: Circuit) -> DenseProgram:
        """The circuit compiled for dense differentiation, cached by content."""
        key = circuit.content_hash()
        program = self._dense_programs.get(key)
        if program is None:
            if len(self._dense_programs) > 256:
                self._dense_programs.clear()
            program = self._dense_programs[key] = compile_dense(circuit)
        return program

    def _row_budget(self, num_qubits: int) -> int:
        """State rows one thread evolves together (at least one); a lowered memory bound
        (:meth:`limit_memory`) makes the chunks smaller too."""
        return max(1, min(_ROWS_BYTES, self.max_memory_bytes // 8) // self._row_bytes(num_qubits))

    def limit_memory(self, max_bytes: int) -> int:
        """Lower the working-set bound to ``max_bytes`` (never raises it); returns the bound.

        Later runs split their batches into fewer parallel chunks of fewer rows, so a
        process short of memory slows down instead of being killed. Results do not change:
        every row is simulated the same way whatever the chunking.
        """
        if isinstance(max_bytes, bool) or not isinstance(max_bytes, int) or max_bytes <= 0:
            raise BackendError(f"max_bytes must be a positive integer, got {max_bytes!r}")
        self.max_memory_bytes = min(self.max_memory_bytes, max_bytes)
        return self.max_memory_bytes

    def _row_bytes(self, num_qubits: int) -> int:
        return (1 << num_qubits) * np.dtype(self._dtype).itemsize

    def _work(
        self, request: RunRequest, rotations: dict[int, float], n_chunks: int | None = None
    ) -> list[ChunkWork]:
        """Split the batch over the threads, simulating twins as pairs when it pays off."""
        if n_chunks is None:
            n_chunks = max(1, min(self._workers, request.batch_size))
        values = request.parameter_values
        layout = None
        if request.circuit.num_qubits >= _TWIN_MIN_QUBITS:
            layout = find_twins(values, rotations)
        if layout is not None:
            works = plan_chunks(values, layout, n_chunks)
            # Twins keep their y and z states until the end of their chunk.
            kept = sum(w.kept_rows.shape[0] for w in works)
            if kept * self._row_bytes(request.circuit.num_qubits) <= self.max_memory_bytes // 2:
                return works
        return plan_chunks(values, None, n_chunks)

    async def _execute(self, request: RunRequest) -> RunResult:
        if self._closed:
            raise BackendError("this SimulatorBackend is closed; create a new one")
        if self._executor is None:
            self._executor = ThreadPoolExecutor(self._workers, thread_name_prefix="qdb-sim")
        started = time.perf_counter()
        circuit = request.circuit
        plan, rotations = self._plan(circuit)
        seed = request.seed
        if request.shots is not None and seed is None:
            seed = int(self._seeds.spawn(1)[0].generate_state(1)[0])
        # A small exact run is computed right here, in one chunk: handing it to a worker
        # thread and back costs more than its arithmetic (about 2 ms for 32 bindings of 4
        # qubits). Exact expectations do not depend on the chunking; sampled runs keep
        # theirs, so a seed gives the same counts as before.
        inline = (
            request.shots is None
            and request.batch_size * self._row_bytes(circuit.num_qubits) <= _INLINE_RUN_BYTES
        )
        if request.shots is None and request.observables is not None:
            tape = self._tape(circuit, plan)
            if tape is not None:
                return await self._run_tape(request, tape, inline, started)
        works = self._work(request, rotations, 1 if inline else None)
        max_rows = self._row_budget(circuit.num_qubits)
        # A chunk holds at most about two branches of ``max_rows`` rows (a parent waiting
        # for its children) plus their scratch; chunks that fit the memory budget together
        # run at once on the pool's threads.
        rows_per_chunk = max(w.values.shape[0] for w in works)
        chunk_bytes = self._state_bytes(circuit.num_qubits) * min(rows_per_chunk, 2 * max_rows)
        parallel = max(1, min(self._workers, self.max_memory_bytes // max(1, chunk_bytes)))
        gate = asyncio.Semaphore(parallel)
        loop = asyncio.get_running_loop()
        executor = self._executor
        measurement = (
            None
            if request.observables is None
            else self._measurement(circuit.num_qubits, request.observables)
        )
        settings = ChunkSettings(self._dtype, max_rows, seed, measurement)
        if inline:
            with _BLAS:
                parts = [simulate_chunk(plan, circuit, request, works[0], settings)]
            return self._result(request, parts, started, seed)

        async def one(work: ChunkWork) -> ChunkResult:
            async with gate:
                return await loop.run_in_executor(
                    executor, simulate_chunk, plan, circuit, request, work, settings
                )

        with _BLAS:
            parts = await asyncio.gather(*(one(w) for w in works))
        return self._result(request, parts, started, seed)

    def _tape(self, circuit: Circuit, plan: SimulationPlan) -> Tape | None:
        """The circuit's tape for an exact run on the compiled kernels, when it has one
        and it pays: up to :data:`_TAPE_MAX_QUBITS` (wider states gain more from the plan
        path's shared rows and twins than from running in cache)."""
        if circuit.num_qubits > _TAPE_MAX_QUBITS or not kernels.compiled_enabled(self._dtype):
            return None
        key = circuit.content_hash()
        if key not in self._tapes:
            if len(self._tapes) > 256:
                self._tapes.clear()
            self._tapes[key] = compile_tape(plan)
        return self._tapes[key]

    async def _run_tape(
        self, request: RunRequest, tape: Tape, inline: bool, started: float
    ) -> RunResult:
        """An exact run as one compiled tape call per thread (see ``tape``)."""
        assert request.observables is not None
        values = np.ascontiguousarray(request.parameter_values, dtype=np.float64)
        measurement = self._measurement(tape.num_qubits, request.observables)
        terms = np.empty((values.shape[0], len(measurement.terms)))
        threads = 1 if inline else max(1, min(self._workers, values.shape[0]))
        share_budget = min(SHARE_BYTES, self.max_memory_bytes // (2 * threads))
        share = tape.state_bytes() <= share_budget and _shares_a_prefix(tape, values)
        order = tape_order(tape, values) if share else np.arange(values.shape[0])
        if inline:
            tape_term_values(tape, values, measurement, order, share, terms)
        else:
            # Contiguous slices of the sorted order: a thread keeps its neighbours' prefixes.
            slices = [s for s in np.array_split(order, threads) if s.size]
            loop = asyncio.get_running_loop()
            assert self._executor is not None
            executor = self._executor
            await asyncio.gather(
                *(
                    loop.run_in_executor(
                        executor,
                        tape_term_values,
                        tape,
                        values,
                        measurement,
                        part,
                        share,
                        terms,
                    )
                    for part in slices
                )
            )
        part = ChunkResult(
            np.arange(values.shape[0]), values.shape[0], expectations=terms @ measurement.weights
        )
        return self._result(request, [part], started, None)

    def _measurement(self, num_qubits: int, observables: Sequence[Observable]) -> PauliMeasurement:
        """The observables' sign tables, kept for the next run of the same ones."""
        key = (num_qubits, tuple(tuple((t.label, t.coeff) for t in o.terms) for o in observables))
        found = self._measurements.get(key)
        if found is None:
            if len(self._measurements) >= 64:
                self._measurements.pop(next(iter(self._measurements)))
            found = self._measurements[key] = PauliMeasurement(num_qubits, tuple(observables))
        return found

    def _result(
        self, request: RunRequest, parts: list[ChunkResult], started: float, seed: int | None
    ) -> RunResult:
        metadata: dict[str, object] = {
            "precision": self.precision,
            "elapsed_s": time.perf_counter() - started,
            "distinct_states": sum(p.distinct_states for p in parts),
        }
        if seed is not None:
            metadata["seed"] = seed
        if request.observables is not None:
            values = np.empty((request.batch_size, len(request.observables)))
            for part in parts:
                assert part.expectations is not None
                values[part.bindings] = part.expectations
            return RunResult(
                backend=self.name,
                batch_size=request.batch_size,
                shots=request.shots,
                expectations=values,
                metadata=metadata,
            )
        counts: list[dict[str, int]] = [{} for _ in range(request.batch_size)]
        for part in parts:
            assert part.counts is not None
            for binding, binding_counts in zip(part.bindings, part.counts, strict=True):
                counts[binding] = binding_counts
        return RunResult(
            backend=self.name,
            batch_size=request.batch_size,
            shots=request.shots,
            counts=counts,
            metadata=metadata,
        )

    async def adjoint_jacobian(
        self,
        circuit: Circuit,
        parameter_values: ArrayLike | None,
        observables: Sequence[ObservableLike] | ObservableLike,
        *,
        wrt: Sequence[int] | None = None,
    ) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
        """Exact ``(expectations [B, K], d<O_k>/d theta_p [B, K, P])`` by adjoint differentiation.

        ``wrt`` lists the parameter indices to differentiate (default: all); the other
        columns are zero and cost nothing. The bindings and observables are split into
        tasks that run on the simulator's threads, each small enough to stay in cache.
        """
        request = self.validate(circuit, parameter_values, observables)
        if request.observables is None or not request.observables:
            raise BackendError("adjoint differentiation needs at least one observable")
        wanted = self._wanted(circuit, wrt)
        values = request.parameter_values
        obs = request.observables
        b, k = values.shape[0], len(obs)
        if circuit.num_qubits <= DENSE_MAX_QUBITS and self._dtype == np.complex128:
            return await self._dense_jacobian(circuit, values, tuple(obs), wanted)
        if self._executor is None:
            self._executor = ThreadPoolExecutor(self._workers, thread_name_prefix="qdb-sim")
        plan, _ = self._plan(circuit)
        # Each task holds psi and its share of the lambda rows (plus a scratch copy and
        # the Pauli images of psi). Tasks are split only when the stack outgrows
        # _ADJOINT_TASK_BYTES: first by bindings (no shared work), then by observables
        # (each part repeats psi's walk); small problems stay one task, as a thread
        # hand-off costs more than it saves.
        row = self._row_bytes(circuit.num_qubits)
        obs_parts = max(1, min(k, math.ceil((1 + k) * row / _ADJOINT_TASK_BYTES)))
        per_binding = (1 + math.ceil(k / obs_parts)) * row
        bind_parts = max(1, min(b, math.ceil(b * per_binding / _ADJOINT_TASK_BYTES)))
        obs_groups = [g for g in np.array_split(np.arange(k), obs_parts) if g.size]
        bind_groups = [g for g in np.array_split(np.arange(b), bind_parts) if g.size]
        task_bytes = max(
            _WORKING_SET_FACTOR * (1 + len(o)) * row * len(g)
            for o in obs_groups
            for g in bind_groups
        )
        if task_bytes > self.max_memory_bytes:
            raise SimulatorMemoryError(
                f"adjoint differentiation of {b} bindings needs about {task_bytes / 2**30:.3g} "
                f"GiB per task, over this simulator's budget of "
                f"{self.max_memory_bytes / 2**30:.3g} GiB; pass fewer bindings at a time"
            )
        parallel = max(1, min(self._workers, self.max_memory_bytes // task_bytes))
        gate = asyncio.Semaphore(parallel)
        loop = asyncio.get_running_loop()
        executor = self._executor

        async def one(
            bindings: NDArray[np.intp], group: NDArray[np.intp]
        ) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
            async with gate:
                return await loop.run_in_executor(
                    executor,
                    adjoint_jacobian,
                    plan,
                    values[bindings],
                    tuple(obs[i] for i in group),
                    wanted,
                    self._dtype,
                )

        tasks = [(g, o) for g in bind_groups for o in obs_groups]
        with _BLAS:
            parts = await asyncio.gather(*(one(g, o) for g, o in tasks))
        expectations = np.empty((b, k))
        jacobian = np.empty((b, k, circuit.num_parameters))
        for (g, o), (e, j) in zip(tasks, parts, strict=True):
            expectations[np.ix_(g, o)] = e
            jacobian[np.ix_(g, o)] = j
        return expectations, jacobian

    def _wanted(self, circuit: Circuit, wrt: Sequence[int] | None) -> list[int]:
        """The parameter indices to differentiate (all by default), checked; and that this
        backend is still open."""
        p = circuit.num_parameters
        wanted = sorted(set(range(p) if wrt is None else (int(i) for i in wrt)))
        if any(not 0 <= i < p for i in wanted):
            raise BackendError(f"wrt must list parameter indices in 0..{p - 1}, got {wrt!r}")
        if self._closed:
            raise BackendError("this SimulatorBackend is closed; create a new one")
        return wanted

    def supports_derivatives(self, method: str, shots: int | None = None) -> bool:
        """Everything the engine samples, and exact ``"adjoint"`` and ``"vjp"`` without shots."""
        if method in ("adjoint", "vjp"):
            return shots is None
        return super().supports_derivatives(method, shots)

    async def compute_vjp(
        self,
        circuit: Circuit,
        parameter_values: ArrayLike | None,
        observables: Sequence[ObservableLike] | ObservableLike,
        cotangents: ArrayLike,
        *,
        wrt: Sequence[int] | None = None,
    ) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
        """Exact ``(expectations [B, K], vjp [B, P])``: ``vjp[b] = sum_k c[b, k] dE_bk/dtheta``.

        One adjoint pass per binding with the observable ``sum_k c_bk O_k`` (what a loss
        or ``grad_output`` needs), instead of the ``K`` passes of the Jacobian. Narrow
        circuits (dense differentiation) contract their Jacobian, which is as cheap there.
        """
        request = self.validate(circuit, parameter_values, observables)
        if request.observables is None or not request.observables:
            raise BackendError("a vector-Jacobian product needs at least one observable")
        values = request.parameter_values
        obs = tuple(request.observables)
        b, k = values.shape[0], len(obs)
        try:
            c = np.asarray(cotangents, dtype=np.float64)
        except (TypeError, ValueError) as exc:
            raise BackendError(f"cotangents must be real numbers [B, K]: {exc}") from exc
        if c.shape != (b, k):
            raise BackendError(
                f"cotangents must have shape [bindings, observables] = [{b}, {k}], got "
                f"{list(c.shape)}"
            )
        if not np.all(np.isfinite(c)):
            raise BackendError("cotangents must be finite (no NaN or infinity)")
        wanted = self._wanted(circuit, wrt)
        if circuit.num_qubits <= DENSE_MAX_QUBITS and self._dtype == np.complex128:
            expectations, jacobian = await self._dense_jacobian(circuit, values, obs, wanted)
            return expectations, np.einsum("bk,bkp->bp", c, jacobian)
        if self._executor is None:
            self._executor = ThreadPoolExecutor(self._workers, thread_name_prefix="qdb-sim")
        plan, _ = self._plan(circuit)
        # Each binding holds psi, one lambda row and their scratch copies.
        per_binding = 2 * self._row_bytes(circuit.num_qubits)
        compiled = kernels.compiled_enabled(self._dtype)
        task = _COMPILED_VJP_TASK_BYTES if compiled else _ADJOINT_TASK_BYTES
        parts = min(b, max(self._workers, math.ceil(b * per_binding / task)))
        groups = [g for g in np.array_split(np.arange(b), parts) if g.size]
        task_bytes = _WORKING_SET_FACTOR * per_binding * max(g.size for g in groups)
        if task_bytes > self.max_memory_bytes:
            raise SimulatorMemoryError(
                f"a vector-Jacobian product needs about {task_bytes / 2**30:.3g} GiB per "
                f"task, over this simulator's budget of {self.max_memory_bytes / 2**30:.3g} GiB"
            )
        gate = asyncio.Semaphore(max(1, min(self._workers, self.max_memory_bytes // task_bytes)))
        loop = asyncio.get_running_loop()
        executor = self._executor

        async def one(group: NDArray[np.intp]) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
            async with gate:
                return await loop.run_in_executor(
                    executor, adjoint_vjp, plan, values[group], obs, c[group], wanted, self._dtype
                )

        with _BLAS:
            results = await asyncio.gather(*(one(g) for g in groups))
        return (
            np.concatenate([e for e, _ in results], axis=0),
            np.concatenate([v for _, v in results], axis=0),
        )

    async def _dense_jacobian(
        self,
        circuit: Circuit,
        values: NDArray[np.float64],
        obs: tuple[Observable, ...],
        wanted: list[int],
    ) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
        """Narrow circuits: dense differentiation, split by bindings into bounded tasks."""
        program = self._dense_program(circuit)
        b = values.shape[0]
        total = dense_bytes(program, values, len(obs))
        if total <= min(_INLINE_DENSE_BYTES, self.max_memory_bytes):
            return dense_jacobian(program, values, obs, wanted)
        per_binding = math.ceil(total / b)
        if dense_bytes(program, values[:1], len(obs)) > self.max_memory_bytes:
            raise SimulatorMemoryError(
                f"adjoint differentiation needs about {per_binding / 2**20:.3g} MiB per "
                f"binding, over this simulator's budget of {self.max_memory_bytes / 2**20:.3g} "
                "MiB; use a larger max_memory_bytes"
            )
        if self._executor is None:
            self._executor = ThreadPoolExecutor(self._workers, thread_name_prefix="qdb-sim")
        task_limit = min(_ADJOINT_TASK_BYTES, self.max_memory_bytes)
        parts = min(b, max(self._workers, math.ceil(total / task_limit)))
        groups = [g for g in np.array_split(np.arange(b), parts) if g.size]
        task_bytes = per_binding * max(g.size for g in groups)
        gate = asyncio.Semaphore(max(1, min(self._workers, self.max_memory_bytes // task_bytes)))
        loop = asyncio.get_running_loop()
        executor = self._executor

        async def one(
            group: NDArray[np.intp],
        ) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
            async with gate:
                return await loop.run_in_executor(
                    executor, dense_jacobian, program, values[group], obs, wanted
                )

        with _BLAS:
            results = await asyncio.gather(*(one(g) for g in groups))
        expectations = np.concatenate([e for e, _ in results], axis=0)
        jacobian = np.concatenate([j for _, j in results], axis=0)
        return expectations, jacobian

    async def aclose(self) -> None:
        self._closed = True
        executor, self._executor = self._executor, None
        if executor is not None:
            await asyncio.get_running_loop().run_in_executor(None, executor.shutdown, True)

    def __getstate__(self) -> dict[str, object]:
        # A copy (pickle, deepcopy, a torch module holding it) starts its own thread pool
        # on first use; plans are cheap to rebuild.
        state = self.__dict__.copy()
        state["_executor"] = None
        state["_plans"] = {}
        state["_dense_programs"] = {}
        state["_tapes"] = {}
        state["_measurements"] = {}
        return state

    def __repr__(self) -> str:
        return (
            f"SimulatorBackend(precision={self.precision!r}, "
            f"max_qubits={self._capabilities.max_qubits})"
        )
