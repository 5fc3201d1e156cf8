"""Quantum metrics of a training run: fidelities, entanglement, circuit cost, gradient health.

Every function here is pure: it takes arrays (or a :class:`~backends.circuit.Circuit`),
returns numbers or metric-ready ``{"group/name": value}`` dicts, and raises
:class:`~quantum_ml.errors.QuantumMetricError` (a ``ValueError``) with a specific message
for any input it cannot measure. Nothing is logged or stored; a trainer or monitor passes
the dicts on to the run's metrics.

Qubit order
    A pure state of ``n`` qubits is a complex vector of length ``2**n`` in which amplitude
    ``j`` has qubit ``q`` in bit ``q`` of ``j``: qubit 0 is the *least* significant bit.
    This is Qiskit's little-endian order and the built-in simulator's (see
    :mod:`backends.simulator.statevector`), so states from :func:`circuit_statevector`,
    from ``qiskit.quantum_info.Statevector(...).data`` and from our simulator can be mixed
    and qubit labels mean the same thing in all three. Viewed as a tensor of shape
    ``(2,) * n`` (C order), qubit ``q`` is axis ``n - 1 - q``.

Conventions
    * States are validated, not repaired: a vector whose squared norm is off 1 by more than
      ``atol`` (:data:`NORM_ATOL` by default, loose enough for single-precision
      simulation) is refused rather than silently renormalized, since it usually means a
      wrong array was passed.
    * :func:`reduced_density_matrix` returns the kept qubits in increasing order, the
      lowest kept qubit becoming qubit 0: exactly ``qiskit.quantum_info.partial_trace``
      with ``qargs`` the traced-out qubits.
    * Entropies are in bits by default (``base=2``), like ``qiskit.quantum_info.entropy``.

The functions that need Qiskit (:func:`transpiled_circuit_metrics`) import it when
called, so importing this module loads no SDK.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from numbers import Real
from typing import TYPE_CHECKING, Any

import numpy as np
from numpy.typing import ArrayLike, NDArray
from scipy.special import entr

from backends.base import Backend, as_parameter_values
from backends.circuit import Circuit
from backends.errors import ParameterValueError
from backends.memory import available_memory
from backends.simulator.plan import compile_plan
from backends.simulator.statevector import iter_final_states

from ..errors import QuantumMetricError

if TYPE_CHECKING:
    from qiskit.transpiler import CouplingMap

__all__ = [
    "NORM_ATOL",
    "BarrenPlateauFit",
    "barren_plateau_fit",
    "basis_gates_for",
    "circuit_metrics",
    "circuit_statevector",
    "empirical_snr",
    "entanglement_entropy",
    "entanglement_profile",
    "gradient_statistics",
    "reduced_density_matrix",
    "shot_noise_snr",
    "state_fidelity",
    "transpiled_circuit_metrics",
]

#: How far ``<psi|psi>`` may be from 1 before a state is refused. Double-precision
#: simulation is off by ~1e-14; single precision by ~1e-7 on wide circuits.
NORM_ATOL = 1e-6
#: How far an expectation of a ±1-valued observable may leave [-1, 1] (rounding of an
#: exact simulation) before it is refused; values within it are clipped.
_EXPECTATION_ATOL = 1e-9
#: Bytes of state rows :func:`circuit_statevector` evolves together: the simulator's own
#: choice (``backends.simulator.backend._ROWS_BYTES``), small enough to stay in cache.
_ROWS_BYTES = 2 << 20


# ---------------------------------------------------------------------- validation
def _as_states(state: ArrayLike, name: str, atol: float, *, batch: bool) -> NDArray[np.complex128]:
    """``state`` as complex128, 1-D (or 2-D rows when ``batch``), checked to be pure states."""
    try:
        array = np.asarray(state, dtype=np.complex128)
    except (TypeError, ValueError) as exc:
        raise QuantumMetricError(f"{name} must be an array of complex amplitudes: {exc}") from None
    allowed = (1, 2) if batch else (1,)
    if array.ndim not in allowed:
        shape = "a 1-D state or a 2-D batch of states (one per row)" if batch else "a 1-D state"
        raise QuantumMetricError(f"{name} must be {shape}, got an array of shape {array.shape}")
    length = array.shape[-1]
    if array.size == 0:
        raise QuantumMetricError(
            f"{name} is empty (shape {array.shape}); a state needs 2**n > 1 amplitudes"
        )
    if length < 2 or length & (length - 1):
        raise QuantumMetricError(
            f"{name} has {length} amplitudes; a state of n >= 1 qubits has 2**n (2, 4, 8, ...)"
        )
    finite = np.isfinite(array)
    if not finite.all():
        bad = tuple(int(i) for i in np.argwhere(~finite)[0])
        raise QuantumMetricError(f"{name} holds NaN or infinity (amplitude {bad} is {array[bad]})")
    norms = np.einsum("...i,...i->...", array.real, array.real) + np.einsum(
        "...i,...i->...", array.imag, array.imag
    )
    off = np.abs(np.atleast_1d(norms) - 1.0)
    if off.max() > atol:
        row = int(np.argmax(off))
        where = f"row {row} of {name}" if array.ndim == 2 else name
        raise QuantumMetricError(
            f"{where} is not normalized: <psi|psi> = {np.atleast_1d(norms)[row]:.12g} "
            f"(tolerance {atol:g}); pass a pure state of unit norm"
        )
    return array


def _num_qubits(length: int) -> int:
    return length.bit_length() - 1


def _as_indices(items: Sequence[int], size: int, name: str, what: str, scope: str) -> list[int]:
    """``items`` as distinct indices in ``0..size-1``, sorted (their order carries no meaning).

    ``what`` names one index ("qubit", "parameter") and ``scope`` what it indexes ("a
    3-qubit state"), for the messages.
    """
    if isinstance(items, int | np.integer):
        raise QuantumMetricError(
            f"{name} must be a sequence of {what} indices, got the single index {items!r}; "
            f"write [{items!r}]"
        )
    if isinstance(items, str | bytes) or not isinstance(items, Iterable):
        raise QuantumMetricError(f"{name} must be a sequence of {what} indices, got {items!r}")
    out: list[int] = []
    for i in items:
        if isinstance(i, bool | np.bool_) or not isinstance(i, int | np.integer):
            raise QuantumMetricError(f"{name} must hold integer {what} indices, got {i!r}")
        if not 0 <= i < size:
            raise QuantumMetricError(
                f"{what} {int(i)} in {name} is out of range for {scope} (valid: 0..{size - 1})"
            )
        out.append(int(i))
    if not out:
        raise QuantumMetricError(f"{name} is empty; name at least one {what}")
    if len(set(out)) != len(out):
        repeated = sorted({i for i in out if out.count(i) > 1})
        raise QuantumMetricError(f"{name} names {what} {repeated} more than once: {out}")
    return sorted(out)


def _as_qubits(qubits: Sequence[int], n: int, name: str) -> list[int]:
    return _as_indices(qubits, n, name, "qubit", f"a {n}-qubit state")


def _is_finite_number(value: object) -> bool:
    """A finite real scalar (numpy's included); a bool is not a number here."""
    return not isinstance(value, bool) and isinstance(value, Real) and math.isfinite(value)


def _check_atol(atol: float) -> float:
    if not (_is_finite_number(atol) and atol >= 0):
        raise QuantumMetricError(f"atol must be a finite number >= 0, got {atol!r}")
    return float(atol)


def _as_real(values: ArrayLike, name: str) -> NDArray[np.float64]:
    """``values`` as a float64 array, finite and not empty."""
    try:
        array = np.asarray(values, dtype=np.float64)
    except (TypeError, ValueError) as exc:
        raise QuantumMetricError(f"{name} must be an array of real numbers: {exc}") from None
    if array.size == 0:
        raise QuantumMetricError(f"{name} is empty (shape {array.shape})")
    finite = np.isfinite(array)
    if not finite.all():
        bad = tuple(int(i) for i in np.argwhere(~finite)[0])
        raise QuantumMetricError(f"{name} holds NaN or infinity (entry {bad} is {array[bad]})")
    return array


def _scalar_or_array(values: NDArray[np.float64]) -> float | NDArray[np.float64]:
    return float(values) if values.ndim == 0 else values


# ---------------------------------------------------------------------- states
#: Compiled plans by circuit content hash: a monitor prepares the same circuit at every
#: evaluation, and compiling it costs more than simulating a few qubits.
_PLANS: dict[str, Any] = {}
_MAX_PLANS = 32


def _plan_of(circuit: Circuit) -> Any:
    key = circuit.content_hash()
    plan = _PLANS.get(key)
    if plan is None:
        if len(_PLANS) >= _MAX_PLANS:
            _PLANS.pop(next(iter(_PLANS)))  # the oldest: insertion order
        plan = _PLANS[key] = compile_plan(circuit)
    return plan


def circuit_statevector(
    circuit: Circuit, parameter_values: ArrayLike | None = None
) -> NDArray[np.complex128]:
    """The exact final state of ``circuit`` bound to ``parameter_values`` (qubit 0 = LSB).

    ``parameter_values`` lists one value per parameter in :attr:`Circuit.parameters` order
    (``None`` for a circuit without parameters) and gives a 1-D state; a 2-D ``[B, P]``
    batch gives ``[B, 2**n]`` states, one row per binding. Terminal measurements are
    ignored: this is the state just before them. The built-in simulator's kernels do the
    work (bindings share their common prefix, as in a run), and the circuit's global
    phase is applied, so the amplitudes equal Qiskit's ``Statevector`` of
    ``circuit.to_qiskit()`` bound to the same values.
    """
    if not isinstance(circuit, Circuit):
        raise QuantumMetricError(f"expected a backends.Circuit, got {type(circuit).__name__}")
    try:
        values = as_parameter_values(circuit, parameter_values)
    except ParameterValueError as exc:
        raise QuantumMetricError(f"cannot bind {circuit!r}: {exc}") from exc
    single = parameter_values is None or np.ndim(parameter_values) < 2
    n = circuit.num_qubits
    row_bytes = (1 << n) * np.dtype(np.complex128).itemsize
    # The result holds every row; the kernels' working set on top of it stays bounded by
    # max_rows, so the result's size is the one to check before allocating anything.
    need = values.shape[0] * row_bytes
    if need > available_memory() // 2:
        raise QuantumMetricError(
            f"{values.shape[0]} state(s) of {n} qubits need {need / 2**30:.3g} GiB, more than "
            "half of the memory available; pass fewer bindings or a narrower circuit"
        )
    out = np.empty((values.shape[0], 1 << n), dtype=np.complex128)
    max_rows = max(1, _ROWS_BYTES // row_bytes)
    for states, owner, bindings in iter_final_states(
        _plan_of(circuit), values, np.complex128, max_rows
    ):
        out[bindings] = states[owner]
    if circuit.global_phase:
        # The simulator drops the global phase (no probability or expectation sees it);
        # amplitudes compared with other simulators need it back.
        out *= np.exp(1j * circuit.global_phase)
    return out[0] if single else out


def state_fidelity(
    a: ArrayLike, b: ArrayLike, *, atol: float = NORM_ATOL
) -> float | NDArray[np.float64]:
    """``|<a|b>|^2`` of two pure states: a float, or one value per row for batches.

    Each of ``a`` and ``b`` is a 1-D state or a 2-D batch with one state per row; a 1-D
    state is compared with every row of the other, two batches row by row (same number
    of rows). The result is clipped to [0, 1]: states normalized only to ``atol`` could
    otherwise give a fidelity a hair above 1.
    """
    atol = _check_atol(atol)
    left = _as_states(a, "a", atol, batch=True)
    right = _as_states(b, "b", atol, batch=True)
    if left.shape[-1] != right.shape[-1]:
        raise QuantumMetricError(
            f"a and b have different widths: {left.shape[-1]} and {right.shape[-1]} amplitudes "
            f"({_num_qubits(left.shape[-1])} and {_num_qubits(right.shape[-1])} qubits)"
        )
    if left.ndim == right.ndim == 2 and left.shape[0] != right.shape[0]:
        raise QuantumMetricError(
            f"a and b are batches of {left.shape[0]} and {right.shape[0]} states; "
            "batches are compared row by row and need the same number of rows"
        )
    overlap = np.einsum("...i,...i->...", left.conj(), right)
    fidelity = np.clip(np.abs(overlap) ** 2, 0.0, 1.0)
    return _scalar_or_array(fidelity)


def _bipartition(state: NDArray[np.complex128], keep: list[int]) -> NDArray[np.complex128]:
    """``state`` as a ``[2**k, 2**(n-k)]`` matrix: rows index the kept qubits, columns the rest.

    Rows are in the kept qubits' own little-endian order (lowest kept qubit = bit 0).
    Qubit ``q`` is tensor axis ``n - 1 - q``, so listing the kept axes in increasing order
    puts the highest kept qubit first, i.e. most significant, as that order needs.
    """
    n = _num_qubits(state.shape[0])
    kept_axes = sorted(n - 1 - q for q in keep)
    traced_axes = sorted(set(range(n)) - set(kept_axes))
    tensor = state.reshape((2,) * n).transpose(kept_axes + traced_axes)
    return tensor.reshape(1 << len(keep), 1 << (n - len(keep)))


def reduced_density_matrix(
    state: ArrayLike, keep: Sequence[int], *, atol: float = NORM_ATOL
) -> NDArray[np.complex128]:
    """The density matrix of qubits ``keep`` of a pure state: the others traced out.

    Returns a ``[2**k, 2**k]`` matrix over the kept qubits in increasing order (the
    lowest becomes qubit 0, little-endian), whatever order ``keep`` lists them in: the
    same matrix as ``qiskit.quantum_info.partial_trace(state, traced_out)``. For a pure
    state this is ``M @ M^dagger`` of the bipartitioned state, ``2**n * 2**k`` work
    instead of building the ``4**n`` density matrix first.
    """
    psi = _as_states(state, "state", _check_atol(atol), batch=False)
    qubits = _as_qubits(keep, _num_qubits(psi.shape[0]), "keep")
    m = _bipartition(psi, qubits)
    rho: NDArray[np.complex128] = m @ m.conj().T
    return rho


def _schmidt_entropy(state: NDArray[np.complex128], subsystem: list[int], log_base: float) -> float:
    """Entanglement entropy of a validated state across ``subsystem | rest``."""
    if not subsystem or len(subsystem) == _num_qubits(state.shape[0]):
        return 0.0  # no cut: a pure state is not entangled with nothing
    # The squared singular values of the bipartitioned state are the eigenvalues of the
    # reduced density matrix (Schmidt decomposition). The SVD never forms rho, and a tiny
    # Schmidt weight s**2 keeps its relative precision, where eigvalsh(rho) would give it
    # an absolute error of ~1e-16 (sometimes below zero).
    s = np.linalg.svd(_bipartition(state, subsystem), compute_uv=False)
    return float(entr(s * s).sum() / log_base)


def _log_base(base: float) -> float:
    if not _is_finite_number(base) or base <= 0 or base == 1:
        raise QuantumMetricError(
            f"base must be a finite number > 0 other than 1 (2 for bits, e for nats), got {base!r}"
        )
    return math.log(base)


def entanglement_entropy(
    state: ArrayLike, subsystem: Sequence[int], base: float = 2, *, atol: float = NORM_ATOL
) -> float:
    """Von Neumann entropy of the reduced state of ``subsystem`` (bits for ``base=2``).

    Equals ``qiskit.quantum_info.entropy(partial_trace(state, rest), base=base)``: 0 for
    a product state across the cut, up to ``min(k, n - k)`` bits for a maximally
    entangled one. Computed from the Schmidt coefficients (one SVD of the state reshaped
    to ``[2**k, 2**(n-k)]``) instead of diagonalizing the reduced density matrix.
    """
    log_base = _log_base(base)
    psi = _as_states(state, "state", _check_atol(atol), batch=False)
    qubits = _as_qubits(subsystem, _num_qubits(psi.shape[0]), "subsystem")
    return _schmidt_entropy(psi, qubits, log_base)


def entanglement_profile(state: ArrayLike, *, atol: float = NORM_ATOL) -> dict[str, float]:
    """Entanglement of a pure state as metrics, in bits.

    ``entanglement/qubit_{i}``: the entropy of qubit ``i`` alone (how entangled it is
    with the rest, 0 to 1); ``entanglement/half_chain``: the entropy of the first
    ``n // 2`` qubits (0 .. n//2 - 1) against the rest, 0 for a single qubit.
    """
    psi = _as_states(state, "state", _check_atol(atol), batch=False)
    n = _num_qubits(psi.shape[0])
    # Each qubit's 2x2 reduced state [[p0, c], [c*, p1]] needs only two sums over the
    # state, read through a strided view (no copy): the state as [high, bit q, low] with
    # a = amplitudes with qubit q = 0, b = those with q = 1. Gathering all n pairs at once
    # would need n copies of the state; the n views cost one pass each and no memory.
    p1 = np.empty(n)
    coherence = np.empty(n, dtype=np.complex128)
    for q in range(n):
        view = psi.reshape(-1, 2, 1 << q)
        a, b = view[:, 0, :], view[:, 1, :]
        p1[q] = np.vdot(b, b).real
        coherence[q] = np.vdot(b, a)  # sum conj(b) * a = rho[0, 1]
    # All n spectra in one vectorized step: the eigenvalues of a trace-1 2x2 density
    # matrix are (1 ± r) / 2 with r = |Bloch vector| = sqrt((p0 - p1)^2 + 4|c|^2), r
    # clipped to [0, 1] so rounding cannot make an eigenvalue negative.
    p0 = 1.0 - p1
    r = np.clip(np.sqrt((p0 - p1) ** 2 + 4.0 * np.abs(coherence) ** 2), 0.0, 1.0)
    entropies = (entr((1.0 + r) / 2) + entr((1.0 - r) / 2)) / math.log(2)
    metrics = {f"entanglement/qubit_{q}": float(entropies[q]) for q in range(n)}
    metrics["entanglement/half_chain"] = _schmidt_entropy(psi, list(range(n // 2)), math.log(2))
    return metrics


# ---------------------------------------------------------------------- circuits
def circuit_metrics(circuit: Circuit) -> dict[str, float]:
    """``circuit/depth``, ``circuit/gates_1q``, ``circuit/gates_2q``, ``circuit/parameters``.

    Counted on the circuit as written (our gate set, no transpilation); measurements are
    not gates and count in none of them.
    """
    if not isinstance(circuit, Circuit):
        raise QuantumMetricError(f"expected a backends.Circuit, got {type(circuit).__name__}")
    counts = circuit.count_gates()
    return {
        "circuit/depth": float(circuit.depth()),
        "circuit/gates_1q": float(counts[1]),
        "circuit/gates_2q": float(counts[2]),
        "circuit/parameters": float(circuit.num_parameters),
    }


def basis_gates_for(backend: Backend) -> list[str]:
    """The gate names ``backend`` runs natively, sorted, as Qiskit's ``basis_gates``.

    This is the backend's own ``capabilities.native_gates`` (our gate names are Qiskit's):
    the built-in simulator runs every gate of :data:`backends.gates.GATES`; a
    :class:`~backends.aer.QiskitBackend` the unitary gates of its Qiskit target
    (``target.operation_names`` without measurements, control flow and save
    instructions); an :class:`~backends.ionq.IonQBackend` the gates it sends as they are
    through qiskit-ionq's ``gateset="qis"`` (all of ours but ``p`` and ``u``, which it
    rewrites first). Transpiling to these measures what a circuit costs on that backend
    before any provider-side compilation.

    Only Qiskit's standard gates are kept: ``transpile(basis_gates=...)`` refuses any
    other name (Aer's target also lists ``mcx``, ``unitary``, ``diagonal``..., which the
    transpiler could only use through the target itself). Needs Qiskit.
    """
    capabilities = getattr(backend, "capabilities", None)
    gates = getattr(capabilities, "native_gates", None)
    if not isinstance(gates, frozenset | set) or not gates:
        raise QuantumMetricError(
            f"{type(backend).__name__} is not a backend with native gates "
            "(expected a backends.Backend whose capabilities list native_gates)"
        )
    standard = _standard_gate_names()
    return sorted(str(g) for g in gates if g in standard)


def _standard_gate_names() -> frozenset[str]:
    """The gate names ``qiskit.transpile`` accepts in ``basis_gates`` (unitary ones only)."""
    from qiskit.circuit import Gate
    from qiskit.circuit.library.standard_gates import get_standard_gate_name_mapping

    mapping = get_standard_gate_name_mapping()
    return frozenset(name for name, op in mapping.items() if isinstance(op, Gate))


def _as_coupling(coupling_map: CouplingMap | Iterable[Sequence[int]] | None) -> Any:
    """A CouplingMap passes through; pairs (a list, or Capabilities.connectivity) become lists."""
    if coupling_map is None or hasattr(coupling_map, "get_edges"):
        return coupling_map
    if isinstance(coupling_map, str | bytes) or not isinstance(coupling_map, Iterable):
        raise QuantumMetricError(
            f"coupling_map must be a qiskit CouplingMap or pairs of qubits, got {coupling_map!r}"
        )
    edges: list[list[int]] = []
    for edge in coupling_map:
        pair = list(edge) if isinstance(edge, Iterable) else [edge]
        if (
            len(pair) != 2
            or any(isinstance(q, bool) or not isinstance(q, int | np.integer) for q in pair)
            or pair[0] == pair[1]
            or min(pair) < 0
        ):
            raise QuantumMetricError(
                f"coupling_map edges are pairs of distinct non-negative qubit indices, got {edge!r}"
            )
        edges.append([int(pair[0]), int(pair[1])])
    if not edges:
        raise QuantumMetricError("coupling_map has no edges; pass None for all-to-all")
    return sorted(edges)


def transpiled_circuit_metrics(
    circuit: Circuit,
    basis_gates: Sequence[str],
    coupling_map: CouplingMap | Iterable[Sequence[int]] | None = None,
    seed: int = 0,
) -> dict[str, float]:
    """:func:`circuit_metrics` after ``qiskit.transpile`` to ``basis_gates``, keys prefixed
    ``circuit/transpiled_`` (``circuit/transpiled_depth``, ...).

    Transpiles at ``optimization_level=1`` with ``seed_transpiler=seed`` (the same seed
    gives the same counts) and the parameters left symbolic, so the cost is the one of
    every binding. ``coupling_map`` is a Qiskit ``CouplingMap`` or ``(control, target)``
    pairs (``Capabilities.connectivity`` fits); ``None`` means all-to-all. Terminal
    measurements are removed first, as :func:`circuit_metrics` does not count them
    either. Needs Qiskit (the ``qiskit`` extra).
    """
    if not isinstance(circuit, Circuit):
        raise QuantumMetricError(f"expected a backends.Circuit, got {type(circuit).__name__}")
    if isinstance(basis_gates, str) or not isinstance(basis_gates, Iterable):
        raise QuantumMetricError(
            f"basis_gates must be a sequence of gate names such as ['cx', 'rz', 'sx', 'x'], "
            f"got {basis_gates!r}"
        )
    basis = list(basis_gates)
    if not basis or not all(isinstance(g, str) and g for g in basis):
        raise QuantumMetricError(
            f"basis_gates must be a non-empty sequence of gate names, got {basis_gates!r}"
        )
    unknown = sorted(set(basis) - _standard_gate_names())
    if unknown:
        raise QuantumMetricError(
            f"basis_gates holds {unknown}, which are not standard Qiskit gates; "
            "qiskit.transpile takes only those as a basis (see basis_gates_for)"
        )
    if isinstance(seed, bool) or not isinstance(seed, int | np.integer) or seed < 0:
        raise QuantumMetricError(f"seed must be a non-negative integer, got {seed!r}")
    coupling = _as_coupling(coupling_map)

    from qiskit import transpile
    from qiskit.circuit import Gate
    from qiskit.exceptions import QiskitError

    qc = circuit.to_qiskit()
    if circuit.measurements:
        qc.remove_final_measurements()
    try:
        tqc = transpile(
            qc,
            basis_gates=basis,
            coupling_map=coupling,
            optimization_level=1,
            seed_transpiler=int(seed),
        )
    except QiskitError as exc:
        raise QuantumMetricError(
            f"{circuit!r} cannot be transpiled to basis {basis}"
            f"{'' if coupling is None else ' on the given coupling map'}: {exc}"
        ) from exc
    widths = [len(inst.qubits) for inst in tqc.data if isinstance(inst.operation, Gate)]
    return {
        "circuit/transpiled_depth": float(
            tqc.depth(filter_function=lambda inst: isinstance(inst.operation, Gate))
        ),
        "circuit/transpiled_gates_1q": float(widths.count(1)),
        "circuit/transpiled_gates_2q": float(widths.count(2)),
        "circuit/transpiled_parameters": float(tqc.num_parameters),
    }


# ---------------------------------------------------------------------- gradients
def gradient_statistics(
    gradients: ArrayLike, groups: Mapping[str, Sequence[int]] | None = None
) -> dict[str, float]:
    """Statistics of several gradient draws ``[samples, P]``, per group of parameters.

    For each group (default one group ``"all"`` of every parameter):

    * ``grad/{group}/mean``: the mean partial derivative over draws and the group;
    * ``grad/{group}/variance``: ``Var[∂_k E]`` across draws (unbiased, ``ddof=1``),
      averaged over the group's parameters ``k``: the quantity McClean et al. (2018)
      follow to detect barren plateaus, where it vanishes exponentially in the width;
    * ``grad/{group}/norm_mean``: the mean over draws of the group's gradient L2 norm.

    ``groups`` maps a name to parameter indices (columns); groups may overlap.
    """
    g = _as_real(gradients, "gradients")
    if g.ndim != 2:
        raise QuantumMetricError(
            f"gradients must be a 2-D array [samples, parameters], got shape {g.shape}"
        )
    samples, p = g.shape
    if samples < 2:
        raise QuantumMetricError(
            f"gradients holds {samples} draw; a variance across draws needs at least 2"
        )
    if groups is None:
        groups = {"all": range(p)}
    if not isinstance(groups, Mapping) or not groups:
        raise QuantumMetricError(
            f"groups must be a non-empty mapping of name to parameter indices, got {groups!r}"
        )
    # One pass over the draws for all parameters; the groups only index into it.
    variances = g.var(axis=0, ddof=1)
    metrics: dict[str, float] = {}
    for name, members in groups.items():
        if not isinstance(name, str) or not name:
            raise QuantumMetricError(f"group names must be non-empty strings, got {name!r}")
        cols = _as_indices(members, p, f"group {name!r}", "parameter", f"{p} parameters")
        sub = g[:, cols]
        metrics[f"grad/{name}/mean"] = float(sub.mean())
        metrics[f"grad/{name}/variance"] = float(variances[cols].mean())
        metrics[f"grad/{name}/norm_mean"] = float(np.linalg.norm(sub, axis=1).mean())
    return metrics


@dataclass(frozen=True, slots=True)
class BarrenPlateauFit:
    """A least-squares fit ``log(variance) = intercept + slope * width`` (natural log).

    ``decay_rate = -slope``: the variance shrinks by ``e**-decay_rate`` per added qubit
    (``ln 2`` when it halves). ``plateau`` says whether the decay looks exponential:
    faster than the threshold and with an ``r_squared`` above the bound.
    """

    slope: float
    intercept: float
    decay_rate: float
    r_squared: float
    plateau: bool


def barren_plateau_fit(
    widths: ArrayLike,
    variances: ArrayLike,
    *,
    min_decay_rate: float = 0.1,
    min_r_squared: float = 0.9,
) -> BarrenPlateauFit:
    """Fit the gradient variance's decay with width on a log scale (least squares).

    ``widths`` are the qubit counts, ``variances`` the gradient variance measured at each
    (e.g. ``grad/all/variance`` of :func:`gradient_statistics`); at least 3 points over
    at least 2 distinct widths, every variance > 0. ``plateau`` is True when
    ``slope < -min_decay_rate`` and ``r_squared >= min_r_squared``. The defaults flag a
    variance that shrinks at least ~10% per qubit on a clean exponential; unstructured
    deep circuits (2-designs) decay at ``ln 2`` or faster. A fit over a few small widths
    cannot tell a steep polynomial from an exponential: it is a warning sign, not proof.
    """
    for label, value in (("min_decay_rate", min_decay_rate), ("min_r_squared", min_r_squared)):
        if not _is_finite_number(value):
            raise QuantumMetricError(f"{label} must be a finite number, got {value!r}")
    if min_decay_rate < 0:
        raise QuantumMetricError(f"min_decay_rate must be >= 0, got {min_decay_rate}")
    if not 0 <= min_r_squared <= 1:
        raise QuantumMetricError(f"min_r_squared must be in [0, 1], got {min_r_squared}")
    x = _as_real(widths, "widths")
    y = _as_real(variances, "variances")
    if x.ndim != 1 or y.ndim != 1:
        raise QuantumMetricError(
            f"widths and variances must be 1-D, got shapes {x.shape} and {y.shape}"
        )
    if x.shape != y.shape:
        raise QuantumMetricError(
            f"widths and variances differ in length: {x.shape[0]} and {y.shape[0]}"
        )
    if x.shape[0] < 3:
        raise QuantumMetricError(
            f"a fit needs at least 3 (width, variance) points, got {x.shape[0]}: two points "
            "always lie on a line"
        )
    if np.unique(x).shape[0] < 2:
        raise QuantumMetricError(f"widths must hold at least 2 distinct values, got {x.tolist()}")
    if (y <= 0).any():
        bad = int(np.argmax(y <= 0))
        raise QuantumMetricError(
            f"variances must be > 0 to be fitted on a log scale; variance {bad} "
            f"(width {x[bad]:g}) is {y[bad]:g}"
        )
    # Ordinary least squares in closed form: what scipy.stats.linregress computes (the
    # tests check the two agree), without its per-call overhead (~0.5 ms), which a
    # monitor fitting every few steps would pay each time.
    log_y = np.log(y)
    dx = x - x.mean()
    dy = log_y - log_y.mean()
    sxx = float(dx @ dx)
    syy = float(dy @ dy)
    slope = float(dx @ dy) / sxx
    intercept = float(log_y.mean() - slope * x.mean())
    # A constant log(variance): no decay, nothing explained (linregress's r is nan there).
    r_squared = min(1.0, float(dx @ dy) ** 2 / (sxx * syy)) if syy > 0 else 0.0
    return BarrenPlateauFit(
        slope=slope,
        intercept=intercept,
        decay_rate=-slope,
        r_squared=r_squared,
        plateau=bool(slope < -min_decay_rate and r_squared >= min_r_squared),
    )


# ---------------------------------------------------------------------- shot noise
def _as_shots(shots: ArrayLike) -> NDArray[np.int64]:
    array = np.asarray(shots)
    if array.size == 0:
        raise QuantumMetricError("shots is empty")
    if array.dtype.kind not in "iu":
        raise QuantumMetricError(
            f"shots must be positive integers, got {shots!r} (dtype {array.dtype})"
        )
    if (array < 1).any():
        raise QuantumMetricError(f"shots must be positive integers, got {array.min()}")
    return array.astype(np.int64)


def shot_noise_snr(expectation: ArrayLike, shots: ArrayLike) -> float | NDArray[np.float64]:
    """Signal-to-noise ratio of a ±1-valued Pauli observable estimated from ``shots`` shots.

    ``|<O>| / sqrt((1 - <O>^2) / shots)``: each shot is ±1 with mean ``<O>`` and variance
    ``1 - <O>^2``, so the mean of ``shots`` of them has that standard error (the binomial
    one, rescaled). ``inf`` where the variance is 0 (``<O> = ±1``: every shot agrees),
    0 where ``<O> = 0``. Vectorized: ``expectation`` and ``shots`` broadcast together;
    scalars give a float.
    """
    e = _as_real(expectation, "expectation")
    if (np.abs(e) > 1 + _EXPECTATION_ATOL).any():
        bad = e.flat[int(np.argmax(np.abs(e) > 1 + _EXPECTATION_ATOL))]
        raise QuantumMetricError(
            f"the expectation of a ±1-valued observable lies in [-1, 1], got {bad!r}"
        )
    e = np.clip(e, -1.0, 1.0)
    n = _as_shots(shots)
    try:
        e, n = np.broadcast_arrays(e, n)
    except ValueError:
        raise QuantumMetricError(
            f"expectation (shape {e.shape}) and shots (shape {n.shape}) do not broadcast"
        ) from None
    variance = (1.0 - e * e) / n
    signal = np.abs(e)
    with np.errstate(divide="ignore"):
        snr = np.where(variance > 0, signal / np.sqrt(variance), np.inf)
    return _scalar_or_array(snr.astype(np.float64))


def empirical_snr(samples: ArrayLike, axis: int = 0) -> float | NDArray[np.float64]:
    """``|mean| / std`` (``ddof=1``) of ``samples`` along ``axis``: the measured SNR.

    ``inf`` where the samples agree exactly and their mean is not 0, 0 where they are all
    0 (no signal). Needs at least 2 samples along ``axis``.
    """
    x = _as_real(samples, "samples")
    if isinstance(axis, bool) or not isinstance(axis, int | np.integer):
        raise QuantumMetricError(f"axis must be an integer, got {axis!r}")
    if not -x.ndim <= axis < x.ndim:
        raise QuantumMetricError(f"axis {axis} is out of range for samples of shape {x.shape}")
    if x.shape[axis] < 2:
        raise QuantumMetricError(
            f"samples holds {x.shape[axis]} value(s) along axis {axis}; a standard deviation "
            "needs at least 2"
        )
    signal = np.abs(x.mean(axis=axis))
    noise = x.std(axis=axis, ddof=1)
    with np.errstate(divide="ignore", invalid="ignore"):
        snr = np.where(noise > 0, signal / noise, np.where(signal > 0, np.inf, 0.0))
    return _scalar_or_array(np.asarray(snr, dtype=np.float64))
