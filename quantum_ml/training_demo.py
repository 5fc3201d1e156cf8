"""The ``qdb demo`` job: store a seeded dataset, train a hybrid classifier, register it."""

from __future__ import annotations

import math
import time
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

from backends import Backend, Budget, UnknownBackendError
from backends.errors import BudgetExceededError, InvalidBudgetError
from quantum_db import QuantumDatabase
from quantum_db.errors import ModelNotFoundError
from quantum_db.models import ModelVersion
from quantum_db.settings import Settings

from .encoders import QuantumDataEncoder
from .models import QuantumModel
from .monitoring.standard import standard_monitors
from .trainer import QuantumTrainer, TrainingConfig
from .training.callbacks import Callback, TrainingContext
from .training.state import History

__all__ = [
    "DEMO_SHOTS",
    "MODEL_NAME",
    "DemoResult",
    "EpochLines",
    "check_demo_options",
    "offered_backends",
    "registered_by",
    "run_training_demo",
    "two_moons",
]

#: Shots per circuit when the chosen backend has no exact mode (an IonQ QPU): below
#: IonQ's 500-shot threshold, so error mitigation stays off and a job costs its minimum.
DEMO_SHOTS = 100
MODEL_NAME = "moons-classifier"
_QUBITS, _LAYERS = 4, 3
_OUTCOMES = {
    "": "all epochs done",
    "budget": "stopped by the budget",
    "early_stopping": "stopped early",
}


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
    """What a demo run did; ``test_accuracy`` and ``model_version`` are ``None`` when the
    budget stopped it before a model could be evaluated and registered."""

    test_accuracy: float | None
    model_version: int | None
    run_id: str
    backend: str
    seconds: float
    cost_usd: float
    budget_usd: float
    stop_reason: str | None
    #: Seconds ``QuantumTrainer.fit`` took in this call (what the monitoring benchmark compares).
    train_seconds: float = 0.0


class EpochLines(Callback):
    """Prints each epoch's line as the epoch ends (a demo is watched while it trains);
    :meth:`earlier` prints those of epochs trained before this call, from the history."""

    def __init__(self, say: Callable[..., None]) -> None:
        self.say = say
        self.printed: set[int] = set()

    def on_epoch_end(self, ctx: TrainingContext, epoch: int, metrics: Mapping[str, float]) -> None:
        self.printed.add(epoch)
        self.say(self.line(epoch, metrics["train_loss"], metrics.get("val_accuracy")), flush=True)

    @staticmethod
    def line(epoch: int, loss: float, accuracy: float | None) -> str:
        shown = "-" if accuracy is None else f"{accuracy:.3f}"
        return f"epoch {epoch:2d}  train_loss {loss:.4f}  val_accuracy {shown}"

    def earlier(self, history: History) -> None:
        for epoch, loss, acc in zip(
            history.epochs, history.train_loss, history.val_accuracy, strict=True
        ):
            if epoch not in self.printed:
                self.say(self.line(epoch, loss, acc))


async def offered_backends(settings: Settings | None = None) -> tuple[str, ...]:
    """The backend names a connection made with ``settings`` registers, found without
    opening (or creating) any database."""
    from quantum_db.database import default_backend_manager

    probe = default_backend_manager(settings if settings is not None else Settings())
    try:
        return probe.names()
    finally:
        await probe.aclose()


async def check_demo_options(
    *, budget_usd: float, backend: str | None = None, settings: Settings | None = None
) -> None:
    """Refuse bad options before anything is written: a budget that is not a finite
    amount >= 0 (:class:`InvalidBudgetError`), a backend name a connection does not offer
    (:class:`UnknownBackendError`, listing the names that exist)."""
    if (
        isinstance(budget_usd, bool)
        or not isinstance(budget_usd, int | float)
        or not math.isfinite(budget_usd)
        or budget_usd < 0
    ):
        raise InvalidBudgetError(
            f"the budget must be a finite number of USD >= 0, got {budget_usd!r}"
        )
    if backend is None:
        return
    names = await offered_backends(settings)
    if backend not in names:
        from quantum_db.database import IONQ_TARGETS

        hint = " (IonQ backends need IONQ_API_KEY)" if backend in IONQ_TARGETS else ""
        raise UnknownBackendError(
            f"no backend named {backend!r}{hint}; this installation offers: {', '.join(names)}"
        )


async def registered_by(db: QuantumDatabase, name: str, run_id: str) -> ModelVersion | None:
    """The latest version of model ``name`` if run ``run_id`` registered it (with a test
    accuracy): a demo run that finished before is reported, not registered again."""
    try:
        latest = await db.models.get(name)
    except ModelNotFoundError:
        return None
    if latest.provenance.get("run_id") != run_id or "test_accuracy" not in latest.metrics:
        return None
    return latest


async def run_training_demo(
    url: str | None = None,
    *,
    budget_usd: float = 5.0,
    backend: str | None = None,
    verbose: bool = True,
    monitors: bool = True,
) -> DemoResult:
    """Two moons -> database -> backend (``backend``, or the one chosen under the budget)
    -> trained, registered model.

    Every circuit evaluation of the training (gradients and validation passes) and the
    final test pass reserves its estimated cost against a budget of ``budget_usd`` before
    it is sent, so the run stops at the budget instead of exceeding it. Options are
    checked before the database is opened. Run again on the same database, the demo
    finds the same dataset version and its finished run, and trains nothing twice.
    """
    start = time.perf_counter()
    say = print if verbose else (lambda *_, **__: None)
    await check_demo_options(budget_usd=budget_usd, backend=backend)
    # Each invocation has a budget of its own: a named budget keeps one limit for good.
    budget = Budget(usd=float(budget_usd), name=f"qdb-demo-{uuid.uuid4().hex[:12]}")
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
            f"dataset {info.name!r} v{info.version}: {info.n_samples} samples, "
            f"splits {info.splits['counts']}"
        )
        encoder = QuantumDataEncoder.from_contract(info.encoding)
        model = QuantumModel(
            _QUBITS, _LAYERS, task="classification", n_outputs=2, seed=1, encoder=encoder
        )
        manager = db.backend_manager
        if backend is None:
            selection = manager.explain(
                _QUBITS, depth=model.circuit.depth(), budget=budget, circuit=model.circuit
            )
            say(selection.explain())
            backend = selection.chosen.name
        else:
            say(f"backend {backend} (chosen with --backend)")
        chosen: Backend = manager.get(backend)
        shots = None if chosen.capabilities.supports_exact else DEMO_SHOTS
        config = TrainingConfig(
            learning_rate=0.05,
            epochs=30,
            checkpoint_every=20,
            seed=0,
            patience=8,
            min_delta=1e-3,
            shots=shots,
            budget_usd=budget.usd,
            budget_name=budget.name,
        )
        steps_now = 0

        def count(step: int, loss: float) -> None:
            nonlocal steps_now
            steps_now += 1

        lines = EpochLines(say)
        callbacks: list[Callback] = [lines]
        if monitors:
            callbacks += standard_monitors()
        trainer = QuantumTrainer(config, db, chosen, on_step=count, callbacks=callbacks)
        train = db.create_ml_data_loader(
            "moons", batch_size=16, seed=0, split="train", version=info.version
        )
        val = db.create_ml_data_loader(
            "moons", batch_size=64, shuffle=False, split="validation", version=info.version
        )
        test = db.create_ml_data_loader(
            "moons", batch_size=64, shuffle=False, split="test", version=info.version
        )
        run_id = f"moons-demo-v{info.version}-{backend}"
        fit_started = time.perf_counter()
        history = await trainer.fit(model, train, val, run_id=run_id)
        train_seconds = time.perf_counter() - fit_started
        earlier = await registered_by(db, MODEL_NAME, run_id)
        test_accuracy = None if earlier is None else float(earlier.metrics["test_accuracy"])
        version = None if earlier is None else earlier.version
        if version is None and history.stop_reason != "budget":
            try:
                _, test_accuracy = await trainer.evaluate(model, test)
            except BudgetExceededError as exc:
                history.stop_reason = "budget"
                say(f"the test pass does not fit the budget: {exc}")
        if version is None and test_accuracy is not None:
            registered = await db.models.register(
                MODEL_NAME,
                model,
                metrics={"test_accuracy": test_accuracy, **history.final},
                provenance={"run_id": run_id, "dataset": f"moons v{info.version}"},
            )
            version = registered.version
        spent = await manager.accounting.exposure(budget)
        checkpoints = await db.checkpoints.list(run_id)
    lines.earlier(history)
    elapsed = time.perf_counter() - start
    outcome = _OUTCOMES.get(history.stop_reason or "", history.stop_reason)
    say(
        f"run {run_id}: {outcome} after {history.steps} steps "
        f"({steps_now} in this call); {len(checkpoints)} checkpoints kept; metrics every step"
    )
    say(f"spent ${spent:.4f} of the ${budget.usd:g} budget on {backend}")
    if version is None:
        say("stopped by the budget: no model registered (a larger --budget resumes the run)")
    else:
        say(f"model {MODEL_NAME!r} v{version} (from run {run_id})")
        say(f"test accuracy: {test_accuracy:.3f}  ({elapsed:.1f} s)")
    return DemoResult(
        test_accuracy,
        version,
        run_id,
        backend,
        elapsed,
        spent,
        budget.usd,
        history.stop_reason,
        train_seconds,
    )
