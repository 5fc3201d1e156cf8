"""Compile a circuit into the fused operations the statevector kernels apply.

Three fusions make the simulator fast on the circuits variational models use:

* one-qubit gates pending on a qubit are multiplied into one 2x2 matrix per binding;
* pending one-qubit matrices on neighbouring qubits are combined (Kronecker product) into
  blocks of up to ``BLOCK_QUBITS`` qubits (``WIDE_BLOCK_QUBITS`` on wide circuits, split
  where a measured cost model says the products run fastest), each applied as a single
  batched matrix product;
* runs of constant permutation-with-phase gates (CX, CZ, SWAP, X, S, ...) become one
  gather of the amplitudes, so a whole CNOT chain is one pass over the state.

A plan depends only on the circuit, so it is built once per circuit and reused.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from numpy.typing import NDArray

from ..circuit import Circuit, Instruction
from ..gates import gate_spec
from . import kernels

__all__ = [
    "BLOCK_QUBITS",
    "WIDE_BLOCK_QUBITS",
    "WIDE_CIRCUIT_QUBITS",
    "GateOp",
    "KronOp",
    "MonomialOp",
    "SimulationPlan",
    "compile_plan",
]

#: Widest block of fused one-qubit gates (an 8x8 matrix per binding).
BLOCK_QUBITS = 3
#: From this many qubits on, a state row is large enough that the blocks' layout matters
#: more than the number of numpy calls, and blocks are chosen by :data:`_BLOCK_COST`.
WIDE_CIRCUIT_QUBITS = 12
#: Widest block on wide circuits (a 32x32 matrix per binding).
WIDE_BLOCK_QUBITS = 5
#: Microseconds to apply a block of ``width`` qubits (row) whose lowest qubit is ``low``
#: (column; the last column holds for every higher ``low``) to one 16-qubit complex128
#: row, single-threaded. Measured with ``apply_block``'s own choice of product (a
#: ``kron(m.T, I)`` right product for low blocks, a batched left product otherwise).
#: Blocks low in the index pay for many small products, so the best layout is not
#: "three qubits at a time": for 16 qubits it is 4 + 3 + 5 + 4 qubits, a quarter faster.
_BLOCK_COST = (
    (282, 198, 210, 231, 425, 506, 318, 190),
    (187, 205, 264, 426, 520, 368, 276, 230),
    (202, 285, 425, 591, 457, 352, 275, 225),
    (284, 426, 734, 606, 443, 369, 345, 240),
    (432, 757, 940, 662, 578, 526, 492, 300),
)
#: Above this width a fused permutation's index table (8 bytes per amplitude) costs more
#: memory than it saves time, and constant gates are applied one by one instead.
MONOMIAL_MAX_QUBITS = 22

#: One gate angle as ``(coefficient, local column or -1 for a constant, offset)``.
AngleSpec = tuple[float, int, float]


@dataclass(frozen=True, slots=True)
class GateSequence:
    """Gates applied in order on the same qubits, with angles in local column terms."""

    names: tuple[str, ...]
    angles: tuple[tuple[AngleSpec, ...], ...]

    def matrices(self, values: NDArray[np.float64]) -> NDArray[np.complex128]:
        u = values.shape[0]
        total: NDArray[np.complex128] | None = None
        for name, specs in zip(self.names, self.angles, strict=True):
            a = np.empty((u, len(specs)))
            for k, (coeff, col, offset) in enumerate(specs):
                a[:, k] = offset if col < 0 else coeff * values[:, col] + offset
            m = gate_spec(name).matrix(a)
            total = m if total is None else m @ total
        assert total is not None
        return total


@dataclass(frozen=True, slots=True)
class _Parameterized:
    #: Circuit parameter indices the op depends on; angle specs index into this tuple.
    columns: tuple[int, ...]
    #: The matrix ``[1, d, d]`` when the op depends on no parameter.
    constant: NDArray[np.complex128] | None


@dataclass(frozen=True, slots=True)
class KronOp(_Parameterized):
    """One-qubit gate sequences on contiguous qubits ``low .. low + width - 1``.

    The block matrix is ``kron(M[high], ..., M[low])`` so its index reads the qubits'
    bits in the same order as the amplitude index.
    """

    low: int
    width: int
    #: Sequences from the highest qubit of the block to the lowest.
    factors: tuple[GateSequence, ...]
    diagonal: bool
    #: Built for the compiled kernels: :meth:`matrices` are the factors, not their product.
    compiled: bool = False

    @property
    def qubits(self) -> tuple[int, ...]:
        """The block's qubits, highest first (the order of the block matrix's index bits)."""
        return tuple(range(self.low + self.width - 1, self.low - 1, -1))

    @property
    def qubit_array(self) -> NDArray[np.int64]:
        """:attr:`qubits` as an array (what the compiled kernels take)."""
        return np.arange(self.low + self.width - 1, self.low - 1, -1, dtype=np.int64)

    def matrices(self, values: NDArray[np.float64]) -> NDArray[np.complex128]:
        """The block matrix ``[U, d, d]``; the factors ``[F, U, 2, 2]`` (highest qubit
        first) when the op is ``compiled``."""
        if self.constant is not None:
            return self.constant
        names = self.factors[0].names
        uniform = all(f.names == names for f in self.factors)
        if self.compiled:
            if uniform:
                return self._factor_matrices(values, names)
            return np.stack([f.matrices(values) for f in self.factors])
        if len(self.factors) > 1 and uniform:
            return self._uniform_matrices(values, names)
        total: NDArray[np.complex128] | None = None
        for factor in self.factors:
            m = factor.matrices(values)
            if total is None:
                total = m
            else:
                u, d = total.shape[0], total.shape[1] * 2
                total = np.einsum("uab,ucd->uacbd", total, m).reshape(u, d, d)
        assert total is not None
        return total

    def _uniform_matrices(
        self, values: NDArray[np.float64], names: tuple[str, ...]
    ) -> NDArray[np.complex128]:
        """The block matrix when every factor runs the same gates (see _factor_matrices)."""
        seq = self._factor_matrices(values, names)
        u = values.shape[0]
        total: NDArray[np.complex128] = seq[0]
        for i in range(1, len(self.factors)):
            d = total.shape[1] * 2
            total = np.einsum("uab,ucd->uacbd", total, seq[i]).reshape(u, d, d)
        return total

    def _factor_matrices(
        self, values: NDArray[np.float64], names: tuple[str, ...]
    ) -> NDArray[np.complex128]:
        """Each factor's matrices ``[F, U, 2, 2]`` when all factors run the gates ``names``
        (a layer's RX RY RZ on each qubit): each gate's matrices are built for all factors
        at once, so a block costs one build and one product per gate, not one per qubit."""
        f, u = len(self.factors), values.shape[0]
        seq: NDArray[np.complex128] | None = None
        for g, name in enumerate(names):
            k = len(self.factors[0].angles[g])
            a = np.empty((f, u, k))
            for i, factor in enumerate(self.factors):
                for j, (coeff, col, offset) in enumerate(factor.angles[g]):
                    a[i, :, j] = offset if col < 0 else coeff * values[:, col] + offset
            m = gate_spec(name).matrix(a)
            seq = m if seq is None else m @ seq
        assert seq is not None
        return seq


@dataclass(frozen=True, slots=True)
class GateOp(_Parameterized):
    """A single multi-qubit gate on ``qubits`` (first listed qubit = MSB of its matrix)."""

    qubits: tuple[int, ...]
    sequence: GateSequence
    diagonal: bool

    def matrices(self, values: NDArray[np.float64]) -> NDArray[np.complex128]:
        if self.constant is not None:
            return self.constant
        return self.sequence.matrices(values)


@dataclass(frozen=True, slots=True)
class MonomialOp:
    """Constant gates whose product maps each basis state to one basis state with a phase.

    Applied as ``out[:, j] = phase[j] * state[:, source[j]]``; ``phase`` is None when 1.
    """

    source: NDArray[np.intp]
    phase: NDArray[np.complex128] | None
    gates: int = field(default=1)

    def inverse(self) -> MonomialOp:
        """The op undoing this one: ``in[source[j]] = conj(phase[j]) * out[j]``."""
        back = np.empty_like(self.source)
        back[self.source] = np.arange(self.source.shape[0], dtype=self.source.dtype)
        phase = None if self.phase is None else np.conj(self.phase[back])
        return MonomialOp(back, phase, self.gates)


Op = KronOp | GateOp | MonomialOp


@dataclass(frozen=True, slots=True)
class SimulationPlan:
    """The fused operations of one circuit, in application order."""

    num_qubits: int
    ops: tuple[Op, ...]


class _Columns:
    """Collects the circuit parameter indices one op depends on."""

    def __init__(self, circuit: Circuit) -> None:
        self.circuit = circuit
        self.columns: list[int] = []

    def sequence(self, gates: list[Instruction]) -> GateSequence:
        specs: list[tuple[AngleSpec, ...]] = []
        for gate in gates:
            gate_specs: list[AngleSpec] = []
            for a in gate.angles:
                if a.is_constant:
                    gate_specs.append((0.0, -1, a.offset))
                    continue
                assert a.parameter is not None
                index = self.circuit.parameter_index(a.parameter)
                if index not in self.columns:
                    self.columns.append(index)
                gate_specs.append((a.coeff, self.columns.index(index), a.offset))
            specs.append(tuple(gate_specs))
        return GateSequence(tuple(g.name for g in gates), tuple(specs))


def _freeze(m: NDArray[np.complex128]) -> NDArray[np.complex128]:
    m.setflags(write=False)
    return m


def _kron_op(
    circuit: Circuit, low: int, width: int, pending: dict[int, list[Instruction]], compiled: bool
) -> KronOp:
    cols = _Columns(circuit)
    factors = []
    diagonal = True
    for q in range(low + width - 1, low - 1, -1):
        gates = pending.pop(q)
        diagonal = diagonal and all(gate_spec(g.name).diagonal for g in gates)
        factors.append(cols.sequence(gates))
    op = KronOp(tuple(cols.columns), None, low, width, tuple(factors), diagonal, compiled)
    if not op.columns:
        constant = _freeze(op.matrices(np.zeros((1, 0))))
        op = KronOp((), constant, low, width, op.factors, diagonal, compiled)
    return op


def _gate_op(circuit: Circuit, inst: Instruction) -> GateOp:
    cols = _Columns(circuit)
    seq = cols.sequence([inst])
    constant = None if cols.columns else _freeze(seq.matrices(np.zeros((1, 0))))
    return GateOp(tuple(cols.columns), constant, inst.qubits, seq, gate_spec(inst.name).diagonal)


def _constant_matrix(inst: Instruction) -> NDArray[np.complex128]:
    angles = np.array([[a.offset for a in inst.angles]]).reshape(1, len(inst.angles))
    matrix: NDArray[np.complex128] = gate_spec(inst.name).matrix(angles)[0]
    return matrix


def _is_monomial(m: NDArray[np.complex128]) -> bool:
    nonzero = m != 0
    return bool(np.all(nonzero.sum(axis=0) == 1) and np.all(nonzero.sum(axis=1) == 1))


def _monomial(n: int, gates: list[Instruction]) -> MonomialOp:
    """Compose constant monomial gates into one (source, phase) gather over all amplitudes."""
    size = 1 << n
    index = np.arange(size, dtype=np.intp)
    source = index.copy()
    phase = np.ones(size, dtype=np.complex128)
    for inst in gates:
        m = _constant_matrix(inst)
        k = len(inst.qubits)
        local = np.zeros(size, dtype=np.intp)
        for j, q in enumerate(inst.qubits):
            local |= ((index >> q) & 1) << (k - 1 - j)
        rows = np.argmax(m != 0, axis=0)  # column c (input) lands in row rows[c]
        values = m[rows, np.arange(1 << k)]
        target = index.copy()
        for j, q in enumerate(inst.qubits):
            bit = (rows[local] >> (k - 1 - j)) & 1
            target = (target & ~(1 << q)) | (bit << q)
        new_source = np.empty_like(source)
        new_phase = np.empty_like(phase)
        new_source[target] = source
        new_phase[target] = phase * values[local]
        source, phase = new_source, new_phase
    trivial = bool(np.all(phase == 1))
    return MonomialOp(source, None if trivial else phase, len(gates))


def _blocks(qubits: list[int], n: int, compiled: bool) -> list[tuple[int, int]]:
    """Cover the sorted ``qubits`` with blocks ``(low, width)`` of contiguous qubits."""
    runs: list[list[int]] = []
    for q in qubits:
        if runs and runs[-1][-1] == q - 1:
            runs[-1].append(q)
        else:
            runs.append([q])
    out: list[tuple[int, int]] = []
    for run in runs:
        if compiled:
            # The compiled kernels apply a block one qubit at a time (2 multiplications per
            # amplitude and qubit, where a block matrix of w qubits costs 2**w), so a block
            # spans the whole run: one op, its matrices built in one vectorized pass.
            out.append((run[0], len(run)))
        elif n < WIDE_CIRCUIT_QUBITS:
            # Narrow circuits are bound by numpy's per-call overhead: few, equal blocks.
            out.extend(
                (run[s], min(BLOCK_QUBITS, len(run) - s)) for s in range(0, len(run), BLOCK_QUBITS)
            )
        else:
            out.extend(_cheapest_blocks(run[0], len(run)))
    return out


def _cheapest_blocks(first: int, count: int) -> list[tuple[int, int]]:
    """Split qubits ``first .. first + count - 1`` into blocks of least total cost."""
    best = [0.0] * (count + 1)  # best[i]: cost of covering qubits first + i ..
    choice = [0] * (count + 1)
    for i in range(count - 1, -1, -1):
        best[i] = float("inf")
        for width in range(1, min(WIDE_BLOCK_QUBITS, count - i) + 1):
            low = first + i
            cost = _BLOCK_COST[width - 1][min(low, len(_BLOCK_COST[0]) - 1)] + best[i + width]
            if cost < best[i]:
                best[i], choice[i] = cost, width
    out, i = [], 0
    while i < count:
        out.append((first + i, choice[i]))
        i += choice[i]
    return out


def compile_plan(circuit: Circuit, compiled: bool | None = None) -> SimulationPlan:
    """The circuit's fused ops. ``compiled`` (default: whether the compiled kernels are on
    for complex128 states) builds blocks for :mod:`.kernels`: one per run of qubits, whose
    :meth:`KronOp.matrices` are the per-qubit factors ``[F, U, 2, 2]``."""
    if compiled is None:
        compiled = kernels.compiled_enabled(np.complex128)
    n = circuit.num_qubits
    pending: dict[int, list[Instruction]] = {}
    ops: list[Op] = []
    constants: list[Instruction] = []

    def flush_constants() -> None:
        if not constants:
            return
        # A lone gate is a gather too on the compiled path (one kernel, and a tape entry).
        if (len(constants) > 1 or compiled) and n <= MONOMIAL_MAX_QUBITS:
            ops.append(_monomial(n, constants))
        else:
            ops.extend(_gate_op(circuit, g) for g in constants)
        constants.clear()

    def flush_pending() -> None:
        # Pending one-qubit gates act on qubits nothing else has touched since, so all of
        # them may run now; contiguous qubits are grouped into blocks.
        if not pending:
            return
        flush_constants()
        for low, width in _blocks(sorted(pending), n, compiled):
            ops.append(_kron_op(circuit, low, width, pending, compiled))

    for inst in circuit.instructions:
        if len(inst.qubits) == 1:
            pending.setdefault(inst.qubits[0], []).append(inst)
            continue
        if any(q in pending for q in inst.qubits):
            flush_pending()
        if not inst.is_parameterized and _is_monomial(_constant_matrix(inst)):
            constants.append(inst)
        else:
            flush_constants()
            ops.append(_gate_op(circuit, inst))
    flush_pending()
    flush_constants()
    return SimulationPlan(n, tuple(ops))
