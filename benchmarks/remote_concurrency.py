"""Benchmark: one parameter-shift gradient on a remote backend with per-job latency.

Issue 13's bound: with a per-job latency λ and a concurrency limit c, one
parameter-shift gradient of P weights (2P + 1 jobs) finishes within
``1.1 x ceil((2P + 1) / c) x λ``. Measured against the loopback IonQ emulator
(``tests/ionq_emulator.py``, every job ``submitted`` for λ = 0.5 s before it runs), with
the real ``qiskit-ionq`` client, P = 24 (a 4-qubit, 2-layer hardware-efficient circuit)
and c = 8, through the ``BackendManager`` (job rows, reservations on a budget ledger in a
real SQLite file) on IonQ Aria prices. The gradient is timed after a first one, which
pays what a process pays once (importing qiskit-ionq and building its client, compiling
the registry's statements, the emulator's first simulations), as the other benchmarks
time after a warm-up; that first gradient's time is reported too.

    python benchmarks/remote_concurrency.py

Writes ``benchmarks/results/remote_concurrency.md``; exits 1 when the bound is missed.
"""

from __future__ import annotations

import asyncio
import math
import multiprocessing
import sys
import tempfile
import time
from multiprocessing.connection import Connection
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from backends import BackendManager, Budget  # noqa: E402
from backends.ionq import IonQBackend  # noqa: E402
from backends.templates import hardware_efficient_circuit  # noqa: E402
from quantum_db.accounting import SqlAccounting  # noqa: E402
from quantum_db.registry import Registry, upgrade  # noqa: E402
from quantum_ml.gradients import QuantumGradientComputer  # noqa: E402
from quantum_ml.training.execution import ManagedBackend  # noqa: E402
from tests.ionq_emulator import IonQEmulator  # noqa: E402

LATENCY_S = 0.5
CONCURRENCY = 8
API_KEY = "bench-key"


def serve_emulator(conn: Connection, latency_s: float) -> None:
    """The emulator in a process of its own, as IonQ is another machine: its work (running
    the circuits, JSON) does not take this process's cores or GIL from the client."""
    emulator = IonQEmulator(API_KEY).start()
    emulator.slow_jobs(latency_s)
    conn.send(emulator.url)
    conn.recv()  # "report"
    conn.send((len(emulator.calls("POST", "/jobs")), sum(j.cost for j in emulator.jobs.values())))
    emulator.stop()


async def measure(folder: Path, url: str) -> tuple[float, float, int, float]:
    registry = Registry(f"sqlite+aiosqlite:///{folder / 'ledger.sqlite'}")
    await upgrade(registry)
    try:
        accounting = SqlAccounting(registry)
        ionq = IonQBackend(
            "qpu.aria-1",
            "qiskit",
            api_key=API_KEY,
            api_url=url,
            poll_interval_s=0.01,
            max_poll_interval_s=0.02,
            error_mitigation=False,
            seed=3,
            # The gradient is one run of 2P + 1 bindings, one IonQ job each, sent
            # under this limit.
            max_concurrent_jobs=CONCURRENCY,
        )
        manager = BackendManager({"aria": ionq}, accounting=accounting, concurrency=CONCURRENCY)
        budget = Budget(usd=10_000.0, name="remote-bench")
        circuit = hardware_efficient_circuit(4, 2)
        n_inputs = 4
        p = circuit.num_parameters - n_inputs
        values = np.random.default_rng(0).uniform(0, 1, (1, circuit.num_parameters))
        computer = QuantumGradientComputer("parameter-shift")
        wrt = list(range(n_inputs, n_inputs + p))
        times = []
        # Another run id for each: the second must not re-attach to the first's jobs.
        for run_id in ("remote-bench-warm-up", "remote-bench"):
            backend = ManagedBackend(manager, "aria", budget=budget, run_id=run_id)
            start = time.perf_counter()
            await computer.jacobian(backend, circuit, values, ["ZIII"], shots=100, seed=1, wrt=wrt)
            times.append(time.perf_counter() - start)
        spent = await accounting.spent(budget)
        await manager.aclose()
        return times[1], times[0], p, spent
    finally:
        await registry.aclose()


def main() -> int:
    parent, child = multiprocessing.Pipe()
    server = multiprocessing.get_context("spawn").Process(
        target=serve_emulator, args=(child, LATENCY_S), daemon=True
    )
    server.start()
    try:
        url = parent.recv()
        with tempfile.TemporaryDirectory() as folder:
            seconds, first, p, spent = asyncio.run(measure(Path(folder), url))
        parent.send("report")
        jobs, billed = parent.recv()
    finally:
        server.join(timeout=30)
    waves = math.ceil((2 * p + 1) / CONCURRENCY)
    bound = 1.1 * waves * LATENCY_S
    text = (
        "# One parameter-shift gradient on a remote backend with per-job latency\n\n"
        f"IonQ emulator (in a process of its own), every job queued λ = {LATENCY_S} s; "
        f"P = {p} weights, concurrency c = {CONCURRENCY}, through the BackendManager and a "
        "SQLite budget ledger.\n\n"
        f"| jobs sent (both gradients) | waves ceil((2P+1)/c) | bound 1.1 x waves x λ | "
        "measured (the second) | ratio to the ideal waves x λ |\n|---:|---:|---:|---:|---:|\n"
        f"| {jobs} | {waves} | {bound:.2f} s | {seconds:.2f} s | "
        f"{seconds / (waves * LATENCY_S):.3f} |\n\n"
        f"The first gradient of the process (the warm-up) took {first:.2f} s. For both, the "
        f"ledger charges ${spent:.4f}; the emulator billed ${billed:.4f}.\n"
    )
    print(text)
    out = ROOT / "benchmarks/results/remote_concurrency.md"
    out.write_text(text)
    ok = seconds <= bound and jobs == 2 * (2 * p + 1) and math.isclose(spent, billed, abs_tol=1e-6)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
