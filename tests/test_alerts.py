"""Alert rules: firing after N evaluations, deduplication, resolution, storage, handlers.

The store runs on a real SQLite file and the real PostgreSQL server; the monitor runs
inside real training runs, and a run killed and resumed fires what an uninterrupted one
fires.
"""

from __future__ import annotations

import logging
import math
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import func, select

from backends.simulator import SimulatorBackend
from quantum_db import QuantumDatabase, RunNotFoundError, Settings
from quantum_db.errors import DataValidationError
from quantum_db.registry.schema import AlertRow
from quantum_ml.errors import AlertRuleError
from quantum_ml.monitoring.alerts import (
    AlertEvaluator,
    AlertMonitor,
    AlertRule,
    budget_rules,
    log_alert,
    training_rules,
)
from quantum_ml.trainer import QuantumTrainer, TrainingConfig

from .test_trainer import make_model, store_blobs, url


@pytest.fixture
async def db(database_url: str) -> AsyncIterator[QuantumDatabase]:
    database = QuantumDatabase(database_url, settings=Settings(sweep_on_connect=False))
    async with database.connect():
        yield database


async def _count(db: QuantumDatabase) -> int:
    async with db.registry.session() as session:
        return int(await session.scalar(select(func.count()).select_from(AlertRow)) or 0)


# ---------------------------------------------------------------- the store
async def test_fire_deduplicates_while_open_and_resolve_closes(db: QuantumDatabase) -> None:
    await db.runs.create("r1")
    first, created = await db.alerts.fire(
        "r1", "loss_high", "loss > 1", severity="error", metric_key="loss", value=2.0, step=3
    )
    assert created and first.count == 1 and first.open and first.severity == "error"
    again, created = await db.alerts.fire("r1", "loss_high", "loss > 1", value=3.0, step=4)
    assert not created and again.id == first.id
    assert (again.count, again.value, again.step) == (2, 3.0, 4)
    assert again.severity == "warning"  # the latest firing's severity
    assert await _count(db) == 1
    # Another rule, and the same rule on another run, are separate alerts.
    await db.runs.create("r2")
    await db.alerts.fire("r1", "grad_low", "grad < 1e-6", step=4)
    await db.alerts.fire("r2", "loss_high", "loss > 1", step=1)
    assert await _count(db) == 3
    resolved = await db.alerts.resolve("r1", "loss_high", step=9)
    assert resolved is not None and resolved.id == first.id and not resolved.open
    assert resolved.step == 9 and resolved.resolved_at is not None
    assert await db.alerts.resolve("r1", "loss_high") is None  # nothing open any more
    # Firing after the resolution opens a new alert.
    reopened, created = await db.alerts.fire("r1", "loss_high", "loss > 1", value=5.0, step=12)
    assert created and reopened.id != first.id
    listed = await db.alerts.list("r1")
    assert [(a.rule, a.count, a.open) for a in listed] == [
        ("loss_high", 2, False),
        ("grad_low", 1, True),
        ("loss_high", 1, True),
    ]
    assert [a.rule for a in await db.alerts.list("r1", open_only=True)] == [
        "grad_low",
        "loss_high",
    ]
    assert len(await db.alerts.list(severity="error")) == 0  # the latest firing was a warning


async def test_bad_firings_are_refused_and_store_nothing(db: QuantumDatabase) -> None:
    await db.runs.create("r1")
    with pytest.raises(RunNotFoundError, match="no run 'ghost'"):
        await db.alerts.fire("ghost", "rule", "m")
    with pytest.raises(DataValidationError, match="severity must be one of info, warning, error"):
        await db.alerts.fire("r1", "rule", "m", severity="fatal")
    with pytest.raises(DataValidationError, match="alert value"):
        await db.alerts.fire("r1", "rule", "m", value=math.nan)
    with pytest.raises(DataValidationError, match="alert step"):
        await db.alerts.fire("r1", "rule", "m", step=-1)
    with pytest.raises(DataValidationError, match="non-empty message"):
        await db.alerts.fire("r1", "rule", "  ")
    with pytest.raises(DataValidationError, match="alert rule"):
        await db.alerts.fire("r1", " padded ", "m")
    assert await _count(db) == 0
    alert, _ = await db.alerts.fire("r1", "rule", "m", value=1.0, step=1)
    with pytest.raises(DataValidationError, match="severity"):
        await db.alerts.fire("r1", "rule", "m", severity="loud")
    stored = await db.alerts.list("r1")
    assert [(a.id, a.count, a.value) for a in stored] == [(alert.id, 1, 1.0)]  # unchanged


# ---------------------------------------------------------------- rules
def test_rules_refuse_bad_settings_at_creation() -> None:
    with pytest.raises(AlertRuleError, match=r"no metric 'val_los' .*did you mean 'val_loss'"):
        AlertRule("r", "val_los", ">", 1.0)
    with pytest.raises(AlertRuleError, match="comparison must be one of"):
        AlertRule("r", "loss", "=>", 1.0)
    with pytest.raises(AlertRuleError, match=r"for_n .* must be an integer >= 1"):
        AlertRule("r", "loss", ">", 1.0, for_n=0)
    with pytest.raises(AlertRuleError, match="severity must be one of"):
        AlertRule("r", "loss", ">", 1.0, severity="critical")
    with pytest.raises(AlertRuleError, match="threshold must be a finite number"):
        AlertRule("r", "loss", ">", math.inf)
    with pytest.raises(AlertRuleError, match="relative=True needs"):
        AlertRule("r", "loss", "not_finite", relative=True)
    with pytest.raises(AlertRuleError, match="unique"):
        AlertEvaluator([AlertRule("r", "loss", ">", 1.0), AlertRule("r", "loss", "<", 0.0)])
    with pytest.raises(AlertRuleError, match="cannot read the alert rule"):
        AlertRule.parse("loss is big")
    # Families of metrics by prefix, and names of one's own with custom_metric=True.
    AlertRule("sys", "system/process_rss_megabytes", ">", 1e4)
    AlertRule("mine", "my_metric", ">", 1.0, custom_metric=True)


def test_parse_reads_every_form() -> None:
    rule = AlertRule.parse("val_loss > 0.5 for 3 severity=error")
    assert (rule.metric, rule.comparison, rule.threshold, rule.for_n, rule.severity) == (
        "val_loss",
        ">",
        0.5,
        3,
        "error",
    )
    assert rule.name == "val_loss>0.5"
    assert AlertRule.parse("loss > 10x").relative
    stalled = AlertRule.parse("val_loss stalled 1e-4 for 5")
    assert (stalled.comparison, stalled.threshold, stalled.for_n) == ("stalled", 1e-4, 5)
    assert AlertRule.parse("loss not_finite").comparison == "not_finite"


def test_a_rule_fires_after_n_consecutive_evaluations_and_resolves_when_clear() -> None:
    rule = AlertRule("high", "loss", ">", 1.0, for_n=3)
    ev = AlertEvaluator([rule])
    series = [2.0, 2.0, 0.5, 2.0, 2.0, 2.0, 3.0, 0.9, 2.0]
    events = [
        (step, e.kind) for step, v in enumerate(series) for e in ev.observe({"loss": v}, step)
    ]
    # Steps 0-1 are only two in a row; 3, 4, 5 are three: fires at 5, repeats at 6, clears at 7.
    assert events == [(5, "fired"), (6, "fired"), (7, "resolved")]
    assert ev.observe({"other": 5.0}, 9) == []  # a value of another metric is no evaluation


def test_relative_stalled_and_not_finite_rules() -> None:
    rules = [
        AlertRule("exploding", "loss", ">", 10.0, relative=True),
        AlertRule("nan", "loss", "not_finite", severity="error"),
        AlertRule("stalled", "val_loss", "stalled", 0.01, for_n=2),
    ]
    ev = AlertEvaluator(rules)

    def kinds(values: dict[str, float], step: int) -> list[tuple[str, str]]:
        return [(e.rule.name, e.kind) for e in ev.observe(values, step)]

    assert kinds({"loss": 0.5, "val_loss": 1.0}, 0) == []  # first loss 0.5: bound 5.0
    assert kinds({"loss": 4.9, "val_loss": 0.995}, 1) == []  # not better by 0.01: 1 of 2
    assert kinds({"loss": 5.1, "val_loss": 0.99}, 2) == [
        ("exploding", "fired"),
        ("stalled", "fired"),
    ]
    assert kinds({"loss": math.nan, "val_loss": 0.5}, 3) == [
        ("exploding", "resolved"),  # NaN is above no bound
        ("nan", "fired"),
        ("stalled", "resolved"),
    ]
    assert kinds({"loss": math.inf}, 4) == [("exploding", "fired"), ("nan", "fired")]


def test_builtin_rule_sets() -> None:
    names = {r.name: r for r in training_rules()}
    assert set(names) == {"nan_loss", "exploding_loss", "vanishing_gradients", "stalled_validation"}
    assert names["exploding_loss"].relative and names["nan_loss"].severity == "error"
    budget = {r.name: r for r in budget_rules(spent_fraction=0.5)}
    assert budget["budget_spent"].threshold == 0.5
    assert budget["budget_exhausted"].threshold == 1.0
    with pytest.raises(AlertRuleError, match="share of the budget"):
        budget_rules(spent_fraction=1.5)


# ---------------------------------------------------------------- in a run
async def _train(db: QuantumDatabase, monitor: AlertMonitor, run_id: str, epochs: int = 3) -> None:
    model = make_model(await store_blobs(db))
    config = TrainingConfig(learning_rate=0.1, epochs=epochs, checkpoint_every=4, seed=1)
    trainer = QuantumTrainer(config, db, SimulatorBackend(), callbacks=[monitor])
    train = db.create_ml_data_loader("blobs", batch_size=10, seed=1, split="train")
    val = db.create_ml_data_loader("blobs", batch_size=20, shuffle=False, split="validation")
    await trainer.fit(model, train, val, run_id=run_id)


async def test_monitor_stores_firings_calls_handlers_and_resolves(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    seen_sync: list[Any] = []
    seen_async: list[Any] = []

    async def async_handler(alert: Any) -> None:
        seen_async.append(alert)

    # The loss starts near 0.7 and falls below 0.6 as the model learns: "loss > 0.6" fires
    # at once (for 2 steps) and resolves when the loss drops.
    rules = [
        AlertRule("loss_high", "loss", ">", 0.6, for_n=2, severity="info"),
        AlertRule("never", "loss", "<", -1.0),
    ]
    monitor = AlertMonitor(rules, handlers=[seen_sync.append, async_handler, log_alert])
    async with QuantumDatabase(url(tmp_path)).connect() as db:
        with caplog.at_level(logging.INFO, logger="quantum_ml.monitoring.alerts"):
            await _train(db, monitor, "run-a")
        history = await db.metrics.history("run-a", "loss")
        alerts = await db.alerts.list("run-a")
    values = history.values
    above = [bool(v > 0.6) for v in values]
    # The independent expectation, from the stored loss series.
    first_fire = next(i for i in range(1, len(above)) if above[i] and above[i - 1])
    assert len(alerts) == 1
    alert = alerts[0]
    assert alert.rule == "loss_high" and alert.severity == "info"
    assert alert.step is not None and alert.resolved_at is not None
    clear = next(i for i in range(first_fire, len(above)) if not above[i])
    assert alert.count == clear - first_fire  # every firing while open, deduplicated
    assert alert.step == int(history.steps[clear])  # the step of the resolution
    assert [a.id for a in seen_sync] == [alert.id] == [a.id for a in seen_async]
    assert any("[loss_high] run run-a" in r.getMessage() for r in caplog.records)


async def test_a_resumed_monitor_decides_as_an_uninterrupted_one(tmp_path: Path) -> None:
    """The evaluator's state is in every checkpoint: after a crash at step 7 (checkpoint at
    4) the resumed run fires and resolves at the same steps. What the crashed attempt
    stored stays; its replayed repeats count into the open alert."""
    from quantum_ml.training.callbacks import LambdaCallback

    rules = [AlertRule("loss_high", "loss", ">", 0.6, for_n=2)]
    async with QuantumDatabase(url(tmp_path, "a.sqlite")).connect() as db:
        await _train(db, AlertMonitor(rules, handlers=[]), "whole")
        whole = await db.alerts.list("whole")

    def crash(ctx: Any, step: int, logs: Any) -> None:
        if step == 7:
            raise RuntimeError("the machine went away")

    async with QuantumDatabase(url(tmp_path, "b.sqlite")).connect() as db:
        model = make_model(await store_blobs(db))
        config = TrainingConfig(learning_rate=0.1, epochs=3, checkpoint_every=4, seed=1)
        train = db.create_ml_data_loader("blobs", batch_size=10, seed=1, split="train")
        val = db.create_ml_data_loader("blobs", batch_size=20, shuffle=False, split="validation")
        crashing = QuantumTrainer(
            config,
            db,
            SimulatorBackend(),
            callbacks=[AlertMonitor(rules, handlers=[]), LambdaCallback(on_step_end=crash)],
        )
        with pytest.raises(RuntimeError, match="went away"):
            await crashing.fit(model, train, val, run_id="split")
        resumed = QuantumTrainer(
            config, db, SimulatorBackend(), callbacks=[AlertMonitor(rules, handlers=[])]
        )
        await resumed.fit(make_model(await store_blobs(db)), train, val, run_id="split")
        split = await db.alerts.list("split")
    assert whole, "the rule never fired: the test shows nothing"
    assert [(a.rule, a.step, a.open) for a in split] == [(a.rule, a.step, a.open) for a in whole]
    assert all(s.count >= w.count for s, w in zip(split, whole, strict=True))


async def test_budget_rules_fire_on_spend(tmp_path: Path) -> None:
    """A run with a budget: spent fraction from the run's own cost (the IonQ emulator's
    billing is tested in test_trainer_billing; here the simulator is priced by hand)."""
    from quantum_ml.training.callbacks import TrainingContext

    monitor = AlertMonitor(budget_rules(spent_fraction=0.5), handlers=[])

    class _State:
        class history:
            cost_usd = 0.0

        step = 0

    class _Backend:
        class budget:
            usd = 2.0

    async with QuantumDatabase(url(tmp_path)).connect() as db:
        await db.runs.create("b")
        ctx = TrainingContext(
            run_id="b",
            config=None,
            state=_State(),
            steps_per_epoch=1,
            get_lr=lambda: 0.1,
            set_lr=lambda lr: None,
            db=db,
            backend=_Backend(),
        )
        for step, (spent, degraded) in enumerate([(0.5, 0), (1.1, 1), (2.0, 0)], start=1):
            _State.history.cost_usd = spent
            await monitor.on_step_end(ctx, step, {"loss": 0.1, "degraded_jobs": float(degraded)})
        alerts = {a.rule: a for a in await db.alerts.list("b")}
    assert set(alerts) == {"budget_spent", "budget_exhausted", "degraded_jobs"}
    # Opened at step 2 (55%), fired again at step 3 (100%): one alert, the latest firing's.
    assert alerts["budget_spent"].step == 3 and alerts["budget_spent"].count == 2
    assert alerts["budget_spent"].message.startswith("spent 100% of the budget")
    assert alerts["budget_exhausted"].step == 3 and alerts["budget_exhausted"].severity == "error"
    assert alerts["degraded_jobs"].value == 1.0


def test_monitor_refuses_bad_handlers() -> None:
    with pytest.raises(AlertRuleError, match="handler must be callable"):
        AlertMonitor(training_rules(), handlers=["print"])  # type: ignore[list-item]
    with pytest.raises(AlertRuleError, match="expected AlertRule"):
        AlertMonitor(["loss > 1"])  # type: ignore[list-item]
