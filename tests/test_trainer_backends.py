"""The trainer's circuits go through the BackendManager: jobs, costs, degrade, encodings.

On the IonQ emulator a training run leaves one job row per manager run carrying every IonQ
job id, and the ledger charges exactly what the emulator billed. When the QPU budget runs
out mid-run, the manager's degrade policy moves the jobs to the simulator; the run records
the switch as a metric and an alert and trains on to the end. Data encoded otherwise than
the model's contract is refused unless the mismatch is allowed, which is then recorded.
"""

from __future__ import annotations

import asyncio
import logging
import math
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from sqlalchemy import func, select

from backends import DegradePolicy
from backends.ionq import IonQBackend
from quantum_db import QuantumDatabase
from quantum_db.registry.schema import JobRow, LedgerRow, MetricRow, RunRow
from quantum_ml import (
    EncodingMismatchError,
    QuantumDataEncoder,
    QuantumModel,
    QuantumTrainer,
    TrainingConfig,
)

from .ionq_emulator import IonQEmulator

API_KEY = "trainer-backends-key"
REPO = Path(__file__).resolve().parents[1]


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
        error_mitigation=False,
        seed=5,
    )


async def store_line(db: QuantumDatabase) -> None:
    X = np.linspace(0.0, 1.0, 8).reshape(8, 1)
    y = (np.arange(8) % 2).astype(np.int64)
    await db.store_training_data("line", X, y, splits={"train": 1.0})


def small_model(db_encoding: dict[str, object]) -> QuantumModel:
    return QuantumModel(
        1, 1, task="classification", seed=2, encoder=QuantumDataEncoder.from_contract(db_encoding)
    )


async def test_a_run_on_ionq_records_its_jobs_and_is_charged_what_ionq_billed(
    database_url: str, emulator: IonQEmulator
) -> None:
    async with QuantumDatabase(database_url).connect() as db:
        db.backend_manager.register("ionq-aria", aria(emulator))
        await store_line(db)
        train = db.create_ml_data_loader("line", batch_size=4, shuffle=False, split="train")
        model = small_model((await train.load()).info.encoding)
        owner = db.owner_id
        config = TrainingConfig(epochs=1, shots=100, seed=3, budget_usd=10_000.0, budget_name="q")
        history = await QuantumTrainer(config, db, "ionq-aria").fit(model, train, run_id="ionq")
        async with db.registry.session() as session:
            jobs = (await session.scalars(select(JobRow).where(JobRow.run_id == "ionq"))).all()
            charges = (
                await session.scalars(
                    select(LedgerRow.amount_usd).where(LedgerRow.kind == "charge")
                )
            ).all()
            open_ = await session.scalar(
                select(func.count()).select_from(LedgerRow).where(LedgerRow.kind == "reservation")
            )
    billed = sum(job.cost for job in emulator.jobs.values())
    assert history.steps == 2 and billed > 0
    # One job row per manager run, each holding the IonQ ids of its jobs; together all of them.
    assert len(jobs) == 2 and all(j.status == "completed" for j in jobs)
    assert {i for j in jobs for i in j.provider_job_ids} == set(emulator.jobs)
    assert all(j.backend == "ionq-aria" and j.owner_id == owner for j in jobs)
    # The actual cost, as billed, is what was charged: once per job, and nothing else.
    assert len(charges) == 2 and open_ == 2
    assert math.isclose(sum(charges), billed, rel_tol=1e-12)
    assert math.isclose(sum(j.actual_cost or 0.0 for j in jobs), billed, rel_tol=1e-12)
    assert math.isclose(history.cost_usd, billed, rel_tol=1e-12)


async def test_a_run_whose_qpu_budget_runs_out_degrades_and_trains_on(
    database_url: str, emulator: IonQEmulator
) -> None:
    async with QuantumDatabase(database_url).connect() as db:
        db.backend_manager.register("ionq-aria", aria(emulator))
        db.backend_manager.degrade = DegradePolicy(("simulator",))
        await store_line(db)
        train = db.create_ml_data_loader("line", batch_size=4, shuffle=False, split="train")
        await train.load()
        model = small_model(train.info.encoding)
        one_step = (
            QuantumTrainer(TrainingConfig(epochs=1, shots=100), db, "ionq-aria")
            ._managed(None)
            .estimate_run_cost(model.circuit, 100, model.observables, 4 * 5)
        )
        budget = 1.5 * one_step  # one step fits, the second does not
        config = TrainingConfig(epochs=3, shots=100, seed=3, budget_usd=budget, budget_name="d")
        history = await QuantumTrainer(config, db, "ionq-aria").fit(model, train, run_id="deg")
        run = await db.runs.get("deg")
        alerts = await db.alerts.list(run_id="deg")
        async with db.registry.session() as session:
            jobs = (
                await session.scalars(
                    select(JobRow).where(JobRow.run_id == "deg").order_by(JobRow.created_at)
                )
            ).all()
            degraded = (
                await session.execute(
                    select(MetricRow.step, MetricRow.value).where(
                        MetricRow.run_id == "deg", MetricRow.key == "degraded_jobs"
                    )
                )
            ).all()
            spent = await session.scalar(
                select(func.sum(LedgerRow.amount_usd)).where(LedgerRow.kind == "charge")
            )
    assert run.status == "finished" and history.steps == 6
    assert [j.backend for j in jobs] == ["ionq-aria"] + ["simulator"] * 5
    assert sorted(step for step, _ in degraded) == [2, 3, 4, 5, 6]
    assert [a.kind for a in alerts] == ["budget_degraded"]
    assert "simulator" in alerts[0].message and "training goes on" in alerts[0].message
    billed = sum(job.cost for job in emulator.jobs.values())
    assert math.isclose(float(spent or 0.0), billed, rel_tol=1e-12) and billed <= budget


async def test_data_encoded_otherwise_is_refused_unless_allowed(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    rng = np.random.default_rng(1)
    X = rng.normal(size=(24, 2))
    y = (X[:, 0] > 0).astype(np.int64)
    async with QuantumDatabase(f"sqlite+aiosqlite:///{tmp_path / 'e.sqlite'}").connect() as db:
        await db.store_training_data(
            "mm", X, y, encoding={"scaling": "minmax"}, splits={"train": 1.0}
        )
        await db.store_training_data(
            "st", X, y, encoding={"scaling": "standard"}, splits={"train": 1.0}
        )
        minmax = await db.create_ml_data_loader("mm", batch_size=8, split="train").load()
        standard = await db.create_ml_data_loader("st", batch_size=8, split="train").load()
        model = QuantumModel(
            2,
            1,
            task="classification",
            encoder=QuantumDataEncoder.from_contract(minmax.info.encoding),
        )
        trainer = QuantumTrainer(TrainingConfig(epochs=1), db)
        await trainer.fit(model, minmax, run_id="fit-mm")
        loss, _ = await trainer.evaluate(model, minmax)
        assert math.isfinite(loss)
        with pytest.raises(EncodingMismatchError, match=r"(?s)scaling.*allow_encoding_mismatch"):
            await trainer.evaluate(model, standard)
        async with db.registry.session() as session:
            runs_before = await session.scalar(select(func.count()).select_from(RunRow))
        with pytest.raises(EncodingMismatchError, match="scaling"):
            await trainer.fit(model, standard, run_id="fine-tune")
        assert not await db.runs.exists("fine-tune")
        async with db.registry.session() as session:
            assert await session.scalar(select(func.count()).select_from(RunRow)) == runs_before

        allowed = QuantumTrainer(TrainingConfig(epochs=1, allow_encoding_mismatch=True), db)
        with caplog.at_level(logging.WARNING, logger="quantum_ml.contracts"):
            await allowed.fit(model, standard, run_id="fine-tune")
        assert any("scaling" in r.getMessage() for r in caplog.records)
        (alert,) = await db.alerts.list(run_id="fine-tune")
        assert alert.kind == "encoding_override" and "scaling" in alert.message
        latest = await db.checkpoints.latest("fine-tune")
        assert latest is not None and any(
            "scaling" in d for d in latest.state["state"]["encoding_override"]
        )


# ---------------------------------------------------------------- re-attach after SIGKILL
def _script(url: str, out: Path) -> list[str]:
    return [sys.executable, "-m", "tests.hybrid_script", url, "reattach", str(out), "ionq"]


def _env(emulator: IonQEmulator) -> dict[str, str]:
    return {
        **os.environ,
        "QDB_TEST_IONQ_URL": emulator.url,
        "QDB_TEST_IONQ_KEY": API_KEY,
        "QDB_LEASE_TTL_S": "1",  # the killed process's lease lapses quickly
    }


@pytest.mark.slow
def test_a_run_killed_with_jobs_in_flight_reattaches_without_a_second_post(
    tmp_path: Path,
) -> None:
    jobs_per_step = 2 * (1 + 2 * 4)  # 2 samples x (1 + 2 shifts x 4 weights), one job each
    with IonQEmulator(API_KEY) as reference:
        done = subprocess.run(
            _script(f"sqlite+aiosqlite:///{tmp_path / 'ref.sqlite'}", tmp_path / "ref.npz"),
            cwd=REPO,
            env=_env(reference),
            capture_output=True,
            text=True,
            timeout=300,
        )
        assert done.returncode == 0, done.stderr
        reference_posts = len(reference.calls("POST", "/jobs"))
        reference_bill = sum(job.cost for job in reference.jobs.values())
    assert reference_posts == 3 * jobs_per_step

    url = f"sqlite+aiosqlite:///{tmp_path / 'killed.sqlite'}"
    with IonQEmulator(API_KEY) as emulator:
        emulator.hang_jobs(10**6)  # step 1's jobs run only once released: in flight
        proc = subprocess.Popen(
            _script(url, tmp_path / "killed.npz"),
            cwd=REPO,
            env=_env(emulator),
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        # The backend's concurrency limit lets a few jobs of the step out at a time: wait
        # until those are all sent (no new POST for a second), then kill.
        deadline = time.monotonic() + 120
        seen, quiet_since = 0, time.monotonic()
        while seen == 0 or time.monotonic() - quiet_since < 1.0:
            assert time.monotonic() < deadline and proc.poll() is None
            now = len(emulator.calls("POST", "/jobs"))
            if now != seen:
                seen, quiet_since = now, time.monotonic()
            time.sleep(0.05)
        os.kill(proc.pid, signal.SIGKILL)
        assert proc.wait(timeout=30) == -signal.SIGKILL
        in_flight = set(emulator.jobs)
        assert 0 < len(in_flight) <= jobs_per_step
        assert all(emulator.describe_job(i)["status"] != "completed" for i in in_flight)
        emulator.clear_faults()
        emulator.release_jobs(*in_flight)
        time.sleep(1.5)  # past the lease TTL
        again = subprocess.run(
            _script(url, tmp_path / "resumed.npz"),
            cwd=REPO,
            env=_env(emulator),
            capture_output=True,
            text=True,
            timeout=300,
        )
        assert again.returncode == 0, again.stderr
        steps = [int(x.split()[1]) for x in again.stdout.splitlines() if x.startswith("step ")]
        posts = emulator.calls("POST", "/jobs")
        billed = sum(job.cost for job in emulator.jobs.values())

    # Step 1 was finished from the jobs sent before the kill: no POST was repeated.
    assert steps == [1, 2, 3]
    assert len(posts) == reference_posts == 3 * jobs_per_step
    assert in_flight <= set(emulator.jobs)
    # Charged exactly what IonQ billed, once; the same bill as an uninterrupted run.
    assert math.isclose(billed, reference_bill, rel_tol=1e-12)

    async def books() -> tuple[float, list[JobRow]]:
        async with QuantumDatabase(url).connect() as db, db.registry.session() as session:
            charged = await session.scalar(
                select(func.sum(LedgerRow.amount_usd)).where(LedgerRow.kind == "charge")
            )
            jobs = (await session.scalars(select(JobRow).order_by(JobRow.created_at))).all()
        return float(charged or 0.0), list(jobs)

    charged, rows = asyncio.run(books())
    assert math.isclose(charged, billed, rel_tol=1e-12)
    assert len(rows) == 3 and all(r.status == "completed" for r in rows)
    assert in_flight <= set(rows[0].provider_job_ids)
    assert len(rows[0].provider_job_ids) == jobs_per_step
    # (A QPU's samples are not reproducible, on IonQ as in the emulator: the parameters
    # are checked bit for bit by the exact-simulator resume tests, not here.)
    with np.load(tmp_path / "resumed.npz") as b:
        assert np.all(np.isfinite(b["weights"]))
