"""A circuit as a flat tape for the compiled kernels: an exact run in one call.

For circuits of one-qubit gates and fused permutations (the plan's :class:`KronOp` and
:class:`MonomialOp`), :func:`compile_tape` lays the plan out as integer and float arrays,
and :func:`tape_term_values` evolves every binding gate by gate inside one numba call,
with no Python or NumPy call per gate, and measures the Pauli terms of the observables.
This is the small-circuit fast path (a cached 4-qubit run of 32 bindings is one call)
and the simulator's parameter-shift engine on narrow circuits: bindings are visited in
sorted order and each restarts from the saved state before the first op whose angles
differ from the previous binding's, so the shifted copies of a binding only recompute
the gates after their shift.

Circuits with multi-qubit parameterized gates (``crx``, ``rzz``, ...) have no tape and
take the plan's NumPy path.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

from ..gates import gate_spec
from . import kernels
from .plan import GateSequence, KronOp, MonomialOp, SimulationPlan
from .statevector import PauliMeasurement

__all__ = ["SHARE_BYTES", "Tape", "compile_tape", "tape_order", "tape_term_values"]

#: Gate codes of the kernel (``_compiled.run_tape``); 0 is a constant matrix.
_CODES = {"rx": 1, "ry": 2, "rz": 3, "p": 4, "u": 5}
#: Bytes of saved states (one per op of the tape) a run may hold per thread; above it
#: every binding is evolved from the start.
SHARE_BYTES = 64 << 20


@dataclass(frozen=True, slots=True)
class Tape:
    """The plan's ops as arrays. Entry ``t`` is ``(kind, target, first item, items)``:
    kind 0 multiplies items ``first .. first + items - 1`` (gates, in order) into one 2x2
    matrix on qubit ``target``; kind 1 gathers through permutation ``target``."""

    num_qubits: int
    entries: NDArray[np.int64]
    #: Per item: (code, constant index).
    codes: NDArray[np.int64]
    consts: NDArray[np.complex128]
    #: Per item and angle slot: circuit parameter column (-1: constant), coeff, offset.
    cols: NDArray[np.int64]
    coeffs: NDArray[np.float64]
    offsets: NDArray[np.float64]
    perms: NDArray[np.int64]
    phases: NDArray[np.complex128]
    #: Parameter columns in the order the tape first reads them (the sort keys).
    columns: NDArray[np.int64]

    def state_bytes(self) -> int:
        """Bytes of the saved states of one thread's run."""
        return int(self.entries.shape[0] + 1) * (16 << self.num_qubits)


def compile_tape(plan: SimulationPlan) -> Tape | None:
    """The plan as a tape, or None when it holds an op the tape cannot run."""
    n = plan.num_qubits
    entries: list[tuple[int, int, int, int]] = []
    codes: list[tuple[int, int]] = []
    consts: list[NDArray[np.complex128]] = []
    cols: list[list[int]] = []
    coeffs: list[list[float]] = []
    offsets: list[list[float]] = []
    perms: list[NDArray[np.int64]] = []
    phases: list[NDArray[np.complex128]] = []
    order: list[int] = []
    for op in plan.ops:
        if isinstance(op, MonomialOp):
            entries.append((1, len(perms), 0, 0))
            perms.append(op.source.astype(np.int64))
            phases.append(np.ones(1 << n, dtype=np.complex128) if op.phase is None else op.phase)
            continue
        if not isinstance(op, KronOp):
            return None
        for i, factor in enumerate(op.factors):
            first = len(codes)
            if not _add_items(factor, op.columns, codes, consts, cols, coeffs, offsets, order):
                return None
            entries.append((0, op.low + op.width - 1 - i, first, len(codes) - first))
    return Tape(
        num_qubits=n,
        entries=np.array(entries, dtype=np.int64).reshape(-1, 4),
        codes=np.array(codes, dtype=np.int64).reshape(-1, 2),
        consts=np.array(consts, dtype=np.complex128).reshape(-1, 2, 2),
        cols=np.array(cols, dtype=np.int64).reshape(-1, 3),
        coeffs=np.array(coeffs, dtype=np.float64).reshape(-1, 3),
        offsets=np.array(offsets, dtype=np.float64).reshape(-1, 3),
        perms=np.array(perms, dtype=np.int64).reshape(-1, 1 << n),
        phases=np.array(phases, dtype=np.complex128).reshape(-1, 1 << n),
        columns=np.array(order, dtype=np.int64),
    )


def _add_items(
    factor: GateSequence,
    columns: tuple[int, ...],
    codes: list[tuple[int, int]],
    consts: list[NDArray[np.complex128]],
    cols: list[list[int]],
    coeffs: list[list[float]],
    offsets: list[list[float]],
    order: list[int],
) -> bool:
    for name, specs in zip(factor.names, factor.angles, strict=True):
        spec = gate_spec(name)
        if spec.num_params == 0:
            codes.append((0, len(consts)))
            consts.append(spec.matrix(np.zeros((1, 0)))[0])
            cols.append([-1, -1, -1])
            coeffs.append([0.0] * 3)
            offsets.append([0.0] * 3)
            continue
        code = _CODES.get(name)
        if code is None:
            return False
        padded = list(specs) + [(0.0, -1, 0.0)] * (3 - len(specs))
        row = [-1 if col < 0 else columns[col] for _, col, _ in padded]
        for c in row:
            if c >= 0 and c not in order:
                order.append(c)
        codes.append((code, 0))
        cols.append(row)
        coeffs.append([coeff for coeff, _, _ in padded])
        offsets.append([offset for _, _, offset in padded])
    return True


def tape_order(tape: Tape, values: NDArray[np.float64]) -> NDArray[np.int64]:
    """The bindings sorted by the columns in the tape's order: bindings that agree on a
    prefix of the tape's angles come out next to each other and share its states."""
    if not tape.columns.size:
        return np.arange(values.shape[0], dtype=np.int64)
    keys = values[:, tape.columns]
    order: NDArray[np.int64] = np.lexsort(keys.T[::-1]).astype(np.int64)
    return order


def tape_term_values(
    tape: Tape,
    values: NDArray[np.float64],
    measurement: PauliMeasurement,
    order: NDArray[np.int64],
    share: bool,
    out: NDArray[np.float64],
) -> None:
    """Fill ``out[r, t] = <psi_r|P_t|psi_r>`` (``[B, T]``, the measurement's terms) for
    the bindings ``order`` (rows
    of ``values`` ``[B, P]``), visited in that order, saving each op's state when
    ``share``. Rows outside ``order`` are left alone, so threads may split one ``out``."""
    kernels.kernels().run_tape(
        values, order, tape.entries, tape.codes, tape.consts, tape.cols, tape.coeffs,
        tape.offsets, tape.perms, tape.phases, tape.num_qubits, share,
        measurement.x_masks, measurement.z_masks, measurement.y_phases, out,
    )  # fmt: skip
