"""The trainer's books on a priced backend: a step that reached IonQ is never just released.

The trainer's circuits go through the BackendManager, which records each run as a job
(with the connection's owner) before sending and collects the IonQ job ids as they are
created. A step that fails after its jobs reached IonQ is charged what IonQ billed.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from sqlalchemy import select

from backends import BackendManager, TransientBackendError
from backends.ionq import IonQBackend
from quantum_db import QuantumDatabase
from quantum_db.registry import Registry
from quantum_db.registry.schema import JobRow, LedgerRow
from quantum_db.sweeper import sweep
from quantum_ml import QuantumModel, QuantumTrainer, TrainingConfig

from .ionq_emulator import IonQEmulator

API_KEY = "trainer-billing-key"


@pytest.fixture
def emulator() -> Iterator[IonQEmulator]:
    emu = IonQEmulator(API_KEY).start()
    yield emu
    emu.stop()


def aria(emulator: IonQEmulator) -> IonQBackend:
    return IonQBackend(
        "qpu.aria-1",
        "qiskit",
        api_key=API_KEY,
        api_url=emulator.url,
        poll_interval_s=0.005,
        max_poll_interval_s=0.02,
        retry_backoff_s=0.01,
        max_retries=1,
        error_mitigation=False,
        seed=5,
    )


async def test_a_training_step_that_reached_ionq_is_charged_what_ionq_billed(
    tmp_path: Path, emulator: IonQEmulator
) -> None:
    url = f"sqlite+aiosqlite:///{tmp_path / 'train.sqlite'}"
    X = np.linspace(0.0, 1.0, 4).reshape(4, 1)
    y = np.array([0.0, 1.0, 0.0, 1.0])
    backend = aria(emulator)
    config = TrainingConfig(
        epochs=1, loss="mse", shots=100, seed=3, budget_usd=10_000.0, budget_name="billing"
    )
    # IonQ runs (and bills) every job of the step, but each results fetch fails.
    emulator.fail_next(500, count=10_000, method="GET", path=r"/jobs/[^/]+/results.*")
    db = QuantumDatabase(url)
    async with db.connect():
        owner = db.owner_id
        await db.store_training_data("line", X, y, splits={"train": 1.0})
        train = db.create_ml_data_loader("line", batch_size=4, shuffle=False, split="train")
        model = QuantumModel(1, 1, task="regression", seed=2)
        with pytest.raises(TransientBackendError):
            await QuantumTrainer(config, db, backend).fit(model, train, run_id="billing-run")
        async with db.registry.session() as session:
            (job,) = (await session.scalars(select(JobRow))).all()
            rows = (await session.execute(select(LedgerRow.kind, LedgerRow.amount_usd))).all()
    created = set(emulator.jobs)
    # IonQ bills the jobs that ran; a sibling created as the step failed is cancelled
    # before it runs and costs nothing.
    ran = [i for i in created if emulator.describe_job(i)["status"] == "completed"]
    billed = sum(emulator.jobs[i].cost for i in ran)
    assert ran and billed > 12 * len(ran)  # QPU jobs: IonQ's minimum at least
    # On record before anything was sent, with every IonQ id and the owner; kept reserved.
    assert (job.status, job.backend, job.run_id, job.owner_id) == (
        "failed",
        "ionq-aria",
        "billing-run",
        owner,
    )
    assert set(job.provider_job_ids) == created
    # Every job had ended at IonQ when the step failed: the manager asked IonQ what they
    # cost and charged exactly that, once; nothing was simply released.
    assert [k for k, _ in rows] == ["reservation", "release", "charge"]
    charges = [amount for kind, amount in rows if kind == "charge"]
    assert len(charges) == 1 and math.isclose(charges[0], billed, rel_tol=1e-12)
    assert math.isclose(job.actual_cost, billed, rel_tol=1e-12)
    # A sweep after the owner is gone finds nothing left to settle.
    registry = Registry(url)
    manager = BackendManager({"ionq-aria": aria(emulator)}, fallback=None)
    try:
        summary = await sweep(registry, backends=manager)
        assert (summary.charged, summary.released) == (0, 0)
    finally:
        await manager.aclose()
        await registry.aclose()
        await backend.aclose()
