"""The gate set of the circuit model and each gate's (batched) unitary matrix.

Matrices are written in the basis of the gate's own qubit list with the *first* listed
qubit as the most significant bit: for ``cx(control, target)`` the matrix is the textbook
``[[1,0,0,0],[0,1,0,0],[0,0,0,1],[0,0,1,0]]``. Angle conventions follow Qiskit's gate
library (``RZ(θ) = diag(e^{-iθ/2}, e^{iθ/2})``, ``U(θ, φ, λ)`` as Qiskit's ``UGate``), so
conversion to and from Qiskit maps gates one to one.

Every matrix function takes an array of angles of shape ``[..., num_params]`` and returns
matrices of shape ``[..., d, d]``, so a whole batch of parameter bindings is built at once.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

from .errors import UnknownGateError

__all__ = ["GATES", "GateSpec", "gate_derivative", "gate_spec"]

Matrices = NDArray[np.complex128]
MatrixFn = Callable[[NDArray[np.float64]], Matrices]


@dataclass(frozen=True, slots=True)
class GateSpec:
    """What the circuit model knows about one gate."""

    name: str
    num_qubits: int
    num_params: int
    matrix: MatrixFn
    #: True when the matrix is diagonal for every angle (applied as a phase multiply).
    diagonal: bool = False

    @property
    def dim(self) -> int:
        return 1 << self.num_qubits


def _const(m: list[list[complex]]) -> MatrixFn:
    fixed = np.array(m, dtype=np.complex128)
    fixed.setflags(write=False)

    def build(angles: NDArray[np.float64]) -> Matrices:
        return np.broadcast_to(fixed, (*angles.shape[:-1], *fixed.shape)).copy()

    return build


def _stack(
    rows: list[list[NDArray[np.complexfloating] | complex]], shape: tuple[int, ...]
) -> Matrices:
    d = len(rows)
    out = np.zeros((*shape, d, d), dtype=np.complex128)
    for i, row in enumerate(rows):
        for j, entry in enumerate(row):
            out[..., i, j] = entry
    return out


def _rx(a: NDArray[np.float64]) -> Matrices:
    c, s = np.cos(a[..., 0] / 2), np.sin(a[..., 0] / 2)
    return _stack([[c, -1j * s], [-1j * s, c]], a.shape[:-1])


def _ry(a: NDArray[np.float64]) -> Matrices:
    c, s = np.cos(a[..., 0] / 2), np.sin(a[..., 0] / 2)
    return _stack([[c, -s], [s, c]], a.shape[:-1])


def _rz(a: NDArray[np.float64]) -> Matrices:
    h = a[..., 0] / 2
    return _stack([[np.exp(-1j * h), 0], [0, np.exp(1j * h)]], a.shape[:-1])


def _p(a: NDArray[np.float64]) -> Matrices:
    return _stack([[1, 0], [0, np.exp(1j * a[..., 0])]], a.shape[:-1])


def _u(a: NDArray[np.float64]) -> Matrices:
    theta, phi, lam = a[..., 0], a[..., 1], a[..., 2]
    c, s = np.cos(theta / 2), np.sin(theta / 2)
    return _stack(
        [
            [c, -np.exp(1j * lam) * s],
            [np.exp(1j * phi) * s, np.exp(1j * (phi + lam)) * c],
        ],
        a.shape[:-1],
    )


def _controlled(base: MatrixFn) -> MatrixFn:
    def build(a: NDArray[np.float64]) -> Matrices:
        inner = base(a)
        out = np.zeros((*a.shape[:-1], 4, 4), dtype=np.complex128)
        out[..., 0, 0] = 1
        out[..., 1, 1] = 1
        out[..., 2:, 2:] = inner
        return out

    return build


def _pauli_pair_rotation(pauli: str) -> MatrixFn:
    """``exp(-i θ/2 P⊗P)`` for P in X, Y, Z."""

    def build(a: NDArray[np.float64]) -> Matrices:
        c, s = np.cos(a[..., 0] / 2), np.sin(a[..., 0] / 2)
        zero = np.zeros_like(c)
        if pauli == "Z":
            e_m, e_p = np.exp(-0.5j * a[..., 0]), np.exp(0.5j * a[..., 0])
            return _stack(
                [[e_m, 0, 0, 0], [0, e_p, 0, 0], [0, 0, e_p, 0], [0, 0, 0, e_m]], a.shape[:-1]
            )
        # P⊗P has ones (X) or ±1 (Y) on the anti-diagonal: YY = [[0,0,0,-1],[0,0,1,0],...].
        corner = -1j * s if pauli == "X" else 1j * s
        middle = -1j * s
        return _stack(
            [
                [c, zero, zero, corner],
                [zero, c, middle, zero],
                [zero, middle, c, zero],
                [corner, zero, zero, c],
            ],
            a.shape[:-1],
        )

    return build


_SQ2 = 1 / np.sqrt(2)
_T = np.exp(1j * np.pi / 4)

GATES: dict[str, GateSpec] = {
    spec.name: spec
    for spec in (
        GateSpec("h", 1, 0, _const([[_SQ2, _SQ2], [_SQ2, -_SQ2]])),
        GateSpec("x", 1, 0, _const([[0, 1], [1, 0]])),
        GateSpec("y", 1, 0, _const([[0, -1j], [1j, 0]])),
        GateSpec("z", 1, 0, _const([[1, 0], [0, -1]]), diagonal=True),
        GateSpec("s", 1, 0, _const([[1, 0], [0, 1j]]), diagonal=True),
        GateSpec("sdg", 1, 0, _const([[1, 0], [0, -1j]]), diagonal=True),
        GateSpec("t", 1, 0, _const([[1, 0], [0, _T]]), diagonal=True),
        GateSpec("tdg", 1, 0, _const([[1, 0], [0, np.conj(_T)]]), diagonal=True),
        GateSpec("sx", 1, 0, _const([[0.5 + 0.5j, 0.5 - 0.5j], [0.5 - 0.5j, 0.5 + 0.5j]])),
        GateSpec("rx", 1, 1, _rx),
        GateSpec("ry", 1, 1, _ry),
        GateSpec("rz", 1, 1, _rz, diagonal=True),
        GateSpec("p", 1, 1, _p, diagonal=True),
        GateSpec("u", 1, 3, _u),
        GateSpec("cx", 2, 0, _const([[1, 0, 0, 0], [0, 1, 0, 0], [0, 0, 0, 1], [0, 0, 1, 0]])),
        GateSpec("cy", 2, 0, _const([[1, 0, 0, 0], [0, 1, 0, 0], [0, 0, 0, -1j], [0, 0, 1j, 0]])),
        GateSpec(
            "cz",
            2,
            0,
            _const([[1, 0, 0, 0], [0, 1, 0, 0], [0, 0, 1, 0], [0, 0, 0, -1]]),
            diagonal=True,
        ),
        GateSpec("swap", 2, 0, _const([[1, 0, 0, 0], [0, 0, 1, 0], [0, 1, 0, 0], [0, 0, 0, 1]])),
        GateSpec("crx", 2, 1, _controlled(_rx)),
        GateSpec("cry", 2, 1, _controlled(_ry)),
        GateSpec("crz", 2, 1, _controlled(_rz), diagonal=True),
        GateSpec("rxx", 2, 1, _pauli_pair_rotation("X")),
        GateSpec("ryy", 2, 1, _pauli_pair_rotation("Y")),
        GateSpec("rzz", 2, 1, _pauli_pair_rotation("Z"), diagonal=True),
    )
}


def gate_spec(name: str) -> GateSpec:
    """The spec of gate ``name``; raises :class:`UnknownGateError` for anything else."""
    try:
        return GATES[name]
    except KeyError:
        known = ", ".join(sorted(GATES))
        raise UnknownGateError(f"unknown gate {name!r}; the gate set is: {known}") from None


_HALF_PI = np.pi / 2
_PAULI_ROTATIONS = frozenset(("rx", "ry", "rz", "rxx", "ryy", "rzz"))
_CONTROLLED_ROTATIONS = frozenset(("crx", "cry", "crz"))


def gate_derivative(name: str, angles: NDArray[np.float64], slot: int) -> Matrices:
    """Exact ``dU/d angles[..., slot]`` of gate ``name``, batched like the matrix functions.

    Closed forms, no differencing: a rotation ``U(a) = exp(-i a G / 2)`` with ``G² = I``
    has ``dU/da = -i G U / 2 = U(a + π) / 2``; a controlled rotation is that on the
    controlled block and zero elsewhere; ``p`` and the phase angles of ``u`` differentiate
    to ``i |1><1|`` on the side where the angle acts.
    """
    spec = gate_spec(name)
    if not 0 <= slot < spec.num_params:
        raise UnknownGateError(f"gate {name!r} has no angle slot {slot}")
    shifted = np.array(angles, dtype=np.float64, copy=True)
    if name in _PAULI_ROTATIONS:
        shifted[..., slot] += np.pi
        return 0.5 * spec.matrix(shifted)
    if name in _CONTROLLED_ROTATIONS:
        shifted[..., slot] += np.pi
        projector = np.diag([1.0, 1.0, 0.0, 0.0]).astype(np.complex128)
        return 0.5 * (spec.matrix(shifted) - projector)
    if name == "p":
        shifted[..., slot] += _HALF_PI
        return spec.matrix(shifted) - np.diag([1.0, 0.0]).astype(np.complex128)
    if name == "u":
        if slot == 0:
            shifted[..., 0] += np.pi
            return 0.5 * spec.matrix(shifted)
        u = spec.matrix(shifted)
        one = np.diag([0.0, 1.0j])
        derivative: Matrices = one @ u if slot == 1 else u @ one
        return derivative
    raise UnknownGateError(f"gate {name!r} has no angle to differentiate")
