"""Benchmark: the loss gradient by a vector-Jacobian product, quantum-db vs PennyLane lightning.

The workload of issue 13 and ``benchmarks/gradient.py``: ``hardware_efficient_circuit(n, L)``
(RY(pi x) encoding, L layers of RX RY RZ on every qubit and a CNOT chain); the loss is
``mean_b sum_q <Z_q>_b``; its gradient is taken over all P = 3nL weights, in float64.
Training needs that gradient, never the Jacobian. Contenders, in one run:

* quantum-db ``SimulatorBackend.compute_vjp`` (one adjoint pass per input, of the summed
  observable) through ``QuantumGradientComputer("adjoint").value_and_vjp``;
* quantum-db ``adjoint_jacobian`` (one backward pass per observable) contracted after;
* PennyLane ``lightning.qubit``, ``diff_method="adjoint"``, ``device_vjp=True``, and
  without it, the gradient of the same loss by ``qml.grad``.

Every gradient is checked against quantum-db's VJP to 1e-8.

    python benchmarks/vjp.py                      # 12x4:1, 16x4:1, 16x4:32 (about 2 min)
    python benchmarks/vjp.py --sizes 16x4:1

Writes the table to ``benchmarks/results/vjp.md``.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from backends import SimulatorBackend  # noqa: E402
from backends.templates import hardware_efficient_circuit, z_observables  # noqa: E402
from benchmarks.gradient import best_of, pennylane_qnode  # noqa: E402
from quantum_ml.gradients import QuantumGradientComputer  # noqa: E402

CASES = ((12, 4, 1), (16, 4, 1), (16, 4, 32))


async def best_async(fn: Callable[[], Awaitable[Any]], repeats: int) -> tuple[float, Any]:
    result = await fn()
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        result = await fn()
        best = min(best, time.perf_counter() - start)
    return best, result


def lightning_gradient(n: int, layers: int, device_vjp: bool) -> Callable[..., Any]:
    import pennylane as qml
    from pennylane import numpy as pnp

    circuit = pennylane_qnode("lightning.qubit", "adjoint", n, layers, device_vjp=device_vjp)

    def grad(xs: np.ndarray, w: np.ndarray) -> np.ndarray:
        def loss(ww: Any) -> Any:
            total = 0.0
            for x in xs:
                total = total + qml.math.sum(qml.math.stack(circuit(x, ww)))
            return total / len(xs)

        return np.asarray(qml.grad(loss)(pnp.array(w, requires_grad=True)))

    return grad


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default=",".join(f"{n}x{L}:{b}" for n, L, b in CASES))
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--output", type=Path, default=ROOT / "benchmarks/results/vjp.md")
    args = parser.parse_args()
    rows = []
    computer = QuantumGradientComputer("adjoint")
    async with SimulatorBackend() as sim:
        for item in args.sizes.split(","):
            size, batch_text = item.split(":")
            n, layers = (int(v) for v in size.split("x"))
            batch = int(batch_text)
            circuit = hardware_efficient_circuit(n, layers)
            p = circuit.num_parameters - n
            rng = np.random.default_rng(1234)
            xs = rng.uniform(0, 1, (batch, n))
            w = rng.uniform(0, 2 * np.pi, p)
            values = np.hstack([xs, np.tile(w, (batch, 1))])
            wrt = list(range(n, n + p))
            obs = z_observables(n)
            cot = np.full((batch, n), 1.0 / batch)
            repeats = args.repeats if batch == 1 else 1

            async def by_vjp(
                circuit: Any = circuit,
                values: Any = values,
                obs: Any = obs,
                cot: Any = cot,
                wrt: Any = wrt,
                n: int = n,
            ) -> np.ndarray:
                _, v = await computer.value_and_vjp(sim, circuit, values, obs, cot, wrt=wrt)
                return v[:, n:].sum(axis=0)

            async def by_jacobian(
                circuit: Any = circuit,
                values: Any = values,
                obs: Any = obs,
                cot: Any = cot,
                wrt: Any = wrt,
                n: int = n,
            ) -> np.ndarray:
                _, jac = await sim.adjoint_jacobian(circuit, values, obs, wrt=wrt)
                return np.einsum("bk,bkp->p", cot, jac[:, :, n:])

            t_vjp, g = await best_async(by_vjp, repeats)
            t_jac, g_jac = await best_async(by_jacobian, repeats)
            assert np.allclose(g_jac, g, atol=1e-8)
            timings = {"qdb vjp": t_vjp, "qdb jacobian": t_jac}
            for flag in (True, False):
                fn = lightning_gradient(n, layers, flag)
                seconds, pl = best_of(lambda fn=fn, xs=xs, w=w: fn(xs, w), repeats)
                assert np.allclose(pl, g, atol=1e-8), flag
                timings[f"lightning adjoint{' device_vjp' if flag else ''}"] = seconds
            rows.append((n, layers, batch, p, timings))
            print(n, layers, batch, {k: round(v, 4) for k, v in timings.items()}, flush=True)
    names = ["qdb vjp", "qdb jacobian", "lightning adjoint device_vjp", "lightning adjoint"]
    lines = [
        "| n, L (P) | B | " + " | ".join(names) + " | qdb vjp / best lightning |",
        "|---|---:|" + "---:|" * (len(names) + 1),
    ]
    for n, layers, batch, p, t in rows:
        best_peer = min(t["lightning adjoint device_vjp"], t["lightning adjoint"])
        cells = " | ".join(f"{t[k]:.4f}" for k in names)
        lines.append(
            f"| {n}, {layers} ({p}) | {batch} | {cells} | {t['qdb vjp'] / best_peer:.2f} |"
        )
    text = (
        "Seconds for one loss gradient (best of the repeats after a warm-up; B = 32 timed "
        f"once after a warm-up). Load average at the end: {os.getloadavg()[0]:.2f}.\n\n"
        + "\n".join(lines)
        + "\n"
    )
    print(text)
    args.output.parent.mkdir(exist_ok=True)
    args.output.write_text(text)


if __name__ == "__main__":
    asyncio.run(main())
