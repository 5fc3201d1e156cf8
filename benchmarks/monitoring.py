"""Benchmark: what watching a run costs. The demo's training with every monitor on vs off.

What it measures
----------------
``qdb demo``'s training (two moons, a 4-qubit hybrid classifier, 330 adjoint steps with
validation every epoch and checkpoints, on the built-in simulator; real SQLite files)
run with ``monitors=False`` and with ``monitors=True``: quantum metrics every 10 steps
(entanglement, fidelities, gradient statistics, circuit metrics), system metrics every
5 s behind the resource guard, and the training and budget alert rules evaluated every
step and epoch. The time is ``QuantumTrainer.fit``'s alone (``DemoResult.train_seconds``),
each repeat on a fresh database, the two variants alternated so that a change in the
machine's load hits both. It reports the medians and their ratio, and exits 1 when the
monitored median is more than ``--limit`` (default 10%) above the plain one.

Both variants must train the same model: the final test accuracy and the number of steps
are checked equal (the monitors only read the run).

How to run
----------
From the repository root::

    python benchmarks/monitoring.py                 # 7 repeats each, about a minute
    python benchmarks/monitoring.py --repeats 3

The Markdown report goes to ``benchmarks/results/monitoring.md``.
"""

from __future__ import annotations

import argparse
import asyncio
import platform
import statistics
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from quantum_ml.training_demo import run_training_demo  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results" / "monitoring.md"


async def one(monitors: bool) -> tuple[float, float | None]:
    with tempfile.TemporaryDirectory() as folder:
        result = await run_training_demo(
            f"sqlite:///{folder}/bench.sqlite", verbose=False, monitors=monitors
        )
    return result.train_seconds, result.test_accuracy


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--repeats", type=int, default=7, help="runs of each variant")
    parser.add_argument("--limit", type=float, default=0.10, help="allowed slowdown (0.10: 10%%)")
    parser.add_argument("--output", type=Path, default=RESULTS)
    args = parser.parse_args(argv)
    times: dict[bool, list[float]] = {False: [], True: []}
    accuracies: dict[bool, set[float | None]] = {False: set(), True: set()}
    asyncio.run(one(False))  # warm-up: imports, first-use caches
    for _ in range(args.repeats):
        for monitors in (False, True):
            seconds, accuracy = asyncio.run(one(monitors))
            times[monitors].append(seconds)
            accuracies[monitors].add(accuracy)
    if accuracies[False] != accuracies[True] or len(accuracies[False]) != 1:
        print(f"the variants trained differently: {accuracies}", file=sys.stderr)
        return 1
    plain = statistics.median(times[False])
    watched = statistics.median(times[True])
    ratio = watched / plain
    lines = [
        "# Monitoring overhead: the demo's training, every monitor on vs off",
        "",
        f"{platform.processor() or platform.machine()}, Python {platform.python_version()}, "
        f"{args.repeats} repeats of each variant, alternated, fresh SQLite file each; time "
        "of `QuantumTrainer.fit` only.",
        "",
        "| variant | median s | min s | max s |",
        "|---|---:|---:|---:|",
        f"| monitors off | {plain:.3f} | {min(times[False]):.3f} | {max(times[False]):.3f} |",
        f"| monitors on (quantum every 10 steps, system every 5 s, alerts) | {watched:.3f} | "
        f"{min(times[True]):.3f} | {max(times[True]):.3f} |",
        "",
        f"Monitored / plain: **{ratio:.3f}** ({(ratio - 1) * 100:+.1f}%; limit "
        f"+{args.limit * 100:.0f}%). Test accuracy {accuracies[True].pop()} in both.",
        "",
    ]
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text("\n".join(lines))
    print("\n".join(lines))
    return 0 if ratio <= 1 + args.limit else 1


if __name__ == "__main__":
    sys.exit(main())
