"""Benchmark: metric logging throughput, and how long the event loop is held while logging.

``db.metrics.log`` only buffers; a background task writes batches. The peer is what a
naive logger does: one INSERT and one commit per call, through the same engine. Both log
20,000 values on SQLite and on PostgreSQL (when reachable); a ticker task measures the
longest stall of the event loop during each.

    python benchmarks/metrics.py
"""

from __future__ import annotations

import asyncio
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from sqlalchemy import insert  # noqa: E402

from quantum_db import QuantumDatabase  # noqa: E402
from quantum_db.registry.schema import MetricRow  # noqa: E402
from quantum_db.runs import ensure_run  # noqa: E402

sys.path.insert(0, str(ROOT / "benchmarks"))
from loader import drop, postgres_url  # noqa: E402

N = 20_000


class StallMeter:
    """The longest gap between ticks of a 1 ms ticker: how long the loop was blocked."""

    def __init__(self) -> None:
        self.worst = 0.0
        self._stop = asyncio.Event()

    async def run(self) -> None:
        last = time.perf_counter()
        while not self._stop.is_set():
            await asyncio.sleep(0.001)
            now = time.perf_counter()
            self.worst = max(self.worst, now - last)
            last = now

    def stop(self) -> None:
        self._stop.set()


async def bench(url: str) -> dict[str, float]:
    out: dict[str, float] = {}
    async with QuantumDatabase(url).connect() as db:
        meter = StallMeter()
        ticker = asyncio.create_task(meter.run())
        t = time.perf_counter()
        for step in range(N):
            await db.metrics.log("bench", {"loss": 1.0 / (step + 1)}, step=step)
        out["log calls/s"] = N / (time.perf_counter() - t)
        await db.metrics.flush()
        out["logged+written/s"] = N / (time.perf_counter() - t)
        meter.stop()
        await ticker
        out["worst stall ms"] = meter.worst * 1000

        meter = StallMeter()
        ticker = asyncio.create_task(meter.run())
        naive = N // 10
        t = time.perf_counter()
        for step in range(naive):
            async with db.registry.session() as session:
                await ensure_run(session, "naive")
                await session.execute(
                    insert(MetricRow),
                    [
                        {
                            "run_id": "naive",
                            "key": "loss",
                            "step": step,
                            "value": 1.0,
                            "timestamp": time.time(),
                        }
                    ],
                )
        out["naive commit-per-call/s"] = naive / (time.perf_counter() - t)
        meter.stop()
        await ticker
        assert len(await db.metrics.history("bench", "loss")) == N
    return out


async def main() -> None:
    results: dict[str, dict[str, float]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        results["SQLite"] = await bench(f"sqlite+aiosqlite:///{tmp}/m.sqlite")
    pg = await postgres_url()
    if pg is not None:
        try:
            results["PostgreSQL"] = await bench(pg[0])
        finally:
            await drop(pg[1])
    cols = ["log calls/s", "logged+written/s", "naive commit-per-call/s", "worst stall ms"]
    lines = [
        f"{N:,} metric values, one `log` call each (higher is better; stall: lower is better).",
        "",
        "| database | " + " | ".join(cols) + " | written / naive |",
        "|---|" + "---:|" * (len(cols) + 1),
    ]
    for name, row in results.items():
        cells = " | ".join(f"{row[c]:,.1f}" for c in cols)
        ratio = row["logged+written/s"] / row["naive commit-per-call/s"]
        lines.append(f"| {name} | {cells} | {ratio:.0f}x |")
    table = "\n".join(lines)
    print(table)
    out = ROOT / "benchmarks" / "results" / "metrics.md"
    out.parent.mkdir(exist_ok=True)
    out.write_text(table + "\n")


if __name__ == "__main__":
    asyncio.run(main())
