"""Benchmark: one full gradient of the hardware-efficient circuit, quantum-db vs PennyLane.

The circuit is ``backends.templates.hardware_efficient_circuit(n, L)`` (RY(pi x) encoding,
L layers of RX RY RZ on every qubit and a CNOT chain), observables <Z_i> on every qubit.
One gradient is the Jacobian of all n expectations with respect to the P = 3nL weights,
for each of B inputs. Contenders, in the same run:

* quantum-db ``QuantumGradientComputer("parameter-shift")`` and ``("adjoint")`` on the
  built-in simulator;
* PennyLane ``default.qubit`` with ``diff_method="parameter-shift"``;
* PennyLane ``lightning.qubit`` with ``diff_method="adjoint"`` and ``"parameter-shift"``.

Every contender's Jacobian is checked against quantum-db's adjoint one (1e-8).

    python benchmarks/gradient.py                 # all sizes (several minutes)
    python benchmarks/gradient.py --sizes 8x3:1   # one case

Writes the table to ``benchmarks/results/gradient.md``.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from backends import SimulatorBackend  # noqa: E402
from backends.templates import hardware_efficient_circuit, z_observables  # noqa: E402
from quantum_ml.gradients import QuantumGradientComputer  # noqa: E402

CASES = ((8, 3, 1), (8, 3, 32), (12, 4, 1), (12, 4, 32), (16, 4, 1))


def best_of(fn: Callable[[], Any], repeats: int) -> tuple[float, Any]:
    result = fn()  # warm-up
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        result = fn()
        best = min(best, time.perf_counter() - start)
    return best, result


def pennylane_qnode(device: str, method: str, n: int, layers: int, **options: Any) -> Any:
    """The benchmark's circuit as a PennyLane QNode returning every <Z_q>."""
    import pennylane as qml

    dev = qml.device(device, wires=n)

    @qml.qnode(dev, diff_method=method, **options)
    def circuit(x: Any, w: Any) -> Any:
        for q in range(n):
            qml.RY(np.pi * x[q], wires=q)
        k = 0
        for _ in range(layers):
            for q in range(n):
                qml.RX(w[k], wires=q)
                qml.RY(w[k + 1], wires=q)
                qml.RZ(w[k + 2], wires=q)
                k += 3
            for q in range(n - 1):
                qml.CNOT(wires=[q, q + 1])
        return [qml.expval(qml.PauliZ(q)) for q in range(n)]

    return circuit


def pennylane_jacobian(device: str, method: str, n: int, layers: int) -> Callable[..., Any]:
    import pennylane as qml
    from pennylane import numpy as pnp

    circuit = pennylane_qnode(device, method, n, layers)

    def jac(x: np.ndarray, w: np.ndarray) -> np.ndarray:
        weights = pnp.array(w, requires_grad=True)
        out = qml.jacobian(lambda ww: qml.math.stack(circuit(x, ww)))(weights)
        return np.asarray(out)

    return jac


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default=",".join(f"{n}x{L}:{b}" for n, L, b in CASES))
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--output", type=Path, default=ROOT / "benchmarks/results/gradient.md")
    args = parser.parse_args()
    cases = []
    for item in args.sizes.split(","):
        size, batch = item.split(":")
        n, layers = (int(v) for v in size.split("x"))
        cases.append((n, layers, int(batch)))

    rows = []
    async with SimulatorBackend() as sim:
        for n, layers, batch in cases:
            circuit = hardware_efficient_circuit(n, layers)
            p = circuit.num_parameters - n
            rng = np.random.default_rng(1234)
            xs = rng.uniform(0, 1, (batch, n))
            w = rng.uniform(0, 2 * np.pi, p)
            values = np.hstack([xs, np.tile(w, (batch, 1))])
            wrt = list(range(n, n + p))
            obs = z_observables(n)
            timings: dict[str, float] = {}
            reference = None
            for method in ("adjoint", "parameter-shift"):
                computer = QuantumGradientComputer(method)  # type: ignore[arg-type]

                start = time.perf_counter()
                jac = await computer.jacobian(sim, circuit, values, obs, wrt=wrt)
                best = time.perf_counter() - start
                for _ in range(args.repeats):
                    start = time.perf_counter()
                    jac = await computer.jacobian(sim, circuit, values, obs, wrt=wrt)
                    best = min(best, time.perf_counter() - start)
                timings[f"qdb {method}"] = best
                jac = jac[:, :, n:]
                if reference is None:
                    reference = jac
                assert np.allclose(jac, reference, atol=1e-8), method
            for device, method in (
                ("default.qubit", "parameter-shift"),
                ("lightning.qubit", "adjoint"),
                ("lightning.qubit", "parameter-shift"),
            ):
                jac_fn = pennylane_jacobian(device, method, n, layers)
                slow = device == "default.qubit" and n >= 12
                repeats = 1 if slow or batch > 1 else args.repeats

                def all_inputs(
                    fn: Callable[..., Any] = jac_fn, xs: np.ndarray = xs, w: np.ndarray = w
                ) -> np.ndarray:
                    return np.stack([fn(x, w) for x in xs])

                seconds, pl = best_of(all_inputs, repeats) if not slow else (0.0, None)
                if slow:  # one timed pass, no warm-up: these take minutes
                    start = time.perf_counter()
                    pl = all_inputs()
                    seconds = time.perf_counter() - start
                assert reference is not None
                assert np.allclose(pl, reference, atol=1e-8), (device, method)
                timings[f"PL {device} {method}"] = seconds
            rows.append((n, layers, batch, p, timings))
            print(n, layers, batch, {k: round(v, 4) for k, v in timings.items()}, flush=True)

    names = [
        "qdb parameter-shift",
        "qdb adjoint",
        "PL default.qubit parameter-shift",
        "PL lightning.qubit adjoint",
        "PL lightning.qubit parameter-shift",
    ]
    lines = [
        "| n, L (P) | B | " + " | ".join(names) + " | default PS / qdb PS | "
        "lightning adjoint / qdb best |",
        "|---|---:|" + "---:|" * (len(names) + 2),
    ]
    for n, layers, batch, p, t in rows:
        qdb_best = min(t["qdb parameter-shift"], t["qdb adjoint"])
        cells = " | ".join(f"{t[k]:.4f}" for k in names)
        lines.append(
            f"| {n}, {layers} ({p}) | {batch} | {cells} | "
            f"{t['PL default.qubit parameter-shift'] / t['qdb parameter-shift']:.0f}x | "
            f"{t['PL lightning.qubit adjoint'] / qdb_best:.1f}x |"
        )
    load = os.getloadavg()[0]
    text = (
        "Seconds for one full gradient (best of the repeats after a warm-up; PennyLane "
        f"default.qubit at n >= 12 timed once). Load average at the end: {load:.2f}.\n\n"
        + "\n".join(lines)
        + "\n"
    )
    print(text)
    args.output.parent.mkdir(exist_ok=True)
    args.output.write_text(text)


if __name__ == "__main__":
    asyncio.run(main())
