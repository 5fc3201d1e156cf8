"""A writer killed with SIGKILL mid-write leaves the database consistent and usable at once,
with a record of what it left behind."""

from __future__ import annotations

import asyncio
import hashlib
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from sqlalchemy import func, select

from quantum_db import QuantumDatabase
from quantum_db.registry.engine import Registry
from quantum_db.registry.schema import DatasetRow, DatasetWriteRow, VectorRow

ROOT = Path(__file__).resolve().parent.parent
pytestmark = pytest.mark.slow

DATASET_WORKER = """
import asyncio, sys
import numpy as np
from quantum_db import QuantumDatabase

async def main(url):
    async with QuantumDatabase(url).connect() as db:
        rng = np.random.default_rng(0)
        await db.store_training_data("big", rng.normal(size=(1000, 8)), np.arange(1000) % 3)
        print("stored v1", flush=True)
        await db.store_training_data("big", rng.normal(size=(400_000, 8)), np.arange(400_000) % 3)
        print("stored v2", flush=True)
asyncio.run(main(sys.argv[1]))
"""

CHECKPOINT_WORKER = """
import asyncio, sys
import numpy as np
from quantum_db import QuantumDatabase

async def main(url):
    async with QuantumDatabase(url).connect() as db:
        for step in range(1000):
            state = {"w": np.full(4_000_000, float(step)), "step": step}
            await db.checkpoints.save("crash-run", step, state)
            print(f"saved {step}", flush=True)
asyncio.run(main(sys.argv[1]))
"""


def run_and_kill(
    code: str, url: str, wait_for: str, delay: float, *, until: Any = None
) -> list[str]:
    """Start ``code``, wait for the line ``wait_for``, then SIGKILL it after ``delay`` s,
    or, with ``until`` (a coroutine function), as soon as ``until()`` says True."""
    lines: list[str] = []
    with subprocess.Popen(
        [sys.executable, "-c", code, url], cwd=ROOT, stdout=subprocess.PIPE, text=True
    ) as proc:
        assert proc.stdout is not None
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            line = proc.stdout.readline().strip()
            if not line:
                break
            lines.append(line)
            if line == wait_for:
                if until is None:
                    time.sleep(delay)
                else:
                    asyncio.run(_wait_until(until, deadline))
                os.kill(proc.pid, signal.SIGKILL)
                break
        proc.wait(timeout=30)
    assert proc.returncode == -signal.SIGKILL, (proc.returncode, lines)
    return lines


async def _wait_until(until: Any, deadline: float) -> None:
    while not await until():
        if time.monotonic() > deadline:
            raise AssertionError("the condition to kill at never came")
        await asyncio.sleep(0.05)


def digest(data: np.ndarray, labels: np.ndarray) -> str:
    h = hashlib.sha256()
    h.update(repr((data.shape, labels.dtype.str)).encode())
    h.update(data.tobytes())
    h.update(labels.tobytes())
    return h.hexdigest()


async def orphaned_writes(url: str) -> tuple[list[tuple[str, str]], dict[str, int], set[str]]:
    """Straight from the tables, before any connect (whose sweep may reclaim them): the
    write records, the samples per namespace, and the namespaces of committed versions."""
    registry = Registry(url)
    try:
        async with registry.session() as session:
            writes = (await session.execute(select(DatasetWriteRow))).scalars().all()
            per_namespace = dict(
                (
                    await session.execute(
                        select(VectorRow.namespace, func.count()).group_by(VectorRow.namespace)
                    )
                ).all()
            )
            committed = set((await session.scalars(select(DatasetRow.namespace))).all())
    finally:
        await registry.aclose()
    return [(w.namespace, w.dataset_name) for w in writes], per_namespace, committed


def test_killed_while_storing_a_dataset(database_url: str) -> None:
    async def samples_are_being_written() -> bool:
        writes, per_namespace, _ = await orphaned_writes(database_url)
        return any(per_namespace.get(namespace, 0) > 0 for namespace, _ in writes)

    # Killed once the write has put some of its samples in place (not at a fixed delay,
    # which a loaded machine can make land before the first batch).
    lines = run_and_kill(
        DATASET_WORKER, database_url, "stored v1", delay=0, until=samples_are_being_written
    )
    asyncio.run(_check_killed_dataset_write(database_url, lines))


async def _check_killed_dataset_write(database_url: str, lines: list[str]) -> None:
    assert "stored v2" not in lines, "the write finished before the kill; make it larger"
    writes, per_namespace, committed = await orphaned_writes(database_url)
    # Exactly one write record is left, and it names the one namespace that holds samples
    # no version refers to: what the sweeper needs to reclaim them.
    assert len(writes) == 1 and writes[0][1] == "big"
    orphans = set(per_namespace) - committed
    assert orphans == {writes[0][0]}
    assert 0 < per_namespace[writes[0][0]] < 400_000
    async with QuantumDatabase(database_url).connect() as db:
        infos = await db.list_datasets()
        assert [(i.name, i.version) for i in infos] == [("big", 1)]  # nothing partial visible
        v1 = await db.get_dataset("big", 1)
        expected = np.random.default_rng(0).normal(size=(1000, 8))
        np.testing.assert_array_equal(v1.data, expected)
        assert digest(v1.data, v1.labels) == v1.info.content_hash
        # Usable at once: storing v1's content again is v1; a new version is the next one.
        again = await db.store_training_data("big", expected, np.arange(1000) % 3)
        assert again.version == 1
        info = await db.store_training_data("big", expected, np.arange(1000) % 3, new_version=True)
        assert info.version == 2


async def test_killed_while_saving_a_checkpoint(database_url: str) -> None:
    rng = np.random.default_rng(11)
    lines = run_and_kill(
        CHECKPOINT_WORKER, database_url, "saved 1", delay=float(rng.uniform(0, 0.4))
    )
    saved = [int(line.split()[1]) for line in lines if line.startswith("saved")]
    async with QuantumDatabase(database_url).connect() as db:
        latest = await db.checkpoints.latest("crash-run")
        assert latest is not None
        # The latest checkpoint is complete: its hash was verified on load and its content
        # is exactly what the step wrote; a save the kill interrupted is not visible.
        assert latest.step >= max(saved)
        assert latest.step <= max(saved) + 1
        np.testing.assert_array_equal(latest.state["w"], np.full(4_000_000, float(latest.step)))
        assert latest.state["step"] == latest.step
        await db.checkpoints.save("crash-run", latest.step + 1, {"w": np.zeros(2)})
        assert (await db.checkpoints.latest("crash-run")).step == latest.step + 1  # type: ignore[union-attr]
