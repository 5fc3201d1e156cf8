"""Train a hybrid quantum-classical classifier on two moons, end to end (what `qdb demo` runs).

Stores a seeded two-moons dataset, lets the BackendManager choose a backend under a $5
budget, trains a 4-qubit variational classifier with a linear head (QuantumTrainer:
adjoint gradients on the simulator, Adam, metrics and checkpoints in the database),
registers the model and prints its accuracy on the held-out test split.

    python examples/train_classifier.py [--db PATH]
"""

from __future__ import annotations

import argparse
import asyncio
import tempfile
from pathlib import Path

from quantum_ml.training_demo import run_training_demo

if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--db", type=Path, help="SQLite file (default: a temporary one)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        path = args.db or Path(tmp) / "moons.sqlite"
        asyncio.run(run_training_demo(f"sqlite+aiosqlite:///{path}"))
