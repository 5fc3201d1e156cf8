"""QuantumHPOSearch: a hyperparameter search from Python, on an Optuna study.

``await QuantumHPOSearch(db, space=..., sampler="tpe", n_trials=12).search("moons")``
creates the study (or finds the one of that name with the same settings), works on it in
this process until it is done, and returns the best trial. Other processes can work on
the same study meanwhile: ``qdb hpo worker NAME``, or :func:`run_worker`.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from backends.base import Backend

from ..errors import HPOError
from ..training.config import TrainingConfig
from .report import HPOResult, study_report
from .space import SearchSpace
from .spec import Mode, StudySpec
from .study import ModelFactory, create_study, run_worker

if TYPE_CHECKING:
    from quantum_db.database import QuantumDatabase

__all__ = ["QuantumHPOSearch"]


class QuantumHPOSearch:
    """Searches ``space`` for the training and model settings that optimise ``metric``.

    ``space`` maps a hyperparameter (a :class:`TrainingConfig` field, or ``layers``,
    ``entanglement``, ``readout``) to a list of choices or a range (see
    :mod:`quantum_ml.hpo.space`). ``sampler`` is Optuna's ``grid``, ``random``, ``tpe`` or
    ``cmaes``; ``pruner`` is ``median``, ``successive_halving`` or ``none``. ``base_config``
    gives every training setting not in the space. ``model_factory`` builds a trial's model
    from its hyperparameters (default: a classifier or regressor on the dataset's encoder).
    ``n_trials`` ``None`` means the whole grid. ``budget_usd`` is shared by every trial
    through the ledger; see :mod:`quantum_ml.hpo.study` for how workers use it.
    """

    def __init__(
        self,
        db: QuantumDatabase,
        backend: Backend | str | None = None,
        *,
        space: Mapping[str, Any],
        sampler: str = "tpe",
        n_trials: int | None = None,
        seed: int = 0,
        metric: str = "val_loss",
        mode: Mode = "min",
        base_config: TrainingConfig | None = None,
        model: Mapping[str, Any] | None = None,
        model_factory: ModelFactory | None = None,
        study_name: str = "hpo",
        pruner: str = "median",
        pruner_startup_trials: int = 2,
        pruner_warmup_epochs: int = 0,
        budget_usd: float | None = None,
        trial_cost_usd: float | None = None,
        heartbeat_s: float = 10.0,
        grace_s: float = 60.0,
        max_retries: int = 1,
    ) -> None:
        base = base_config if base_config is not None else TrainingConfig()
        if not isinstance(base, TrainingConfig):
            raise HPOError(f"base_config must be a TrainingConfig, got {type(base).__name__}")
        if model_factory is not None and not callable(model_factory):
            raise HPOError("model_factory must be callable")
        if backend is not None and not isinstance(backend, Backend | str):
            raise HPOError(f"backend must be a Backend, a backend's name or None, got {backend!r}")
        self.db = db
        self.backend = backend
        self.model_factory = model_factory
        self.study_name = study_name
        self.space = SearchSpace(space, base)
        # The training settings a trial does not search; the study keeps them as JSON.
        training = {k: v for k, v in base.to_dict().items() if k not in self.space.parameters}
        self._settings: dict[str, Any] = dict(  # noqa: C408 - StudySpec's keywords
            space=self.space,
            sampler=sampler,
            n_trials=n_trials,
            seed=seed,
            metric=metric,
            mode=mode,
            pruner=pruner,
            pruner_startup_trials=pruner_startup_trials,
            pruner_warmup_epochs=pruner_warmup_epochs,
            budget_usd=budget_usd,
            trial_cost_usd=trial_cost_usd,
            heartbeat_s=heartbeat_s,
            grace_s=grace_s,
            max_retries=max_retries,
            training=training,
            model={k: v for k, v in (model or {}).items() if k not in self.space.parameters},
            backend=backend if isinstance(backend, str) else None,
        )
        # Everything but the dataset is checked now, before any trial can start.
        self.spec("_")

    def spec(
        self,
        dataset: str,
        *,
        train_split: str = "train",
        val_split: str | None = "validation",
        batch_size: int = 16,
        version: int | None = None,
    ) -> StudySpec:
        """The :class:`StudySpec` of a search on ``dataset``."""
        return StudySpec(
            dataset=dataset,
            dataset_version=version,
            train_split=train_split,
            val_split=val_split,
            batch_size=batch_size,
            **self._settings,
        )

    async def search(
        self,
        dataset: str,
        *,
        train_split: str = "train",
        val_split: str | None = "validation",
        batch_size: int = 16,
        version: int | None = None,
        max_trials: int | None = None,
    ) -> HPOResult:
        """Run the study's trials on ``dataset`` (latest version by default); the best."""
        spec = self.spec(
            dataset,
            train_split=train_split,
            val_split=val_split,
            batch_size=batch_size,
            version=version,
        )
        spec, _ = await create_study(self.db, self.study_name, spec)
        report = await run_worker(
            self.db,
            self.study_name,
            max_trials=max_trials,
            backend=self.backend,
            model_factory=self.model_factory,
        )
        found = await study_report(self.db, self.study_name)
        best = found.best
        if best is None:
            raise HPOError(
                f"study {self.study_name!r} has no completed trial "
                f"({found.counts or 'no trials'}; {report.message})"
            )
        return HPOResult(
            study=self.study_name,
            sampler=spec.sampler,
            metric=spec.metric,
            mode=spec.mode,
            best_params=dict(best.params),
            best_score=best.score if math.isfinite(best.score) else math.nan,
            best_run_id=best.run_id or "",
            trials=found.trials,
            stop=report.stop,
        )
