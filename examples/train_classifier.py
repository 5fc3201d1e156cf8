"""Train a hybrid quantum-classical classifier on two moons, end to end (what `qdb demo` runs).

Stores a seeded two-moons dataset, lets the BackendManager choose a backend under the
budget (or takes --backend), trains a 4-qubit variational classifier with a linear head
(QuantumTrainer: adjoint gradients on the simulator, Adam, metrics and checkpoints in the
database, every circuit evaluation's cost reserved against the budget first), registers
the model and prints its accuracy on the held-out test split.

    python examples/train_classifier.py [--db PATH] [--budget USD] [--backend NAME]
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import tempfile
from pathlib import Path

from quantum_ml.training_demo import run_training_demo

if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--db", type=Path, help="SQLite file (default: a temporary one)")
    parser.add_argument("--budget", type=float, default=5.0, help="USD the run may spend")
    parser.add_argument("--backend", help="backend name (default: chosen under the budget)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        path = args.db or Path(tmp) / "moons.sqlite"
        result = asyncio.run(
            run_training_demo(
                f"sqlite+aiosqlite:///{path}", budget_usd=args.budget, backend=args.backend
            )
        )
    sys.exit(0 if result.test_accuracy is not None else 1)
