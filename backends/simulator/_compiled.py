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
            # _step_pairs' loop inlined: slices of fewer than _SLICED_STEP amplitudes cost
            # more than the pairs they hold (the same split as apply_one's).
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


# ----------------------------------------------------------------------------- the tape
# A whole exact run in one call (see tape.py): every binding evolved gate by gate in
# buffers that stay in cache, each restarting from the state before the first op whose
# angles differ from the previous binding's, then measured on the observables' terms.

_RX, _RY, _RZ, _P, _U = 1, 2, 3, 4, 5


@_jit
def _parity(v):
    v ^= v >> 32
    v ^= v >> 16
    v ^= v >> 8
    v ^= v >> 4
    v ^= v >> 2
    v ^= v >> 1
    return v & 1


@_jit
def _factor_matrix(row, first, count, codes, consts, cols, coeffs, offsets, m):
    # The product of the factor's gates (first applied first) into ``m``, on scalars: no
    # allocation per gate.
    m00, m01, m10, m11 = 1.0 + 0j, 0j, 0j, 1.0 + 0j
    for item in range(first, first + count):
        code = codes[item, 0]
        if code == 0:
            k = codes[item, 1]
            g00, g01, g10, g11 = consts[k, 0, 0], consts[k, 0, 1], consts[k, 1, 0], consts[k, 1, 1]
        else:
            c0, c1, c2 = cols[item, 0], cols[item, 1], cols[item, 2]
            a0 = offsets[item, 0] if c0 < 0 else coeffs[item, 0] * row[c0] + offsets[item, 0]
            half = 0.5 * a0
            co, si = np.cos(half), np.sin(half)
            if code == _RX:
                g00, g01, g10, g11 = co + 0j, -1j * si, -1j * si, co + 0j
            elif code == _RY:
                g00, g01, g10, g11 = co + 0j, -si + 0j, si + 0j, co + 0j
            elif code == _RZ:
                g00, g01, g10, g11 = co - 1j * si, 0j, 0j, co + 1j * si
            elif code == _P:  # exp(i a) from the half angle's cosine and sine
                g00, g01, g10, g11 = 1.0 + 0j, 0j, 0j, (co * co - si * si) + 2j * co * si
            else:
                phi = offsets[item, 1] if c1 < 0 else coeffs[item, 1] * row[c1] + offsets[item, 1]
                lam = offsets[item, 2] if c2 < 0 else coeffs[item, 2] * row[c2] + offsets[item, 2]
                g00, g01 = co + 0j, -np.exp(1j * lam) * si
                g10, g11 = np.exp(1j * phi) * si, np.exp(1j * (phi + lam)) * co
        m00, m01, m10, m11 = (
            g00 * m00 + g01 * m10,
            g00 * m01 + g01 * m11,
            g10 * m00 + g11 * m10,
            g10 * m01 + g11 * m11,
        )
    m[0, 0], m[0, 1], m[1, 0], m[1, 1] = m00, m01, m10, m11


@_jit
def _rotate_pairs_into(xs, ys, xd, yd, m00, m01, m10, m11):
    for i in range(xs.shape[0]):
        a, b = xs[i], ys[i]
        xd[i] = m00 * a + m01 * b
        yd[i] = m10 * a + m11 * b


@_jit
def _rotate_into(src, dst, qubit, m):
    size = src.shape[0]
    step = 1 << qubit
    m00, m01, m10, m11 = m[0, 0], m[0, 1], m[1, 0], m[1, 1]
    if step >= 8:  # contiguous runs as slices, which LLVM vectorizes (see _SLICED_STEP)
        for start in range(0, size, 2 * step):
            mid, end = start + step, start + 2 * step
            _rotate_pairs_into(src[start:mid], src[mid:end], dst[start:mid], dst[mid:end],
                               m00, m01, m10, m11)  # fmt: skip
        return
    for start in range(0, size, 2 * step):
        for i0 in range(start, start + step):
            a, b = src[i0], src[i0 + step]
            dst[i0] = m00 * a + m01 * b
            dst[i0 + step] = m10 * a + m11 * b


@_jit
def _differs(entry, codes, cols, values, r, prev):
    if entry[0] != 0:
        return False
    for item in range(entry[2], entry[2] + entry[3]):
        if codes[item, 0] == 0:
            continue
        for s in range(3):
            c = cols[item, s]
            if c >= 0 and values[r, c] != values[prev, c]:
                return True
    return False


@_jit
def run_tape(
    values, order, entries, codes, consts, cols, coeffs, offsets, perms, phases,
    num_qubits, share, x_masks, z_masks, y_phases, out,
):  # fmt: skip
    size = 1 << num_qubits
    count = entries.shape[0]
    buffers = np.empty((count + 1 if share else 2, size), dtype=np.complex128)
    m = np.empty((2, 2), dtype=np.complex128)
    prev = -1
    for idx in range(order.shape[0]):
        r = order[idx]
        start = 0
        if share and prev >= 0:
            start = count
            for t in range(count):
                if _differs(entries[t], codes, cols, values, r, prev):
                    start = t
                    break
        if start == 0:
            buffers[0, :] = 0.0
            buffers[0, 0] = 1.0
        for t in range(start, count):
            src = buffers[t] if share else buffers[t & 1]
            dst = buffers[t + 1] if share else buffers[(t + 1) & 1]
            kind, target = entries[t, 0], entries[t, 1]
            if kind == 0:
                _factor_matrix(values[r], entries[t, 2], entries[t, 3], codes, consts, cols,
                               coeffs, offsets, m)  # fmt: skip
                _rotate_into(src, dst, target, m)
            else:
                source, phase = perms[target], phases[target]
                for j in range(size):
                    dst[j] = phase[j] * src[source[j]]
        psi = buffers[count] if share else buffers[count & 1]
        _measure(psi, x_masks, z_masks, y_phases, out[r])
        prev = r


@_jit
def _measure(psi, x_masks, z_masks, y_phases, out):
    # <psi|P|psi> = i^{#Y} sum_j conj(psi[j ^ x]) psi[j] (-1)^{|j & z|}; the diagonal terms
    # (x = 0) read the probabilities, one vectorizable loop per term.
    size = psi.shape[0]
    terms = x_masks.shape[0]
    probs = np.empty(size)
    for j in range(size):
        probs[j] = psi[j].real * psi[j].real + psi[j].imag * psi[j].imag
    for t in range(terms):
        x, z = x_masks[t], z_masks[t]
        if x == 0:
            acc = 0.0
            for j in range(size):
                acc += probs[j] * (1 - 2 * _parity(j & z))
            out[t] = acc
            continue
        total = 0j
        for j in range(size):
            total += psi[j ^ x].conjugate() * psi[j] * (1 - 2 * _parity(j & z))
        out[t] = (y_phases[t] * total).real


@_jit
def apply_observable(psi, x_masks, z_masks, y_phases, coefficients, lam, term_values):
    # lam[u] = sum_t c[u, t] P_t psi[u] and term_values[u, t] = <psi[u]|P_t|psi[u]>, with
    # (P psi)[j] = i^{#Y} (-1)^{|(j ^ x) & z|} psi[j ^ x]; diagonal terms share one pass.
    rows, size = psi.shape
    terms = x_masks.shape[0]
    for u in range(rows):
        p = psi[u]
        out = lam[u]
        for t in range(terms):
            term_values[u, t] = 0.0
        for j in range(size):
            a = p[j]
            prob = a.real * a.real + a.imag * a.imag
            weight = 0.0
            for t in range(terms):
                if x_masks[t] == 0:
                    sign = 1.0 - 2.0 * _parity(j & z_masks[t])
                    weight += coefficients[u, t] * sign
                    term_values[u, t] += prob * sign
            out[j] = weight * a
        for t in range(terms):
            x = x_masks[t]
            if x == 0:
                continue
            acc = 0.0
            for j in range(size):
                k = j ^ x
                image = y_phases[t] * (1.0 - 2.0 * _parity(k & z_masks[t])) * p[k]
                acc += (p[j].conjugate() * image).real
                out[j] += coefficients[u, t] * image
            term_values[u, t] = acc


@_jit
def adjoint_factors(psi, lam, qubits, daggers, generators, out):
    # A compiled block's backward step: factor f on qubit qubits[f], out[f] = its overlaps.
    for f in range(qubits.shape[0]):
        adjoint_step(psi, lam, qubits[f], daggers[f], generators[f], out[f])
