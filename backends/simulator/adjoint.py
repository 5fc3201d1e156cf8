"""Adjoint differentiation on the simulator's fused plan.

For ``E_k = <psi| O_k |psi>`` with ``|psi> = U_T ... U_1 |0>``, walk the plan backwards
keeping ``|psi_t>`` (the state after op ``t``) and ``|lambda_k,t> = U_{>t}^† O_k |psi>``.
The derivative through op ``t`` is::

    dE_k / d theta = 2 Re <lambda_k,t| (dU_t/d theta) U_t^† |psi_t>

so each op costs: its generator ``G = dU U^†`` applied to ``psi`` once per parameter it
depends on, one matrix product of the ``lambda`` stack with those states, and ``U^†``
applied to ``psi`` and every ``lambda``. Ops are the plan's fused blocks (several
qubits' rotations at once, a CNOT chain as one gather), so the walk takes a handful of
passes per layer instead of one per gate, and ``psi`` rides in the same stack as the
``lambda`` rows so each pass is one batched numpy call.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from numpy.typing import NDArray

from ..gates import gate_derivative, gate_spec
from ..observables import Observable
from . import kernels
from .plan import GateOp, GateSequence, KronOp, MonomialOp, SimulationPlan
from .statevector import PauliMeasurement, apply_op, evolve, pauli_terms

__all__ = ["adjoint_jacobian", "adjoint_vjp"]

Matrices = NDArray[np.complex128]


def adjoint_jacobian(
    plan: SimulationPlan,
    values: NDArray[np.float64],
    observables: tuple[Observable, ...],
    wanted: Sequence[int],
    dtype: type[np.complexfloating] = np.complex128,
) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
    """``(expectations [B, K], jacobian [B, K, P])`` for the bindings ``values`` ``[B, P]``.

    Only the columns ``wanted`` (parameter indices) of the Jacobian are computed; the
    others are zero.
    """
    n = plan.num_qubits
    b = values.shape[0]
    k = len(observables)
    states, owner = evolve(plan, values, dtype)
    stack = np.empty((b, 1 + k, 1 << n), dtype=dtype)
    stack[:, 0] = states[owner]
    del states
    _apply_observables(stack, n, observables)
    psi = stack[:, 0]
    lam = stack[:, 1:]
    expectations = np.matmul(lam, np.conj(psi)[:, :, None])[:, :, 0].real
    return expectations, _walk_back(plan, values, stack, wanted, dtype)


def adjoint_vjp(
    plan: SimulationPlan,
    values: NDArray[np.float64],
    observables: tuple[Observable, ...],
    cotangents: NDArray[np.float64],
    wanted: Sequence[int],
    dtype: type[np.complexfloating] = np.complex128,
) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
    """``(expectations [B, K], vjp [B, P])`` with ``vjp[b] = sum_k cotangents[b, k] *
    dE_bk/d theta``: one backward pass per binding, of the one observable
    ``sum_k c_bk O_k``, instead of one per observable (what the Jacobian costs).

    The expectations come from the same final states (every Pauli term once).
    """
    n = plan.num_qubits
    b = values.shape[0]
    states, owner = evolve(plan, values, dtype)
    if kernels.compiled_enabled(dtype):
        return _compiled_vjp(plan, values, observables, cotangents, wanted, states[owner])
    stack = np.empty((b, 2, 1 << n), dtype=dtype)
    stack[:, 0] = states[owner]
    del states
    terms, weights = pauli_terms(observables)  # weights [T, K]
    psi = stack[:, 0]
    stack[:, 1] = 0
    term_values = np.empty((b, len(terms)))
    coefficients = cotangents @ weights.T  # [B, T]: each term's weight in the summed observable
    j = np.arange(1 << n, dtype=np.int64)
    for t, term in enumerate(terms):
        applied = _pauli_image(psi, j, term)
        term_values[:, t] = np.einsum("bj,bj->b", np.conj(psi), applied).real
        stack[:, 1] += coefficients[:, t, None] * applied
    expectations = term_values @ weights
    jacobian = _walk_back(plan, values, stack, wanted, dtype)
    return expectations, jacobian[:, 0, :]


def _compiled_vjp(
    plan: SimulationPlan,
    values: NDArray[np.float64],
    observables: tuple[Observable, ...],
    cotangents: NDArray[np.float64],
    wanted: Sequence[int],
    psi: NDArray[np.complexfloating],
) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
    """:func:`adjoint_vjp` on the compiled kernels: ``psi`` ``[B, N]`` the final states.

    ``psi`` and ``lambda`` are kept as two arrays of contiguous rows (the kernels' layout);
    a block is one :func:`kernels.adjoint_factors` call, one pass per qubit: the overlaps
    with that qubit's generators and the inverse of its gates on both states at once.
    """
    n = plan.num_qubits
    b, p = values.shape
    measurement = PauliMeasurement(n, observables)
    psi = np.ascontiguousarray(psi)
    coefficients = cotangents @ measurement.weights.T  # each term's weight in the sum
    lam, term_values = kernels.apply_observable(psi, measurement, coefficients)
    expectations = term_values @ measurement.weights
    vjp = np.zeros((b, p))
    wanted_set = frozenset(int(i) for i in wanted)
    spare = np.empty_like(psi)
    for op in reversed(plan.ops):
        if isinstance(op, MonomialOp):
            inverse = op.inverse()
            for rows in (psi, lam):
                kernels.gather(rows, spare, inverse.source, inverse.phase)
                rows[:] = spare
            continue
        angles = values[:, list(op.columns)]
        if isinstance(op, KronOp):
            step = _block_step(op, angles, wanted_set)
            overlaps = kernels.adjoint_factors(psi, lam, step.qubits, step.daggers, step.gens)
            valid = step.params >= 0  # [F, S]
            if valid.any():
                weighted = 2.0 * step.coeffs[valid][:, None] * overlaps.transpose(0, 2, 1)[valid]
                np.add.at(vjp.T, step.params[valid], weighted)
            continue
        # A multi-qubit parameterized gate: the NumPy step, on a stacked copy.
        view = np.stack([psi, lam], axis=1)
        if any(c in wanted_set for c in op.columns):
            part = np.zeros((b, 1, p))
            _gate_gradients(op, angles, wanted_set, view, n, part)
            vjp += part[:, 0]
        u = op.constant if op.constant is not None else op.matrices(angles)
        dagger = np.conj(u.swapaxes(-1, -2)).astype(np.complex128, copy=False)
        if dagger.shape[-3] != 1:
            dagger = np.repeat(dagger, 2, axis=-3)
        rows = view.reshape(2 * b, 1 << n)
        scratch = np.empty_like(rows)
        result = (scratch if apply_op(op, rows, scratch, n, dagger) else rows).reshape(view.shape)
        psi[:], lam[:] = result[:, 0], result[:, 1]
    return expectations, vjp


@dataclass(frozen=True, slots=True)
class _BlockStep:
    """What the backward walk needs of a block's factors, as arrays for one kernel call."""

    qubits: NDArray[np.int64]  # [F]
    daggers: Matrices  # [F, B, 2, 2]: the inverse of each factor's gates
    gens: Matrices  # [F, S, B, 2, 2]: generators A dG G^† A^† of its angles
    params: NDArray[np.intp]  # [F, S]: the parameter each generator adds to (-1: none)
    coeffs: NDArray[np.float64]  # [F, S]: its angle's coefficient


def _block_step(op: KronOp, angles: NDArray[np.float64], wanted: frozenset[int]) -> _BlockStep:
    """The block's factors' inverses and generators (see :func:`_sequence_generators`).

    Factors running the same gates (a layer's RX RY RZ on each qubit) get them built for
    all qubits at once, as :meth:`KronOp._factor_matrices` does.
    """
    f, b = len(op.factors), angles.shape[0]
    names = op.factors[0].names
    shape = [len(a) for a in op.factors[0].angles]
    uniform = all(x.names == names and [len(a) for a in x.angles] == shape for x in op.factors)
    qubits = op.qubit_array
    if not uniform:
        per_factor = [
            [(op.columns[c], coeff, h) for c, coeff, h in _sequence_generators(x, angles)]
            for x in op.factors
        ]
        slots = max(1, max(len(g) for g in per_factor))
        gens = np.zeros((f, slots, b, 2, 2), dtype=np.complex128)
        params = np.full((f, slots), -1, dtype=np.intp)
        coeffs = np.zeros((f, slots))
        for i, found in enumerate(per_factor):
            for k, (param, coeff, h) in enumerate(found):
                gens[i, k] = h
                if param in wanted:
                    params[i, k], coeffs[i, k] = param, coeff
        daggers = np.stack([np.conj(x.matrices(angles).swapaxes(-1, -2)) for x in op.factors])
        return _BlockStep(qubits, daggers, gens, params, coeffs)
    built: list[tuple[str, int, NDArray[np.float64], Matrices]] = []
    for g, name in enumerate(names):
        a = np.empty((f, b, shape[g]))
        for i, factor in enumerate(op.factors):
            for s, (coeff, col, offset) in enumerate(factor.angles[g]):
                a[i, :, s] = offset if col < 0 else coeff * angles[:, col] + offset
        built.append((name, g, a, gate_spec(name).matrix(a)))
    after: Matrices = np.broadcast_to(np.eye(2, dtype=np.complex128), (f, b, 2, 2))
    found_gens: list[Matrices] = []
    found_params: list[NDArray[np.intp]] = []
    found_coeffs: list[NDArray[np.float64]] = []
    for name, g, a, m in reversed(built):
        m_dagger = np.conj(m.swapaxes(-1, -2))
        after_dagger = np.conj(after.swapaxes(-1, -2))
        for s in range(shape[g]):
            specs = [factor.angles[g][s] for factor in op.factors]
            if all(col < 0 for _, col, _ in specs):
                continue
            found_gens.append(after @ (gate_derivative(name, a, s) @ m_dagger) @ after_dagger)
            found_params.append(
                np.array(
                    [
                        op.columns[c] if c >= 0 and op.columns[c] in wanted else -1
                        for _, c, _ in specs
                    ],
                    dtype=np.intp,
                )
            )
            found_coeffs.append(np.array([coeff for coeff, _, _ in specs]))
        after = after @ m
    daggers = np.ascontiguousarray(np.conj(after.swapaxes(-1, -2)))
    if not found_gens:
        gens = np.zeros((f, 1, b, 2, 2), dtype=np.complex128)
        return _BlockStep(qubits, daggers, gens, np.full((f, 1), -1, np.intp), np.zeros((f, 1)))
    return _BlockStep(
        qubits,
        daggers,
        np.ascontiguousarray(np.stack(found_gens, axis=1)),
        np.stack(found_params, axis=1),
        np.stack(found_coeffs, axis=1),
    )


def _pauli_image(
    psi: NDArray[np.complexfloating], j: NDArray[np.int64], term: Any
) -> NDArray[np.complexfloating]:
    """``P psi`` for every row: one gather and one sign vector (see _apply_observables)."""
    source = j ^ term.x_mask
    parity = np.bitwise_count(source & term.z_mask).astype(np.int64) & 1
    factor = (1j**term.num_y) * (1.0 - 2.0 * parity)
    out: NDArray[np.complexfloating] = psi[:, source] * factor
    return out


def _walk_back(
    plan: SimulationPlan,
    values: NDArray[np.float64],
    stack: NDArray[np.complexfloating],
    wanted: Sequence[int],
    dtype: type[np.complexfloating],
) -> NDArray[np.float64]:
    """The backward walk of ``stack`` ``[B, 1 + R, N]`` (``psi`` in row 0, the ``R``
    ``lambda`` rows after it): ``d <lambda_r|psi> / d theta`` as ``[B, R, P]``."""
    n = plan.num_qubits
    b, p = values.shape
    k = stack.shape[1] - 1
    jacobian = np.zeros((b, k, p))
    wanted_set = frozenset(int(i) for i in wanted)
    rows = stack.reshape(b * (1 + k), 1 << n)
    scratch = np.empty_like(rows)
    for op in reversed(plan.ops):
        if isinstance(op, MonomialOp):
            apply_op(op.inverse(), rows, scratch, n, None)
            rows, scratch = scratch, rows
            continue
        angles = values[:, list(op.columns)]
        view = rows.reshape(b, 1 + k, 1 << n)
        if any(c in wanted_set for c in op.columns):
            if isinstance(op, KronOp):
                _kron_gradients(op, angles, wanted_set, view, n, jacobian)
            else:
                _gate_gradients(op, angles, wanted_set, view, n, jacobian)
        u = op.constant if op.constant is not None else op.matrices(angles)
        dagger = np.conj(u.swapaxes(-1, -2)).astype(dtype, copy=False)
        if dagger.shape[-3] != 1:  # one per binding: one per psi and lambda row
            dagger = np.repeat(dagger, 1 + k, axis=-3)
        if apply_op(op, rows, scratch, n, dagger):
            rows, scratch = scratch, rows
    return jacobian


def _apply_observables(
    stack: NDArray[np.complexfloating], n: int, obs: tuple[Observable, ...]
) -> None:
    """Fill ``stack[:, 1 + k] = O_k stack[:, 0]``.

    ``P|j> = i^{#Y} (-1)^{|j & z|} |j ^ x>``, so ``(P psi)[j] = i^{#Y} (-1)^{|(j^x) & z|}
    psi[j ^ x]``: one gather and one sign vector per Pauli term.
    """
    terms, weights = pauli_terms(obs)
    psi = stack[:, 0]
    stack[:, 1:] = 0
    j = np.arange(1 << n, dtype=np.int64)
    for t, term in enumerate(terms):
        source = j ^ term.x_mask
        parity = np.bitwise_count(source & term.z_mask).astype(np.int64) & 1
        factor = (1j**term.num_y) * (1.0 - 2.0 * parity)
        applied = psi[:, source] * factor
        for o in np.flatnonzero(weights[t]):
            stack[:, 1 + o] += weights[t, o] * applied


def _real_overlaps(
    lam: NDArray[np.complexfloating], states: NDArray[np.complexfloating]
) -> NDArray[np.float64]:
    """``Re <lam_k|state_m>`` for every binding: ``[B, K, M]`` from ``[B, K, N]``, ``[B, M, N]``.

    ``Re(conj(a) b) = a.re b.re + a.im b.im`` is a plain dot product of the arrays' float
    views: one real matrix product, no conjugated copy and half the work of a complex one.
    """
    b = lam.shape[0]
    real = lam.real.dtype  # float32 views of complex64 rows, float64 of complex128
    left = lam.view(real).reshape(b, lam.shape[1], -1)
    right = states.view(real).reshape(b, states.shape[1], -1)
    out: NDArray[np.float64] = np.matmul(left, right.swapaxes(1, 2)).astype(np.float64, copy=False)
    return out


#: Pauli matrices, the basis a one-qubit generator is expanded in.
_PAULIS = np.array(
    [[[1, 0], [0, 1]], [[0, 1], [1, 0]], [[0, -1j], [1j, 0]], [[1, 0], [0, -1]]],
    dtype=np.complex128,
)


def _minus_i_pauli(
    psi: NDArray[np.complexfloating],
    out: NDArray[np.complexfloating],
    n: int,
    qubit: int,
    pauli: int,
) -> None:
    """``out = -i sigma_qubit |psi>`` for each row of ``psi`` ``[B, 2**n]`` (sigma = I, X, Y, Z)."""
    b = psi.shape[0]
    shape = (b, 1 << (n - qubit - 1), 2, 1 << qubit)
    v = psi.reshape(shape)
    o = out.reshape(shape)
    if pauli == 0:
        np.multiply(v, -1j, out=o)
    elif pauli == 1:
        np.multiply(v[:, :, 1], -1j, out=o[:, :, 0])
        np.multiply(v[:, :, 0], -1j, out=o[:, :, 1])
    elif pauli == 2:
        np.negative(v[:, :, 1], out=o[:, :, 0])
        o[:, :, 1] = v[:, :, 0]
    else:
        np.multiply(v[:, :, 0], -1j, out=o[:, :, 0])
        np.multiply(v[:, :, 1], 1j, out=o[:, :, 1])


def _kron_gradients(
    op: KronOp,
    angles: NDArray[np.float64],
    wanted: frozenset[int],
    view: NDArray[np.complexfloating],
    n: int,
    jacobian: NDArray[np.float64],
) -> None:
    """Accumulate the gradients through a block of one-qubit gate sequences.

    The generator of a parameter on qubit ``q`` is a one-qubit ``h = -i H / 2`` with
    ``H = sum_s c_s sigma_s`` Hermitian (real ``c``), so ``2 Re <lam|h psi>`` is
    ``sum_s c_s Re <lam| -i sigma_s psi>``: three or four cheap Pauli images of ``psi``
    per qubit serve all of that qubit's parameters, instead of one block product each.
    """
    b = view.shape[0]
    psi = view[:, 0]
    # (parameter, coefficient, qubit, Pauli coefficients [B, 4]) per wanted angle.
    terms: list[tuple[int, float, int, NDArray[np.float64]]] = []
    for position, sequence in enumerate(op.factors):
        qubit = op.low + op.width - 1 - position
        for column, coeff, h in _sequence_generators(sequence, angles):
            param = op.columns[column]
            if param in wanted:
                # H = 2i h; c_s = Tr(sigma_s H) / 2 = i Tr(sigma_s h).
                paulis = (1j * np.einsum("sij,bji->bs", _PAULIS, h)).real
                terms.append((param, coeff, qubit, paulis))
    needed = sorted(
        {(q, s) for _, _, q, c in terms for s in range(4) if np.any(np.abs(c[:, s]) > 1e-15)}
    )
    slot = {key: i for i, key in enumerate(needed)}
    images = np.empty((b, len(needed), 1 << n), dtype=view.dtype)
    for (qubit, pauli), i in slot.items():
        _minus_i_pauli(psi, images[:, i], n, qubit, pauli)
    overlaps = _real_overlaps(view[:, 1:], images)  # [B, K, M]
    for param, coeff, qubit, paulis in terms:
        for pauli in range(4):
            index = slot.get((qubit, pauli))
            if index is not None:
                jacobian[:, :, param] += coeff * paulis[:, pauli, None] * overlaps[:, :, index]


def _gate_gradients(
    op: GateOp,
    angles: NDArray[np.float64],
    wanted: frozenset[int],
    view: NDArray[np.complexfloating],
    n: int,
    jacobian: NDArray[np.float64],
) -> None:
    """Accumulate the gradients through one multi-qubit gate: ``2 Re <lam|G_p psi>``."""
    b = view.shape[0]
    total: dict[int, Matrices] = {}
    for column, coeff, h in _sequence_generators(op.sequence, angles):
        param = op.columns[column]
        if param in wanted:
            total[param] = total[param] + coeff * h if param in total else coeff * h
    params = sorted(total)
    c = len(params)
    generators = np.stack([total[p] for p in params], axis=1).astype(view.dtype, copy=False)
    tiled = np.repeat(view[:, :1], c, axis=1).reshape(b * c, 1 << n)
    spare = np.empty_like(tiled)
    m = generators.reshape(b * c, *generators.shape[2:])
    derived = spare if apply_op(op, tiled, spare, n, m) else tiled
    overlaps = _real_overlaps(view[:, 1:], derived.reshape(b, c, 1 << n))
    jacobian[:, :, params] += 2.0 * overlaps


def _sequence_generators(
    sequence: GateSequence, angles: NDArray[np.float64]
) -> list[tuple[int, float, Matrices]]:
    """``(column, coeff, A dG G^† A^†)`` for each parameterized angle of the sequence.

    ``A`` is the product of the sequence's gates after ``G``: the derivative of
    ``M = A G B`` is ``A dG B = (A dG G^† A^†) M``.
    """
    b = angles.shape[0]
    gates: list[
        tuple[str, tuple[tuple[float, int, float], ...], NDArray[np.float64], Matrices]
    ] = []
    for name, specs in zip(sequence.names, sequence.angles, strict=True):
        a = np.empty((b, len(specs)))
        for s, (coeff, column, offset) in enumerate(specs):
            a[:, s] = offset if column < 0 else coeff * angles[:, column] + offset
        gates.append((name, specs, a, gate_spec(name).matrix(a)))
    dim = gates[0][3].shape[-1]
    after: Matrices = np.broadcast_to(np.eye(dim, dtype=np.complex128), (b, dim, dim))
    out: list[tuple[int, float, Matrices]] = []
    for name, specs, a, g in reversed(gates):
        g_dagger = np.conj(g.swapaxes(-1, -2))
        for s, (coeff, column, _) in enumerate(specs):
            if column < 0:
                continue
            inner = gate_derivative(name, a, s) @ g_dagger
            out.append((column, coeff, after @ inner @ np.conj(after.swapaxes(-1, -2))))
        after = after @ g
    return out
