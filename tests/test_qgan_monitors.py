"""The long-run monitors' decisions on scripted metric sequences, their checkpointed
memory, and their bad settings. The monitors are the thing under test; the run they act
on is a plain object with the levers of a GANContext (tests/test_qgan.py drives them in
real runs)."""

from __future__ import annotations

import asyncio
import math
from collections.abc import Mapping
from typing import Any

import pytest

from quantum_ml.errors import MonitorError
from quantum_ml.qgan.monitors import (
    AdaptiveController,
    AdaptiveShots,
    CriticalStop,
    GANEarlyStopping,
    ModeCollapseDetector,
    RecoveryPolicy,
)
from quantum_ml.training.callbacks import Callback


class Run:
    """The levers of a run, recording what the monitors do with them."""

    def __init__(self, *, shots: int | None = None, budget: float | None = None) -> None:
        self.run_id = "r"
        self.generator_lr = 0.01
        self.discriminator_lr = 0.01
        self.d_steps = 2
        self.shots = shots
        self.diversity_weight = 0.0
        self.budget_left_usd = budget
        self.stop_reason: str | None = None
        self.alerts: list[tuple[str, str]] = []
        self.logs: list[dict[str, float]] = []
        self.rollbacks: list[int | None] = []
        self.perturbed: list[tuple[float, int]] = []

    def request_stop(self, reason: str, message: str | None = None) -> None:
        self.stop_reason = self.stop_reason or reason

    def estimate_epoch_cost(self, shots: int | None) -> float:
        return 0.001 * (shots or 0)

    async def rollback_to_best(self, before_epoch: int | None = None) -> bool:
        self.rollbacks.append(before_epoch)
        return True

    def perturb_generator(self, scale: float, seed: int) -> None:
        self.perturbed.append((scale, seed))

    async def alert(
        self, kind: str, message: str, metric_key: str | None = None, value: float | None = None
    ) -> None:
        self.alerts.append((kind, message))

    async def log(self, metrics: Mapping[str, float]) -> None:
        self.logs.append(dict(metrics))


def feed(cb: Callback, run: Run, epochs: list[dict[str, float]], start: int = 0) -> None:
    async def go() -> None:
        for i, metrics in enumerate(epochs, start):
            result = cb.on_epoch_end(run, i, metrics)  # type: ignore[arg-type]
            if result is not None:
                await result

    asyncio.run(go())


def test_early_stopping_on_a_tolerance_and_on_a_patience() -> None:
    run = Run()
    feed(GANEarlyStopping(tolerance=0.05), run, [{"relative_entropy": v} for v in (0.3, 0.1, 0.04)])
    assert run.stop_reason == "converged" and run.alerts[-1][0] == "converged"
    run = Run()
    stop = GANEarlyStopping("entropy", patience=2, mode="max")
    feed(stop, run, [{"entropy": v} for v in (1.0, 1.2, 1.1, 1.2)])
    assert run.stop_reason == "early_stopping"
    assert run.logs[-1] == {"early_stop": 1.0}


def test_critical_stop_on_nan_and_on_gradient_flow() -> None:
    run = Run()
    feed(CriticalStop(), run, [{"generator_loss": 1.0}, {"generator_loss": math.nan}])
    assert run.stop_reason == "nan_loss"
    run = Run()
    low = {"generator_loss": 1.0, "grad_active_fraction": 0.0}
    feed(CriticalStop(patience=3), run, [low, low, {**low, "grad_active_fraction": 0.5}, low, low])
    assert run.stop_reason is None  # never 3 in a row
    feed(CriticalStop(patience=3), run, [low, low, low])
    assert run.stop_reason == "gradient_flow" and run.alerts[-1][0] == "gradient_flow"


def test_dominance_triggers_the_policy_in_order_then_a_stop() -> None:
    run = Run()
    policy = RecoveryPolicy(
        ("rollback", "perturb", "halve_discriminator_lr", "step_ratio", "diversity_penalty"),
        max_attempts=5,
        cooldown=0,
    )
    detector = ModeCollapseDetector(dominance_epochs=2, warmup=0, recovery=policy)
    dominated = {"d_real": 0.95, "d_fake": 0.05}
    feed(detector, run, [dominated] * 12)
    kinds = [k for k, _ in run.alerts]
    assert kinds.count("recovery") == 5 and run.stop_reason == "mode_collapse"
    assert run.rollbacks and run.perturbed == [(0.1, 1)]
    assert run.discriminator_lr == pytest.approx(0.005)
    assert run.d_steps == 1  # the discriminator dominates: one step fewer
    assert run.diversity_weight == pytest.approx(0.1)
    actions = [log["recovery_action"] for log in run.logs if "recovery_action" in log]
    assert actions == [0.0, 1.0, 2.0, 3.0, 4.0]


def test_coverage_and_entropy_drops_are_collapses_and_cooldown_holds_the_policy() -> None:
    run = Run()
    policy = RecoveryPolicy(("halve_discriminator_lr",), max_attempts=3, cooldown=2)
    detector = ModeCollapseDetector(warmup=1, recovery=policy)
    healthy = {"mode_coverage": 1.0, "entropy": 2.0}
    fell = {"mode_coverage": 0.5, "entropy": 0.5}
    feed(detector, run, [healthy, healthy, fell, fell, fell, fell])
    collapses = [m for k, m in run.alerts if k == "mode_collapse"]
    assert "coverage_drop" in collapses[0] and "entropy_drop" in collapses[0]
    # Epochs 2..5 collapse; the cooldown lets only epochs 2 and 5 act.
    assert [k for k, _ in run.alerts].count("recovery") == 2
    assert [log["mode_collapse"] for log in run.logs if "mode_collapse" in log] == [
        0.0, 0.0, 1.0, 1.0, 1.0, 1.0
    ]  # fmt: skip


def test_a_resumed_detector_decides_as_an_uninterrupted_one() -> None:
    def make() -> ModeCollapseDetector:
        return ModeCollapseDetector(
            dominance_epochs=3, warmup=0, recovery=RecoveryPolicy(max_attempts=2, cooldown=0)
        )

    sequence = [{"d_real": 0.95, "d_fake": 0.05, "mode_coverage": 1.0}] * 9
    whole, whole_run = make(), Run()
    feed(whole, whole_run, sequence)
    first, run = make(), Run()
    feed(first, run, sequence[:4])
    resumed = make()
    resumed.load_state_dict(first.state_dict())
    feed(resumed, run, sequence[4:], start=4)
    assert run.alerts == whole_run.alerts and run.stop_reason == whole_run.stop_reason


def test_the_controller_moves_the_levers_within_bounds() -> None:
    run = Run()
    controller = AdaptiveController(window=3, discriminator_lr_bounds=(0.009, 0.1))
    # The discriminator wins: its loss falls, the generator's rises.
    feed(controller, run, [{"generator_loss": g, "discriminator_loss": d} for g, d in
                           ((1.0, 1.0), (1.1, 0.9), (1.2, 0.8))])  # fmt: skip
    assert run.discriminator_lr == pytest.approx(0.009)  # 0.008 clipped at its bound
    assert run.generator_lr == pytest.approx(0.0125) and run.d_steps == 1
    assert run.alerts[-1][0] == "controller"
    # Oscillating losses: both rates go down.
    feed(
        controller, run, [{"generator_loss": g, "discriminator_loss": 1.0} for g in (0.1, 2.0, 0.1)]
    )
    assert run.generator_lr == pytest.approx(0.01)
    state = controller.state_dict()
    again = AdaptiveController(window=3)
    again.load_state_dict(state)
    assert again.g_losses == controller.g_losses


def test_adaptive_shots_within_the_budget() -> None:
    run = Run(shots=100, budget=1.0)
    feed(AdaptiveShots(min_snr=2.0), run, [{"grad_snr": 0.5}])
    assert run.shots == 200 and run.alerts[-1][0] == "adaptive_shots"
    poor = Run(shots=600, budget=1.0)  # 1200 shots would cost 1.2 > 1.0 left
    shots = AdaptiveShots(min_snr=2.0)
    feed(shots, poor, [{"grad_snr": 0.5}, {"grad_snr": 0.5}])
    assert poor.shots == 600 and [k for k, _ in poor.alerts] == ["adaptive_shots_budget"]
    exact = Run()
    feed(AdaptiveShots(), exact, [{"grad_snr": 0.1}])
    assert exact.shots is None and not exact.alerts


@pytest.mark.parametrize(
    ("make", "match"),
    [
        (lambda: GANEarlyStopping(), "tolerance, a patience"),
        (lambda: GANEarlyStopping(patience=0), "patience"),
        (lambda: CriticalStop(min_active_fraction=2.0), "share"),
        (lambda: RecoveryPolicy(("reboot",)), "unknown recovery action"),
        (lambda: RecoveryPolicy(max_attempts=0), "max_attempts"),
        (lambda: AdaptiveController(lr_factor=1.5), "lr_factor"),
        (lambda: AdaptiveController(generator_lr_bounds=(0.1, 0.01)), "reversed"),
        (lambda: AdaptiveShots(factor=0.5), "factor"),
        (lambda: ModeCollapseDetector(saturation=0.7), "saturation"),
    ],
)
def test_bad_settings_get_a_monitor_error(make: Any, match: str) -> None:
    with pytest.raises(MonitorError, match=match):
        make()
