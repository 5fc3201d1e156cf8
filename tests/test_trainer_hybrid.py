"""One trainer for QuantumModels and torch modules: hybrid training, resume, lifecycle.

Hybrid models train through ``QuantumTrainer.fit`` like QuantumModels do: checkpoints,
resume bit for bit after SIGKILL, metric rows replaced (never duplicated) after resume,
the best checkpoint by ``monitor``, run statuses, callbacks, and the bad inputs that must
change nothing stored.
"""

from __future__ import annotations

import asyncio
import math
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from sqlalchemy import func, select

from quantum_db import QuantumDatabase
from quantum_db.registry.schema import CheckpointRow, JobRow, MetricRow, RunRow
from quantum_ml import QuantumTrainer, TrainingConfig
from quantum_ml.errors import (
    ModelInputError,
    NoTrainableParametersError,
    ResumeMismatchError,
    UnknownComponentError,
)
from quantum_ml.training import Callback, TrainingContext

from .clitools import kill_at_step
from .hybrid_script import hybrid_module, store_data

REPO = Path(__file__).resolve().parents[1]


def sqlite_url(tmp_path: Path, name: str = "h.sqlite") -> str:
    return f"sqlite+aiosqlite:///{tmp_path / name}"


async def loaders(db: QuantumDatabase) -> tuple[Any, Any]:
    if not await db.list_datasets():
        await store_data(db)
    train = db.create_ml_data_loader("blobs4", batch_size=4, seed=11, split="train")
    val = db.create_ml_data_loader("blobs4", batch_size=6, split="validation")
    return train, val


async def counts(db: QuantumDatabase) -> dict[str, int]:
    async with db.registry.session() as session:
        return {
            name: int(await session.scalar(select(func.count()).select_from(table)) or 0)
            for name, table in (
                ("runs", RunRow),
                ("checkpoints", CheckpointRow),
                ("metrics", MetricRow),
                ("jobs", JobRow),
            )
        }


# ---------------------------------------------------------------- training
async def test_a_hybrid_model_trains_with_checkpoints_metrics_and_jobs(database_url: str) -> None:
    async with QuantumDatabase(database_url).connect() as db:
        train, val = await loaders(db)
        net = hybrid_module(1)
        before = {k: v.clone() for k, v in net.state_dict().items()}  # type: ignore[attr-defined]
        config = TrainingConfig(optimizer="adam", learning_rate=0.05, epochs=3, seed=1)
        history = await QuantumTrainer(config, db).fit(net, train, validation=val, run_id="hy")
        assert history.steps == 3 * len(train)
        assert history.train_loss[-1] < history.train_loss[0]
        assert len(history.val_accuracy) == 3
        after = net.state_dict()  # type: ignore[attr-defined]
        assert all(not torch.equal(before[k], after[k]) for k in before)
        run = await db.runs.get("hy")
        assert run.status == "finished" and run.reason is None
        assert list((await db.metrics.history("hy", "loss")).steps) == list(
            range(1, history.steps + 1)
        )
        best = await db.checkpoints.best("hy", "min")
        assert best is not None and best.state["state"]["epoch_metrics"]
        async with db.registry.session() as session:
            jobs = (await session.scalars(select(JobRow).where(JobRow.run_id == "hy"))).all()
        # Every layer evaluation went through the BackendManager as a (free) job.
        assert len(jobs) >= history.steps and all(j.status == "completed" for j in jobs)
        assert {j.backend for j in jobs} == {"simulator"}


async def test_the_event_loop_stays_responsive_while_a_hybrid_trains(tmp_path: Path) -> None:
    async with QuantumDatabase(sqlite_url(tmp_path)).connect() as db:
        train, _ = await loaders(db)
        gaps: list[float] = []
        done = asyncio.Event()

        async def ticker() -> None:
            last = time.perf_counter()
            while not done.is_set():
                await asyncio.sleep(0.002)
                now = time.perf_counter()
                gaps.append(now - last)
                last = now

        tick = asyncio.create_task(ticker())
        config = TrainingConfig(optimizer="adam", epochs=1, seed=2, checkpoint_every=100)
        await QuantumTrainer(config, db).fit(hybrid_module(2), train, run_id="stall")
        done.set()
        await tick
    assert len(gaps) > 20
    # The loop is never blocked for 50 ms by the torch passes (they run in a worker thread).
    assert max(gaps) < 0.05, f"the event loop stalled for {max(gaps) * 1e3:.1f} ms"


# ---------------------------------------------------------------- resume after SIGKILL
def _script(url: str, run_id: str, out: Path, kind: str) -> list[str]:
    return [sys.executable, "-m", "tests.hybrid_script", url, run_id, str(out), kind]


@pytest.mark.slow
@pytest.mark.parametrize("kind", ["torch", "quantum"])
def test_sigkill_at_a_random_step_resumes_bitwise(
    tmp_path: Path, kind: str, rng: np.random.Generator
) -> None:
    reference = tmp_path / "reference.npz"
    done = subprocess.run(
        _script(sqlite_url(tmp_path, "ref.sqlite"), "run", reference, kind),
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=300,
        check=True,
    )
    total = int(done.stdout.split("done")[-1].split()[0])
    assert total == 27  # 3 epochs of 9 batches
    kill_at = int(rng.integers(3, total - 1))
    url = sqlite_url(tmp_path, "resumed.sqlite")
    resumed = tmp_path / "resumed.npz"
    seen = kill_at_step(_script(url, "run", resumed, kind), kill_at, cwd=REPO)
    again = subprocess.run(
        _script(url, "run", resumed, kind),
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=300,
        check=True,
    )
    steps = [int(line.split()[1]) for line in again.stdout.splitlines() if line[:5] == "step "]
    assert steps and 1 < steps[0] <= seen + 1 and steps[-1] == total
    with np.load(reference) as a, np.load(resumed) as b:
        assert sorted(a.files) == sorted(b.files)
        for key in a.files:
            assert a[key].tobytes() == b[key].tobytes(), key  # bitwise

    async def check() -> None:
        async with QuantumDatabase(url).connect() as db:
            run = await db.runs.get("run")
            assert run.status == "finished"
            async with db.registry.session() as session:
                rows = (
                    await session.execute(
                        select(MetricRow.key, MetricRow.step, func.count())
                        .where(MetricRow.run_id == "run")
                        .group_by(MetricRow.key, MetricRow.step)
                    )
                ).all()
            assert rows and all(n == 1 for _, _, n in rows), "a metric step was duplicated"
            assert {s for k, s, _ in rows if k == "loss"} == set(range(1, total + 1))

    asyncio.run(check())


async def test_metric_rows_after_the_checkpoint_are_replaced_on_resume(tmp_path: Path) -> None:
    class Crash(Exception):
        pass

    class CrashAt(Callback):
        def on_step_end(self, ctx: TrainingContext, step: int, logs: Any) -> None:
            if step == 7:
                raise Crash

    config = TrainingConfig(optimizer="sgd", learning_rate=0.1, epochs=2, checkpoint_every=3)
    async with QuantumDatabase(sqlite_url(tmp_path)).connect() as db:
        train, _ = await loaders(db)
        net = hybrid_module(4)
        with pytest.raises(Crash):
            await QuantumTrainer(config, db, callbacks=[CrashAt()]).fit(net, train, run_id="m")
        failed = await db.runs.get("m")
        assert failed.status == "failed" and "Crash" in (failed.reason or "")
        await QuantumTrainer(config, db).fit(hybrid_module(4), train, run_id="m")
        async with db.registry.session() as session:
            steps = (
                await session.scalars(
                    select(MetricRow.step).where(MetricRow.run_id == "m", MetricRow.key == "loss")
                )
            ).all()
        assert sorted(steps) == list(range(1, 2 * len(train) + 1))
        assert (await db.runs.get("m")).status == "finished"


# ---------------------------------------------------------------- monitor and callbacks
async def test_the_best_checkpoint_follows_monitor_and_its_mode(tmp_path: Path) -> None:
    config = TrainingConfig(
        optimizer="adam", epochs=4, seed=5, checkpoint_every=2, monitor="val_accuracy"
    )
    async with QuantumDatabase(sqlite_url(tmp_path)).connect() as db:
        train, val = await loaders(db)
        history = await QuantumTrainer(config, db).fit(
            hybrid_module(5), train, validation=val, run_id="best"
        )
        infos = await db.checkpoints.list("best")
        scored = [i for i in infos if i.metric_value is not None]
        # Only end-of-epoch checkpoints carry a metric, and it is the monitored one.
        assert scored and all(i.metric_name == "val_accuracy" for i in scored)
        assert all(i.step % len(train) == 0 for i in scored)
        assert all(i.metric_value is None for i in infos if i.step % len(train) != 0)
        best = await db.checkpoints.best("best", "max")
        assert best is not None
        assert best.state["state"]["epoch_metrics"]["val_accuracy"] == max(history.val_accuracy)


async def test_callbacks_see_every_hook_and_can_stop_the_run(tmp_path: Path) -> None:
    seen: list[str] = []

    class Recorder(Callback):
        def on_train_begin(self, ctx: TrainingContext) -> None:
            seen.append("train_begin")

        async def on_epoch_begin(self, ctx: TrainingContext, epoch: int) -> None:
            seen.append(f"epoch_begin {epoch}")

        def on_step_end(self, ctx: TrainingContext, step: int, logs: Any) -> None:
            seen.append("step")
            if step == 5:
                ctx.request_stop("enough", "five steps will do")

        async def on_checkpoint(self, ctx: TrainingContext, step: int, metric: Any) -> None:
            seen.append(f"checkpoint {step}")

        def on_stop(self, ctx: TrainingContext, reason: str) -> None:
            seen.append(f"stop {reason}")

        def on_train_end(self, ctx: TrainingContext) -> None:
            seen.append("train_end")

    config = TrainingConfig(optimizer="adam", epochs=3, checkpoint_every=4)
    async with QuantumDatabase(sqlite_url(tmp_path)).connect() as db:
        train, _ = await loaders(db)
        history = await QuantumTrainer(config, db, callbacks=[Recorder()]).fit(
            hybrid_module(6), train, run_id="cb"
        )
        run = await db.runs.get("cb")
        # The stop is final: fitting the run again takes no step.
        again = await QuantumTrainer(config, db).fit(hybrid_module(6), train, run_id="cb")
        assert again.steps == 5 and again.stop_reason == "enough"
    assert history.steps == 5 and history.stop_reason == "enough"
    assert run.status == "stopped" and "five steps" in (run.reason or "")
    assert seen[:2] == ["train_begin", "epoch_begin 0"]
    assert seen.count("step") == 5 and "checkpoint 4" in seen
    assert seen[-3:] == ["checkpoint 5", "stop enough", "train_end"]


async def test_a_plateau_controller_lowers_the_learning_rate(tmp_path: Path) -> None:
    lrs: list[float] = []

    class LR(Callback):
        def on_epoch_end(self, ctx: TrainingContext, epoch: int, metrics: Any) -> None:
            lrs.append(ctx.learning_rate)

    config = TrainingConfig(
        optimizer="sgd",
        learning_rate=1e-9,  # nothing improves: every epoch is a plateau
        epochs=4,
        monitor="train_loss",
        scheduler="plateau",
        scheduler_kwargs={"patience": 1, "factor": 0.5, "min_lr": 1e-12, "min_delta": 1e-3},
    )
    async with QuantumDatabase(sqlite_url(tmp_path)).connect() as db:
        train, _ = await loaders(db)
        await QuantumTrainer(config, db, callbacks=[LR()]).fit(hybrid_module(7), train)
    # The first epoch sets the best value; each later one is a plateau and halves the rate.
    assert lrs == pytest.approx([1e-9, 5e-10, 2.5e-10, 1.25e-10])


# ---------------------------------------------------------------- bad input
async def test_bad_models_and_settings_change_nothing_stored(tmp_path: Path) -> None:
    async with QuantumDatabase(sqlite_url(tmp_path)).connect() as db:
        train, _ = await loaders(db)
        before = await counts(db)
        frozen = hybrid_module(8)
        for p in frozen.parameters():  # type: ignore[attr-defined]
            p.requires_grad_(False)
        with pytest.raises(NoTrainableParametersError, match="nothing to train"):
            await QuantumTrainer(TrainingConfig(), db).fit(frozen, train, run_id="bad")
        wide = torch.nn.Sequential(torch.nn.Linear(5, 2))
        with pytest.raises(ModelInputError, match=r"takes 5 features.*has 4"):
            await QuantumTrainer(TrainingConfig(), db).fit(wide, train, run_id="bad")
        spsa = TrainingConfig(optimizer="spsa")
        with pytest.raises(Exception, match="spsa"):
            await QuantumTrainer(spsa, db).fit(hybrid_module(8), train, run_id="bad")
        assert await counts(db) == before
    with pytest.raises(UnknownComponentError, match="no loss named 'hinge_lossy'"):
        TrainingConfig(loss="hinge_lossy")
    with pytest.raises(UnknownComponentError, match="no optimizer named 'Adamax2'"):
        TrainingConfig(optimizer="Adamax2")
    with pytest.raises(UnknownComponentError, match="no LR scheduler named 'Sometimes'"):
        TrainingConfig(scheduler="Sometimes")


async def test_resuming_with_another_architecture_says_to_start_a_new_run(
    tmp_path: Path,
) -> None:
    config = TrainingConfig(optimizer="adam", epochs=1)
    async with QuantumDatabase(sqlite_url(tmp_path)).connect() as db:
        train, _ = await loaders(db)
        await QuantumTrainer(TrainingConfig(optimizer="adam", epochs=2), db).fit(
            hybrid_module(9), train, run_id="arch"
        )
        before = await counts(db)
        other = torch.nn.Sequential(torch.nn.Linear(4, 2)).double()
        with pytest.raises(ResumeMismatchError, match=r"another architecture.*new run"):
            await QuantumTrainer(TrainingConfig(optimizer="adam", epochs=2), db).fit(
                other, train, run_id="arch"
            )
        with pytest.raises(ResumeMismatchError, match=r"other settings.*epochs"):
            await QuantumTrainer(config, db).fit(hybrid_module(9), train, run_id="arch")
        assert await counts(db) == before


# ---------------------------------------------------------------- optimizers and backends
async def test_an_optimizer_factory_and_another_backend(tmp_path: Path) -> None:
    made: list[Any] = []

    def factory(params: Any) -> torch.optim.Optimizer:
        opt = torch.optim.SGD(params, lr=0.05, momentum=0.5)
        made.append(opt)
        return opt

    config = TrainingConfig(optimizer=factory, epochs=1, seed=3)
    assert config.to_dict()["optimizer"].endswith(
        ":test_an_optimizer_factory_and_another_backend.<locals>.factory"
    )
    async with QuantumDatabase(sqlite_url(tmp_path)).connect() as db:
        train, _ = await loaders(db)
        # On Aer the layer's circuits go through parameter shift, as jobs of the manager.
        history = await QuantumTrainer(config, db, "aer").fit(hybrid_module(11), train, run_id="f")
        async with db.registry.session() as session:
            backends = (
                await session.scalars(select(JobRow.backend).where(JobRow.run_id == "f"))
            ).all()
    assert len(made) == 1 and made[0].param_groups[0]["momentum"] == 0.5
    assert history.steps == len(train) and math.isfinite(history.train_loss[0])
    assert backends and set(backends) == {"aer"}


async def test_a_run_that_died_before_its_first_checkpoint_starts_again_cleanly(
    tmp_path: Path,
) -> None:
    class Crash(Exception):
        pass

    class CrashAt(Callback):
        def on_step_end(self, ctx: TrainingContext, step: int, logs: Any) -> None:
            if step == 2:
                raise Crash

    config = TrainingConfig(optimizer="adam", epochs=1, checkpoint_every=50, seed=4)
    async with QuantumDatabase(sqlite_url(tmp_path)).connect() as db:
        train, _ = await loaders(db)
        with pytest.raises(Crash):
            await QuantumTrainer(config, db, callbacks=[CrashAt()]).fit(
                hybrid_module(12), train, run_id="early"
            )
        assert await db.checkpoints.latest("early") is None
        first = hybrid_module(12)
        await QuantumTrainer(config, db).fit(first, train, run_id="early")
        fresh = hybrid_module(12)
        await QuantumTrainer(config, db).fit(fresh, train, run_id="fresh")
        steps = list((await db.metrics.history("early", "loss")).steps)
        assert (await db.runs.get("early")).status == "finished"
    assert steps == list(range(1, len(train) + 1))  # the dead attempt's rows were replaced
    # It started from the seed again: the same parameters as a run never interrupted.
    for key, value in first.state_dict().items():  # type: ignore[attr-defined]
        assert torch.equal(value, fresh.state_dict()[key]), key  # type: ignore[attr-defined]


def test_bad_callback_settings_are_refused() -> None:
    from quantum_ml.errors import TrainingError
    from quantum_ml.training import EarlyStopping, LambdaCallback, ReduceLROnPlateau

    with pytest.raises(TrainingError, match="patience must be >= 1"):
        EarlyStopping("val_loss", 0)
    with pytest.raises(TrainingError, match="patience must be >= 1"):
        ReduceLROnPlateau("val_loss", patience=0)
    with pytest.raises(TrainingError, match=r"factor must be in \(0, 1\)"):
        ReduceLROnPlateau("val_loss", factor=1.0)
    with pytest.raises(TrainingError, match="min_lr must be > 0"):
        ReduceLROnPlateau("val_loss", min_lr=0.0)
    with pytest.raises(TrainingError, match="unknown callback hooks"):
        LambdaCallback(on_batch_end=print)
    with pytest.raises(TrainingError, match="must be quantum_ml Callback instances"):
        QuantumTrainer(TrainingConfig(), None, callbacks=[print])  # type: ignore[arg-type,list-item]


async def test_momentum_reaches_torch_sgd_and_is_refused_elsewhere(tmp_path: Path) -> None:
    from quantum_ml.errors import TrainingError

    with pytest.raises(TrainingError, match="momentum applies to optimizer='sgd' only"):
        TrainingConfig(optimizer="AdamW", momentum=0.9)
    with pytest.raises(TrainingError, match="a factory sets its own"):
        TrainingConfig(optimizer=lambda p: torch.optim.SGD(p, lr=0.1), momentum=0.9)
    seen: list[float] = []

    class Momentum(Callback):
        def on_train_begin(self, ctx: TrainingContext) -> None:
            seen.append(ctx.learning_rate)

    config = TrainingConfig(optimizer="SGD", momentum=0.9, learning_rate=0.02, epochs=1)
    async with QuantumDatabase(sqlite_url(tmp_path)).connect() as db:
        train, _ = await loaders(db)
        trainer = QuantumTrainer(config, db, callbacks=[Momentum()])
        await trainer.fit(hybrid_module(13), train, run_id="sgd")
        latest = await db.checkpoints.latest("sgd")
    assert seen == [0.02]
    assert latest is not None
    groups = latest.state["task"]["optimizer"]["param_groups"]
    assert groups[0]["momentum"] == 0.9


async def test_one_output_losses_for_classes_and_for_values(tmp_path: Path) -> None:
    one_out = torch.nn.Sequential(torch.nn.Linear(4, 1)).double()
    async with QuantumDatabase(sqlite_url(tmp_path)).connect() as db:
        train, _ = await loaders(db)
        bce = TrainingConfig(optimizer="adam", loss="bce", epochs=2, learning_rate=0.1)
        history = await QuantumTrainer(bce, db).fit(one_out, train, run_id="bce")
        assert len(history.train_accuracy) == 2 and history.train_accuracy[-1] > 0.7
        X = np.random.default_rng(2).normal(size=(40, 4))
        await db.store_training_data("values", X, X @ np.array([0.5, -1.0, 0.2, 0.0]))
        values = db.create_ml_data_loader("values", batch_size=8, seed=1, split="train")
        mse = TrainingConfig(optimizer="adam", loss="mse_loss", epochs=3, learning_rate=0.1)
        fitted = await QuantumTrainer(mse, db).fit(
            torch.nn.Sequential(torch.nn.Linear(4, 1)).double(), values, run_id="mse"
        )
    assert fitted.train_accuracy == []  # regression: no accuracy
    assert fitted.train_loss[-1] < fitted.train_loss[0]
