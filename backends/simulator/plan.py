"""Compile a circuit into the fused operations the statevector kernels apply.

Three fusions make the simulator fast on the circuits variational models use:

* one-qubit gates pending on a qubit are multiplied into one 2x2 matrix per binding;
* pending one-qubit matrices on neighbouring qubits are combined (Kronecker product) into
  one block of up to ``BLOCK_QUBITS`` qubits, applied as a single batched matrix product;
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

__all__ = ["BLOCK_QUBITS", "GateOp", "KronOp", "MonomialOp", "SimulationPlan", "compile_plan"]

#: Widest block of fused one-qubit gates (an 8x8 matrix per binding).
BLOCK_QUBITS = 3
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

    def matrices(self, values: NDArray[np.float64]) -> NDArray[np.complex128]:
        if self.constant is not None:
            return self.constant
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
    circuit: Circuit, low: int, width: int, pending: dict[int, list[Instruction]]
) -> KronOp:
    cols = _Columns(circuit)
    factors = []
    diagonal = True
    for q in range(low + width - 1, low - 1, -1):
        gates = pending.pop(q)
        diagonal = diagonal and all(gate_spec(g.name).diagonal for g in gates)
        factors.append(cols.sequence(gates))
    op = KronOp(tuple(cols.columns), None, low, width, tuple(factors), diagonal)
    if not op.columns:
        op = KronOp((), _freeze(op.matrices(np.zeros((1, 0)))), low, width, op.factors, diagonal)
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


def compile_plan(circuit: Circuit) -> SimulationPlan:
    n = circuit.num_qubits
    pending: dict[int, list[Instruction]] = {}
    ops: list[Op] = []
    constants: list[Instruction] = []

    def flush_constants() -> None:
        if not constants:
            return
        if len(constants) > 1 and n <= MONOMIAL_MAX_QUBITS:
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
        qubits = sorted(pending)
        start = 0
        while start < len(qubits):
            low = qubits[start]
            width = 1
            while (
                width < BLOCK_QUBITS
                and start + width < len(qubits)
                and qubits[start + width] == low + width
            ):
                width += 1
            ops.append(_kron_op(circuit, low, width, pending))
            start += width

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
