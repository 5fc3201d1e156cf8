"""Watching a run: quantum metrics, alerts, system metrics, dashboards and exports.

Monitors are trainer callbacks (``QuantumTrainer(..., callbacks=[...])`` or a
``QuantumGAN``'s): :class:`QuantumMetricsMonitor` (entanglement, fidelities, circuit
cost, gradient statistics and barren plateaus, shot-noise SNR), :class:`SystemMetricsMonitor`
with a :class:`ResourceGuard`, and :class:`AlertMonitor` with :class:`AlertRule`\\ s
(:func:`training_rules`, :func:`budget_rules`); :func:`standard_monitors` is all of them.
:func:`write_dashboard`, :func:`export_to_mlflow` and :func:`export_files` read a stored
run; ``quantum_ml.monitoring.ui`` serves every run live (``qdb ui``). Plotly, matplotlib,
Starlette, MLflow and pyarrow are imported only by the functions that use them.
"""

from __future__ import annotations

from .alerts import (
    AlertEvaluator,
    AlertEvent,
    AlertMonitor,
    AlertRule,
    budget_rules,
    log_alert,
    publish,
    training_rules,
)
from .dashboard import DashboardFiles, write_dashboard
from .export import MlflowExport, export_files, export_to_mlflow
from .quantum import QuantumMetricsMonitor
from .report import RunReport, RunSummary, load_run_report, load_run_summaries
from .standard import standard_monitors
from .system import ResourceGuard, SystemMetricsMonitor, sample_system_metrics

__all__ = [
    "AlertEvaluator",
    "AlertEvent",
    "AlertMonitor",
    "AlertRule",
    "DashboardFiles",
    "MlflowExport",
    "QuantumMetricsMonitor",
    "ResourceGuard",
    "RunReport",
    "RunSummary",
    "SystemMetricsMonitor",
    "budget_rules",
    "export_files",
    "export_to_mlflow",
    "load_run_report",
    "load_run_summaries",
    "log_alert",
    "publish",
    "sample_system_metrics",
    "standard_monitors",
    "training_rules",
    "write_dashboard",
]
