"""What a study has found: its trials with their runs, the best one, the importances.

:func:`study_report` reads a study from its storage and the registry (the status of each
trial's run) without writing anything: ``qdb hpo show``, ``qdb ui`` and
:meth:`QuantumHPOSearch.search` all print or return it.
"""

from __future__ import annotations

import asyncio
import math
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from quantum_db.registry import redact_url

from .spec import StudySpec
from .storage import optuna_url
from .study import _spec_of, budget_name, loaded_study

if TYPE_CHECKING:
    from quantum_db.database import QuantumDatabase

__all__ = ["HPOResult", "StudyReport", "Trial", "list_studies", "study_report"]


@dataclass(frozen=True, slots=True)
class Trial:
    """One trial: its run, hyperparameters, state and (when it completed) its score."""

    number: int
    state: str
    run_id: str | None
    params: dict[str, Any]
    #: The ``metric`` of a completed trial (its last epoch's); NaN otherwise.
    score: float
    metrics: dict[str, float] = field(default_factory=dict)
    stop_reason: str | None = None
    cost_usd: float = 0.0
    run_status: str | None = None
    error: str | None = None
    #: The trial this one retries (its worker stopped heartbeating), if any.
    retry_of: int | None = None
    duration_s: float | None = None

    def to_json(self) -> dict[str, Any]:
        return {
            "number": self.number,
            "state": self.state,
            "value": self.score if math.isfinite(self.score) else None,
            "params": self.params,
            "run_id": self.run_id,
            "run_status": self.run_status,
            "metrics": self.metrics,
            "cost_usd": self.cost_usd,
            "stop_reason": self.stop_reason,
            "error": self.error,
            "retry_of": self.retry_of,
            "duration_s": self.duration_s,
        }


@dataclass(frozen=True, slots=True)
class StudyReport:
    """A study at one moment: see the module docstring."""

    name: str
    spec: StudySpec
    trials: list[Trial]
    best: Trial | None
    importances: dict[str, float]
    spent_usd: float
    storage_url: str

    @property
    def counts(self) -> dict[str, int]:
        out: dict[str, int] = {}
        for t in self.trials:
            out[t.state] = out.get(t.state, 0) + 1
        return out

    def to_json(self) -> dict[str, Any]:
        spec = self.spec
        return {
            "study": self.name,
            "metric": spec.metric,
            "mode": spec.mode,
            "sampler": spec.sampler,
            "pruner": spec.pruner,
            "dataset": spec.dataset,
            "dataset_version": spec.dataset_version,
            "n_trials": spec.n_trials,
            "counts": self.counts,
            "best": None if self.best is None else self.best.to_json(),
            "importances": self.importances,
            "budget_usd": spec.budget_usd,
            "spent_usd": self.spent_usd,
            "storage": self.storage_url,
            "trials": [t.to_json() for t in self.trials],
        }


@dataclass(frozen=True, slots=True)
class HPOResult:
    """The outcome of :meth:`QuantumHPOSearch.search`; ``trials`` by number."""

    study: str
    sampler: str
    metric: str
    mode: str
    best_params: dict[str, Any]
    best_score: float
    best_run_id: str
    trials: list[Trial] = field(default_factory=list)
    #: Why the last worker stopped: "done", "budget" or "max_trials".
    stop: str = "done"

    @property
    def best_trial(self) -> Trial:
        return next(t for t in self.trials if t.run_id == self.best_run_id)


def _trial(frozen: Any, statuses: dict[str, str]) -> Trial:
    attrs = frozen.user_attrs
    run_id = attrs.get("run_id")
    value = frozen.value if frozen.state.name == "COMPLETE" else None
    duration = frozen.duration.total_seconds() if frozen.duration is not None else None
    return Trial(
        number=frozen.number,
        state=frozen.state.name.lower(),
        run_id=run_id,
        params=dict(frozen.params),
        score=float(value) if value is not None else math.nan,
        metrics=dict(attrs.get("metrics", {})),
        stop_reason=attrs.get("stop_reason"),
        cost_usd=float(attrs.get("cost_usd", 0.0)),
        run_status=statuses.get(run_id) if run_id else None,
        error=attrs.get("error"),
        retry_of=frozen.system_attrs.get("failed_trial"),
        duration_s=duration,
    )


def _importances(study: Any) -> dict[str, float]:
    """fANOVA importances (seeded), or none while fewer than two trials completed."""
    from optuna.importance import FanovaImportanceEvaluator, get_param_importances
    from optuna.trial import TrialState

    complete = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
    if len(complete) < 2:
        return {}
    try:
        found = get_param_importances(study, evaluator=FanovaImportanceEvaluator(seed=0))
    except (RuntimeError, ValueError):  # e.g. every completed trial had the same params
        return {}
    return {name: float(v) for name, v in found.items()}


async def study_report(db: QuantumDatabase, name: str) -> StudyReport:
    """Study ``name`` as it is now (HPOError when the database has no such study)."""
    from backends.accounting import Budget

    async with loaded_study(db, name) as study:
        spec = _spec_of(study, name)
        frozen = await asyncio.to_thread(study.get_trials, deepcopy=False)
        importances = await asyncio.to_thread(_importances, study)
    statuses = {run.id: run.status for run in await db.runs.list()}
    trials = [_trial(t, statuses) for t in frozen]
    complete = [t for t in trials if t.state == "complete" and math.isfinite(t.score)]
    best = None
    if complete:
        pick = min if spec.mode == "min" else max
        best = pick(complete, key=lambda t: (t.score, t.number) if spec.mode == "min" else (
            t.score, -t.number))  # fmt: skip
    spent = 0.0
    if spec.budget_usd is not None:
        spent = await db.accounting.exposure(Budget(float(spec.budget_usd), budget_name(name)))
    return StudyReport(name, spec, trials, best, importances, spent, redact_url(optuna_url(db.url)))


async def list_studies(db: QuantumDatabase) -> list[dict[str, Any]]:
    """Every study in the database: name, direction, trial counts (none: an empty list)."""
    from .storage import open_storage
    from .study import _study_tables_exist, dispose

    url = optuna_url(db.url)
    if not await _study_tables_exist(db, url):
        return []
    storage = await asyncio.to_thread(open_storage, url)
    try:
        summaries = await asyncio.to_thread(storage.get_all_studies)
        out = []
        for s in summaries:
            trials = await asyncio.to_thread(storage.get_all_trials, s._study_id, deepcopy=False)
            counts: dict[str, int] = {}
            for t in trials:
                counts[t.state.name.lower()] = counts.get(t.state.name.lower(), 0) + 1
            out.append(
                {
                    "study": s.study_name,
                    "direction": s.directions[0].name.lower(),
                    "trials": len(trials),
                    "counts": counts,
                    "qdb": "qdb_spec" in s.user_attrs,
                }
            )
        return sorted(out, key=lambda d: d["study"])
    finally:
        await dispose(storage)
