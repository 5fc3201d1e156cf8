"""A training run in its own process, for the kill-and-resume tests.

``python -m tests.hybrid_script DB_URL RUN_ID OUT KIND`` trains a hybrid torch model
(``KIND=torch``) or a QuantumModel (``KIND=quantum``) on a stored dataset, printing
``step N LOSS`` after every step, and saves the final parameters to ``OUT`` (``.npz``).
``KIND=ionq`` trains a small QuantumModel on IonQ Aria (the emulator at
``QDB_TEST_IONQ_URL``, key ``QDB_TEST_IONQ_KEY``) with shots and a budget.
"""

from __future__ import annotations

import asyncio
import sys

import numpy as np


def hybrid_module(seed: int = 0) -> object:
    import torch

    from backends.simulator import SimulatorBackend
    from quantum_ml import QuantumModel
    from quantum_ml.torch_layer import TorchQuantumLayer

    shape = QuantumModel(3, 2)
    gen = torch.Generator().manual_seed(seed)
    first, last = torch.nn.Linear(4, 3), torch.nn.Linear(3, 2)
    for lin in (first, last):
        with torch.no_grad():
            lin.weight.copy_(torch.rand(lin.weight.shape, generator=gen) - 0.5)
            lin.bias.copy_(torch.rand(lin.bias.shape, generator=gen) - 0.5)
    layer = TorchQuantumLayer(shape.circuit, SimulatorBackend(), shape.observables, weights=seed)
    return torch.nn.Sequential(first, torch.nn.Dropout(0.1), layer, last).double()


async def store_data(db: object) -> None:
    rng = np.random.default_rng(0)
    y = np.arange(48) % 2
    X = np.where(y[:, None] == 1, 0.6, -0.6) + rng.normal(scale=0.5, size=(48, 4))
    await db.store_training_data(  # type: ignore[attr-defined]
        "blobs4", X, y, splits={"train": 0.75, "validation": 0.25}
    )


async def main(db_url: str, run_id: str, out: str, kind: str) -> None:
    from quantum_db import QuantumDatabase
    from quantum_ml import QuantumDataEncoder, QuantumModel, QuantumTrainer, TrainingConfig

    def on_step(step: int, loss: float) -> None:
        print(f"step {step} {loss!r}", flush=True)

    async with QuantumDatabase(db_url).connect() as db:
        if not await db.list_datasets():
            await store_data(db)
        if kind == "ionq":
            import os

            from backends.ionq import IonQBackend

            aria = IonQBackend(
                "qpu.aria-1",
                "qiskit",
                api_key=os.environ["QDB_TEST_IONQ_KEY"],
                api_url=os.environ["QDB_TEST_IONQ_URL"],
                poll_interval_s=0.01,
                max_poll_interval_s=0.05,
                error_mitigation=False,
                seed=5,
            )
            db.backend_manager.register("ionq-aria", aria)
        train = db.create_ml_data_loader("blobs4", batch_size=4, seed=11, split="train")
        val = db.create_ml_data_loader("blobs4", batch_size=6, split="validation")
        if kind == "torch":
            model: object = hybrid_module(3)
            config = TrainingConfig(
                optimizer="AdamW",
                learning_rate=0.05,
                epochs=3,
                checkpoint_every=2,
                seed=7,
                scheduler="StepLR",
                scheduler_kwargs={"step_size": 1, "gamma": 0.7},
            )
        else:
            info = (await db.list_datasets())[0]
            enc = QuantumDataEncoder.from_contract({**info.encoding, "n_qubits": 4})
            model = QuantumModel(4, 1, task="classification", seed=3, encoder=enc)
            config = TrainingConfig(learning_rate=0.1, epochs=3, checkpoint_every=2, seed=7)
        backend = None
        if kind == "ionq":
            if "tiny4" not in [d.name for d in await db.list_datasets()]:
                rng = np.random.default_rng(5)
                await db.store_training_data(
                    "tiny4", rng.normal(size=(6, 4)), np.arange(6) % 2, splits={"train": 1.0}
                )
            tiny = next(d for d in await db.list_datasets() if d.name == "tiny4")
            enc = QuantumDataEncoder.from_contract(tiny.encoding)
            model = QuantumModel(
                4, 1, rotations=("ry",), task="classification", seed=3, encoder=enc
            )
            train = db.create_ml_data_loader("tiny4", batch_size=2, seed=11, split="train")
            val = None
            config = TrainingConfig(
                learning_rate=0.1,
                epochs=1,
                checkpoint_every=1,
                seed=7,
                shots=100,
                budget_usd=100_000.0,
                budget_name="reattach",
            )
            backend = "ionq-aria"
        trainer = QuantumTrainer(config, db, backend, on_step=on_step)
        history = await trainer.fit(model, train, validation=val, run_id=run_id)
        if kind != "torch":
            arrays = {"weights": model.weights, "head": model.head_weight}  # type: ignore[attr-defined]
        else:
            arrays = {k: v.detach().numpy() for k, v in model.state_dict().items()}  # type: ignore[attr-defined]
        np.savez(out, **arrays)
        print("done", history.steps, flush=True)


if __name__ == "__main__":
    asyncio.run(main(*sys.argv[1:5]))
