"""Exact expectations and Jacobians of narrow circuits from dense matrices.

On a few qubits a state is a handful of amplitudes, so the fused kernels of
:mod:`.adjoint` spend their time in numpy's per-call overhead (several calls per gate
and per generator), not in arithmetic. Here every gate is a dense ``2**n x 2**n``
matrix, the matrices of all gates of a name built at once, and the adjoint method

    dE_k / d angle = 2 Re <lambda_k| dG/d angle |psi>

(``psi`` the state before the gate, ``lambda_k = U_after^† O_k |psi_final>``) is
evaluated a whole run of gates at a time. A gate whose angles are the same for every
binding (a model's weights, shared by a batch of inputs) and the constant gates around
it form a run whose product ``U`` is one matrix for the whole batch; the walk takes one
step per run and per gate that differs between bindings (an input's encoding). Inside a
run the derivative through its gate ``j`` is ``U P_(j+1)^† dG_j P_j``, with ``P_j`` the
product of the run's first ``j`` gates, again one matrix for the batch: a run costs one
product per gate, then a few batched products for all its derivatives together.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from functools import lru_cache

import numpy as np
from numpy.typing import NDArray

from ..circuit import Circuit, Instruction
from ..gates import gate_derivative, gate_spec
from ..observables import Observable
from .statevector import pauli_terms

__all__ = ["DENSE_MAX_QUBITS", "DenseProgram", "compile_dense", "dense_bytes", "dense_jacobian"]

#: Widest circuit differentiated with dense matrices: a gate's matrix has ``4**n``
#: entries, so from here on the fused kernels' ``O(2**n)`` passes are cheaper.
DENSE_MAX_QUBITS = 5

Matrices = NDArray[np.complex128]
Index = NDArray[np.intp]


# --------------------------------------------------------------------------- the program
@dataclass(frozen=True, slots=True)
class _NameGroup:
    """The parameterized gates of one name and how their angles follow from a binding.

    ``angle[b, g, s] = coeff[g, s] * values[b, column[g, s]] + offset[g, s]``, where column
    ``P`` (one past the last parameter) reads zero. Entry ``dense[g, i]`` of gate ``g``'s
    flattened dense matrix is entry ``small[g, i]`` of its own flattened ``d x d`` matrix.
    """

    name: str
    #: The gates (indices among the program's parameterized gates).
    gates: Index
    column: Index
    coeff: NDArray[np.float64]
    offset: NDArray[np.float64]
    dense: Index
    small: Index
    #: ``(slot, rows, entries)``: the gates (rows of ``column``) whose angle ``slot``
    #: depends on a parameter, and the derivative entries they are.
    slots: tuple[tuple[int, Index, Index], ...]


@dataclass(frozen=True, slots=True)
class DenseProgram:
    """A circuit compiled for :func:`dense_jacobian`.

    ``steps`` run in order: an ``int`` is a parameterized gate (its index among the
    ``num_gates``), an array the ``[N, N]`` product of a run of constant gates. Each
    derivative entry ``e`` is one parameter-dependent angle, of gate ``entry_gate[e]``,
    adding ``entry_coeff[e]`` times its derivative to parameter ``entry_param[e]``;
    entries are sorted by gate.
    """

    num_qubits: int
    num_parameters: int
    steps: tuple[int | Matrices, ...]
    num_gates: int
    groups: tuple[_NameGroup, ...]
    #: ``[num_gates, most angles]``: each gate's parameter columns (``P`` where none).
    gate_columns: Index
    entry_gate: Index
    entry_param: Index
    entry_coeff: NDArray[np.float64]
    #: Layouts by which gates a call's batch shares (see :func:`_layout`).
    layouts: dict[bytes, _Layout] = field(default_factory=dict, compare=False, repr=False)


def _embedding(n: int, qubits: tuple[int, ...]) -> tuple[Index, Index]:
    """``(dense, small)`` flat indices: dense entry ``dense[i]`` is small entry ``small[i]``.

    A gate on ``qubits`` (first qubit = most significant bit of its matrix) is the
    identity on the other qubits: dense entry ``(r, c)`` is nonzero only where ``r`` and
    ``c`` agree off the gate's qubits, and there equals entry ``(local(r), local(c))``.
    """
    size = 1 << n
    k = len(qubits)
    j = np.arange(size, dtype=np.intp)
    local = np.zeros(size, dtype=np.intp)
    mask = 0
    for i, q in enumerate(qubits):
        local |= ((j >> q) & 1) << (k - 1 - i)
        mask |= 1 << q
    rows, cols = np.meshgrid(j, j, indexing="ij")
    same = (rows & ~mask) == (cols & ~mask)
    r, c = rows[same], cols[same]
    return r * size + c, local[r] * (1 << k) + local[c]


def _constant_matrix(n: int, gates: Sequence[Instruction]) -> Matrices:
    size = 1 << n
    total = np.eye(size, dtype=np.complex128)
    for inst in gates:
        angles = np.array([[a.offset for a in inst.angles]]).reshape(1, len(inst.angles))
        small = gate_spec(inst.name).matrix(angles)[0]
        dense_index, small_index = _embedding(n, inst.qubits)
        dense = np.zeros(size * size, dtype=np.complex128)
        dense[dense_index] = small.ravel()[small_index]
        total = dense.reshape(size, size) @ total
    total.setflags(write=False)
    return total


def compile_dense(circuit: Circuit) -> DenseProgram:
    """Compile ``circuit`` for :func:`dense_jacobian` (meant for a few qubits)."""
    n = circuit.num_qubits
    p = circuit.num_parameters
    steps: list[int | Matrices] = []
    constants: list[Instruction] = []
    parameterized: list[Instruction] = []
    for inst in circuit.instructions:
        if not inst.is_parameterized:
            constants.append(inst)
            continue
        if constants:
            steps.append(_constant_matrix(n, constants))
            constants = []
        steps.append(len(parameterized))
        parameterized.append(inst)
    if constants:
        steps.append(_constant_matrix(n, constants))

    widest = max((len(inst.angles) for inst in parameterized), default=1)
    gate_columns = np.full((len(parameterized), widest), p, dtype=np.intp)
    by_name: dict[str, list[int]] = {}
    for g, inst in enumerate(parameterized):
        by_name.setdefault(inst.name, []).append(g)
    entries: list[tuple[int, int, float]] = []  # (gate, parameter, coeff)
    groups = []
    for name, members in by_name.items():
        num_params = gate_spec(name).num_params
        column = np.full((len(members), num_params), p, dtype=np.intp)
        coeff = np.zeros((len(members), num_params))
        offset = np.zeros((len(members), num_params))
        dense, small = [], []
        for i, g in enumerate(members):
            inst = parameterized[g]
            for s, a in enumerate(inst.angles):
                offset[i, s] = a.offset
                if not a.is_constant:
                    assert a.parameter is not None
                    column[i, s] = circuit.parameter_index(a.parameter)
                    coeff[i, s] = a.coeff
            gate_columns[g, :num_params] = column[i]
            dense_index, small_index = _embedding(n, inst.qubits)
            dense.append(dense_index)
            small.append(small_index)
        slots = []
        for s in range(num_params):
            rows = np.flatnonzero(coeff[:, s] != 0.0).astype(np.intp)
            if rows.size:
                first = len(entries)
                entries.extend((members[i], int(column[i, s]), float(coeff[i, s])) for i in rows)
                slots.append((s, rows, np.arange(first, len(entries), dtype=np.intp)))
        groups.append(
            _NameGroup(
                name,
                np.array(members, dtype=np.intp),
                column,
                coeff,
                offset,
                np.stack(dense),
                np.stack(small),
                tuple(slots),
            )
        )
    order = sorted(range(len(entries)), key=lambda e: entries[e][0])
    renumber = np.empty(len(entries), dtype=np.intp)
    renumber[order] = np.arange(len(entries))
    return DenseProgram(
        n,
        p,
        tuple(steps),
        len(parameterized),
        tuple(replace(g, slots=tuple((s, r, renumber[e]) for s, r, e in g.slots)) for g in groups),
        gate_columns,
        np.array([entries[e][0] for e in order], dtype=np.intp),
        np.array([entries[e][1] for e in order], dtype=np.intp),
        np.array([entries[e][2] for e in order]),
    )


@lru_cache(maxsize=64)
def _observable_matrices(n: int, observables: tuple[Observable, ...]) -> Matrices:
    """The observables' dense matrices stacked as ``[K * N, N]`` (qubit ``q`` = bit ``q``)."""
    size = 1 << n
    terms, weights = pauli_terms(observables)
    out = np.zeros((len(observables), size, size), dtype=np.complex128)
    j = np.arange(size, dtype=np.int64)
    for t, term in enumerate(terms):
        # P|j> = i^{#Y} (-1)^{|j & z|} |j ^ x>.
        parity = np.bitwise_count(j & term.z_mask).astype(np.int64) & 1
        dense = np.zeros((size, size), dtype=np.complex128)
        dense[j ^ term.x_mask, j] = (1j**term.num_y) * (1.0 - 2.0 * parity)
        out += weights[t][:, None, None] * dense
    stacked = out.reshape(len(observables) * size, size)
    stacked.setflags(write=False)
    return stacked


# --------------------------------------------------------------------------- layouts
@dataclass(frozen=True, slots=True)
class _Part:
    """Gates of one name (or their derivatives in one angle ``slot``) that are all shared
    or all per binding: their small matrices, flattened to ``[1 or B, R * d * d]``, fill
    ``stack[:, target] = small[:, source]`` of the flattened dense stack."""

    group: _NameGroup
    slot: int
    rows: Index
    source: Index
    target: Index


@dataclass(frozen=True, slots=True)
class _Run:
    """Consecutive steps shared by the whole batch: constant matrices and shared gates."""

    #: Gate indices (shared gates) and constant matrices, in order.
    items: tuple[int | Matrices, ...]
    #: The derivative entries of the run's gates, and the item position of each.
    entries: Index
    positions: Index


@dataclass(frozen=True, slots=True)
class _Layout:
    """How one call's matrices are laid out, given which gates the batch shares.

    Shared gates and their derivative entries are numbered in the ``[S, N, N]`` stacks,
    the others in the per-binding ``[B, S', N, N]`` stacks; ``slot`` maps a gate and
    ``entry_slot`` an entry to its number there. The walk takes one step per segment: a
    :class:`_Run`, or a gate that differs between bindings.
    """

    slot: tuple[int, ...]
    num_shared: int
    parts: tuple[tuple[_Part, ...], tuple[_Part, ...]]
    entry_shared: NDArray[np.bool_]
    entry_slot: Index
    num_shared_entries: int
    derivative_parts: tuple[tuple[_Part, ...], tuple[_Part, ...]]
    segments: tuple[_Run | int, ...]
    #: The segment of every gate that differs between bindings.
    segment_of_gate: dict[int, int]


def _numbering(mask: NDArray[np.bool_]) -> Index:
    slot = np.empty(mask.shape[0], dtype=np.intp)
    slot[mask] = np.arange(int(mask.sum()))
    slot[~mask] = np.arange(int((~mask).sum()))
    return slot


def _part(group: _NameGroup, slot: int, rows: Index, numbers: Index, size2: int) -> _Part:
    d2 = gate_spec(group.name).dim ** 2
    local = np.arange(rows.size)[:, None] * d2
    where = numbers[:, None] * size2
    return _Part(
        group, slot, rows, (local + group.small[rows]).ravel(), (where + group.dense[rows]).ravel()
    )


def _segments(
    program: DenseProgram, shared: NDArray[np.bool_]
) -> tuple[tuple[_Run | int, ...], dict[int, int]]:
    segments: list[_Run | int] = []
    items: list[int | Matrices] = []
    first_entry = np.searchsorted(program.entry_gate, np.arange(program.num_gates + 1))

    def close() -> None:
        if not items:
            return
        entries, positions = [], []
        for position, item in enumerate(items):
            if isinstance(item, int):
                span = np.arange(first_entry[item], first_entry[item + 1], dtype=np.intp)
                entries.append(span)
                positions.append(np.full(span.size, position, dtype=np.intp))
        segments.append(
            _Run(
                tuple(items),
                np.concatenate(entries) if entries else np.zeros(0, np.intp),
                np.concatenate(positions) if positions else np.zeros(0, np.intp),
            )
        )
        items.clear()

    segment_of_gate: dict[int, int] = {}
    for step in program.steps:
        if isinstance(step, int) and not shared[step]:
            close()
            segment_of_gate[step] = len(segments)
            segments.append(step)
        else:
            items.append(step)
    close()
    return tuple(segments), segment_of_gate


def _layout(program: DenseProgram, shared: NDArray[np.bool_]) -> _Layout:
    size2 = 1 << (2 * program.num_qubits)
    slot = _numbering(shared)
    entry_shared = shared[program.entry_gate]
    entry_slot = _numbering(entry_shared)
    parts: tuple[list[_Part], list[_Part]] = ([], [])
    derivative_parts: tuple[list[_Part], list[_Part]] = ([], [])
    for group in program.groups:
        mine = shared[group.gates]
        for side, rows in ((0, np.flatnonzero(mine)), (1, np.flatnonzero(~mine))):
            if rows.size:
                parts[side].append(_part(group, -1, rows, slot[group.gates[rows]], size2))
        for s, rows, entries in group.slots:
            for side, pick in ((0, entry_shared[entries]), (1, ~entry_shared[entries])):
                if pick.any():
                    numbers = entry_slot[entries[pick]]
                    derivative_parts[side].append(_part(group, s, rows[pick], numbers, size2))
    segments, segment_of_gate = _segments(program, shared)
    return _Layout(
        tuple(int(x) for x in slot),
        int(shared.sum()),
        (tuple(parts[0]), tuple(parts[1])),
        entry_shared,
        entry_slot,
        int(entry_shared.sum()),
        (tuple(derivative_parts[0]), tuple(derivative_parts[1])),
        segments,
        segment_of_gate,
    )


class _Matrices:
    """One call's dense matrices and derivatives: one per shared gate, one per binding
    for the rest."""

    def __init__(self, program: DenseProgram, values: NDArray[np.float64]) -> None:
        b = values.shape[0]
        size = 1 << program.num_qubits
        padded = np.concatenate([values, np.zeros((b, 1))], axis=1)
        shared = _shared_gates(program, values)
        key = shared.tobytes()
        layout = program.layouts.get(key)
        if layout is None:
            if len(program.layouts) > 64:
                program.layouts.clear()
            layout = program.layouts[key] = _layout(program, shared)
        self.layout = layout
        angles = {
            group.name: padded[:, group.column] * group.coeff + group.offset  # [B, G, A]
            for group in program.groups
        }
        size2 = size * size
        num_entries = program.entry_gate.shape[0]
        stacks = (
            np.zeros((1, layout.num_shared * size2), dtype=np.complex128),
            np.zeros((b, (program.num_gates - layout.num_shared) * size2), np.complex128),
        )
        derivatives = (
            np.zeros((1, layout.num_shared_entries * size2), dtype=np.complex128),
            np.zeros((b, (num_entries - layout.num_shared_entries) * size2), np.complex128),
        )
        for side, count in ((0, 1), (1, b)):
            for part in layout.parts[side]:
                a = angles[part.group.name][:count, part.rows]
                small = gate_spec(part.group.name).matrix(a).reshape(count, -1)
                stacks[side][:, part.target] = small[:, part.source]
            for part in layout.derivative_parts[side]:
                a = angles[part.group.name][:count, part.rows]
                small = gate_derivative(part.group.name, a, part.slot).reshape(count, -1)
                derivatives[side][:, part.target] = small[:, part.source]
        self.one = stacks[0].reshape(-1, size, size)
        self.per = stacks[1].reshape(b, -1, size, size)
        self.d_one = derivatives[0].reshape(-1, size, size)
        self.d_per = derivatives[1].reshape(b, -1, size, size)


# --------------------------------------------------------------------------- evaluation
def _shared_gates(program: DenseProgram, values: NDArray[np.float64]) -> NDArray[np.bool_]:
    """Whether each parameterized gate's angles are the same for every binding."""
    uniform = np.append(np.all(values == values[:1], axis=0), True)
    shared: NDArray[np.bool_] = np.all(uniform[program.gate_columns], axis=1)
    return shared


def dense_bytes(program: DenseProgram, values: NDArray[np.float64], num_observables: int) -> int:
    """Bytes :func:`dense_jacobian` holds for the bindings ``values``: the matrices (one
    per shared gate, one per binding for the others) and the states at every step."""
    size = 1 << program.num_qubits
    b = values.shape[0]
    shared = _shared_gates(program, values)
    entry_shared = shared[program.entry_gate]
    per_gate = 2 * size * size  # the matrix and, in a run, its prefix product
    matrices = (int(shared.sum()) + b * int((~shared).sum())) * per_gate
    matrices += (int(entry_shared.sum()) + b * int((~entry_shared).sum())) * size * size
    states = (len(program.steps) + 1) * b * (1 + num_observables) * size
    return int((matrices + states) * np.dtype(np.complex128).itemsize)


def _prefixes(run: _Run, m: _Matrices, size: int) -> Matrices:
    """``[J + 1, N, N]``: the products of the run's first ``j`` items, ``j = 0 .. J``."""
    mats = [m.one[m.layout.slot[item]] if isinstance(item, int) else item for item in run.items]
    prefix = np.empty((len(mats) + 1, size, size), dtype=np.complex128)
    prefix[0] = np.eye(size)
    for j, a in enumerate(mats):
        np.matmul(a, prefix[j], out=prefix[j + 1])
    return prefix


def dense_jacobian(
    program: DenseProgram,
    values: NDArray[np.float64],
    observables: tuple[Observable, ...],
    wanted: Sequence[int],
) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
    """``(expectations [B, K], jacobian [B, K, P])`` for the bindings ``values`` ``[B, P]``.

    Only the columns ``wanted`` of the Jacobian are computed; the others are zero.
    """
    size = 1 << program.num_qubits
    b = values.shape[0]
    k = len(observables)
    m = _Matrices(program, values)
    layout = m.layout
    segments = layout.segments
    count = len(segments)
    prefixes = [_prefixes(s, m, size) if isinstance(s, _Run) else None for s in segments]

    # Forward: kets[s] is every binding's state before segment s, [S + 1, B, N].
    kets = np.empty((count + 1, b, size), dtype=np.complex128)
    kets[0] = 0.0
    kets[0, :, 0] = 1.0
    for s, segment in enumerate(segments):
        prefix = prefixes[s]
        if prefix is not None:
            np.matmul(kets[s], prefix[-1].T, out=kets[s + 1])
        else:
            assert isinstance(segment, int)
            per = m.per[:, layout.slot[segment]]
            np.matmul(per, kets[s][:, :, None], out=kets[s + 1][:, :, None])
    psi = kets[count]
    # Backward: bras[s] is every <lambda_k| = conj(O_k psi) pulled back to before segment s,
    # binding-major rows, [S + 1, B * K, N].
    bras = np.empty((count + 1, b * k, size), dtype=np.complex128)
    observed = _observable_matrices(program.num_qubits, observables) @ psi.T  # [K * N, B]
    bras[count] = np.conj(observed.reshape(k, size, b).transpose(2, 0, 1)).reshape(b * k, size)
    expectations = np.matmul(bras[count].reshape(b, k, size), psi[:, :, None])[:, :, 0].real
    for s in range(count - 1, -1, -1):
        prefix = prefixes[s]
        if prefix is not None:
            np.matmul(bras[s + 1], prefix[-1], out=bras[s])
        else:
            gate = segments[s]
            assert isinstance(gate, int)
            per = m.per[:, layout.slot[gate]]
            np.matmul(bras[s + 1].reshape(b, k, size), per, out=bras[s].reshape(b, k, size))

    jacobian = np.zeros((b, k, program.num_parameters))
    mask = np.zeros(program.num_parameters + 1, dtype=bool)
    mask[list(wanted)] = True
    use = mask[program.entry_param]
    rows = bras.reshape(count + 1, b, k, size)
    for s, segment in enumerate(segments):
        prefix = prefixes[s]
        if prefix is None or not isinstance(segment, _Run):
            continue
        pick = use[segment.entries]
        if not pick.any():
            continue
        entries, positions = segment.entries[pick], segment.positions[pick]
        # Through gate j of the run: U (P_(j+1)^† dG_j P_j) with U the run's product;
        # U joins the bra, <lambda| U being the bra before the run.
        through = np.conj(prefix[positions + 1].swapaxes(1, 2)) @ (
            m.d_one[layout.entry_slot[entries]] @ prefix[positions]
        )
        d_psi = through @ kets[s].T  # [E, N, B]
        # One product per binding: <lambda_bk| d_psi_eb> for every (k, e), [B, K, E].
        overlaps = np.matmul(rows[s], d_psi.transpose(2, 1, 0))
        _accumulate(program, jacobian, entries, overlaps.real)
    per_entries = np.flatnonzero(use & ~layout.entry_shared)
    if per_entries.size:
        segs = np.array([layout.segment_of_gate[int(g)] for g in program.entry_gate[per_entries]])
        d = m.d_per[:, layout.entry_slot[per_entries]].swapaxes(0, 1)  # [E, B, N, N]
        d_psi = np.matmul(d, kets[segs][..., None])  # [E, B, N, 1]
        overlaps = np.matmul(rows[segs + 1], d_psi)[..., 0].real  # [E, B, K]
        _accumulate(program, jacobian, per_entries, overlaps.transpose(1, 2, 0))
    return expectations, jacobian


def _accumulate(
    program: DenseProgram,
    jacobian: NDArray[np.float64],
    entries: Index,
    overlaps: NDArray[np.float64],
) -> None:
    """``jacobian[:, :, param_e] += 2 coeff_e overlaps[:, :, e]`` for each entry ``e``.

    A parameter may feed several entries (a reused parameter), so the sum over entries is
    a product with the ``[E, P]`` matrix of ``2 coeff_e`` at ``(e, param_e)``.
    """
    chain = np.zeros((entries.size, program.num_parameters))
    chain[np.arange(entries.size), program.entry_param[entries]] = (
        2.0 * program.entry_coeff[entries]
    )
    jacobian += overlaps @ chain
