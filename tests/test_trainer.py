"""QuantumTrainer: learning, exact resume after SIGKILL, early stopping, freezing, config."""

from __future__ import annotations

import math
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from backends.errors import QuantumDBError
from backends.simulator import SimulatorBackend
from quantum_db import QuantumDatabase
from quantum_ml.encoders import QuantumDataEncoder
from quantum_ml.errors import (
    ModelInputError,
    NoTrainableParametersError,
    ResumeMismatchError,
    UnknownComponentError,
)
from quantum_ml.models import QuantumModel
from quantum_ml.trainer import QuantumTrainer, TrainingConfig, TrainingError, loss_and_grad
from quantum_ml.training.tasks import QuantumModelTask

from .clitools import kill_at_step

REPO = Path(__file__).resolve().parents[1]


def blobs(n: int = 80, seed: int = 0) -> tuple[np.ndarray[Any, Any], np.ndarray[Any, Any]]:
    """Two well separated Gaussian blobs in 2-D, labels 0 and 1."""
    rng = np.random.default_rng(seed)
    y = np.arange(n) % 2
    centers = np.where(y[:, None] == 1, 1.0, -1.0) * np.array([1.0, 1.0])
    return centers + rng.normal(scale=0.45, size=(n, 2)), y


def flat(model: QuantumModel) -> np.ndarray[Any, Any]:
    """All trained parameters of ``model``, one vector."""
    assert model.head_weight is not None and model.head_bias is not None
    return np.concatenate([model.weights, model.head_weight.ravel(), model.head_bias])


def url(tmp_path: Path, name: str = "q.sqlite") -> str:
    return f"sqlite+aiosqlite:///{tmp_path / name}"


async def store_blobs(db: QuantumDatabase) -> QuantumDataEncoder:
    X, y = blobs()
    info = await db.store_training_data(
        "blobs",
        X,
        y,
        splits={"train": 0.75, "validation": 0.25},
        encoding={"scaling": "minmax"},
    )
    return QuantumDataEncoder.from_contract(info.encoding)


def make_model(encoder: QuantumDataEncoder, layers: int = 1) -> QuantumModel:
    return QuantumModel(2, layers, task="classification", n_outputs=2, seed=3, encoder=encoder)


# ---------------------------------------------------------------- learning
async def test_training_reduces_loss_and_classifies(tmp_path: Path) -> None:
    async with QuantumDatabase(url(tmp_path)).connect() as db:
        model = make_model(await store_blobs(db))
        config = TrainingConfig(learning_rate=0.1, epochs=6, checkpoint_every=5, seed=1)
        trainer = QuantumTrainer(config, db, SimulatorBackend())
        assert trainer.gradient_method == "adjoint"
        train = db.create_ml_data_loader("blobs", batch_size=10, seed=1, split="train")
        val = db.create_ml_data_loader("blobs", batch_size=20, shuffle=False, split="validation")
        history = await trainer.fit(model, train, val, run_id="learn")
        assert history.train_loss[-1] < history.train_loss[0] - 0.1
        assert history.final["val_accuracy"] >= 0.9
        assert history.stop_reason is None
        assert history.steps == 6 * len(train)
        losses = await db.metrics.history("learn", "loss")
        assert len(losses) == history.steps
        assert len(await db.metrics.history("learn", "val_loss")) == 6
        latest = await db.checkpoints.latest("learn")
        assert latest is not None and latest.step == history.steps
        assert (await db.runs.get("learn")).status == "finished"
        # A finished run is not trained again.
        again = await trainer.fit(model, train, val, run_id="learn")
        assert again.steps == history.steps


async def test_gradient_matches_finite_differences(tmp_path: Path) -> None:
    async with QuantumDatabase(url(tmp_path)).connect() as db:
        encoder = await store_blobs(db)
        X, y = blobs(8, seed=5)
        for readout in ("expectation", "probabilities"):
            model = QuantumModel(
                2, 2, readout=readout, task="classification", seed=4, encoder=encoder
            )
            model.freeze([1])
            backend = SimulatorBackend()
            task = QuantumModelTask(model, TrainingConfig(), backend, "adjoint")
            await task.compute(X, y, 0)
            grad = task.last_gradient
            theta = task.parameter_vector()
            numeric = np.zeros_like(theta)
            h = 1e-6
            for i in range(theta.size):
                losses = []
                for sign in (1.0, -1.0):
                    shifted = theta.copy()
                    shifted[i] += sign * h
                    task.set_parameter_vector(shifted)
                    out = await model.forward(backend, X)
                    losses.append(loss_and_grad("cross-entropy", out, y)[0])
                numeric[i] = (losses[0] - losses[1]) / (2 * h)
            task.set_parameter_vector(theta)
            numeric[1] = 0.0  # frozen
            np.testing.assert_allclose(grad, numeric, atol=1e-7)


# ---------------------------------------------------------------- exact resume
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
        print(f"step {step} {loss!r}", flush=True)

    async def main():
        async with QuantumDatabase(db_url).connect() as db:
            names = [d.name for d in await db.list_datasets()]
            rng = np.random.default_rng(0)
            y = np.arange(60) % 2
            X = np.where(y[:, None] == 1, 1.0, -1.0) + rng.normal(scale=0.45, size=(60, 2))
            if "blobs" not in names:
                await db.store_training_data(
                    "blobs", X, y, splits={"train": 0.75, "validation": 0.25},
                    encoding={"scaling": "minmax"},
                )
            info = (await db.list_datasets())[0]
            enc = QuantumDataEncoder.from_contract(info.encoding)
            model = QuantumModel(
                2, 2, task="classification", n_outputs=2, seed=3, encoder=enc
            )
            model.freeze([0])
            config = TrainingConfig(learning_rate=0.1, epochs=4, checkpoint_every=3, seed=7)
            trainer = QuantumTrainer(config, db, on_step=on_step)
            train = db.create_ml_data_loader("blobs", batch_size=4, seed=11, split="train")
            val = db.create_ml_data_loader("blobs", batch_size=8, split="validation")
            history = await trainer.fit(model, train, val, run_id=run_id)
            flat = [model.weights, model.head_weight.ravel(), model.head_bias]
            np.save(out, np.concatenate(flat))
            print("done", history.steps, flush=True)

    asyncio.run(main())
    """
)


def _run_script(db_url: str, run_id: str, out: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", _SCRIPT, db_url, run_id, str(out)],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )


@pytest.mark.slow
def test_exact_resume_after_sigkill(tmp_path: Path, rng: np.random.Generator) -> None:
    reference = tmp_path / "reference.npy"
    done = _run_script(url(tmp_path, "ref.sqlite"), "run", reference)
    total = int(done.stdout.split("done")[-1].split()[0])
    assert total % 4 == 0 and total >= 40  # 4 epochs of 11 or 12 batches of 4
    kill_at = int(rng.integers(4, total - 4))  # after the first checkpoint (step 3)

    resumed_url = url(tmp_path, "resumed.sqlite")
    resumed = tmp_path / "resumed.npy"
    seen = kill_at_step(
        [sys.executable, "-c", _SCRIPT, resumed_url, "run", str(resumed)], kill_at, cwd=REPO
    )
    assert not resumed.exists()

    again = _run_script(resumed_url, "run", resumed)
    steps = [int(line.split()[1]) for line in again.stdout.splitlines() if line[:5] == "step "]
    assert steps, "the restarted run took no step"
    assert steps[0] > 3 and steps[0] <= seen + 1  # it resumed from a checkpoint, not from 0
    assert steps[-1] == total
    np.testing.assert_array_equal(np.load(resumed), np.load(reference))
    assert np.array_equal(np.load(resumed), np.load(reference))


async def test_resume_in_process_matches(tmp_path: Path) -> None:
    """An interrupted ``fit`` (an exception mid-epoch) resumes to the same parameters."""

    class Stop(Exception):
        pass

    def stopper(at: int) -> Any:
        def on_step(step: int, loss: float) -> None:
            if step == at:
                raise Stop

        return on_step

    config = TrainingConfig(learning_rate=0.1, epochs=3, checkpoint_every=4, seed=2)
    finals = []
    for name, interrupt in (("a.sqlite", None), ("b.sqlite", 9)):
        async with QuantumDatabase(url(tmp_path, name)).connect() as db:
            encoder = await store_blobs(db)
            for attempt in range(2):
                model = make_model(encoder)
                hook = stopper(interrupt) if interrupt is not None and attempt == 0 else None
                trainer = QuantumTrainer(config, db, on_step=hook)
                train = db.create_ml_data_loader("blobs", batch_size=7, seed=5, split="train")
                try:
                    await trainer.fit(model, train, run_id="r")
                except Stop:
                    continue
                finals.append(flat(model))
                break
    assert np.array_equal(finals[0], finals[1])


# ---------------------------------------------------------------- stopping and freezing
async def test_early_stopping_with_patience(tmp_path: Path) -> None:
    async with QuantumDatabase(url(tmp_path)).connect() as db:
        model = make_model(await store_blobs(db))
        # A tiny learning rate: val_loss barely moves, so min_delta is never beaten.
        config = TrainingConfig(
            learning_rate=1e-6, epochs=20, patience=2, min_delta=0.01, checkpoint_every=100
        )
        train = db.create_ml_data_loader("blobs", batch_size=30, seed=0, split="train")
        val = db.create_ml_data_loader("blobs", batch_size=20, split="validation")
        history = await QuantumTrainer(config, db).fit(model, train, val, run_id="es")
        assert history.stop_reason == "early_stopping"
        assert history.stopped_early
        assert len(history.epochs) == 3  # best at epoch 0, then 2 epochs without improvement


async def test_frozen_weights_do_not_change(tmp_path: Path) -> None:
    async with QuantumDatabase(url(tmp_path)).connect() as db:
        model = make_model(await store_blobs(db), layers=2)
        model.freeze("layers:0")
        before = model.weights.copy()
        head_before = model.head_weight.copy() if model.head_weight is not None else None
        config = TrainingConfig(learning_rate=0.1, epochs=2, optimizer="sgd", momentum=0.5)
        train = db.create_ml_data_loader("blobs", batch_size=15, seed=0, split="train")
        await QuantumTrainer(config, db).fit(model, train, run_id="frozen")
        frozen = ~model.trainable_mask
        assert frozen.sum() == 6
        assert np.array_equal(model.weights[frozen], before[frozen])
        assert not np.allclose(model.weights[~frozen], before[~frozen])
        assert head_before is not None and model.head_weight is not None
        assert not np.allclose(model.head_weight, head_before)


async def test_vanishing_gradient_and_exploding_loss_stop(tmp_path: Path) -> None:
    async with QuantumDatabase(url(tmp_path)).connect() as db:
        encoder = await store_blobs(db)
        train = db.create_ml_data_loader("blobs", batch_size=30, seed=0, split="train")
        config = TrainingConfig(epochs=3, max_grad_norm_vanishing=1e6)
        history = await QuantumTrainer(config, db).fit(make_model(encoder), train, run_id="v")
        assert history.stop_reason == "vanishing_gradient"
        assert history.steps == 1
        assert (await db.runs.get("v")).status == "stopped"

        model = make_model(encoder)
        assert model.head_weight is not None
        model.head_weight *= 1e9  # logits ~1e9: the cross-entropy explodes
        config = TrainingConfig(epochs=3, max_loss=100.0)
        history = await QuantumTrainer(config, db).fit(model, train, run_id="x")
        assert history.stop_reason == "exploding_loss"
        assert history.steps == 0

        model = make_model(encoder)
        assert model.head_bias is not None
        model.head_bias[0] = math.nan
        history = await QuantumTrainer(TrainingConfig(epochs=1), db).fit(model, train, run_id="n")
        assert history.stop_reason == "nan_loss"


async def test_spsa_and_parameter_shift_train(tmp_path: Path) -> None:
    async with QuantumDatabase(url(tmp_path)).connect() as db:
        encoder = await store_blobs(db)
        train = db.create_ml_data_loader("blobs", batch_size=20, seed=0, split="train")
        for config in (
            TrainingConfig(optimizer="spsa", learning_rate=0.2, epochs=2),
            TrainingConfig(gradient_method="parameter-shift", loss="mse", epochs=2),
        ):
            model = make_model(encoder)
            trainer = QuantumTrainer(config, db)
            history = await trainer.fit(model, train, run_id=f"m-{config.optimizer}")
            assert history.steps == 2 * len(train)
            assert all(math.isfinite(v) for v in history.train_loss)
        assert trainer.gradient_method == "parameter-shift"


# ---------------------------------------------------------------- configuration
@pytest.mark.parametrize(
    "kwargs",
    [
        {"learning_rate": 0.0},
        {"learning_rate": math.nan},
        {"epochs": 0},
        {"epochs": 1.5},
        {"optimizer": "no-such-optimizer"},
        {"loss": "hinge"},
        {"gradient_method": "magic"},
        {"checkpoint_every": 0},
        {"seed": -1},
        {"patience": 0},
        {"min_delta": -1.0},
        {"monitor": "accuracy"},
        {"max_grad_norm_vanishing": -1.0},
        {"max_loss": math.inf},
        {"shots": 0},
        {"momentum": 0.5},  # momentum is for sgd only
        {"gradient_method": "adjoint", "shots": 100},
    ],
)
def test_bad_config_raises(kwargs: dict[str, Any]) -> None:
    with pytest.raises(TrainingError) as info:
        TrainingConfig(**kwargs)
    assert isinstance(info.value, QuantumDBError)
    assert isinstance(info.value, ValueError)


async def test_fit_rejects_bad_setups(tmp_path: Path) -> None:
    async with QuantumDatabase(url(tmp_path)).connect() as db:
        encoder = await store_blobs(db)
        train = db.create_ml_data_loader("blobs", batch_size=20, seed=0, split="train")
        with pytest.raises(TrainingError, match="validation loader"):
            await QuantumTrainer(TrainingConfig(patience=2), db).fit(make_model(encoder), train)
        with pytest.raises(TrainingError, match="2 outputs"):
            model = QuantumModel(2, 1, task="regression", encoder=encoder)
            await QuantumTrainer(TrainingConfig(), db).fit(model, train)
        first = TrainingConfig(epochs=1)
        await QuantumTrainer(first, db).fit(make_model(encoder), train, run_id="cfg")
        with pytest.raises(ResumeMismatchError, match="other settings"):
            await QuantumTrainer(TrainingConfig(epochs=2), db).fit(
                make_model(encoder), train, run_id="cfg"
            )
        deeper = make_model(encoder, layers=2)
        with pytest.raises(ResumeMismatchError, match=r"another architecture.*new run"):
            await QuantumTrainer(first, db).fit(deeper, train, run_id="cfg")
        frozen = QuantumModel(2, 1, encoder=encoder).freeze("all")
        with pytest.raises(NoTrainableParametersError, match="nothing to train"):
            await QuantumTrainer(first, db).fit(frozen, train, run_id="frozen")
        with pytest.raises(UnknownComponentError, match="torch optimizers need"):
            await QuantumTrainer(TrainingConfig(optimizer="AdamW"), db).fit(
                make_model(encoder), train, run_id="adamw"
            )
        wide = QuantumModel(3, 1, task="classification", seed=1)
        with pytest.raises(ModelInputError, match="takes 3 features"):
            await QuantumTrainer(first, db).fit(wide, train, run_id="wide")
        assert not await db.runs.exists("frozen") and not await db.runs.exists("wide")
