"""QuantumTrainer: checkpoint on SIGTERM and exact resume, progress bar, budgeted cost."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

from backends import SimulatorBackend
from backends.accounting import Budget
from backends.circuit import Circuit
from quantum_db import QuantumDatabase
from quantum_ml.encoders import QuantumDataEncoder
from quantum_ml.models import QuantumModel
from quantum_ml.trainer import FORCE_PROGRESS_ENV, QuantumTrainer, TrainingConfig

REPO = Path(__file__).resolve().parents[1]

_SCRIPT = textwrap.dedent(
    """
    import asyncio, sys
    import numpy as np
    from quantum_db import QuantumDatabase
    from quantum_ml.encoders import QuantumDataEncoder
    from quantum_ml.models import QuantumModel
    from quantum_ml.trainer import QuantumTrainer, TrainingConfig

    db_url, run_id, out = sys.argv[1:4]

    def on_step(step, loss):
        print(f"step {step}", flush=True)

    async def main():
        async with QuantumDatabase(db_url).connect() as db:
            if not await db.list_datasets():
                rng = np.random.default_rng(0)
                y = np.arange(60) % 2
                X = np.where(y[:, None] == 1, 1.0, -1.0) + rng.normal(scale=0.45, size=(60, 2))
                await db.store_training_data(
                    "blobs", X, y, splits={"train": 0.75, "validation": 0.25},
                    encoding={"scaling": "minmax"},
                )
            enc = QuantumDataEncoder.from_contract((await db.list_datasets())[0].encoding)
            model = QuantumModel(2, 2, task="classification", n_outputs=2, seed=3, encoder=enc)
            config = TrainingConfig(learning_rate=0.1, epochs=6, checkpoint_every=50, seed=7)
            trainer = QuantumTrainer(config, db, on_step=on_step)
            train = db.create_ml_data_loader("blobs", batch_size=2, seed=11, split="train")
            history = await trainer.fit(model, train, run_id=run_id)
            latest = await db.checkpoints.latest(run_id)
            status = (await db.runs.get(run_id)).status
            flat = [model.weights, model.head_weight.ravel(), model.head_bias]
            np.save(out, np.concatenate(flat))
            print("done", history.steps, history.stop_reason, latest.step, status, flush=True)

    asyncio.run(main())
    """
)


def _url(tmp_path: Path, name: str) -> str:
    return f"sqlite+aiosqlite:///{tmp_path / name}"


def _run(db_url: str, out: Path) -> str:
    done = subprocess.run(
        [sys.executable, "-c", _SCRIPT, db_url, "run", str(out)],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    return done.stdout


@pytest.mark.skipif(sys.platform == "win32", reason="POSIX signals")
def test_sigterm_checkpoints_and_resumes_exactly(tmp_path: Path) -> None:
    reference = tmp_path / "reference.npy"
    total = int(_run(_url(tmp_path, "ref.sqlite"), reference).split("done")[-1].split()[0])

    url = _url(tmp_path, "int.sqlite")
    out = tmp_path / "interrupted.npy"
    proc = subprocess.Popen(
        [sys.executable, "-c", _SCRIPT, url, "run", str(out)],
        cwd=REPO,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert proc.stdout is not None
    last = 0
    for line in proc.stdout:
        if line.startswith("step "):
            last = int(line.split()[1])
            if last == 4:
                os.kill(proc.pid, signal.SIGTERM)
                break
    rest, err = proc.communicate(timeout=60)
    assert proc.returncode == 0, err
    for line in rest.splitlines():
        if line.startswith("step "):
            last = int(line.split()[1])
    steps, reason, ckpt, status = rest.split("done")[-1].split()
    assert reason == "interrupted" and status == "interrupted"
    assert int(steps) == last < total
    assert int(ckpt) in (last, last + 1)
    assert "SIGTERM" in err

    again = _run(url, out)
    resumed = [int(x.split()[1]) for x in again.splitlines() if x.startswith("step ")]
    assert resumed[0] == int(ckpt) + 1 and resumed[-1] == total
    assert again.split("done")[-1].split() == [str(total), "None", str(total), "finished"]
    assert np.array_equal(np.load(out), np.load(reference))


class PricedSimulator(SimulatorBackend):
    """The simulator at $0.01 per circuit execution (one per binding)."""

    name = "priced-simulator"

    def estimate_cost(self, circuit: Circuit, shots: int | None) -> float:
        return 0.01


async def _setup(db: QuantumDatabase) -> QuantumModel:
    rng = np.random.default_rng(0)
    y = np.arange(40) % 2
    X = np.where(y[:, None] == 1, 1.0, -1.0) + rng.normal(scale=0.45, size=(40, 2))
    info = await db.store_training_data("blobs", X, y, encoding={"scaling": "minmax"})
    enc = QuantumDataEncoder.from_contract(info.encoding)
    return QuantumModel(2, 1, task="classification", n_outputs=2, seed=3, encoder=enc)


async def test_progress_bar_runs(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(FORCE_PROGRESS_ENV, "1")
    async with QuantumDatabase(_url(tmp_path, "p.sqlite")).connect() as db:
        model = await _setup(db)
        train = db.create_ml_data_loader("blobs", batch_size=10, seed=0)
        config = TrainingConfig(epochs=2, progress=True)
        history = await QuantumTrainer(config, db).fit(model, train, run_id="p")
    assert history.steps == 8 and history.cost_usd == 0.0
    err = capsys.readouterr().err
    assert "epoch 1/2" in err and "epoch 2/2" in err


async def test_cost_is_reserved_logged_and_bounded(tmp_path: Path) -> None:
    async with QuantumDatabase(_url(tmp_path, "c.sqlite")).connect() as db:
        model = await _setup(db)
        ledger = db.backend_manager.accounting
        train = db.create_ml_data_loader("blobs", batch_size=10, seed=0)
        backend = PricedSimulator()
        config = TrainingConfig(epochs=2, budget_usd=5.0, budget_name="big")
        history = await QuantumTrainer(config, db, backend).fit(model, train, run_id="c")
        assert history.stop_reason is None and history.steps == 8
        logged = await db.metrics.history("c", "cost_usd")
        per_epoch = [float(v) for v in np.asarray(logged.values)]
        assert per_epoch == pytest.approx([0.4, 0.4])  # 4 steps x 10 bindings x $0.01
        assert history.cost_usd == pytest.approx(0.8)
        assert await ledger.exposure(Budget(5.0, "big")) == pytest.approx(sum(per_epoch))

        # $0.25 pays for 2 steps of $0.10: the third is never submitted.
        small = TrainingConfig(epochs=2, budget_usd=0.25, budget_name="small")
        model = await _setup_model_again(db)
        history = await QuantumTrainer(small, db, backend).fit(model, train, run_id="s")
        assert history.stop_reason == "budget" and history.steps == 2
        spent = await ledger.exposure(Budget(0.25, "small"))
        assert spent == pytest.approx(0.2) and spent <= 0.25
        assert history.cost_usd == pytest.approx(spent)
        logged = await db.metrics.history("s", "cost_usd")
        assert float(np.sum(np.asarray(logged.values))) == pytest.approx(spent)
        latest = await db.checkpoints.latest("s")
        assert latest is not None and latest.step == 2
        assert (await db.runs.get("s")).status == "stopped"


async def _setup_model_again(db: QuantumDatabase) -> QuantumModel:
    info = (await db.list_datasets())[0]
    enc = QuantumDataEncoder.from_contract(info.encoding)
    return QuantumModel(2, 1, task="classification", n_outputs=2, seed=3, encoder=enc)
