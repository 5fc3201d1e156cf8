"""Pure statevector functions: evolve a batch of bindings, measure expectations and probabilities.

States are rows of a ``[U, 2**n]`` array; amplitude index ``j`` has qubit ``q`` in bit ``q``
(Qiskit's little-endian order). Viewed as ``[U, 2, ..., 2]``, qubit ``q`` is axis ``n - q``.

Bindings that agree on every parameter seen so far share one state row: ``evolve`` keeps an
``owner`` map from binding to row and only splits a row when a gate's angles differ between
its bindings. The ``2P + 1`` bindings of a parameter-shift gradient thus cost about half of
``2P + 1`` independent simulations, and a batch of identical bindings costs one.
"""

from __future__ import annotations

import numpy as np
from numpy.typing import NDArray

from ..observables import Observable, PauliTerm
from .plan import KronOp, MonomialOp, SimulationPlan

__all__ = [
    "apply_block",
    "apply_monomial",
    "evolve",
    "expectations",
    "marginal_probabilities",
    "pauli_terms",
    "probabilities",
    "term_expectations",
]

States = NDArray[np.complexfloating]


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
    if below >= 8:
        # [U, above, d, below]: left-multiply each (d x below) slab by the row's matrix.
        shape = (u, above, d, below)
        np.matmul(m[:, None], states.reshape(shape), out=out.reshape(shape))
        return
    # Few low bits: right-multiply rows of (d * below) amplitudes by kron(m^T, I_below), so
    # each product is one long BLAS call instead of many tiny ones.
    kron = np.einsum("uij,rs->ujris", m, np.eye(below, dtype=m.dtype)).reshape(
        -1, d * below, d * below
    )
    rows = (u, above, d * below)
    np.matmul(states.reshape(rows), kron, out=out.reshape(rows))


def apply_monomial(states: States, out: States, op: MonomialOp) -> None:
    """``out[:, j] = phase[j] * states[:, source[j]]``."""
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


def evolve(
    plan: SimulationPlan,
    values: NDArray[np.float64],
    dtype: type[np.complexfloating] = np.complex128,
) -> tuple[States, NDArray[np.intp]]:
    """Evolve ``|0...0>`` under ``plan`` for each binding row of ``values`` ``[B, P]``.

    Returns ``(states, owner)``: the distinct final states ``[U, 2**n]`` and, per binding,
    the row of its state. Two buffers of ``B`` rows are allocated once; new rows are
    appended when bindings diverge, so no step copies the whole batch.
    """
    n = plan.num_qubits
    b = values.shape[0]
    states: States = np.empty((b, 1 << n), dtype=dtype)
    scratch: States = np.empty_like(states)
    states[0] = 0
    states[0, 0] = 1
    used = 1
    owner = np.zeros(b, dtype=np.intp)
    for op in plan.ops:
        active, spare = states[:used], scratch[:used]
        if isinstance(op, MonomialOp):
            apply_monomial(active, spare, op)
            states, scratch = scratch, states
            continue
        if op.constant is not None:
            mats = op.constant
        else:
            used, owner, column_values = _split(states, used, owner, values[:, op.columns])
            active, spare = states[:used], scratch[:used]
            mats = op.matrices(column_values)
        m = mats.astype(dtype, copy=False)
        if isinstance(op, KronOp):
            if op.diagonal:
                _apply_sparse(
                    active, n, tuple(range(op.low + op.width - 1, op.low - 1, -1)), m, True
                )
            else:
                apply_block(active, spare, n, op.low, op.width, m)
                states, scratch = scratch, states
        else:
            _apply_sparse(active, n, op.qubits, m, op.diagonal)
    return states[:used], owner


def _split(
    states: States, used: int, owner: NDArray[np.intp], cols: NDArray[np.float64]
) -> tuple[int, NDArray[np.intp], NDArray[np.float64]]:
    """Give every distinct (state row, angle values) pair its own row.

    The first pair of each row keeps the row; further pairs get copies appended after
    ``used``. Returns the new row count, the new owner map and each row's angle values.
    """
    if owner.shape[0] == 1:
        return used, owner, cols
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
    parents = unique[:, 0].astype(np.intp)
    first = np.ones(len(unique), dtype=bool)
    first[1:] = parents[1:] != parents[:-1]
    rows = np.empty(len(unique), dtype=np.intp)
    rows[first] = parents[first]
    extra = np.flatnonzero(~first)
    rows[extra] = used + np.arange(extra.size)
    if extra.size:
        states[used : used + extra.size] = states[parents[extra]]
    row_values = np.empty((used + extra.size, cols.shape[1]))
    row_values[rows] = unique[:, 1:]
    return used + extra.size, rows[inverse], row_values


def probabilities(states: States) -> NDArray[np.float64]:
    """Born probabilities ``|amplitude|**2`` per state row."""
    return np.square(states.real, dtype=np.float64) + np.square(states.imag, dtype=np.float64)


def _parity(indices: NDArray[np.int64], mask: int) -> NDArray[np.int64]:
    parity: NDArray[np.int64] = np.bitwise_count(indices & mask).astype(np.int64) & 1
    return parity


def _signs(n: int, masks: list[int]) -> NDArray[np.float64]:
    j = np.arange(1 << n, dtype=np.int64)
    out = np.empty((1 << n, len(masks)))
    for t, z in enumerate(masks):
        out[:, t] = 1.0 - 2.0 * _parity(j, z)
    return out


def term_expectations(states: States, n: int, terms: list[PauliTerm]) -> NDArray[np.float64]:
    """``<psi|P|psi>`` for each state row and Pauli term: ``[U, len(terms)]``.

    ``P|j> = i^{#Y} (-1)^{|j & z|} |j ^ x>``, so terms sharing an ``x`` mask share the
    product ``conj(psi[j ^ x]) * psi[j]`` and differ only by a sign vector.
    """
    u = states.shape[0]
    out = np.empty((u, len(terms)))
    by_x: dict[int, list[int]] = {}
    for t, term in enumerate(terms):
        by_x.setdefault(term.x_mask, []).append(t)
    j = np.arange(1 << n, dtype=np.int64)
    for x, group in by_x.items():
        signs = _signs(n, [terms[t].z_mask for t in group])
        if x == 0:
            values = probabilities(states) @ signs
        else:
            product = np.conj(states[:, j ^ x]) * states
            phases = np.array([1j ** terms[t].num_y for t in group])
            values = ((product @ signs.astype(product.dtype)) * phases).real
        out[:, group] = values
    return out


def expectations(
    states: States, n: int, observables: tuple[Observable, ...]
) -> NDArray[np.float64]:
    """Expectation of each observable for each state row: ``[U, len(observables)]``."""
    terms, weights = pauli_terms(observables)
    return term_expectations(states, n, terms) @ weights


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
