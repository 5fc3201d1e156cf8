"""Train a hybrid torch model, Linear -> TorchQuantumLayer -> Linear, with the trainer.

Stores a seeded two-moons dataset, trains ``hybrid_classifier`` (a torch ``Sequential``
whose middle layer is a 4-qubit circuit on the simulator) with ``QuantumTrainer`` —
checkpoints, metrics and job records in the database — resumes the finished run (nothing
is trained twice), registers the model without pickle, rebuilds it from the registry and
fine-tunes it with its first layer frozen.

    python examples/hybrid_torch.py [--db PATH]
"""

from __future__ import annotations

import argparse
import asyncio
import tempfile
from pathlib import Path

import numpy as np
import torch

from quantum_db import QuantumDatabase
from quantum_ml import QuantumTrainer, TorchModel, TrainingConfig, freeze, hybrid_classifier
from quantum_ml.training_demo import two_moons


async def main(url: str) -> None:
    X, y = two_moons()
    async with QuantumDatabase(url).connect() as db:
        await db.store_training_data(
            "moons", np.hstack([X, X]), y, splits={"train": 0.8, "validation": 0.2}
        )
        train = db.create_ml_data_loader("moons", batch_size=16, seed=0, split="train")
        val = db.create_ml_data_loader("moons", batch_size=48, split="validation")

        net = hybrid_classifier(n_features=4, n_qubits=4, layers=2, n_outputs=2, seed=0)
        config = TrainingConfig(optimizer="Adam", learning_rate=0.05, epochs=4, seed=0)
        trainer = QuantumTrainer(config, db)
        history = await trainer.fit(net, train, validation=val, run_id="hybrid-moons")
        print(f"trained {history.steps} steps; val_accuracy {history.final['val_accuracy']:.3f}")

        # The run has finished: fit again resumes it from its last checkpoint, which
        # says it is done, so nothing is trained twice.
        again = await trainer.fit(net, train, validation=val, run_id="hybrid-moons")
        print(
            f"resumed run: {again.steps} steps, status {(await db.runs.get('hybrid-moons')).status}"
        )

        version = await db.models.register(
            "moons-hybrid", TorchModel(net, encoding=train.info.encoding), metrics=history.final
        )
        rebuilt = await db.models.load("moons-hybrid", version=version.version)
        probe = torch.from_numpy(np.hstack([X, X])[:4]).float()
        with torch.no_grad():
            assert torch.equal(rebuilt(probe), net(probe))
        print(f"registered moons-hybrid v{version.version}; rebuilt from the registry")

        # Transfer learning: freeze the input layer, fine-tune the rest.
        freeze(rebuilt, ["0"])
        tune = TrainingConfig(optimizer="SGD", learning_rate=0.01, epochs=1, seed=1)
        tuned = await QuantumTrainer(tune, db).fit(rebuilt, train, run_id="hybrid-tune")
        print(f"fine-tuned {tuned.steps} steps with layer 0 frozen")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--db", type=Path, help="SQLite file (default: a temporary one)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        path = args.db or Path(tmp) / "hybrid.sqlite"
        asyncio.run(main(f"sqlite+aiosqlite:///{path}"))
