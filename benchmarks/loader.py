"""Benchmark: storing and loading a 100k x 64 dataset, on SQLite and PostgreSQL.

For each database it times ``store_training_data`` (write), the first epoch of
``create_ml_data_loader(batch_size=256, shuffle=True)`` (which reads the dataset from the
database), a second epoch (from memory), and the torch adapter's epoch; as a peer it times
an epoch of a plain ``torch.utils.data.DataLoader`` over an in-memory ``TensorDataset``
with the same batch size and shuffling, in the same run.

    python benchmarks/loader.py                   # SQLite, and PostgreSQL if reachable
    python benchmarks/loader.py --samples 20000   # smaller

Writes the table to ``benchmarks/results/loader.md``.
"""

from __future__ import annotations

import argparse
import asyncio
import platform
import sys
import tempfile
import time
import uuid
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from quantum_db import QuantumDatabase  # noqa: E402

PG_ADMIN = "postgresql://postgres@127.0.0.1:5432/test"


async def bench(url: str, data: np.ndarray, labels: np.ndarray, batch: int) -> dict[str, float]:
    import torch  # noqa: F401 - imported before timing, so the adapter's epoch is not its import

    n = data.shape[0]
    out: dict[str, float] = {}
    async with QuantumDatabase(url).connect() as db:
        t = time.perf_counter()
        await db.store_training_data("bench", data, labels, splits={"train": 1.0})
        out["store"] = n / (time.perf_counter() - t)
        loader = db.create_ml_data_loader("bench", batch_size=batch, shuffle=True, seed=0)
        t = time.perf_counter()
        count = 0
        async for x, _ in loader:
            count += x.shape[0]
        out["first epoch"] = count / (time.perf_counter() - t)
        t = time.perf_counter()
        async for x, _ in loader:
            count += x.shape[0]
        out["next epoch"] = n / (time.perf_counter() - t)
        t = time.perf_counter()
        for x, _ in loader.as_torch():
            count += x.shape[0]
        out["torch adapter"] = n / (time.perf_counter() - t)
    return out


def torch_peer(data: np.ndarray, labels: np.ndarray, batch: int) -> float:
    import torch
    from torch.utils.data import DataLoader, TensorDataset

    ds = TensorDataset(torch.from_numpy(data).float(), torch.from_numpy(labels))
    loader = DataLoader(
        ds, batch_size=batch, shuffle=True, generator=torch.Generator().manual_seed(0)
    )
    t = time.perf_counter()
    for _ in loader:
        pass
    return len(ds) / (time.perf_counter() - t)


async def postgres_url() -> tuple[str, str] | None:
    try:
        import asyncpg

        admin = await asyncpg.connect(PG_ADMIN, timeout=3)
    except Exception:
        return None
    name = f"qdb_bench_{uuid.uuid4().hex[:8]}"
    await admin.execute(f'CREATE DATABASE "{name}"')
    await admin.close()
    return f"postgresql+asyncpg://postgres@127.0.0.1:5432/{name}", name


async def drop(name: str) -> None:
    import asyncpg

    admin = await asyncpg.connect(PG_ADMIN)
    await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    await admin.close()


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--samples", type=int, default=100_000)
    parser.add_argument("--dim", type=int, default=64)
    parser.add_argument("--batch", type=int, default=256)
    args = parser.parse_args()
    rng = np.random.default_rng(0)
    data = rng.normal(size=(args.samples, args.dim))
    labels = rng.integers(0, 10, args.samples)

    results: dict[str, dict[str, float]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        results["SQLite"] = await bench(
            f"sqlite+aiosqlite:///{tmp}/bench.sqlite", data, labels, args.batch
        )
    pg = await postgres_url()
    if pg is not None:
        try:
            results["PostgreSQL"] = await bench(pg[0], data, labels, args.batch)
        finally:
            await drop(pg[1])
    peer = torch_peer(data, labels, args.batch)

    cols = ["store", "first epoch", "next epoch", "torch adapter"]
    lines = [
        f"Dataset {args.samples} x {args.dim} float64, batch {args.batch}, shuffled; "
        "samples/second (higher is better). Peer: torch DataLoader over an in-memory "
        f"TensorDataset, "
        f"{peer:,.0f} samples/s.",
        "",
        "| database | " + " | ".join(cols) + " | next epoch / torch peer |",
        "|---|" + "---:|" * (len(cols) + 1),
    ]
    for name, row in results.items():
        cells = " | ".join(f"{row[c]:,.0f}" for c in cols)
        lines.append(f"| {name} | {cells} | {row['next epoch'] / peer:.1f}x |")
    lines += [
        "",
        f"Machine: {platform.processor() or platform.machine()}, Python "
        f"{platform.python_version()}, {time.strftime('%Y-%m-%d')}.",
    ]
    table = "\n".join(lines)
    print(table)
    out = ROOT / "benchmarks" / "results" / "loader.md"
    out.parent.mkdir(exist_ok=True)
    out.write_text(table + "\n")


if __name__ == "__main__":
    asyncio.run(main())
