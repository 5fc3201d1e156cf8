"""Every monitor at once, with the settings the demo and the overhead benchmark use."""

from __future__ import annotations

from ..training.callbacks import Callback
from .alerts import AlertMonitor, budget_rules, log_alert, training_rules
from .system import ResourceGuard, SystemMetricsMonitor

__all__ = ["standard_monitors"]


def standard_monitors(
    *,
    quantum_every: int = 10,
    system_interval_s: float = 5.0,
    budget_alert_fraction: float = 0.8,
) -> list[Callback]:
    """Quantum metrics every ``quantum_every`` steps, system metrics every
    ``system_interval_s`` seconds behind a resource guard, and the training and budget
    alert rules (logged as they fire)."""
    from .quantum import QuantumMetricsMonitor

    return [
        QuantumMetricsMonitor(every=quantum_every),
        SystemMetricsMonitor(system_interval_s, guard=ResourceGuard()),
        # Last: it evaluates what the monitors before it published at this step.
        AlertMonitor(
            [*training_rules(), *budget_rules(spent_fraction=budget_alert_fraction)],
            handlers=[log_alert],
        ),
    ]
