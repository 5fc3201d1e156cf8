"""A QGAN run in its own process, for the kill-and-resume tests.

``python -m tests.qgan_script DB_URL RUN_ID OUT KIND`` trains a 3-qubit Born machine on
stored log-normal samples (``KIND=exact``: exact, batches of 16, a discriminator with
dropout; ``KIND=shots``: 200 shots per distribution, parameter shift; ``KIND=latent``: a
latent generator with a torch head), printing ``step N`` after every step, and saves the
generator's weights and the discriminator's tensors to ``OUT`` (``.npz``).
"""

from __future__ import annotations

import asyncio
import sys

import numpy as np


async def main(db_url: str, run_id: str, out: str, kind: str) -> None:
    import torch

    from backends.templates import hardware_efficient_circuit
    from quantum_db import QuantumDatabase
    from quantum_ml.qgan import (
        GANConfig,
        LatentGenerator,
        QuantumGAN,
        QuantumGenerator,
        ry_cz_ansatz,
    )
    from quantum_ml.training.callbacks import LambdaCallback

    rng = np.random.default_rng(0)
    samples = np.clip(np.round(rng.lognormal(1.0, 1.0, 96)), 0, 7)[:, None]
    torch.manual_seed(1)
    disc = torch.nn.Sequential(
        torch.nn.Linear(1, 12),
        torch.nn.LeakyReLU(0.2),
        torch.nn.Dropout(0.2),
        torch.nn.Linear(12, 1),
        torch.nn.Sigmoid(),
    )
    generator: QuantumGenerator | LatentGenerator
    if kind == "latent":
        head = torch.nn.Linear(2, 1).double()
        generator = LatentGenerator(
            hardware_efficient_circuit(2, 1), latent_dim=2, head=head, seed=4
        )
        disc = disc.double()
    else:
        generator = QuantumGenerator(
            ry_cz_ansatz(3, reps=2), bounds=[(0, 7)], bits=[3], initial_state="uniform", seed=4
        )
    config = GANConfig(
        epochs=4,
        loss="non-saturating",
        generator_lr=0.05,
        discriminator_lr=0.02,
        batch_size=16,
        d_steps=2,
        shots=200 if kind == "shots" else None,
        seed=9,
        checkpoint_every=1,
    )

    def on_step(ctx: object, step: int, logs: object) -> None:
        print(f"step {step}", flush=True)

    async with QuantumDatabase(db_url).connect() as db:
        if not await db.list_datasets():
            await db.store_training_data("lognormal", samples, np.zeros(len(samples), np.int64))
        gan = QuantumGAN(
            generator, disc, config, db, callbacks=[LambdaCallback(on_step_end=on_step)]
        )
        history = await gan.fit("lognormal", run_id=run_id)
    arrays = {"weights": np.asarray(generator.weights)}
    for key, tensor in disc.state_dict().items():
        arrays[f"disc.{key}"] = tensor.detach().numpy()
    if kind == "latent":
        for key, tensor in generator.head.state_dict().items():  # type: ignore[union-attr]
            arrays[f"head.{key}"] = tensor.detach().numpy()
    arrays["relative_entropy"] = np.asarray(history["relative_entropy"])
    np.savez(out, **arrays)
    print(f"done {history.steps}", flush=True)


if __name__ == "__main__":
    asyncio.run(main(*sys.argv[1:5]))
