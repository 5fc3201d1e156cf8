"""The Qiskit Machine Learning PyTorch QGAN tutorial, on quantum-db.

The tutorial's setup (``docs/tutorials/04_torch_qgan.ipynb``): a 2-D standard normal on an
8 x 8 grid of (-2, 2)^2, a generator of H on 6 qubits then ``efficient_su2(6, reps=6)``,
its 20-unit discriminator, its probability-weighted BCE, Adam with lr 0.01, betas (0.7,
0.999) and weight decay 0.005, 50 epochs. The generator here is quantum-db's own
``efficient_su2`` (the same circuit as Qiskit's; any Qiskit circuit also works through
``Circuit.from_qiskit``). ``benchmarks/qgan.py`` runs the same setup next to Qiskit's own
implementation and compares them epoch by epoch.

    python examples/qgan_torch_tutorial.py [--db PATH] [--epochs N]
"""

from __future__ import annotations

import argparse
import asyncio
import tempfile
from pathlib import Path

import numpy as np
import torch
from scipy.stats import multivariate_normal

from quantum_db import QuantumDatabase
from quantum_ml.qgan import (
    GANConfig,
    QuantumGAN,
    QuantumGenerator,
    TargetDistribution,
    efficient_su2,
    mlp_discriminator,
)

SEED = 123456


async def main(url: str, epochs: int) -> None:
    coords = np.linspace(-2, 2, 8)
    grid = np.transpose([np.tile(coords, 8), np.repeat(coords, 8)])
    prob = multivariate_normal(mean=[0.0, 0.0], cov=[[1, 0], [0, 1]]).pdf(grid)
    prob /= prob.sum()
    generator = QuantumGenerator(
        efficient_su2(6, reps=6),
        bounds=[(-2, 2), (-2, 2)],
        bits=[3, 3],
        initial_state="uniform",
        weights=np.random.default_rng(SEED).random(84),
    )
    torch.manual_seed(SEED)
    discriminator = mlp_discriminator(
        2, (20,)
    )  # Linear(2, 20) - LeakyReLU(0.2) - Linear(20, 1) - Sigmoid
    adam = {"betas": (0.7, 0.999), "weight_decay": 0.005}
    config = GANConfig(
        epochs=epochs,
        loss="weighted-bce",
        update="simultaneous",
        generator_lr=0.01,
        discriminator_lr=0.01,
        generator_optimizer_kwargs=adam,
        discriminator_optimizer_kwargs=adam,
        seed=SEED,
    )
    async with QuantumDatabase(url).connect() as db:
        gan = QuantumGAN(generator, discriminator, config, db)
        history = await gan.fit(TargetDistribution(prob, "normal-2d"), run_id="torch-qgan-tutorial")
        for epoch in range(0, epochs, max(epochs // 10, 1)):
            print(
                f"epoch {epoch:3d}: relative entropy {history['relative_entropy'][epoch]:.4f}, "
                f"generator loss {history['generator_loss'][epoch]:.4f}, "
                f"discriminator loss {history['discriminator_loss'][epoch]:.4f}"
            )
        print(f"final relative entropy {history.final['relative_entropy']:.4f}")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--db", type=Path, help="SQLite file (default: a temporary one)")
    parser.add_argument("--epochs", type=int, default=50)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        path = args.db or Path(tmp) / "qgan.sqlite"
        asyncio.run(main(f"sqlite+aiosqlite:///{path}", args.epochs))
