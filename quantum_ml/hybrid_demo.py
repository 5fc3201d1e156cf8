"""The ``qdb demo --hybrid`` job: ``Linear -> TorchQuantumLayer -> Linear`` on stored data.

The same seeded two-moons dataset as ``qdb demo``, trained by the same
:class:`QuantumTrainer` as a torch module (Adam, cross-entropy), with checkpoints and
resume, then registered without pickle (:class:`~quantum_ml.torch_models.TorchModel`)
and rebuilt from the registry to check it.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np
import torch

from quantum_db import QuantumDatabase
from quantum_db.errors import ModelNotFoundError

from .hybrid import hybrid_classifier
from .torch_models import TorchModel
from .trainer import QuantumTrainer, TrainingConfig
from .training_demo import check_demo_options, two_moons

__all__ = ["HYBRID_MODEL_NAME", "HybridDemoResult", "run_hybrid_demo"]

HYBRID_MODEL_NAME = "moons-hybrid"
_QUBITS, _LAYERS = 4, 2


@dataclass(frozen=True, slots=True)
class HybridDemoResult:
    test_accuracy: float
    model_version: int
    run_id: str
    elapsed_s: float
    stop_reason: str | None


async def run_hybrid_demo(url: str | None = None, *, verbose: bool = True) -> HybridDemoResult:
    """Two moons -> database -> hybrid torch model trained on the simulator -> registered."""
    start = time.perf_counter()
    say = print if verbose else (lambda *_: None)
    await check_demo_options(budget_usd=0.0, backend="simulator")
    X, y = two_moons()
    X = np.hstack([X, X])
    async with QuantumDatabase(url).connect() as db:
        info = await db.store_training_data(
            "moons",
            X,
            y,
            {"source": "qdb demo: seeded two moons, 240 samples"},
            splits={"train": 0.7, "validation": 0.15, "test": 0.15},
            encoding={"scaling": "minmax"},
        )
        say(f"dataset {info.name!r} v{info.version}: {info.n_samples} samples")
        net = hybrid_classifier(n_features=4, n_qubits=_QUBITS, layers=_LAYERS, seed=0)
        say(f"model: {net}")
        config = TrainingConfig(
            optimizer="Adam",
            learning_rate=0.05,
            loss="cross_entropy",
            epochs=12,
            checkpoint_every=10,
            seed=0,
            patience=4,
            min_delta=1e-3,
        )
        loader = {
            split: db.create_ml_data_loader(
                "moons", batch_size=16, seed=0, split=split, version=info.version
            )
            for split in ("train", "validation", "test")
        }
        run_id = f"moons-hybrid-v{info.version}"
        trainer = QuantumTrainer(config, db)
        history = await trainer.fit(
            net, loader["train"], validation=loader["validation"], run_id=run_id
        )
        for epoch, loss, acc in zip(
            history.epochs, history.train_loss, history.val_accuracy, strict=True
        ):
            say(f"epoch {epoch:2d}  train_loss {loss:.4f}  val_accuracy {acc:.3f}")
        _, accuracy = await trainer.evaluate(net, loader["test"])
        assert accuracy is not None
        try:
            latest = await db.models.get(HYBRID_MODEL_NAME)
            found = latest if latest.provenance.get("run_id") == run_id else None
        except ModelNotFoundError:
            found = None
        if found is None:
            found = await db.models.register(
                HYBRID_MODEL_NAME,
                TorchModel(net, encoding=loader["train"].info.encoding),
                metrics={"test_accuracy": accuracy, **history.final},
                provenance={"run_id": run_id, "dataset": f"moons v{info.version}"},
            )
        # The registry rebuilds the module from its factory and arrays: same outputs.
        rebuilt = found.build()
        probe = torch.from_numpy(X[:8]).float()
        with torch.no_grad():
            same = torch.equal(rebuilt(probe), net(probe))
        checkpoints = await db.checkpoints.list(run_id)
    elapsed = time.perf_counter() - start
    say(
        f"run {run_id}: {history.stop_reason or 'all epochs done'} after {history.steps} steps; "
        f"{len(checkpoints)} checkpoints kept"
    )
    say(
        f"model {HYBRID_MODEL_NAME!r} v{found.version} (from run {run_id}); rebuilt from the "
        f"registry: {'same outputs' if same else 'DIFFERENT outputs'}"
    )
    say(f"test accuracy: {accuracy:.3f}  ({elapsed:.1f} s)")
    return HybridDemoResult(accuracy, found.version, run_id, elapsed, history.stop_reason)
