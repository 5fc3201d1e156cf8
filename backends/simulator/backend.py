"""The built-in exact statevector simulator as a :class:`~backends.base.Backend`."""

from __future__ import annotations

import asyncio
import math
import os
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Literal

import numpy as np
from numpy.typing import NDArray

from ..base import Backend, Capabilities, RunRequest, RunResult
from ..circuit import Circuit
from ..errors import BackendError, SimulatorMemoryError
from ..gates import GATES
from ..memory import available_memory
from .plan import SimulationPlan, compile_plan
from .statevector import (
    evolve,
    expectations,
    marginal_probabilities,
    pauli_terms,
    term_expectations,
)

__all__ = ["SimulatorBackend"]

#: Working memory per amplitude, as a multiple of the state itself: the state, the
#: temporaries of a gate application and the probabilities computed at the end.
_WORKING_SET_FACTOR = 4
#: Target size of one chunk of state rows; large enough to amortize Python overhead.
_CHUNK_BYTES = 32 << 20


@dataclass(frozen=True, slots=True)
class _Chunk:
    """Rows ``start, start + step, ...`` of the batch, below ``stop``.

    Strided rather than contiguous: the ``2P + 1`` bindings of a parameter-shift gradient
    are ordered by parameter, and a stride gives every chunk an equal share of early and
    late shifts, so the chunks (and the threads running them) carry equal work.
    """

    start: int
    stop: int
    step: int

    @property
    def rows(self) -> slice:
        return slice(self.start, self.stop, self.step)


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
        self._plans: dict[str, SimulationPlan] = {}
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

    def _plan(self, circuit: Circuit) -> SimulationPlan:
        key = circuit.content_hash()
        plan = self._plans.get(key)
        if plan is None:
            if len(self._plans) > 256:
                self._plans.clear()
            plan = self._plans[key] = compile_plan(circuit)
        return plan

    def _chunks(self, batch: int, num_qubits: int) -> list[_Chunk]:
        row_bytes = (1 << num_qubits) * np.dtype(self._dtype).itemsize
        max_rows = max(1, _CHUNK_BYTES // row_bytes)
        n_chunks = max(min(self._workers, batch), math.ceil(batch / max_rows))
        return [_Chunk(s, batch, n_chunks) for s in range(n_chunks)]

    async def _execute(self, request: RunRequest) -> RunResult:
        if self._closed:
            raise BackendError("this SimulatorBackend is closed; create a new one")
        if self._executor is None:
            self._executor = ThreadPoolExecutor(self._workers, thread_name_prefix="qdb-sim")
        started = time.perf_counter()
        circuit = request.circuit
        plan = self._plan(circuit)
        seed = request.seed
        if request.shots is not None and seed is None:
            seed = int(self._seeds.spawn(1)[0].generate_state(1)[0])
        chunks = self._chunks(request.batch_size, circuit.num_qubits)
        # Chunks that fit the memory budget together run at once on the pool's threads.
        rows_per_chunk = len(range(chunks[0].start, chunks[0].stop, chunks[0].step))
        parallel = max(
            1,
            min(
                self._workers,
                self.max_memory_bytes
                // max(1, self._state_bytes(circuit.num_qubits) * rows_per_chunk),
            ),
        )
        gate = asyncio.Semaphore(parallel)
        loop = asyncio.get_running_loop()
        executor = self._executor

        async def one(chunk: _Chunk) -> _ChunkResult:
            async with gate:
                return await loop.run_in_executor(
                    executor, _simulate_chunk, plan, circuit, request, chunk, self._dtype, seed
                )

        parts = await asyncio.gather(*(one(c) for c in chunks))
        metadata: dict[str, object] = {
            "precision": self.precision,
            "elapsed_s": time.perf_counter() - started,
            "distinct_states": sum(p.distinct_states for p in parts),
        }
        if seed is not None:
            metadata["seed"] = seed
        if request.observables is not None:
            values = np.empty((request.batch_size, len(request.observables)))
            for chunk, part in zip(chunks, parts, strict=True):
                assert part.expectations is not None
                values[chunk.rows] = part.expectations
            return RunResult(
                backend=self.name,
                batch_size=request.batch_size,
                shots=request.shots,
                expectations=values,
                metadata=metadata,
            )
        counts: list[dict[str, int]] = [{} for _ in range(request.batch_size)]
        for chunk, part in zip(chunks, parts, strict=True):
            assert part.counts is not None
            counts[chunk.rows] = part.counts
        return RunResult(
            backend=self.name,
            batch_size=request.batch_size,
            shots=request.shots,
            counts=counts,
            metadata=metadata,
        )

    async def aclose(self) -> None:
        self._closed = True
        executor, self._executor = self._executor, None
        if executor is not None:
            await asyncio.get_running_loop().run_in_executor(None, executor.shutdown, True)

    def __repr__(self) -> str:
        return (
            f"SimulatorBackend(precision={self.precision!r}, "
            f"max_qubits={self._capabilities.max_qubits})"
        )


@dataclass(frozen=True, slots=True)
class _ChunkResult:
    distinct_states: int
    expectations: NDArray[np.float64] | None = None
    counts: list[dict[str, int]] | None = None


def _binding_rng(seed: int, binding: int) -> np.random.Generator:
    # One stream per binding: results do not depend on how the batch was chunked.
    return np.random.Generator(np.random.PCG64(np.random.SeedSequence(seed, spawn_key=(binding,))))


def _simulate_chunk(
    plan: SimulationPlan,
    circuit: Circuit,
    request: RunRequest,
    chunk: _Chunk,
    dtype: type[np.complexfloating],
    seed: int | None,
) -> _ChunkResult:
    n = circuit.num_qubits
    states, owner = evolve(plan, request.parameter_values[chunk.rows], dtype)
    distinct = int(states.shape[0])
    if request.observables is not None:
        if request.shots is None:
            return _ChunkResult(
                distinct, expectations=expectations(states, n, request.observables)[owner]
            )
        assert seed is not None
        terms, weights = pauli_terms(request.observables)
        exact = np.clip(term_expectations(states, n, terms)[owner], -1.0, 1.0)
        estimated = np.empty_like(exact)
        for row in range(exact.shape[0]):
            rng = _binding_rng(seed, chunk.start + row * chunk.step)
            plus = rng.binomial(request.shots, (1.0 + exact[row]) / 2.0)
            estimated[row] = 2.0 * plus / request.shots - 1.0
        return _ChunkResult(distinct, expectations=estimated @ weights)

    assert request.shots is not None
    assert seed is not None
    measured = [(m.qubit, m.clbit) for m in circuit.measurements] or [(q, q) for q in range(n)]
    width = 1 + max(c for _, c in measured)
    clbits = sorted(c for _, c in measured)
    probs = marginal_probabilities(states, n, measured)
    probs = np.clip(probs, 0.0, None)
    probs /= probs.sum(axis=1, keepdims=True)
    labels = _Labeler(clbits, width)
    counts: list[dict[str, int]] = []
    for row in range(owner.shape[0]):
        rng = _binding_rng(seed, chunk.start + row * chunk.step)
        drawn = rng.multinomial(request.shots, probs[owner[row]])
        hit = np.flatnonzero(drawn)
        counts.append({labels(int(i)): int(drawn[i]) for i in hit})
    return _ChunkResult(distinct, counts=counts)


class _Labeler:
    """Turn a compact outcome index (bit k = k-th smallest measured clbit) into a bit string."""

    def __init__(self, clbits: list[int], width: int) -> None:
        self._clbits = clbits
        self._width = width
        self._dense = clbits == list(range(width))

    def __call__(self, index: int) -> str:
        if self._dense:
            return format(index, f"0{self._width}b")
        value = 0
        for k, c in enumerate(self._clbits):
            value |= ((index >> k) & 1) << c
        return format(value, f"0{self._width}b")
