"""The ``qdb demo --hybrid`` job: ``Linear -> TorchQuantumLayer -> Linear`` on stored data.

The same seeded two-moons dataset as ``qdb demo``, trained by the same
:class:`QuantumTrainer` as a torch module (Adam, cross-entropy), with checkpoints and
resume, then registered without pickle (:class:`~quantum_ml.torch_models.TorchModel`)
and rebuilt from the registry to check it.
"""

from __future__ import annotations

import time
import uuid
from dataclasses import dataclass

import numpy as np

from backends.errors import MissingDependencyError

try:
    import torch
except ImportError as exc:  # the module is part of the torch bridge: say how to get torch
    raise MissingDependencyError(
        f"{__name__} needs PyTorch ({exc}): pip install 'quantum-db[torch]'"
    ) from exc

from backends import Budget
from backends.errors import BudgetExceededError
from quantum_db import QuantumDatabase

from .hybrid import hybrid_classifier
from .monitoring.standard import standard_monitors
from .torch_models import TorchModel
from .trainer import QuantumTrainer, TrainingConfig
from .training.callbacks import Callback
from .training_demo import DEMO_SHOTS, EpochLines, check_demo_options, registered_by, two_moons

__all__ = ["HYBRID_MODEL_NAME", "HybridDemoResult", "run_hybrid_demo"]

HYBRID_MODEL_NAME = "moons-hybrid"
_QUBITS, _LAYERS = 4, 3


@dataclass(frozen=True, slots=True)
class HybridDemoResult:
    #: ``None`` when the budget stopped the run before a model was registered.
    test_accuracy: float | None
    model_version: int | None
    run_id: str
    backend: str
    elapsed_s: float
    cost_usd: float
    stop_reason: str | None


async def run_hybrid_demo(
    url: str | None = None,
    *,
    budget_usd: float = 5.0,
    backend: str | None = None,
    verbose: bool = True,
    monitors: bool = True,
) -> HybridDemoResult:
    """Two moons -> database -> hybrid torch model -> registered.

    The quantum layer's circuits run on ``backend`` (default: the built-in simulator, exact
    adjoint gradients) through the BackendManager, each job reserved against a budget of
    ``budget_usd`` first; on a backend without an exact mode they take ``DEMO_SHOTS``
    shots and parameter-shift gradients.
    """
    start = time.perf_counter()
    say = print if verbose else (lambda *_, **__: None)
    backend = backend or "simulator"
    await check_demo_options(budget_usd=budget_usd, backend=backend)
    budget = Budget(usd=float(budget_usd), name=f"qdb-demo-{uuid.uuid4().hex[:12]}")
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
        chosen = db.backend_manager.get(backend)
        shots = None if chosen.capabilities.supports_exact else DEMO_SHOTS
        say(f"backend {backend}" + (f", {shots} shots per circuit" if shots else ""))
        config = TrainingConfig(
            optimizer="Adam",
            learning_rate=0.05,
            loss="cross_entropy",
            epochs=20,
            checkpoint_every=10,
            seed=0,
            patience=6,
            min_delta=1e-3,
            shots=shots,
            budget_usd=budget.usd,
            budget_name=budget.name,
        )
        loader = {
            split: db.create_ml_data_loader(
                "moons", batch_size=16, seed=0, split=split, version=info.version
            )
            for split in ("train", "validation", "test")
        }
        run_id = f"moons-hybrid-v{info.version}-{backend}"
        lines = EpochLines(say)
        callbacks: list[Callback] = [lines, *(standard_monitors() if monitors else [])]
        trainer = QuantumTrainer(config, db, backend, callbacks=callbacks)
        history = await trainer.fit(
            net, loader["train"], validation=loader["validation"], run_id=run_id
        )
        lines.earlier(history)
        accuracy: float | None = None
        if history.stop_reason != "budget":
            try:
                _, accuracy = await trainer.evaluate(net, loader["test"])
            except BudgetExceededError as exc:
                say(f"the test pass does not fit the budget: {exc}")
        spent = await db.backend_manager.accounting.exposure(budget)
        if accuracy is None:
            say("stopped by the budget: no model registered (a larger --budget resumes the run)")
            return HybridDemoResult(
                None, None, run_id, backend, time.perf_counter() - start, spent, "budget"
            )
        found = await registered_by(db, HYBRID_MODEL_NAME, run_id)
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
    say(f"spent ${spent:.4f} of the ${budget.usd:g} budget on {backend}")
    say(f"test accuracy: {accuracy:.3f}  ({elapsed:.1f} s)")
    return HybridDemoResult(
        accuracy, found.version, run_id, backend, elapsed, spent, history.stop_reason
    )
