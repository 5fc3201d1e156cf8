"""Benchmark: the simulator's numba kernels against the same loops in C, and numba's start-up.

Issue 13 asks for the hot loops to be compiled, choosing by measurement between numba and
a C/C++ extension. This script measures both on the same work, in one run:

* one 2x2 matrix applied to every amplitude pair of a qubit (``apply_one``, what a
  one-qubit factor costs), at a low, a middle and the top qubit of a 16-qubit state;
* the adjoint step through one qubit (``adjoint_step``: the overlaps of ``lambda`` with
  ``psi`` over the qubit's pairs, then the inverse applied to both states);
* numba's start-up in a fresh process: compiling every kernel with an empty cache, and
  loading them from the cache (what every later process pays);
* the overhead of a small run: ``await sim.run(...)`` of a cached 4-qubit, 2-layer
  circuit with 32 bindings against the compiled tape call alone (its arithmetic).

The C versions are written here (not in the package), compiled with
``cc -O3 -march=native -shared -fPIC`` and called through ctypes, one thread like the
numba kernels. Both get the same arrays; their results are compared (1e-12).

    python benchmarks/kernels.py       # writes benchmarks/results/kernels.md
"""

from __future__ import annotations

import ctypes
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from backends.simulator import kernels  # noqa: E402

C_SOURCE = r"""
#include <complex.h>
#include <stdint.h>
typedef double complex cplx;

void apply_one(cplx *row, int64_t size, int64_t qubit, const cplx *m) {
    int64_t step = (int64_t)1 << qubit;
    cplx m00 = m[0], m01 = m[1], m10 = m[2], m11 = m[3];
    for (int64_t start = 0; start < size; start += 2 * step)
        for (int64_t i = start; i < start + step; ++i) {
            cplx a = row[i], b = row[i + step];
            row[i] = m00 * a + m01 * b;
            row[i + step] = m10 * a + m11 * b;
        }
}

void adjoint_step(cplx *psi, cplx *lam, int64_t size, int64_t qubit, const cplx *d,
                  cplx *sums) {
    int64_t step = (int64_t)1 << qubit;
    cplx d00 = d[0], d01 = d[1], d10 = d[2], d11 = d[3];
    cplx s00 = 0, s01 = 0, s10 = 0, s11 = 0;
    for (int64_t start = 0; start < size; start += 2 * step)
        for (int64_t i = start; i < start + step; ++i) {
            cplx a = psi[i], b = psi[i + step], x = lam[i], y = lam[i + step];
            s00 += conj(x) * a; s01 += conj(x) * b; s10 += conj(y) * a; s11 += conj(y) * b;
            psi[i] = d00 * a + d01 * b; psi[i + step] = d10 * a + d11 * b;
            lam[i] = d00 * x + d01 * y; lam[i + step] = d10 * x + d11 * y;
        }
    sums[0] = s00; sums[1] = s01; sums[2] = s10; sums[3] = s11;
}
"""

QUBITS = 16
REPEATS = 200


def build_c(folder: Path) -> ctypes.CDLL:
    source = folder / "kernels.c"
    library = folder / "kernels.so"
    source.write_text(C_SOURCE)
    cc = shutil.which("cc") or shutil.which("gcc")
    if cc is None:
        raise SystemExit("no C compiler (cc) on PATH")
    # -fcx-limited-range: the textbook complex product, as numba computes it (C99 Annex G
    # otherwise calls __muldc3 for the NaN and infinity corner cases).
    flags = ["-O3", "-march=native", "-shared", "-fPIC", "-fcx-limited-range"]
    subprocess.run([cc, *flags, str(source), "-o", str(library)], check=True)
    return ctypes.CDLL(str(library))


def per_call(fn: Callable[[], object]) -> float:
    fn()
    start = time.perf_counter()
    for _ in range(REPEATS):
        fn()
    return (time.perf_counter() - start) / REPEATS


def startup(cache: Path) -> float:
    """Seconds for a fresh process to get every kernel ready with numba's cache in ``cache``."""
    code = "from backends.simulator.kernels import warm; print(warm())"
    env = {**os.environ, "NUMBA_CACHE_DIR": str(cache), "PYTHONPATH": str(ROOT)}
    out = subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True
    )
    return float(out.stdout.strip().splitlines()[-1])


def small_run() -> tuple[float, float]:
    """Seconds per cached 4-qubit, 32-binding ``run`` and per tape call inside it."""
    import asyncio

    from backends import SimulatorBackend
    from backends.simulator.tape import tape_term_values
    from backends.templates import hardware_efficient_circuit, z_observables

    circuit = hardware_efficient_circuit(4, 2)
    values = np.random.default_rng(0).uniform(0, 1, (32, circuit.num_parameters))
    obs = z_observables(4)

    async def measure() -> tuple[float, float]:
        async with SimulatorBackend() as sim:
            for _ in range(50):
                await sim.run(circuit, values, observables=obs)
            start = time.perf_counter()
            for _ in range(REPEATS * 5):
                await sim.run(circuit, values, observables=obs)
            whole = (time.perf_counter() - start) / (REPEATS * 5)
            tape = sim._tape(circuit, sim._plan(circuit)[0])
            assert tape is not None
            measurement = sim._measurement(
                4, tuple(sim.validate(circuit, values, obs).observables or ())
            )
            out = np.empty((32, len(measurement.terms)))
            order = np.arange(32, dtype=np.int64)
            arithmetic = per_call(
                lambda: tape_term_values(tape, values, measurement, order, False, out)
            )
            return whole, arithmetic

    return asyncio.run(measure())


def main() -> None:
    rng = np.random.default_rng(0)
    size = 1 << QUBITS
    state = rng.normal(size=(1, size)) + 1j * rng.normal(size=(1, size))
    state /= np.linalg.norm(state)
    theta = 0.3
    m = np.array([[np.cos(theta), -1j * np.sin(theta)], [-1j * np.sin(theta), np.cos(theta)]])
    k = kernels.kernels()
    ptr = ctypes.POINTER(ctypes.c_double)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        lib = build_c(Path(tmp))
        for qubit in (0, 8, QUBITS - 1):
            a, b = state.copy(), state.copy()
            k.apply_one(a, qubit, m[None])
            lib.apply_one(
                b.ctypes.data_as(ptr), ctypes.c_int64(size), ctypes.c_int64(qubit),
                np.ascontiguousarray(m).ctypes.data_as(ptr),
            )  # fmt: skip
            assert np.allclose(a, b, atol=1e-12, rtol=0)
            # Unitary m: repeated calls keep the state's norm (no denormals creep in).
            t_numba = per_call(lambda a=a, q=qubit: k.apply_one(a, q, m[None]))
            t_c = per_call(
                lambda b=b, q=qubit: lib.apply_one(
                    b.ctypes.data_as(ptr), ctypes.c_int64(size), ctypes.c_int64(q),
                    np.ascontiguousarray(m).ctypes.data_as(ptr),
                )
            )  # fmt: skip
            rows.append((f"2x2 on qubit {qubit}", t_numba, t_c))
            psi, lam = state.copy(), state[:, ::-1].copy()
            psi_c, lam_c = psi.copy(), lam.copy()
            gens = np.zeros((1, 1, 2, 2), dtype=np.complex128)
            gens[0, 0, 0, 0] = 1.0
            out = np.zeros((1, 1))
            sums = np.zeros(4, dtype=np.complex128)
            dagger = np.conj(m.T)
            k.adjoint_step(psi, lam, qubit, dagger[None], gens, out)
            lib.adjoint_step(
                psi_c.ctypes.data_as(ptr), lam_c.ctypes.data_as(ptr), ctypes.c_int64(size),
                ctypes.c_int64(qubit), np.ascontiguousarray(dagger).ctypes.data_as(ptr),
                sums.ctypes.data_as(ptr),
            )  # fmt: skip
            assert np.allclose(psi, psi_c, atol=1e-12, rtol=0)
            assert abs(out[0, 0] - sums[0].real) < 1e-12
            d_numba, d_c = dagger[None].copy(), np.ascontiguousarray(dagger)
            t_numba = per_call(
                lambda p=psi, lm=lam, q=qubit, d=d_numba, g=gens, o=out: k.adjoint_step(
                    p, lm, q, d, g, o
                )
            )
            t_c = per_call(
                lambda p=psi_c, lm=lam_c, q=qubit, d=d_c, s=sums: lib.adjoint_step(
                    p.ctypes.data_as(ptr), lm.ctypes.data_as(ptr), ctypes.c_int64(size),
                    ctypes.c_int64(q), d.ctypes.data_as(ptr), s.ctypes.data_as(ptr),
                )
            )  # fmt: skip
            rows.append((f"adjoint step, qubit {qubit}", t_numba, t_c))
        cold = startup(Path(tmp) / "numba-cache")  # empty: compiles everything
        warm = startup(Path(tmp) / "numba-cache")  # the same cache: loads it
    whole, arithmetic = small_run()
    lines = [
        f"| kernel ({QUBITS} qubits, one thread) | numba µs | C µs | numba / C |",
        "|---|---:|---:|---:|",
    ]
    for name, t_numba, t_c in rows:
        lines.append(f"| {name} | {t_numba * 1e6:.0f} | {t_c * 1e6:.0f} | {t_numba / t_c:.2f} |")
    load = os.getloadavg()[0]
    text = (
        "Per call, best of one warm-up then the mean of "
        f"{REPEATS} calls; C by `cc -O3 -march=native -fcx-limited-range` through ctypes.\n\n"
        + "\n".join(lines)
        + f"\n\nnumba start-up in a fresh process: {cold:.1f} s compiling every kernel "
        f"(empty cache), {warm:.2f} s loading them from the cache.\n\n"
        f"A cached 4-qubit, 32-binding `run`: {whole * 1e6:.0f} µs, of which the tape call "
        f"(the arithmetic) {arithmetic * 1e6:.0f} µs: {(whole - arithmetic) * 1e6:.0f} µs "
        f"of overhead. Load average at the end: {load:.2f}.\n"
    )
    print(text)
    out_path = ROOT / "benchmarks/results/kernels.md"
    out_path.parent.mkdir(exist_ok=True)
    out_path.write_text(text)


if __name__ == "__main__":
    main()
