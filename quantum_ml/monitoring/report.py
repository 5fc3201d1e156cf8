"""What a dashboard shows of a run, read from the registry as plain, JSON-ready data.

:func:`load_run_report` reads one run: its record, every metric series, its jobs per
backend, what its jobs were charged against the budget, and its alerts.
:func:`load_run_summaries` reads the one-line summary of every run that ``qdb ui``'s run
list shows. Both only read.

Metrics are sorted into plot groups by name (:func:`metric_group`):

* ``losses``: ``loss``, ``train_loss``, ``val_loss``, every ``*_loss`` / ``*_loss_*``
  name (``g_loss``, ``generator_loss``, ``step_discriminator_loss``...);
* ``validation``: the other ``val_*`` metrics, and every ``*accuracy*`` (``train_accuracy``
  beside ``val_accuracy``);
* ``gradients``: ``grad_norm``, ``grad/*``, ``*grad_norm*``;
* ``distribution``: the distribution metrics of a GAN (``relative_entropy``,
  ``jensen_shannon``/``js_divergence``, ``total_variation``/``tv_distance``, ``mmd``,
  ``mode_coverage``, ``wasserstein1``, ``ks``, ``entropy``, ``sample_variance``,
  ``diversity``, with their ``_low``/``_high`` bounds and ``step_`` forms);
* ``cost``: ``cost_usd`` and every ``*_usd``;
* ``system``: ``system/*``;
* ``quantum``: ``entanglement/*``, ``circuit/*``, ``snr/*``, ``fidelity*``;
* ``other``: everything else (learning rates, ``d_steps``, flags such as ``nan_loss``).
"""

from __future__ import annotations

import bisect
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import func, select

from quantum_db import QuantumDatabase
from quantum_db.registry.schema import BudgetRow, JobRow, LedgerRow, MetricRow, RunRow
from quantum_db.runs import RunInfo

__all__ = [
    "BEST_METRIC_RULE",
    "JOB_SERIES_MAX_POINTS",
    "METRIC_GROUPS",
    "AlertInfo",
    "BackendJobs",
    "BestMetric",
    "MetricSeries",
    "RunDetails",
    "RunReport",
    "RunSummary",
    "SpendReport",
    "load_run_report",
    "load_run_summaries",
    "metric_group",
]

#: Plot groups of metrics, in the order dashboards show them.
METRIC_GROUPS = (
    "losses",
    "validation",
    "gradients",
    "distribution",
    "cost",
    "system",
    "quantum",
    "other",
)

#: How a run's best metric is chosen: the first of these it logged, best over its history.
BEST_METRIC_RULE: tuple[tuple[str, str], ...] = (
    ("val_loss", "min"),
    ("train_loss", "min"),
    ("loss", "min"),
    ("val_accuracy", "max"),
    ("relative_entropy", "min"),
)

#: A backend's cumulative job count over time keeps at most this many points: every job
#: up to it; beyond, evenly spaced jobs (the first and the last included), each point
#: still the exact count at that job.
JOB_SERIES_MAX_POINTS = 2000

_DISTRIBUTION = (
    "relative_entropy",
    "jensen_shannon",
    "js_divergence",
    "total_variation",
    "tv_distance",
    "mmd",
    "mode_coverage",
    "wasserstein1",
    "wasserstein",
    "ks",
    "entropy",
    "sample_variance",
    "diversity",
    "kl_divergence",
    "hellinger",
)
_QUANTUM_PREFIXES = ("entanglement/", "circuit/", "snr/", "fidelity")


def metric_group(key: str) -> str:
    """The plot group (one of :data:`METRIC_GROUPS`) of the metric named ``key``."""
    if key.startswith("system/"):
        return "system"
    if key.startswith(_QUANTUM_PREFIXES):
        return "quantum"
    if key.startswith("grad/") or "grad_norm" in key:
        return "gradients"
    base = key[len("step_") :] if key.startswith("step_") else key
    if base == "nan_loss":  # a flag (1.0 when a loss went NaN), not a loss
        return "other"
    if base == "loss" or base.endswith("_loss") or "_loss_" in base:
        return "losses"
    if base.startswith("val_") or "accuracy" in base:
        return "validation"
    stem = base.removesuffix("_low").removesuffix("_high").removesuffix("_bias_floor")
    if stem in _DISTRIBUTION:
        return "distribution"
    if base.endswith("_usd"):
        return "cost"
    return "other"


def _number(value: float | None) -> float | None:
    """``value`` as JSON can hold it: ``None`` for a NaN or an infinity."""
    if value is None or not math.isfinite(value):
        return None
    return float(value)


# ---------------------------------------------------------------------------- data
@dataclass(frozen=True, slots=True)
class RunDetails:
    """The run's record."""

    id: str
    status: str
    reason: str | None
    backend: str | None
    seed: int | None
    created_at: float
    updated_at: float
    config: Mapping[str, Any]

    @classmethod
    def of(cls, info: RunInfo) -> RunDetails:
        return cls(
            info.id,
            info.status,
            info.reason,
            info.backend,
            info.seed,
            info.created_at,
            info.updated_at,
            dict(info.config),
        )

    def to_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "status": self.status,
            "reason": self.reason,
            "backend": self.backend,
            "seed": self.seed,
            "created_at": self.created_at,
            "updated_at": self.updated_at,
            "config": dict(self.config),
        }


@dataclass(frozen=True, slots=True)
class MetricSeries:
    """One metric, in step order (as ``db.metrics.history`` reads it); ``timestamps`` in
    UNIX seconds."""

    key: str
    group: str
    steps: tuple[int, ...]
    values: tuple[float, ...]
    timestamps: tuple[float, ...]

    def __len__(self) -> int:
        return len(self.steps)

    def to_dict(self) -> dict[str, Any]:
        return {
            "key": self.key,
            "group": self.group,
            "steps": list(self.steps),
            "values": [_number(v) for v in self.values],
            "timestamps": list(self.timestamps),
        }


@dataclass(frozen=True, slots=True)
class BackendJobs:
    """The run's jobs on one backend: how many in each status, and the cumulative job
    count at each job's creation time (``times`` in UNIX seconds, thinned beyond
    :data:`JOB_SERIES_MAX_POINTS`)."""

    backend: str
    total: int
    by_status: Mapping[str, int]
    times: tuple[float, ...]
    counts: tuple[int, ...]
    actual_cost_usd: float
    estimated_cost_usd: float

    def to_dict(self) -> dict[str, Any]:
        return {
            "backend": self.backend,
            "total": self.total,
            "by_status": dict(self.by_status),
            "times": list(self.times),
            "counts": list(self.counts),
            "actual_cost_usd": self.actual_cost_usd,
            "estimated_cost_usd": self.estimated_cost_usd,
        }


@dataclass(frozen=True, slots=True)
class SpendReport:
    """What the run's jobs were charged: every charge in the budget ledger of a job of the
    run, cumulative over time (``times`` in UNIX seconds, ``cumulative_usd`` the running
    total). ``budget_id``/``limit_usd`` are set when all the run's ledger entries are
    against one budget. ``actual_cost_usd`` sums the jobs' recorded actual costs."""

    times: tuple[float, ...]
    cumulative_usd: tuple[float, ...]
    spent_usd: float
    actual_cost_usd: float
    estimated_cost_usd: float
    budget_id: str | None
    limit_usd: float | None
    budget_ids: tuple[str, ...] = ()

    def to_dict(self) -> dict[str, Any]:
        return {
            "times": list(self.times),
            "cumulative_usd": list(self.cumulative_usd),
            "spent_usd": self.spent_usd,
            "actual_cost_usd": self.actual_cost_usd,
            "estimated_cost_usd": self.estimated_cost_usd,
            "budget_id": self.budget_id,
            "limit_usd": self.limit_usd,
            "budget_ids": list(self.budget_ids),
        }


@dataclass(frozen=True, slots=True)
class AlertInfo:
    """An alert of the run. ``step`` is the stored step (``None`` when the alert has none);
    ``plot_step`` is where it goes on a step axis: its step, else the last step any metric
    of the run was logged at by the alert's time (``None`` before the first)."""

    id: int
    kind: str
    severity: str
    message: str
    metric_key: str | None
    value: float | None
    step: int | None
    created_at: float
    resolved_at: float | None
    plot_step: int | None

    def to_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "kind": self.kind,
            "severity": self.severity,
            "message": self.message,
            "metric_key": self.metric_key,
            "value": _number(self.value),
            "step": self.step,
            "created_at": self.created_at,
            "resolved_at": self.resolved_at,
            "plot_step": self.plot_step,
        }


@dataclass(frozen=True, slots=True)
class RunReport:
    """Everything a dashboard shows of one run."""

    run: RunDetails
    metrics: Mapping[str, MetricSeries]
    jobs: tuple[BackendJobs, ...]
    spend: SpendReport
    alerts: tuple[AlertInfo, ...]
    groups: Mapping[str, tuple[str, ...]] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {
            "run": self.run.to_dict(),
            "metrics": {k: s.to_dict() for k, s in self.metrics.items()},
            "groups": {g: list(keys) for g, keys in self.groups.items()},
            "jobs": [j.to_dict() for j in self.jobs],
            "spend": self.spend.to_dict(),
            "alerts": [a.to_dict() for a in self.alerts],
        }


@dataclass(frozen=True, slots=True)
class BestMetric:
    """The run's best value of ``key`` (``mode`` "min" or "max"), see :data:`BEST_METRIC_RULE`."""

    key: str
    mode: str
    value: float

    def to_dict(self) -> dict[str, Any]:
        return {"key": self.key, "mode": self.mode, "value": _number(self.value)}


@dataclass(frozen=True, slots=True)
class RunSummary:
    """One line of the run list. ``cost_usd`` sums the actual costs of the run's jobs;
    ``steps`` is the highest step of its metrics (``None``: none logged)."""

    id: str
    status: str
    reason: str | None
    backend: str | None
    cost_usd: float
    best: BestMetric | None
    steps: int | None
    jobs: int
    created_at: float
    updated_at: float

    def to_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "status": self.status,
            "reason": self.reason,
            "backend": self.backend,
            "cost_usd": self.cost_usd,
            "best": None if self.best is None else self.best.to_dict(),
            "steps": self.steps,
            "jobs": self.jobs,
            "created_at": self.created_at,
            "updated_at": self.updated_at,
        }


# ---------------------------------------------------------------------------- loading
async def load_run_report(db: QuantumDatabase, run_id: str) -> RunReport:
    """Read run ``run_id`` of the connected ``db``; raises
    :class:`~quantum_db.errors.RunNotFoundError` for a run that does not exist."""
    info = await db.runs.get(run_id)
    async with db.registry.session() as session:
        metric_rows = (
            await session.execute(
                select(MetricRow.key, MetricRow.step, MetricRow.value, MetricRow.timestamp)
                .where(MetricRow.run_id == run_id)
                .order_by(MetricRow.key, MetricRow.step, MetricRow.id)
            )
        ).all()
        job_rows = (
            await session.execute(
                select(
                    JobRow.backend,
                    JobRow.status,
                    JobRow.created_at,
                    JobRow.actual_cost,
                    JobRow.estimated_cost,
                )
                .where(JobRow.run_id == run_id)
                .order_by(JobRow.created_at, JobRow.id)
            )
        ).all()
        ledger_rows = (
            await session.execute(
                select(
                    LedgerRow.budget_id, LedgerRow.kind, LedgerRow.amount_usd, LedgerRow.created_at
                )
                .join(JobRow, JobRow.id == LedgerRow.job_id)
                .where(JobRow.run_id == run_id)
                .order_by(LedgerRow.created_at, LedgerRow.id)
            )
        ).all()
        budget_ids = tuple(sorted({r.budget_id for r in ledger_rows}))
        limit: float | None = None
        if len(budget_ids) == 1:
            budget = await session.get(BudgetRow, budget_ids[0])
            limit = None if budget is None else float(budget.limit_usd)
    alerts = await db.alerts.list(run_id)

    metrics = _metric_series(metric_rows)
    groups: dict[str, list[str]] = {}
    for key, series in metrics.items():
        groups.setdefault(series.group, []).append(key)
    spend = _spend(job_rows, ledger_rows, budget_ids, limit)
    clock = _step_clock(metrics)
    return RunReport(
        run=RunDetails.of(info),
        metrics=metrics,
        jobs=_backend_jobs(job_rows),
        spend=spend,
        alerts=tuple(_alert_info(a, clock) for a in alerts),
        groups={g: tuple(groups[g]) for g in METRIC_GROUPS if g in groups},
    )


def _metric_series(rows: Sequence[Any]) -> dict[str, MetricSeries]:
    by_key: dict[str, tuple[list[int], list[float], list[float]]] = {}
    for row in rows:
        steps, values, stamps = by_key.setdefault(row.key, ([], [], []))
        steps.append(int(row.step))
        values.append(float(row.value))
        stamps.append(float(row.timestamp))
    return {
        key: MetricSeries(key, metric_group(key), tuple(s), tuple(v), tuple(t))
        for key, (s, v, t) in sorted(by_key.items())
    }


def _thin(n: int, limit: int) -> list[int]:
    """Indices of at most ``limit`` of ``n`` items, evenly spaced, first and last kept."""
    if n <= limit:
        return list(range(n))
    return sorted({round(i * (n - 1) / (limit - 1)) for i in range(limit)})


def _backend_jobs(rows: Sequence[Any]) -> tuple[BackendJobs, ...]:
    by_backend: dict[str, list[Any]] = {}
    for row in rows:
        by_backend.setdefault(row.backend, []).append(row)
    out = []
    for backend in sorted(by_backend):
        jobs = by_backend[backend]
        statuses: dict[str, int] = {}
        for job in jobs:
            statuses[job.status] = statuses.get(job.status, 0) + 1
        kept = _thin(len(jobs), JOB_SERIES_MAX_POINTS)
        out.append(
            BackendJobs(
                backend=backend,
                total=len(jobs),
                by_status=dict(sorted(statuses.items())),
                times=tuple(float(jobs[i].created_at) for i in kept),
                counts=tuple(i + 1 for i in kept),
                actual_cost_usd=sum(float(j.actual_cost or 0.0) for j in jobs),
                estimated_cost_usd=sum(float(j.estimated_cost or 0.0) for j in jobs),
            )
        )
    return tuple(out)


def _spend(
    job_rows: Sequence[Any],
    ledger_rows: Sequence[Any],
    budget_ids: tuple[str, ...],
    limit: float | None,
) -> SpendReport:
    times: list[float] = []
    totals: list[float] = []
    running = 0.0
    for row in ledger_rows:
        if row.kind != "charge":
            continue
        running += float(row.amount_usd)
        times.append(float(row.created_at))
        totals.append(running)
    return SpendReport(
        times=tuple(times),
        cumulative_usd=tuple(totals),
        spent_usd=running,
        actual_cost_usd=sum(float(j.actual_cost or 0.0) for j in job_rows),
        estimated_cost_usd=sum(float(j.estimated_cost or 0.0) for j in job_rows),
        budget_id=budget_ids[0] if len(budget_ids) == 1 else None,
        limit_usd=limit,
        budget_ids=budget_ids,
    )


def _step_clock(metrics: Mapping[str, MetricSeries]) -> tuple[list[float], list[int]]:
    """Every logged point's timestamp, sorted, with the highest step logged by then."""
    points = sorted(
        (t, step) for s in metrics.values() for t, step in zip(s.timestamps, s.steps, strict=True)
    )
    times: list[float] = []
    highest: list[int] = []
    top = -1
    for t, step in points:
        top = max(top, step)
        times.append(t)
        highest.append(top)
    return times, highest


def _alert_info(alert: Any, clock: tuple[list[float], list[int]]) -> AlertInfo:
    # ``severity``, ``step`` and ``resolved_at`` are read with defaults: alerts of older
    # versions of quantum_db.alerts do not have them.
    step = getattr(alert, "step", None)
    created = float(alert.created_at)
    plot_step = step
    if plot_step is None:
        times, highest = clock
        logged = bisect.bisect_right(times, created)
        plot_step = highest[logged - 1] if logged else None
    value = alert.value
    resolved = getattr(alert, "resolved_at", None)
    return AlertInfo(
        id=int(alert.id),
        kind=str(alert.kind),
        severity=str(getattr(alert, "severity", None) or "warning"),
        message=str(alert.message),
        metric_key=alert.metric_key,
        value=None if value is None else float(value),
        step=None if step is None else int(step),
        created_at=created,
        resolved_at=None if resolved is None else float(resolved),
        plot_step=None if plot_step is None else int(plot_step),
    )


async def load_run_summaries(db: QuantumDatabase) -> list[RunSummary]:
    """One :class:`RunSummary` per run of the connected ``db``, newest first.

    The best metric follows :data:`BEST_METRIC_RULE`: the lowest ``val_loss`` the run
    logged; without one the lowest ``train_loss``, then the lowest ``loss``, then the
    highest ``val_accuracy``, then the lowest ``relative_entropy``; ``None`` without any.
    """
    wanted = [key for key, _ in BEST_METRIC_RULE]
    async with db.registry.session() as session:
        runs = (await session.scalars(select(RunRow).order_by(RunRow.created_at, RunRow.id))).all()
        extremes = (
            await session.execute(
                select(
                    MetricRow.run_id,
                    MetricRow.key,
                    func.min(MetricRow.value),
                    func.max(MetricRow.value),
                )
                .where(MetricRow.key.in_(wanted))
                .group_by(MetricRow.run_id, MetricRow.key)
            )
        ).all()
        last_steps = (
            await session.execute(
                select(MetricRow.run_id, func.max(MetricRow.step)).group_by(MetricRow.run_id)
            )
        ).all()
        costs = (
            await session.execute(
                select(JobRow.run_id, func.count(JobRow.id), func.sum(JobRow.actual_cost))
                .where(JobRow.run_id.is_not(None))
                .group_by(JobRow.run_id)
            )
        ).all()
    found: dict[str, dict[str, tuple[float, float]]] = {}
    for run_id, key, low, high in extremes:
        found.setdefault(run_id, {})[key] = (float(low), float(high))
    steps = {run_id: int(step) for run_id, step in last_steps if step is not None}
    jobs = {run_id: (int(n), float(total or 0.0)) for run_id, n, total in costs}
    summaries = []
    for row in runs:
        info = RunInfo.from_row(row)
        best = None
        for key, mode in BEST_METRIC_RULE:
            if key in found.get(info.id, {}):
                low, high = found[info.id][key]
                best = BestMetric(key, mode, low if mode == "min" else high)
                break
        n_jobs, cost = jobs.get(info.id, (0, 0.0))
        summaries.append(
            RunSummary(
                id=info.id,
                status=info.status,
                reason=info.reason,
                backend=info.backend,
                cost_usd=cost,
                best=best,
                steps=steps.get(info.id),
                jobs=n_jobs,
                created_at=info.created_at,
                updated_at=info.updated_at,
            )
        )
    summaries.reverse()
    return summaries
