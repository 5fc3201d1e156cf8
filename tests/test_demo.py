"""``qdb demo`` as a user runs it: options checked before writing, no duplicate data, spend
bounded by ``--budget`` on a priced IonQ QPU (tests/ionq_emulator.py)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from sqlalchemy import func, select

from quantum_db import QuantumDatabase
from quantum_db.registry.schema import JobRow, LedgerRow

from .clitools import qdb
from .ionq_emulator import IonQEmulator


@pytest.mark.parametrize("budget", ["-1", "-0.01", "nan", "inf", "-inf"])
def test_a_bad_budget_is_refused_before_anything_is_written(tmp_path: Path, budget: str) -> None:
    out = qdb("demo", f"--budget={budget}", cwd=tmp_path)
    assert out.returncode == 2
    assert out.stderr.count("\n") == 1, out.stderr
    assert out.stderr.startswith("qdb demo: the budget must be a finite number of USD >= 0")
    assert out.stdout == ""
    assert list(tmp_path.iterdir()) == []  # no database, no folder, nothing


def test_an_unknown_backend_lists_the_names_that_exist(tmp_path: Path) -> None:
    out = qdb("demo", "--backend", "ionq-qpu", "--url", f"sqlite:///{tmp_path}/x.db", cwd=tmp_path)
    assert out.returncode == 2
    assert out.stderr.count("\n") == 1, out.stderr
    assert "no backend named 'ionq-qpu'" in out.stderr
    assert "offers: simulator" in out.stderr
    # An IonQ name is known but needs a key; the message says which.
    aria = qdb("demo", "--backend", "ionq-aria", cwd=tmp_path)
    assert aria.returncode == 2 and "IONQ_API_KEY" in aria.stderr
    assert list(tmp_path.iterdir()) == []


@pytest.mark.slow
async def test_two_demo_runs_keep_one_dataset_version_and_one_model(tmp_path: Path) -> None:
    url = f"sqlite+aiosqlite:///{tmp_path / 'demo.sqlite'}"
    first = qdb("demo", "--url", url, cwd=tmp_path)
    assert first.returncode == 0, first.stderr
    assert "(330 in this call)" in first.stdout
    second = qdb("demo", "--url", url, cwd=tmp_path)
    assert second.returncode == 0, second.stderr
    # The second run finds the same dataset version and the finished run: nothing retrained.
    assert "dataset 'moons' v1:" in second.stdout
    assert "(0 in this call)" in second.stdout
    accuracy = re.compile(r"^test accuracy: (\S+)", re.M)
    assert accuracy.findall(second.stdout) == accuracy.findall(first.stdout) == ["1.000"]
    async with QuantumDatabase(url).connect() as db:
        assert [i.version for i in await db.list_datasets()] == [1]
        assert await db.models.list_versions("moons-classifier") == [1]


@pytest.mark.slow
async def test_the_budget_bounds_the_training_spend_on_an_ionq_qpu(tmp_path: Path) -> None:
    # One step of the demo on Aria: 16 samples x (1 + 2 x 36 shifted) bindings, one job each
    # at 100 shots (no error mitigation) = 1168 jobs of about $14. The budget affords one
    # step, not two.
    jobs_per_step = 16 * (1 + 2 * 36)
    budget = 20_000.0
    url = f"sqlite+aiosqlite:///{tmp_path / 'demo.sqlite'}"
    with IonQEmulator("emulator-key") as emulator:
        out = qdb(
            "demo",
            "--backend",
            "ionq-aria",
            "--budget",
            f"{budget:g}",
            "--url",
            url,
            cwd=tmp_path,
            env={"IONQ_API_KEY": "emulator-key", "QDB_IONQ_API_URL": emulator.url},
        )
        billed = sum(job.cost for job in emulator.jobs.values())
        n_jobs = len(emulator.jobs)
        created = set(emulator.jobs)
    assert out.returncode == 1, out.stderr
    assert "stopped at step 1 by the budget" in out.stderr
    assert out.stderr.splitlines()[-1].startswith("qdb demo: stopped by the budget after spending")
    assert "no model registered" in out.stdout
    assert n_jobs == jobs_per_step  # the second step was refused before anything was sent
    async with QuantumDatabase(url).connect() as db, db.registry.session() as session:
        rows = (
            await session.execute(
                select(LedgerRow.kind, func.count(), func.sum(LedgerRow.amount_usd)).group_by(
                    LedgerRow.kind
                )
            )
        ).all()
        jobs = (await session.scalars(select(JobRow))).all()
    # The step's circuits are on record as one job carrying every IonQ id, so a sweep
    # after a crash would ask IonQ what they cost instead of releasing the reservation.
    (job,) = [j for j in jobs if j.run_id is not None]
    assert job.status == "completed" and job.backend == "ionq-aria"
    assert set(job.provider_job_ids) == created and len(job.provider_job_ids) == n_jobs
    assert job.owner_id is not None
    ledger = {kind: (n, total) for kind, n, total in rows}
    charged = ledger["charge"][1]
    assert ledger["charge"][0] == ledger["reservation"][0] == ledger["release"][0] == 1
    assert charged == pytest.approx(billed, rel=1e-12)  # what IonQ bills is what was reserved
    assert charged <= budget  # 0 overspend
    assert budget - charged < charged  # and a second step truly did not fit
    assert f"spent ${charged:.4f} of the $20000 budget on ionq-aria" in out.stdout


@pytest.mark.slow
async def test_the_hybrid_demo_trains_registers_and_resumes_a_torch_model(tmp_path: Path) -> None:
    url = f"sqlite+aiosqlite:///{tmp_path / 'hybrid.sqlite'}"
    first = qdb("demo", "--hybrid", "--url", url, cwd=tmp_path)
    assert first.returncode == 0, first.stderr
    assert "TorchQuantumLayer(circuit='qmodel-4x3'" in first.stdout
    assert "rebuilt from the registry: same outputs" in first.stdout
    accuracy = re.compile(r"^test accuracy: (\S+)", re.M)
    assert float(accuracy.findall(first.stdout)[0]) >= 0.9
    second = qdb("demo", "--hybrid", "--url", url, cwd=tmp_path)
    assert second.returncode == 0, second.stderr
    assert accuracy.findall(second.stdout) == accuracy.findall(first.stdout)
    async with QuantumDatabase(url).connect() as db:
        assert await db.models.list_versions("moons-hybrid") == [1]
        version = await db.models.get("moons-hybrid")
        assert version.architecture["kind"] == "torch"
        assert version.architecture["factory"] == "quantum_ml.hybrid:hybrid_classifier"
        run = await db.runs.get("moons-hybrid-v1-simulator")
        assert run.status in ("finished", "stopped")
        steps = (await db.metrics.history(run.id, "loss")).steps
        # The second call resumed the finished run: no step was taken or logged twice.
        assert list(steps) == list(range(1, len(steps) + 1))
        async with db.registry.session() as session:
            jobs = await session.scalar(
                select(func.count()).select_from(JobRow).where(JobRow.run_id == run.id)
            )
        assert jobs and jobs >= len(steps)  # every layer evaluation went through the manager
