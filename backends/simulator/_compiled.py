"""The numba kernels behind :mod:`.kernels` (imported only when the compiled path runs).

Amplitude ``j`` holds qubit ``q`` in bit ``q``. A block on qubits ``low .. low + w - 1``
reads its matrix index from bits ``low ..`` of ``j``: ``j = base | (c << low)`` with
``base`` the amplitude with those bits cleared. Matrices come as ``[1|U, d, d]``: one for
every row, or one per row.
"""

from __future__ import annotations

import numpy as np
from numba import njit

#: ``reassoc`` and ``contract`` let LLVM vectorize the overlap sums and fuse multiply-adds
#: (the sums' rounding then differs from NumPy's by a few ulps); no flag that assumes
#: finite values, so NaN and infinity propagate as in NumPy.
_jit = njit(cache=True, nogil=True, fastmath={"reassoc", "contract"}, error_model="numpy")


#: From this pair distance on, pairs are walked as two slices of contiguous amplitudes,
#: which LLVM vectorizes (it cannot prove that indices ``i`` and ``i + step`` of one array
#: never alias); below it, as one flat loop (slices of a few elements cost more).
_SLICED_STEP = 16


@_jit
def _rotate(x, y, m00, m01, m10, m11):
    for i in range(x.shape[0]):
        a, b = x[i], y[i]
        x[i] = m00 * a + m01 * b
        y[i] = m10 * a + m11 * b


@_jit
def apply_one(states, qubit, m):
    # In place, one 2x2 matrix on the amplitude pairs (i, i + step) of every row.
    rows, size = states.shape
    step = 1 << qubit
    for u in range(rows):
        r = u if m.shape[0] > 1 else 0
        m00, m01, m10, m11 = m[r, 0, 0], m[r, 0, 1], m[r, 1, 0], m[r, 1, 1]
        row = states[u]
        if step >= _SLICED_STEP:
            for start in range(0, size, 2 * step):
                _rotate(row[start : start + step], row[start + step : start + 2 * step],
                        m00, m01, m10, m11)  # fmt: skip
            continue
        for start in range(0, size, 2 * step):
            for i0 in range(start, start + step):
                a, b = row[i0], row[i0 + step]
                row[i0] = m00 * a + m01 * b
                row[i0 + step] = m10 * a + m11 * b


@_jit
def apply_factors(states, qubits, m):
    # A compiled KronOp: factor f (``m[f]``, ``[1|U, 2, 2]``) on qubit ``qubits[f]``.
    for f in range(qubits.shape[0]):
        apply_one(states, qubits[f], m[f])


@_jit
def apply_block(states, low, width, m):
    # In place: each group's ``d`` amplitudes are read into ``tmp`` before any is written.
    rows, size = states.shape
    d = 1 << width
    below = (1 << low) - 1
    groups = size >> width
    tmp = np.empty(d, dtype=np.complex128)
    for u in range(rows):
        mu = m[u] if m.shape[0] > 1 else m[0]
        for g in range(groups):
            base = ((g & ~below) << width) | (g & below)
            for c in range(d):
                tmp[c] = states[u, base | (c << low)]
            for r in range(d):
                acc = 0j
                for c in range(d):
                    acc += mu[r, c] * tmp[c]
                states[u, base | (r << low)] = acc


@_jit
def gather(states, out, source):
    rows, size = states.shape
    for u in range(rows):
        for j in range(size):
            out[u, j] = states[u, source[j]]


@_jit
def gather_phase(states, out, source, phase):
    rows, size = states.shape
    for u in range(rows):
        for j in range(size):
            out[u, j] = phase[j] * states[u, source[j]]


@_jit
def _step_pairs(p0, p1, q0, q1, d00, d01, d10, d11, sums):
    s00 = 0j
    s01 = 0j
    s10 = 0j
    s11 = 0j
    for i in range(p0.shape[0]):
        a, b = p0[i], p1[i]
        x, y = q0[i], q1[i]
        xc, yc = x.conjugate(), y.conjugate()
        s00 += xc * a
        s01 += xc * b
        s10 += yc * a
        s11 += yc * b
        p0[i] = d00 * a + d01 * b
        p1[i] = d10 * a + d11 * b
        q0[i] = d00 * x + d01 * y
        q1[i] = d10 * x + d11 * y
    sums[0] += s00
    sums[1] += s01
    sums[2] += s10
    sums[3] += s11


@_jit
def adjoint_step(psi, lam, qubit, dagger, generators, out):
    # Re <lam|h|psi> = Re sum_ij h_ij S_ij with S_ij = sum over the qubit's amplitude
    # pairs of conj(lam_i) psi_j: four sums per row serve every generator of the qubit.
    rows, size = psi.shape
    step = 1 << qubit
    sums = np.zeros(4, dtype=np.complex128)
    for u in range(rows):
        r = u if dagger.shape[0] > 1 else 0
        d00, d01, d10, d11 = dagger[r, 0, 0], dagger[r, 0, 1], dagger[r, 1, 0], dagger[r, 1, 1]
        sums[:] = 0
        p = psi[u]
        q = lam[u]
        if step >= _SLICED_STEP:
            for start in range(0, size, 2 * step):
                lo, hi = start + step, start + 2 * step
                _step_pairs(p[start:lo], p[lo:hi], q[start:lo], q[lo:hi],
                            d00, d01, d10, d11, sums)  # fmt: skip
        else:
            s00 = 0j
            s01 = 0j
            s10 = 0j
            s11 = 0j
            for start in range(0, size, 2 * step):
                for i0 in range(start, start + step):
                    i1 = i0 + step
                    a, b = p[i0], p[i1]
                    x, y = q[i0], q[i1]
                    xc, yc = x.conjugate(), y.conjugate()
                    s00 += xc * a
                    s01 += xc * b
                    s10 += yc * a
                    s11 += yc * b
                    p[i0] = d00 * a + d01 * b
                    p[i1] = d10 * a + d11 * b
                    q[i0] = d00 * x + d01 * y
                    q[i1] = d10 * x + d11 * y
            sums[0] += s00
            sums[1] += s01
            sums[2] += s10
            sums[3] += s11
        for g in range(generators.shape[0]):
            h = generators[g, u if generators.shape[1] > 1 else 0]
            v = h[0, 0] * sums[0] + h[0, 1] * sums[1] + h[1, 0] * sums[2] + h[1, 1] * sums[3]
            out[u, g] = v.real
