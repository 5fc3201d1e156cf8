"""Alert rules: a metric, a comparison, a threshold, N consecutive evaluations, a severity.

An :class:`AlertRule` watches one metric. Each new value of it is one evaluation; when the
condition holds for ``for_n`` evaluations in a row the rule fires, and it resolves at
the first evaluation where the condition no longer holds. :class:`AlertEvaluator` keeps
that state for a set of rules and turns values into :class:`AlertEvent`\\ s, with no I/O;
:class:`AlertMonitor` is the trainer callback that feeds it the run's metrics, stores every
firing in the ``alerts`` table through ``db.alerts.fire`` (repeats while open update the
same row; a resolution closes it) and calls the handlers.

The comparisons are ``>``, ``>=``, ``<``, ``<=``, ``not_finite`` (NaN or infinite) and
``stalled`` (no new best by at least ``threshold`` for ``for_n`` evaluations, lower is
better). With ``relative=True`` the threshold of ``>``/``<`` is a multiple of the
metric's first value (exploding loss: ``loss > 10 x`` the first loss).

The evaluator's state goes into every checkpoint, so a resumed run fires exactly the
alerts an uninterrupted one would.
"""

from __future__ import annotations

import difflib
import inspect
import logging
import math
import re
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from ..errors import AlertRuleError
from ..training.callbacks import Callback, TrainingContext

if TYPE_CHECKING:
    from quantum_db.alerts import Alert

__all__ = [
    "COMPARISONS",
    "KNOWN_METRICS",
    "KNOWN_METRIC_PREFIXES",
    "AlertEvaluator",
    "AlertEvent",
    "AlertHandler",
    "AlertMonitor",
    "AlertRule",
    "budget_rules",
    "log_alert",
    "publish",
    "training_rules",
]

logger = logging.getLogger(__name__)

COMPARISONS = (">", ">=", "<", "<=", "not_finite", "stalled")
_SEVERITIES = ("info", "warning", "error")

#: Metrics the trainer, the QGAN and the monitors log; a rule on any other name needs
#: ``custom_metric=True`` (so that a typo is caught when the rule is made, not never).
KNOWN_METRICS = frozenset(
    {
        # QuantumTrainer: every step, every epoch
        "loss",
        "grad_norm",
        "train_loss",
        "train_accuracy",
        "val_loss",
        "val_accuracy",
        "lr",
        "cost_usd",
        "degraded_jobs",
        # QuantumGAN (epoch metrics; step metrics are step_*)
        "g_loss",
        "d_loss",
        "relative_entropy",
        "js_divergence",
        "tv_distance",
        "ks_distance",
        "wasserstein",
        "mmd",
        "mode_coverage",
        "valid_fraction",
        "entropy",
        "gradient_flow",
        # BudgetWatch (this module's budget_rules)
        "budget/spent_usd",
        "budget/spent_fraction",
        "budget/degraded_jobs",
    }
)
#: Families of metrics named by their prefix (system metrics, the quantum monitors).
KNOWN_METRIC_PREFIXES = (
    "step_",
    "system/",
    "entanglement/",
    "circuit/",
    "grad/",
    "snr/",
    "fidelity/",
    "budget/",
)


def _is_known(metric: str) -> bool:
    return metric in KNOWN_METRICS or metric.startswith(KNOWN_METRIC_PREFIXES)


@dataclass(frozen=True, slots=True)
class AlertRule:
    """Fire when ``metric <comparison> threshold`` holds ``for_n`` evaluations in a row."""

    name: str
    metric: str
    comparison: str
    threshold: float = 0.0
    for_n: int = 1
    severity: str = "warning"
    #: ``>``/``<`` thresholds as multiples of the metric's first value.
    relative: bool = False
    #: Accept a metric name this library does not log (one a callback of yours logs).
    custom_metric: bool = False
    #: What the alert says; ``{metric}``, ``{value}``, ``{threshold}``, ``{n}`` are filled in.
    message: str | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.name, str) or not re.fullmatch(
            r"[A-Za-z0-9_.:/<>=+-]{1,128}", self.name
        ):
            raise AlertRuleError(
                f"an alert rule's name is 1-128 letters, digits or _.:/<>=+-, got {self.name!r}"
            )
        if not isinstance(self.metric, str) or not self.metric or len(self.metric) > 128:
            raise AlertRuleError(f"an alert rule needs a metric name, got {self.metric!r}")
        if not self.custom_metric and not _is_known(self.metric):
            close = difflib.get_close_matches(self.metric, sorted(KNOWN_METRICS), n=1)
            hint = f"did you mean {close[0]!r}? " if close else ""
            raise AlertRuleError(
                f"rule {self.name!r}: no metric {self.metric!r} is logged by quantum-db; "
                f"{hint}for a metric a callback of yours logs, pass custom_metric=True"
            )
        if self.comparison not in COMPARISONS:
            raise AlertRuleError(
                f"rule {self.name!r}: comparison must be one of {', '.join(COMPARISONS)}, "
                f"got {self.comparison!r}"
            )
        if (
            isinstance(self.threshold, bool)
            or not isinstance(self.threshold, int | float)
            or not math.isfinite(self.threshold)
        ):
            raise AlertRuleError(
                f"rule {self.name!r}: threshold must be a finite number, got {self.threshold!r}"
            )
        if isinstance(self.for_n, bool) or not isinstance(self.for_n, int) or self.for_n < 1:
            raise AlertRuleError(
                f"rule {self.name!r}: for_n (consecutive evaluations) must be an integer >= 1, "
                f"got {self.for_n!r}"
            )
        if self.severity not in _SEVERITIES:
            raise AlertRuleError(
                f"rule {self.name!r}: severity must be one of {', '.join(_SEVERITIES)}, "
                f"got {self.severity!r}"
            )
        if self.relative and self.comparison not in (">", ">=", "<", "<="):
            raise AlertRuleError(f"rule {self.name!r}: relative=True needs >, >=, < or <=")
        if self.comparison == "stalled" and self.threshold < 0:
            raise AlertRuleError(f"rule {self.name!r}: a stalled rule's min delta must be >= 0")

    @classmethod
    def parse(cls, spec: str, *, name: str | None = None, custom_metric: bool = False) -> AlertRule:
        """A rule from text: ``"val_loss > 0.5 for 3 severity=error"``, ``"loss not_finite"``,
        ``"val_loss stalled 1e-4 for 5"``, ``"loss > 10x"`` (relative to the first value)."""
        if not isinstance(spec, str):
            raise AlertRuleError(f"an alert rule is text such as 'loss > 1 for 3', got {spec!r}")
        pattern = (
            r"\s*(?P<metric>[^\s<>=]+)\s*(?P<cmp>>=|<=|>|<|not_finite|stalled)"
            r"\s*(?P<threshold>[-+0-9.eEinf]+)?(?P<x>x)?"
            r"(?:\s+for\s+(?P<n>\d+))?(?:\s+severity=(?P<severity>\w+))?\s*"
        )
        match = re.fullmatch(pattern, spec)
        if match is None:
            raise AlertRuleError(
                f"cannot read the alert rule {spec!r}: write METRIC OP THRESHOLD [for N] "
                "[severity=info|warning|error], e.g. 'val_loss > 0.5 for 3 severity=error'"
            )
        cmp = match["cmp"]
        raw = match["threshold"]
        if raw is None and cmp in (">", ">=", "<", "<="):
            raise AlertRuleError(f"the alert rule {spec!r} needs a threshold after {cmp}")
        try:
            threshold = 0.0 if raw is None else float(raw)
        except ValueError:
            raise AlertRuleError(f"the threshold of {spec!r} is not a number: {raw!r}") from None
        metric = match["metric"]
        return cls(
            name=name
            or (
                f"{metric}{cmp}{raw}"
                if cmp[0] in "<>"
                else f"{metric}:{cmp}:{raw or ''}".rstrip(":")
            ),
            metric=metric,
            comparison=cmp,
            threshold=threshold,
            for_n=int(match["n"] or 1),
            severity=match["severity"] or "warning",
            relative=match["x"] is not None,
            custom_metric=custom_metric,
        )

    def describe(self) -> str:
        if self.comparison == "not_finite":
            text = f"{self.metric} is NaN or infinite"
        elif self.comparison == "stalled":
            text = f"{self.metric} has not improved by {self.threshold:g}"
        else:
            ref = f"{self.threshold:g}x its first value" if self.relative else f"{self.threshold:g}"
            text = f"{self.metric} {self.comparison} {ref}"
        return text + (f" for {self.for_n} evaluations" if self.for_n > 1 else "")


@dataclass(frozen=True, slots=True)
class AlertEvent:
    """A rule that fired (``fired``) or whose condition cleared (``resolved``)."""

    rule: AlertRule
    kind: str  # "fired" or "resolved"
    value: float
    step: int
    message: str


@dataclass(slots=True)
class _RuleState:
    consecutive: int = 0
    firing: bool = False
    first: float | None = None
    best: float | None = None


class AlertEvaluator:
    """The state of a set of rules over a stream of metric values; no I/O."""

    def __init__(self, rules: Iterable[AlertRule]) -> None:
        self.rules = list(rules)
        for rule in self.rules:
            if not isinstance(rule, AlertRule):
                raise AlertRuleError(f"expected AlertRule objects, got {rule!r}")
        names = [r.name for r in self.rules]
        duplicates = sorted({n for n in names if names.count(n) > 1})
        if duplicates:
            raise AlertRuleError(f"alert rule names must be unique: {', '.join(duplicates)}")
        self._states = {r.name: _RuleState() for r in self.rules}

    @property
    def metrics(self) -> set[str]:
        return {r.metric for r in self.rules}

    def observe(self, values: Mapping[str, float], step: int) -> list[AlertEvent]:
        """Evaluate every rule whose metric is in ``values``; the events this causes."""
        events: list[AlertEvent] = []
        for rule in self.rules:
            if rule.metric not in values:
                continue
            value = float(values[rule.metric])
            state = self._states[rule.name]
            holds = self._holds(rule, state, value)
            state.consecutive = state.consecutive + 1 if holds else 0
            if holds and not state.firing and state.consecutive >= rule.for_n:
                state.firing = True
                events.append(AlertEvent(rule, "fired", value, step, self._message(rule, value)))
            elif holds and state.firing:
                # Still firing: the store counts the repeat into the open alert.
                events.append(AlertEvent(rule, "fired", value, step, self._message(rule, value)))
            elif not holds and state.firing:
                state.firing = False
                events.append(
                    AlertEvent(rule, "resolved", value, step, f"{rule.describe()}: cleared")
                )
        return events

    @staticmethod
    def _holds(rule: AlertRule, state: _RuleState, value: float) -> bool:
        if rule.comparison == "not_finite":
            return not math.isfinite(value)
        if rule.comparison == "stalled":
            if not math.isfinite(value):
                return True
            if state.best is None or value < state.best - rule.threshold:
                state.best = value
                return False
            return True
        if state.first is None and math.isfinite(value):
            state.first = value
        threshold = rule.threshold
        if rule.relative:
            if state.first is None:
                return False
            threshold = rule.threshold * abs(state.first)
        if not math.isfinite(value):
            # NaN compares false to everything; an infinite loss is above any bound.
            return value == math.inf and rule.comparison in (">", ">=")
        return {
            ">": value > threshold,
            ">=": value >= threshold,
            "<": value < threshold,
            "<=": value <= threshold,
        }[rule.comparison]

    @staticmethod
    def _message(rule: AlertRule, value: float) -> str:
        if rule.message is not None:
            return rule.message.format(
                metric=rule.metric, value=value, threshold=rule.threshold, n=rule.for_n
            )
        return f"{rule.describe()} (now {value:.6g})"

    def state_dict(self) -> dict[str, Any]:
        return {
            name: [s.consecutive, s.firing, s.first, s.best] for name, s in self._states.items()
        }

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        for name, saved in state.items():
            if name in self._states:
                consecutive, firing, first, best = saved
                self._states[name] = _RuleState(
                    int(consecutive),
                    bool(firing),
                    None if first is None else float(first),
                    None if best is None else float(best),
                )


_PUBLISHED = "qdb.monitoring.published"


def publish(ctx: TrainingContext, values: Mapping[str, float]) -> None:
    """Offer metrics a monitor logged outside the run's steps (system and quantum metrics)
    to the run's :class:`AlertMonitor`, which evaluates them at its next hook."""
    pending: dict[str, float] = ctx.extra.setdefault(_PUBLISHED, {})
    pending.update(values)


#: A handler gets every new alert (not the repeats of an open one): sync or async.
AlertHandler = Callable[["Alert"], Awaitable[None] | None]

_LEVELS = {"info": logging.INFO, "warning": logging.WARNING, "error": logging.ERROR}


def log_alert(alert: Alert) -> None:
    """A handler: the alert on the ``quantum_ml.monitoring.alerts`` logger, at its severity."""
    logger.log(
        _LEVELS.get(alert.severity, logging.WARNING),
        "[%s] run %s: %s",
        alert.kind,
        alert.run_id,
        alert.message,
    )


class AlertMonitor(Callback):
    """Evaluates ``rules`` on the run's step and epoch metrics and stores what fires.

    Step metrics (``loss``, ``grad_norm``...) are evaluated after every step, epoch
    metrics after every epoch; metrics that other callbacks logged in between (system
    metrics, quantum metrics) are read from the run's own logger when a rule watches
    them. ``handlers`` get each new alert (sync or async callables); ``log_alert`` is one.
    Budget rules read ``budget/spent_usd``, ``budget/spent_fraction`` and
    ``budget/degraded_jobs``, which this monitor computes from the run's backend.
    """

    def __init__(
        self, rules: Iterable[AlertRule], handlers: Sequence[AlertHandler] = (log_alert,)
    ) -> None:
        self.evaluator = AlertEvaluator(rules)
        self.rules = self.evaluator.rules
        self._watches_budget = any(r.metric.startswith("budget/") for r in self.rules)
        self.handlers = list(handlers)
        #: Degraded jobs seen so far (the trainer logs each step's as ``degraded_jobs``).
        self._degraded = 0.0
        for handler in self.handlers:
            if not callable(handler):
                raise AlertRuleError(f"an alert handler must be callable, got {handler!r}")

    async def on_step_end(self, ctx: TrainingContext, step: int, logs: Mapping[str, float]) -> None:
        # Every step: keep it cheap (no copies unless something was published or a
        # budget rule needs the run's spend).
        published = self._published(ctx)
        values: Mapping[str, float] = logs
        if published or self._watches_budget:
            values = {**published, **logs, **self._budget(ctx, logs)}
        await self._observe(ctx, values, step)

    async def on_epoch_end(
        self, ctx: TrainingContext, epoch: int, metrics: Mapping[str, float]
    ) -> None:
        step = int(getattr(ctx.state, "step", epoch))
        await self._observe(ctx, {**self._published(ctx), **metrics}, step)

    async def on_train_end(self, ctx: TrainingContext) -> None:
        # What the monitors published after the last step (a final system sample).
        published = self._published(ctx)
        if published:
            await self._observe(ctx, published, int(getattr(ctx.state, "step", 0)))

    @staticmethod
    def _published(ctx: TrainingContext) -> dict[str, float]:
        values: dict[str, float] = ctx.extra.pop(_PUBLISHED, {})
        return values

    def _budget(self, ctx: TrainingContext, logs: Mapping[str, float]) -> dict[str, float]:
        if not self._watches_budget:
            return {}
        history = getattr(ctx.state, "history", None)
        spent = float(getattr(history, "cost_usd", 0.0) or 0.0)
        self._degraded += float(logs.get("degraded_jobs", 0.0))
        out = {"budget/spent_usd": spent, "budget/degraded_jobs": self._degraded}
        budget = getattr(ctx.backend, "budget", None)
        limit = getattr(budget, "usd", None)
        if limit is not None and limit > 0:
            out["budget/spent_fraction"] = spent / float(limit)
        return out

    async def _observe(self, ctx: TrainingContext, values: Mapping[str, float], step: int) -> None:
        events = self.evaluator.observe(values, step)
        if not events:
            return
        db = ctx.db
        if db is None:
            raise AlertRuleError("AlertMonitor needs a run with a database (ctx.db is None)")
        for event in events:
            rule = event.rule
            if event.kind == "resolved":
                await db.alerts.resolve(ctx.run_id, rule.name, step=step)
                continue
            alert, created = await db.alerts.fire(
                ctx.run_id,
                rule.name,
                event.message,
                severity=rule.severity,
                metric_key=rule.metric,
                value=event.value if math.isfinite(event.value) else None,
                threshold=rule.threshold,
                step=step,
            )
            if created:
                for handler in self.handlers:
                    outcome = handler(alert)
                    if inspect.isawaitable(outcome):
                        await outcome

    def state_dict(self) -> dict[str, Any]:
        return {"rules": self.evaluator.state_dict(), "degraded": self._degraded}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        self.evaluator.load_state_dict(state.get("rules", {}))
        self._degraded = float(state.get("degraded", 0.0))


def training_rules(
    *,
    exploding_factor: float = 10.0,
    exploding_for: int = 3,
    vanishing_grad_norm: float = 1e-6,
    vanishing_for: int = 5,
    stall_patience: int = 5,
    stall_min_delta: float = 1e-4,
) -> list[AlertRule]:
    """NaN or exploding loss, vanishing gradients, stalled validation."""
    return [
        AlertRule("nan_loss", "loss", "not_finite", severity="error"),
        AlertRule(
            "exploding_loss",
            "loss",
            ">",
            exploding_factor,
            for_n=exploding_for,
            severity="error",
            relative=True,
        ),
        AlertRule(
            "vanishing_gradients", "grad_norm", "<", vanishing_grad_norm, for_n=vanishing_for
        ),
        AlertRule(
            "stalled_validation", "val_loss", "stalled", stall_min_delta, for_n=stall_patience
        ),
    ]


def budget_rules(*, spent_fraction: float = 0.8) -> list[AlertRule]:
    """Spend above ``spent_fraction`` of the run's budget; any degraded job (fewer shots,
    another backend) as it happens."""
    if not 0 < spent_fraction <= 1:
        raise AlertRuleError(
            f"spent_fraction is a share of the budget in (0, 1], got {spent_fraction!r}"
        )
    return [
        AlertRule(
            "budget_spent",
            "budget/spent_fraction",
            ">=",
            spent_fraction,
            message="spent {value:.0%} of the budget (alert from {threshold:.0%})",
        ),
        AlertRule("budget_exhausted", "budget/spent_fraction", ">=", 1.0, severity="error"),
        AlertRule(
            "degraded_jobs",
            "budget/degraded_jobs",
            ">",
            0.0,
            severity="info",
            message="{value:.0f} job(s) degraded so far (fewer shots or another backend)",
        ),
    ]
