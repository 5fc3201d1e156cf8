"""Pure statevector functions: evolve a batch of bindings, measure expectations and probabilities.

States are rows of a ``[U, 2**n]`` array; amplitude index ``j`` has qubit ``q`` in bit ``q``
(Qiskit's little-endian order). Viewed as ``[U, 2, ..., 2]``, qubit ``q`` is axis ``n - q``.

Bindings that agree on every parameter seen so far share one state row: ``evolve`` keeps an
``owner`` map from binding to row and only splits a row when a gate's angles differ between
its bindings. The ``2P + 1`` bindings of a parameter-shift gradient thus cost about half of
``2P + 1`` independent simulations, and a batch of identical bindings costs one.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np
from numpy.typing import NDArray

from ..observables import Observable, PauliTerm
from . import kernels
from .plan import GateOp, KronOp, MonomialOp, Op, SimulationPlan

__all__ = [
    "PauliMeasurement",
    "apply_block",
    "apply_monomial",
    "apply_op",
    "evolve",
    "expectations",
    "iter_final_states",
    "marginal_probabilities",
    "pauli_terms",
    "probabilities",
]

States = NDArray[np.complexfloating]
Matrices = NDArray[np.complexfloating]


def _slice(n: int, qubits: tuple[int, ...], basis: int) -> tuple[slice | int, ...]:
    """Index selecting the amplitudes whose target qubits read ``basis`` (first qubit MSB)."""
    index: list[slice | int] = [slice(None)] * (n + 1)
    k = len(qubits)
    for j, q in enumerate(qubits):
        index[n - q] = (basis >> (k - 1 - j)) & 1
    return tuple(index)


def apply_block(
    states: States, out: States, n: int, low: int, width: int, m: NDArray[np.complexfloating]
) -> None:
    """``out = (I ⊗ m ⊗ I) states`` for a block matrix on qubits ``low .. low + width - 1``.

    ``m`` is ``[1, d, d]`` (same for every row) or ``[U, d, d]``. Written as one batched
    matrix product so that the work happens inside BLAS rather than in Python.
    """
    u = states.shape[0]
    d = 1 << width
    below = 1 << low
    above = 1 << (n - low - width)
    if d * below > 32:
        # [U, above, d, below]: left-multiply each (d x below) slab by the row's matrix.
        shape = (u, above, d, below)
        np.matmul(m[:, None], states.reshape(shape), out=out.reshape(shape))
        return
    # Few low bits: right-multiply rows of (d * below) amplitudes by kron(m^T, I_below), so
    # each product is one long BLAS call instead of many tiny ones (the cutoff at 32 is
    # where the two products cost the same, see plan._BLOCK_COST).
    kron = np.einsum("uij,rs->ujris", m, np.eye(below, dtype=m.dtype)).reshape(
        -1, d * below, d * below
    )
    if kron.shape[0] == 1:
        # One matrix for every row: a single tall product over all rows at once.
        flat = (u * above, d * below)
        np.matmul(states.reshape(flat), kron[0], out=out.reshape(flat))
        return
    rows = (u, above, d * below)
    np.matmul(states.reshape(rows), kron, out=out.reshape(rows))


def apply_monomial(states: States, out: States, op: MonomialOp) -> None:
    """``out[:, j] = phase[j] * states[:, source[j]]``."""
    if kernels.compiled_enabled(states.dtype):
        kernels.gather(states, out, op.source, op.phase)
        return
    np.take(states, op.source, axis=1, out=out, mode="clip")  # clip: no bounds checks
    if op.phase is not None:
        out *= op.phase.astype(out.dtype, copy=False)


def _apply_sparse(
    states: States, n: int, qubits: tuple[int, ...], m: NDArray[np.complexfloating], diagonal: bool
) -> None:
    u = states.shape[0]
    view = states.reshape((u,) + (2,) * n)
    d = 1 << len(qubits)
    per_row = m.shape[0] != 1
    coeff_shape = (u,) + (1,) * (n - len(qubits)) if per_row else ()
    nonzero = np.any(m != 0, axis=0)
    slices = [_slice(n, qubits, b) for b in range(d)]

    def coefficient(k: int, col: int) -> NDArray[np.complexfloating] | complex:
        if per_row:
            return m[:, k, col].reshape(coeff_shape)
        return complex(m[0, k, col])

    if diagonal:
        for k in range(d):
            if np.all(m[:, k, k] == 1):
                continue
            view[slices[k]] *= coefficient(k, k)
        return

    updates: list[tuple[int, NDArray[np.complexfloating]]] = []
    for k in range(d):
        cols = np.flatnonzero(nonzero[k])
        if cols.size == 1 and cols[0] == k and np.all(m[:, k, k] == 1):
            continue  # identity row
        acc: NDArray[np.complexfloating] | None = None
        for col in cols:
            c = coefficient(k, int(col))
            src = view[slices[col]]
            unit = not per_row and c == 1
            if acc is None:
                acc = src.copy() if unit else src * c
            elif unit:
                acc += src
            else:
                acc += src * c
        if acc is None:
            acc = np.zeros_like(view[slices[k]])
        updates.append((k, acc))
    for k, acc in updates:
        view[slices[k]] = acc


def apply_op(op: Op, states: States, scratch: States, n: int, m: Matrices | None) -> bool:
    """Apply ``op`` (with matrices ``m`` ``[1|U, d, d]``; None for a monomial) to every row.

    Returns True when the result was written to ``scratch`` and False when ``states`` was
    updated in place, so callers swap their buffers only when needed.
    """
    if isinstance(op, MonomialOp):
        apply_monomial(states, scratch, op)
        return True
    assert m is not None
    if isinstance(op, KronOp):
        if op.compiled:
            kernels.apply_factors(states, op.qubit_array, m)
            return False
        if op.diagonal:
            _apply_sparse(states, n, op.qubits, m, True)
            return False
        apply_block(states, scratch, n, op.low, op.width, m)
        return True
    _apply_sparse(states, n, op.qubits, m, op.diagonal)
    return False


class _MatrixCache:
    """Matrices of ops whose angles are the same for all rows of a branch, by angle values.

    Branches that split off a shared line (a parameter shift's ``±`` rows) follow that
    line's angles after their own gate, so the same matrices recur in every branch.
    """

    def __init__(self) -> None:
        self._matrices: dict[tuple[int, bytes], Matrices] = {}

    def shared(
        self, op: KronOp | GateOp, t: int, angles: NDArray[np.float64], dtype: type
    ) -> Matrices:
        key = (t, angles.tobytes())
        m = self._matrices.get(key)
        if m is None:
            if len(self._matrices) > 4096:
                self._matrices.clear()
            m = self._matrices[key] = op.matrices(angles[None]).astype(dtype, copy=False)
        return m


@dataclass(slots=True)
class _Branch:
    """Bindings whose states start as rows of ``source`` and still need ops ``start..``."""

    source: States | None
    #: Row of ``source`` each of the branch's states starts from.
    parents: NDArray[np.intp]
    #: For each binding of the branch, the index of its state (into ``parents``).
    owner: NDArray[np.intp]
    #: The branch's bindings, as rows of the full ``values`` array.
    bindings: NDArray[np.intp]
    start: int


def iter_final_states(
    plan: SimulationPlan,
    values: NDArray[np.float64],
    dtype: type[np.complexfloating] = np.complex128,
    max_rows: int | None = None,
) -> Iterator[tuple[States, NDArray[np.intp], NDArray[np.intp]]]:
    """Evolve ``|0...0>`` under ``plan`` for each binding row of ``values`` ``[B, P]``.

    Yields groups ``(states [U, 2**n], owner [m], bindings [m])``: binding ``bindings[i]``
    (a row of ``values``) ends in ``states[owner[i]]``. Every binding appears in exactly
    one group.

    Bindings share a state row until a gate's angles differ between them, so every
    distinct intermediate state is computed once. At most ``max_rows`` rows (default:
    all bindings) are evolved together: when a split would need more, the rows are dealt
    out into branches of at most ``max_rows`` that continue one after another, depth
    first. A small ``max_rows`` keeps the working set of a wide circuit in cache without
    giving up the shared prefixes (a parameter-shift batch computes its unshifted prefix
    once, not once per chunk).
    """
    n = plan.num_qubits
    b = values.shape[0]
    budget = b if max_rows is None else max(1, int(max_rows))
    root: States = np.zeros((1, 1 << n), dtype=dtype)
    root[0, 0] = 1
    stack = [
        _Branch(root, np.zeros(1, np.intp), np.zeros(b, np.intp), np.arange(b, dtype=np.intp), 0)
    ]
    cache = _MatrixCache()
    while stack:
        done = _run_branch(plan, values, dtype, stack.pop(), budget, stack, cache)
        if done is not None:
            yield done


def _run_branch(
    plan: SimulationPlan,
    values: NDArray[np.float64],
    dtype: type[np.complexfloating],
    branch: _Branch,
    budget: int,
    stack: list[_Branch],
    cache: _MatrixCache,
) -> tuple[States, NDArray[np.intp], NDArray[np.intp]] | None:
    n = plan.num_qubits
    bindings = branch.bindings
    used = branch.parents.shape[0]
    cap = max(used, min(budget, bindings.shape[0]))
    # Two buffers, allocated once per branch: ops write into the spare one and swap.
    states: States = np.empty((cap, 1 << n), dtype=dtype)
    scratch: States = np.empty_like(states)
    assert branch.source is not None
    np.take(branch.source, branch.parents, axis=0, out=states[:used])
    branch.source = None  # the parent's rows may be freed once its last branch has started
    owner = branch.owner
    mine = values[bindings]
    for t in range(branch.start, len(plan.ops)):
        op = plan.ops[t]
        m: Matrices | None = None
        if not isinstance(op, MonomialOp):
            if op.constant is not None:
                m = op.constant.astype(dtype, copy=False)
            else:
                cols = mine[:, op.columns]
                if bool((cols == cols[0]).all()):
                    # One angle set for the whole branch: no split, and one matrix shared
                    # by every row (a single BLAS call instead of one per row).
                    m = cache.shared(op, t, cols[0], dtype)
                else:
                    parents, keys, inverse = _group(owner, cols)
                    if parents.shape[0] > cap:
                        _push_branches(stack, states[:used], parents, inverse, bindings, t, budget)
                        return None
                    used, owner, row_values = _split(states, used, parents, keys, inverse)
                    m = op.matrices(row_values).astype(dtype, copy=False)
        if apply_op(op, states[:used], scratch[:used], n, m):
            states, scratch = scratch, states
    return states[:used], owner, bindings


def _push_branches(
    stack: list[_Branch],
    source: States,
    parents: NDArray[np.intp],
    inverse: NDArray[np.intp],
    bindings: NDArray[np.intp],
    start: int,
    budget: int,
) -> None:
    """Deal the distinct (row, angles) keys out into branches of at most ``budget`` rows.

    The branch with the most bindings is pushed first, so it runs last: the lightly
    populated branches (a parameter shift's ``±`` rows) finish and free their memory
    while the heavily shared main line waits.
    """
    groups = [
        np.arange(s, min(s + budget, parents.shape[0])) for s in range(0, parents.shape[0], budget)
    ]
    counts = np.bincount(inverse, minlength=parents.shape[0])
    weight = [int(counts[g].sum()) for g in groups]
    order = sorted(range(len(groups)), key=lambda i: weight[i], reverse=True)
    for i in order:
        keys = groups[i]
        local = np.full(parents.shape[0], -1, dtype=np.intp)
        local[keys] = np.arange(keys.shape[0])
        members = np.flatnonzero(local[inverse] >= 0)
        stack.append(
            _Branch(source, parents[keys], local[inverse[members]], bindings[members], start)
        )


def evolve(
    plan: SimulationPlan,
    values: NDArray[np.float64],
    dtype: type[np.complexfloating] = np.complex128,
) -> tuple[States, NDArray[np.intp]]:
    """Evolve all bindings of ``values`` ``[B, P]`` together: ``(states [U, 2**n], owner [B])``.

    ``states`` holds the distinct final states and ``owner`` the row of each binding's.
    """
    ((states, owner, bindings),) = list(iter_final_states(plan, values, dtype))
    assert np.array_equal(bindings, np.arange(values.shape[0]))
    return states, owner


def _group(
    owner: NDArray[np.intp], cols: NDArray[np.float64]
) -> tuple[NDArray[np.intp], NDArray[np.float64], NDArray[np.intp]]:
    """Distinct (state row, angle values) keys: ``(parent row [G], values [G, c], key [m])``.

    Keys come out sorted by parent row, so the keys of one row are contiguous.
    """
    if owner.shape[0] == 1:
        return owner.copy(), cols, np.zeros(1, dtype=np.intp)
    # Sort bindings by (row, angle values) and cut where consecutive keys differ: the same
    # grouping as np.unique(axis=0), several times faster on these small, wide keys.
    keys = np.column_stack([owner.astype(np.float64), cols])
    order = np.lexsort(keys.T[::-1])
    ordered = keys[order]
    boundary = np.empty(ordered.shape[0], dtype=bool)
    boundary[0] = True
    np.any(ordered[1:] != ordered[:-1], axis=1, out=boundary[1:])
    inverse = np.empty(ordered.shape[0], dtype=np.intp)
    inverse[order] = np.cumsum(boundary) - 1
    unique = ordered[boundary]
    return unique[:, 0].astype(np.intp), unique[:, 1:], inverse


def _split(
    states: States,
    used: int,
    parents: NDArray[np.intp],
    keys: NDArray[np.float64],
    inverse: NDArray[np.intp],
) -> tuple[int, NDArray[np.intp], NDArray[np.float64]]:
    """Give every key its own row: the first key of each row keeps the row, further keys
    get copies appended after ``used``. Returns the row count, the owner map and each
    row's angle values."""
    first = np.ones(parents.shape[0], dtype=bool)
    first[1:] = parents[1:] != parents[:-1]
    rows = np.empty(parents.shape[0], dtype=np.intp)
    rows[first] = parents[first]
    extra = np.flatnonzero(~first)
    rows[extra] = used + np.arange(extra.size)
    if extra.size:
        states[used : used + extra.size] = states[parents[extra]]
    row_values = np.empty((used + extra.size, keys.shape[1]))
    row_values[rows] = keys
    return used + extra.size, rows[inverse], row_values


def probabilities(states: States) -> NDArray[np.float64]:
    """Born probabilities ``|amplitude|**2`` per state row."""
    return np.square(states.real, dtype=np.float64) + np.square(states.imag, dtype=np.float64)


def _parity(indices: NDArray[np.int64], mask: int) -> NDArray[np.int64]:
    parity: NDArray[np.int64] = np.bitwise_count(indices & mask).astype(np.int64) & 1
    return parity


class PauliMeasurement:
    """Expectations of fixed observables, measured on many batches of states.

    ``P|j> = i^{#Y} (-1)^{|j & z|} |j ^ x>``, so terms sharing an ``x`` mask share the
    product ``conj(psi[j ^ x]) * psi[j]`` and differ only by a sign vector. A sign
    vector factors over the high and low halves of the index bits,
    ``s(j) = s_hi(j_hi) * s_lo(j_lo)``, so a batch is measured with one matrix product
    against two tables of ``2**(n/2)`` rows, built once, instead of a ``2**n``-row table
    streamed from memory for every batch.
    """

    def __init__(self, n: int, observables: tuple[Observable, ...]) -> None:
        self.n = n
        self.terms, self.weights = pauli_terms(observables)
        self._low_bits = n // 2
        groups: dict[int, list[int]] = {}
        for t, term in enumerate(self.terms):
            groups.setdefault(term.x_mask, []).append(t)
        self._groups = [
            (x, group, *self._sign_tables([self.terms[t].z_mask for t in group]))
            for x, group in groups.items()
        ]
        self._phases = {
            x: np.array([1j ** self.terms[t].num_y for t in group]) for x, group in groups.items()
        }
        #: Each term's masks and phase as arrays (what the compiled tape measures with).
        self.x_masks = np.array([t.x_mask for t in self.terms], dtype=np.int64)
        self.z_masks = np.array([t.z_mask for t in self.terms], dtype=np.int64)
        self.y_phases = np.array([1j**t.num_y for t in self.terms], dtype=np.complex128)

    def _sign_tables(self, masks: list[int]) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
        low = self._low_bits
        lo_index = np.arange(1 << low, dtype=np.int64)
        hi_index = np.arange(1 << (self.n - low), dtype=np.int64)
        lo = np.empty((lo_index.shape[0], len(masks)))
        hi = np.empty((hi_index.shape[0], len(masks)))
        for c, z in enumerate(masks):
            lo[:, c] = 1.0 - 2.0 * _parity(lo_index, z & ((1 << low) - 1))
            hi[:, c] = 1.0 - 2.0 * _parity(hi_index, z >> low)
        return lo, hi

    @staticmethod
    def _signed_sums(
        values: NDArray[Any], lo: NDArray[np.float64], hi: NDArray[np.float64]
    ) -> NDArray[Any]:
        """``sum_j values[u, j] * s_t(j)`` for each row ``u`` and term ``t``."""
        halves = values.reshape(values.shape[0], hi.shape[0], lo.shape[0])
        partial = halves @ lo.astype(values.dtype, copy=False)  # [U, hi, T]
        summed: NDArray[Any] = np.einsum("uht,ht->ut", partial, hi)
        return summed

    def term_values(self, states: States) -> NDArray[np.float64]:
        """``<psi|P|psi>`` for each state row and Pauli term: ``[U, len(terms)]``."""
        out = np.empty((states.shape[0], len(self.terms)))
        for x, group, lo, hi in self._groups:
            if x == 0:
                out[:, group] = self._signed_sums(probabilities(states), lo, hi)
                continue
            j = np.arange(1 << self.n, dtype=np.int64)
            product = np.conj(states[:, j ^ x]) * states
            out[:, group] = (self._signed_sums(product, lo, hi) * self._phases[x]).real
        return out

    def cross_term_values(self, left: States, right: States) -> NDArray[np.float64]:
        """``Re <left|P|right>`` for each pair of rows and Pauli term: ``[U, len(terms)]``.

        ``left`` may be a single row ``[1, 2**n]``, paired with every row of ``right``.
        """
        out = np.empty((right.shape[0], len(self.terms)))
        for x, group, lo, hi in self._groups:
            if x == 0:
                overlap = (np.conj(left) * right).real
                out[:, group] = self._signed_sums(overlap, lo, hi)
                continue
            j = np.arange(1 << self.n, dtype=np.int64)
            product = np.conj(left[:, j ^ x]) * right
            out[:, group] = (self._signed_sums(product, lo, hi) * self._phases[x]).real
        return out

    def expectations(self, states: States) -> NDArray[np.float64]:
        """Expectation of each observable for each state row: ``[U, len(observables)]``."""
        values: NDArray[np.float64] = self.term_values(states) @ self.weights
        return values


def expectations(
    states: States, n: int, observables: tuple[Observable, ...]
) -> NDArray[np.float64]:
    """Expectation of each observable for each state row: ``[U, len(observables)]``."""
    return PauliMeasurement(n, observables).expectations(states)


def pauli_terms(observables: tuple[Observable, ...]) -> tuple[list[PauliTerm], NDArray[np.float64]]:
    """Distinct Pauli strings of ``observables`` and the ``[terms, observables]`` weights."""
    labels: dict[str, int] = {}
    terms: list[PauliTerm] = []
    for obs in observables:
        for term in obs.terms:
            if term.label not in labels:
                labels[term.label] = len(terms)
                terms.append(PauliTerm(term.label, 1.0))
    weights = np.zeros((len(terms), len(observables)))
    for o, obs in enumerate(observables):
        for term in obs.terms:
            weights[labels[term.label], o] += term.coeff
    return terms, weights


def marginal_probabilities(
    states: States, n: int, measured: list[tuple[int, int]]
) -> NDArray[np.float64]:
    """Probabilities of the measured qubits' outcomes, ``[U, 2**len(measured)]``.

    ``measured`` lists ``(qubit, clbit)`` pairs; the outcome index has the bit of the pair
    with the *k*-th smallest clbit in bit *k*.
    """
    probs = probabilities(states)
    u = probs.shape[0]
    view = probs.reshape((u,) + (2,) * n)
    ordered = sorted(measured, key=lambda pair: pair[1])
    kept = {q for q, _ in ordered}
    summed = tuple(n - q for q in range(n) if q not in kept)
    if summed:
        view = view.sum(axis=summed)
    # Remaining axes are the kept qubits in descending qubit order; reorder them so the
    # largest clbit comes first (the most significant bit of the outcome index).
    remaining = sorted(kept, reverse=True)
    axis_of = {q: 1 + i for i, q in enumerate(remaining)}
    order = (0, *[axis_of[q] for q, _ in reversed(ordered)])
    return np.ascontiguousarray(view.transpose(order)).reshape(u, 1 << len(ordered))
