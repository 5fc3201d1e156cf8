"""Compiled kernels for the statevector hot loops (numba), and the switch that picks them.

A few loops dominate a simulation and a backward pass: applying one qubit's 2x2 factor
to the amplitude pairs it mixes, gathering amplitudes through a fused permutation with
phases, the adjoint step through one qubit's gates (overlaps with each generator, then
the inverse applied to ``psi`` and ``lambda`` in the same pass), a VJP's summed
observable, and whole exact runs of narrow circuits (:mod:`.tape`). Written in NumPy
each of these is several calls with temporaries; here each is one loop over the state,
compiled once and cached on disk (``cache=True``: a new process loads the machine code instead of
compiling it), releasing the GIL (``nogil=True``) so the simulator's worker threads run
them side by side. The kernels are single-threaded: the simulator already runs one chunk
of bindings per core, and numba's default thread pool is not safe to enter from several
threads at once.

The pure-NumPy functions in :mod:`.statevector` and :mod:`.adjoint` stay the reference
implementation: ``QDB_KERNELS=numpy`` (or :func:`use_kernels`) runs them instead, and the
tests compare the two on random circuits. Only complex128 states take the compiled path;
complex64 runs use NumPy.

Measured against the same loops in C (``benchmarks/kernels.py``; README, "Compiled
kernels: numba or C"): numba runs them at 0.7-1.4x C's time, and a C extension would need
a compiler and a build backend on every install; numba ships as a wheel, so the README's
two set-up commands stay the only ones.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any, Literal

import numpy as np
from numpy.typing import NDArray

from ..errors import BackendError

if TYPE_CHECKING:  # statevector imports this module
    from .statevector import PauliMeasurement

__all__ = ["KernelChoice", "compiled_enabled", "use_kernels"]

States = NDArray[np.complexfloating]

KernelChoice = Literal["numba", "numpy"]

_choice: KernelChoice = "numpy" if os.environ.get("QDB_KERNELS", "").lower() == "numpy" else "numba"
_numba: Any = None  # the compiled kernels' module, imported on first use


def compiled_enabled(dtype: Any) -> bool:
    """Whether states of ``dtype`` take the compiled kernels right now."""
    return _choice == "numba" and np.dtype(dtype) == np.complex128


@contextmanager
def use_kernels(choice: KernelChoice) -> Iterator[None]:
    """Run the enclosed code with the compiled (``"numba"``) or reference (``"numpy"``)
    kernels. Process-wide: meant for tests and benchmarks, not for concurrent use."""
    global _choice
    if choice not in ("numba", "numpy"):
        raise BackendError(f"kernels must be 'numba' or 'numpy', got {choice!r}")
    previous, _choice = _choice, choice
    try:
        yield
    finally:
        _choice = previous


def kernels() -> Any:
    """The compiled kernels (imported, and loaded from numba's cache, on first use)."""
    global _numba
    if _numba is None:
        from . import _compiled

        _numba = _compiled
    return _numba


def apply_factors(states: States, qubits: NDArray[np.int64], m: States) -> None:
    """Factor ``m[f]`` (``[1|U, 2, 2]``) on qubit ``qubits[f]`` of every row, in place."""
    kernels().apply_factors(states, qubits, np.ascontiguousarray(m, dtype=np.complex128))


def gather(
    states: States,
    out: States,
    source: NDArray[np.intp],
    phase: States | None,
) -> None:
    """``out[:, j] = phase[j] * states[:, source[j]]`` (``phase`` None: all ones)."""
    k = kernels()
    if phase is None:
        k.gather(states, out, source)
    else:
        k.gather_phase(states, out, source, phase)


def apply_observable(
    psi: States,
    measurement: PauliMeasurement,
    coefficients: NDArray[np.float64],
) -> tuple[States, NDArray[np.float64]]:
    """``(lam, term values)``: ``lam[u] = sum_t c[u, t] P_t psi[u]`` for the Pauli terms
    of ``measurement`` and each term's
    expectation ``[U, T]``, in one compiled pass per non-diagonal term."""
    lam = np.empty_like(psi)
    values = np.empty((psi.shape[0], measurement.x_masks.shape[0]))
    kernels().apply_observable(
        psi,
        measurement.x_masks,
        measurement.z_masks,
        measurement.y_phases,
        np.ascontiguousarray(coefficients, dtype=np.float64),
        lam,
        values,
    )
    return lam, values


def adjoint_factors(
    psi: States,
    lam: States,
    qubits: NDArray[np.int64],
    daggers: States,
    generators: States,
) -> NDArray[np.float64]:
    """One block's step of the backward walk, in place, for every row of ``psi``/``lam``.

    Factor ``f`` acts on qubit ``qubits[f]``: its overlaps ``Re <lam|h_g|psi>`` with each
    generator ``h_g`` (``generators[f]``, ``[G, 1|U, 2, 2]``) are measured, then its
    inverse (``daggers[f]``, ``[1|U, 2, 2]``) is applied to both states. Returns the
    overlaps ``[F, U, G]``."""
    out = np.zeros((qubits.shape[0], psi.shape[0], generators.shape[1]))
    kernels().adjoint_factors(psi, lam, qubits, daggers, generators, out)
    return out


def warm() -> float:
    """Compile (or load from numba's cache) every kernel on a tiny circuit; the seconds it
    took. The image build runs it, so the service's first run loads machine code instead
    of compiling it (a first compilation takes seconds; a cached load well under one)."""
    import asyncio
    import time

    from ..templates import hardware_efficient_circuit, z_observables
    from .backend import SimulatorBackend

    async def exercise() -> None:
        circuit = hardware_efficient_circuit(2, 1)
        values = np.zeros((2, circuit.num_parameters))
        with use_kernels("numba"):
            async with SimulatorBackend() as sim:
                obs = [*z_observables(2), "XY"]
                await sim.run(circuit, values, observables=obs)  # the tape
                await sim.compute_vjp(circuit, values, obs, np.ones((2, 3)))
        # The plan kernels run on circuits too wide for the tape and dense paths.
        rows = np.zeros((1, 4), dtype=np.complex128)
        rows[0, 0] = 1
        apply_factors(rows, np.array([1, 0]), np.broadcast_to(np.eye(2), (2, 1, 2, 2)))
        gather(rows, rows.copy(), np.arange(4), None)
        gather(rows, rows.copy(), np.arange(4), np.ones(4, dtype=np.complex128))
        adjoint_factors(
            rows,
            rows.copy(),
            np.array([0]),
            np.eye(2, dtype=np.complex128)[None, None],
            np.zeros((1, 1, 1, 2, 2), dtype=np.complex128),
        )

    started = time.perf_counter()
    asyncio.run(exercise())
    return time.perf_counter() - started
