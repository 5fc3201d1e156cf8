"""The ``qdb demo`` job: store a seeded dataset, train a hybrid classifier, register it."""

from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

from backends import Budget
from quantum_db import QuantumDatabase

from .encoders import QuantumDataEncoder
from .models import QuantumModel
from .trainer import QuantumTrainer, TrainingConfig

__all__ = ["DemoResult", "run_training_demo", "two_moons"]


def two_moons(
    n: int = 240, noise: float = 0.1, seed: int = 0
) -> tuple[NDArray[np.float64], NDArray[np.int64]]:
    """Two interleaving half circles with Gaussian noise, labels 0 and 1."""
    rng = np.random.default_rng(seed)
    half = n // 2
    t_upper = rng.uniform(0.0, np.pi, half)
    t_lower = rng.uniform(0.0, np.pi, n - half)
    upper = np.stack([np.cos(t_upper), np.sin(t_upper)], axis=1)
    lower = np.stack([1.0 - np.cos(t_lower), 0.5 - np.sin(t_lower)], axis=1)
    X = np.concatenate([upper, lower]) + rng.normal(scale=noise, size=(n, 2))
    y = np.concatenate([np.zeros(half, dtype=np.int64), np.ones(n - half, dtype=np.int64)])
    return X, y


@dataclass(frozen=True, slots=True)
class DemoResult:
    test_accuracy: float
    model_version: int
    run_id: str
    backend: str
    seconds: float


async def run_training_demo(
    url: str | None = None, *, budget_usd: float = 5.0, verbose: bool = True
) -> DemoResult:
    """Two moons -> database -> backend chosen under a budget -> trained, registered model."""
    start = time.perf_counter()
    say = print if verbose else (lambda *_: None)
    X, y = two_moons()
    X = np.hstack([X, X])  # each coordinate angle-encoded on two qubits: a richer feature map
    async with QuantumDatabase(url).connect() as db:
        info = await db.store_training_data(
            "moons",
            X,
            y,
            {"source": "qdb demo: seeded two moons, 240 samples"},
            splits={"train": 0.7, "validation": 0.15, "test": 0.15},
            encoding={"scaling": "minmax"},
        )
        say(
            f"stored dataset {info.name!r} v{info.version}: {info.n_samples} samples, "
            f"splits {info.splits['counts']}"
        )
        encoder = QuantumDataEncoder.from_contract(info.encoding)
        model = QuantumModel(4, 3, task="classification", n_outputs=2, seed=1, encoder=encoder)
        budget = Budget(usd=budget_usd, name="qdb-demo")
        selection = db.backend_manager.explain(
            4, depth=model.circuit.depth(), budget=budget, circuit=model.circuit
        )
        say(selection.explain())
        backend = db.backend_manager.get(selection.chosen.name)
        config = TrainingConfig(
            learning_rate=0.05, epochs=30, checkpoint_every=20, seed=0, patience=8, min_delta=1e-3
        )
        trainer = QuantumTrainer(config, db, backend)
        train = db.create_ml_data_loader(
            "moons", batch_size=16, seed=0, split="train", version=info.version
        )
        val = db.create_ml_data_loader(
            "moons", batch_size=64, shuffle=False, split="validation", version=info.version
        )
        test = db.create_ml_data_loader(
            "moons", batch_size=64, shuffle=False, split="test", version=info.version
        )
        run_id = f"moons-demo-v{info.version}"
        history = await trainer.fit(model, train, val, run_id=run_id)
        _, test_accuracy = await trainer.evaluate(model, test)
        assert test_accuracy is not None
        version = await db.models.register(
            "moons-classifier",
            model,
            metrics={"test_accuracy": test_accuracy, **history.final},
            provenance={"run_id": run_id, "dataset": f"moons v{info.version}"},
        )
        checkpoints = await db.checkpoints.list(run_id)
    for epoch, loss, acc in zip(
        history.epochs, history.train_loss, history.val_accuracy, strict=True
    ):
        say(f"epoch {epoch:2d}  train_loss {loss:.4f}  val_accuracy {acc:.3f}")
    elapsed = time.perf_counter() - start
    say(
        f"run {run_id}: {history.stop_reason or 'all epochs done'} after {history.steps} steps; "
        f"{len(checkpoints)} checkpoints kept; metrics logged every step"
    )
    say(f"registered model 'moons-classifier' v{version.version}")
    say(f"test accuracy: {test_accuracy:.3f}  ({elapsed:.1f} s)")
    return DemoResult(test_accuracy, version.version, run_id, selection.chosen.name, elapsed)
