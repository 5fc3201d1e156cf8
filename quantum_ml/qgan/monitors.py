"""Long QGAN runs that watch themselves: stopping, collapse recovery, adaptive control.

Each monitor is a trainer :class:`~quantum_ml.training.callbacks.Callback` working at the
end of every epoch from the epoch's metrics (see :class:`~quantum_ml.qgan.GANContext`).
Every decision is logged as a metric and raised as an alert, and every monitor's memory
is checkpointed, so a resumed run decides exactly as an uninterrupted one would.

* :class:`GANEarlyStopping`: a tolerance on a metric (``converged``) and a patience
  (``early_stopping``), on the relative entropy, the entropy, the sample variance...
* :class:`CriticalStop`: a NaN loss, or gradient-flow failure (too few generator
  parameters with a gradient above a threshold for ``patience`` epochs).
* :class:`ModeCollapseDetector`: coverage drop, entropy drop, low diversity,
  discriminator dominance; hands a collapse to a :class:`RecoveryPolicy`.
* :class:`RecoveryPolicy`: roll back to the best checkpoint, perturb the generator, halve
  the discriminator's learning rate, change the D:G ratio, add a diversity penalty; at
  most ``max_attempts`` times, then the run stops with ``mode_collapse``.
* :class:`AdaptiveController`: both learning rates and the D:G ratio from windowed loss
  trends, within bounds.
* :class:`AdaptiveShots`: more shots when the gradient's signal-to-noise ratio is low,
  within the budget.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any, Literal, Protocol

import numpy as np

from ..errors import MonitorError
from ..training.callbacks import Callback, TrainingContext

__all__ = [
    "AdaptiveController",
    "AdaptiveShots",
    "CriticalStop",
    "GANControls",
    "GANEarlyStopping",
    "ModeCollapseDetector",
    "RecoveryPolicy",
]

ACTIONS = ("rollback", "perturb", "halve_discriminator_lr", "step_ratio", "diversity_penalty")


class GANControls(Protocol):
    """What the monitors use of a run's context (a :class:`~quantum_ml.qgan.GANContext`)."""

    run_id: str
    generator_lr: float
    discriminator_lr: float
    d_steps: int
    shots: int | None
    diversity_weight: float

    @property
    def budget_left_usd(self) -> float | None: ...

    def request_stop(self, reason: str, message: str | None = None) -> None: ...

    def estimate_epoch_cost(self, shots: int | None) -> float: ...

    async def rollback_to_best(self, before_epoch: int | None = None) -> bool: ...

    def perturb_generator(self, scale: float, seed: int) -> None: ...

    async def alert(
        self, kind: str, message: str, metric_key: str | None = None, value: float | None = None
    ) -> None: ...

    async def log(self, metrics: Mapping[str, float]) -> None: ...


def _controls(ctx: TrainingContext) -> GANControls:
    if not hasattr(ctx, "rollback_to_best"):
        raise MonitorError("QGAN monitors work inside a QuantumGAN run (its GANContext)")
    return ctx  # type: ignore[return-value]


def _positive_int(value: object, name: str, minimum: int = 1) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise MonitorError(f"{name} must be an integer >= {minimum}, got {value!r}")
    return value


def _number(value: object, name: str, *, low: float = 0.0, strict: bool = False) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise MonitorError(f"{name} must be a finite number, got {value!r}")
    if value < low or (strict and value == low):
        raise MonitorError(f"{name} must be {'>' if strict else '>='} {low}, got {value!r}")
    return float(value)


def _bounds(pair: tuple[float, float], name: str) -> tuple[float, float]:
    lo, hi = (_number(x, name, strict=True) for x in pair)
    if lo > hi:
        raise MonitorError(f"{name} are reversed: ({lo}, {hi})")
    return lo, hi


def _finite(metrics: Mapping[str, float], key: str) -> float | None:
    value = metrics.get(key)
    return float(value) if value is not None and math.isfinite(value) else None


# --------------------------------------------------------------------------- stopping
class GANEarlyStopping(Callback):
    """Stop at ``tolerance`` (``converged``) or after ``patience`` epochs without an
    improvement of more than ``min_delta`` (``early_stopping``) in ``monitor``."""

    def __init__(
        self,
        monitor: str = "relative_entropy",
        *,
        tolerance: float | None = None,
        patience: int | None = None,
        min_delta: float = 0.0,
        mode: Literal["min", "max"] = "min",
    ) -> None:
        if tolerance is None and patience is None:
            raise MonitorError("give a tolerance, a patience, or both")
        if tolerance is not None:
            _number(tolerance, "tolerance", low=-math.inf)
        if patience is not None:
            _positive_int(patience, "patience")
        _number(min_delta, "min_delta")
        if mode not in ("min", "max"):
            raise MonitorError(f"mode must be 'min' or 'max', got {mode!r}")
        self.monitor, self.tolerance, self.patience = monitor, tolerance, patience
        self.min_delta, self.mode = min_delta, mode
        self.best: float | None = None
        self.bad_epochs = 0

    async def on_epoch_end(
        self, ctx: TrainingContext, epoch: int, metrics: Mapping[str, float]
    ) -> None:
        c = _controls(ctx)
        value = _finite(metrics, self.monitor)
        if value is None:
            return
        sign = 1.0 if self.mode == "min" else -1.0
        if self.tolerance is not None and sign * (value - self.tolerance) <= 0:
            await c.log({"early_stop": 1.0})
            await c.alert(
                "converged",
                f"{self.monitor} {value:.6g} reached the tolerance {self.tolerance:g} at epoch "
                f"{epoch}",
                self.monitor,
                value,
            )
            c.request_stop("converged", f"{self.monitor} reached {self.tolerance:g}")
            return
        if self.best is None or sign * (self.best - value) > self.min_delta:
            self.best, self.bad_epochs = value, 0
            return
        self.bad_epochs += 1
        if self.patience is not None and self.bad_epochs >= self.patience:
            await c.log({"early_stop": 1.0})
            await c.alert(
                "early_stopping",
                f"{self.monitor} did not improve for {self.patience} epochs (best {self.best:.6g})",
                self.monitor,
                value,
            )
            c.request_stop("early_stopping", f"{self.monitor} stopped improving")

    def state_dict(self) -> dict[str, Any]:
        return {"best": math.nan if self.best is None else self.best, "bad": self.bad_epochs}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        best = float(state["best"])
        self.best = None if math.isnan(best) else best
        self.bad_epochs = int(state["bad"])


class CriticalStop(Callback):
    """Stop at once on a NaN or infinite loss (``nan_loss``), or after ``patience`` epochs
    in a row with fewer than ``min_active_fraction`` of the generator's parameters having
    ``|grad|`` above the run's ``grad_threshold`` (``gradient_flow``)."""

    def __init__(self, *, min_active_fraction: float = 0.05, patience: int = 3) -> None:
        self.min_active_fraction = _number(min_active_fraction, "min_active_fraction")
        if self.min_active_fraction > 1:
            raise MonitorError("min_active_fraction is a share: at most 1")
        self.patience = _positive_int(patience, "patience")
        self.low_epochs = 0

    async def on_epoch_end(
        self, ctx: TrainingContext, epoch: int, metrics: Mapping[str, float]
    ) -> None:
        c = _controls(ctx)
        for key in ("generator_loss", "discriminator_loss"):
            value = metrics.get(key)
            if value is not None and not math.isfinite(value):
                await c.log({"critical_stop": 1.0})
                await c.alert("nan_loss", f"{key} is {value} at epoch {epoch}", key, None)
                c.request_stop("nan_loss", f"{key} became {value}")
                return
        active = _finite(metrics, "grad_active_fraction")
        if active is None:
            return
        self.low_epochs = self.low_epochs + 1 if active < self.min_active_fraction else 0
        if self.low_epochs >= self.patience:
            await c.log({"critical_stop": 1.0})
            await c.alert(
                "gradient_flow",
                f"only {active:.1%} of the generator's parameters had a gradient for "
                f"{self.patience} epochs (barren plateau or saturated discriminator)",
                "grad_active_fraction",
                active,
            )
            c.request_stop("gradient_flow", "the generator's gradient vanished")

    def state_dict(self) -> dict[str, Any]:
        return {"low": self.low_epochs}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        self.low_epochs = int(state["low"])


# --------------------------------------------------------------------------- collapse
class RecoveryPolicy:
    """What to do about a mode collapse: the next of ``actions`` (cycling; ``"a+b"`` takes
    several at once), at most ``max_attempts`` times, never within ``cooldown`` epochs of
    the last attempt; after that a collapse stops the run with ``mode_collapse``."""

    def __init__(
        self,
        actions: Sequence[str] = ACTIONS,
        *,
        max_attempts: int = 3,
        perturb_scale: float = 0.1,
        seed: int = 0,
        ratio_step: int = 1,
        max_d_steps: int = 5,
        diversity_weight: float = 0.1,
        cooldown: int = 2,
    ) -> None:
        if not actions:
            raise MonitorError("a recovery policy needs at least one action")
        for action in actions:
            for part in action.split("+"):
                if part not in ACTIONS:
                    raise MonitorError(
                        f"unknown recovery action {part!r}; use {', '.join(ACTIONS)}"
                    )
        self.actions = tuple(actions)
        self.max_attempts = _positive_int(max_attempts, "max_attempts")
        self.perturb_scale = _number(perturb_scale, "perturb_scale", strict=True)
        self.seed = int(seed)
        self.ratio_step = _positive_int(ratio_step, "ratio_step")
        self.max_d_steps = _positive_int(max_d_steps, "max_d_steps")
        self.diversity_weight = _number(diversity_weight, "diversity_weight", strict=True)
        self.cooldown = _positive_int(cooldown, "cooldown", 0)
        self.attempts = 0
        self.last_epoch = -(10**9)
        self.onset: int | None = None

    async def recover(
        self,
        c: GANControls,
        epoch: int,
        signals: Sequence[str],
        dominated: bool,
        onset: int | None = None,
    ) -> None:
        """Apply the next action for a collapse seen at ``epoch`` that began at ``onset``
        (a rollback goes to the best checkpoint written before it)."""
        if epoch - self.last_epoch <= self.cooldown:
            return
        if self.attempts >= self.max_attempts:
            await c.alert(
                "mode_collapse",
                f"mode collapse again ({', '.join(signals)}) after {self.attempts} recovery "
                "attempts: stopping",
                "mode_collapse",
                1.0,
            )
            c.request_stop("mode_collapse", f"collapsed after {self.attempts} recoveries")
            return
        index = self.attempts % len(self.actions)
        action = self.actions[index]
        done = []
        for part in action.split("+"):
            if part == "rollback":
                # Back to before the first collapse: a checkpoint written since is suspect.
                if onset is not None:
                    self.onset = onset if self.onset is None else min(self.onset, onset)
                back = await c.rollback_to_best(self.onset)
                done.append("rollback" if back else "rollback (no checkpoint before the collapse)")
            elif part == "perturb":
                c.perturb_generator(self.perturb_scale, self.seed + self.attempts)
                done.append(f"perturb (scale {self.perturb_scale:g})")
            elif part == "halve_discriminator_lr":
                c.discriminator_lr = c.discriminator_lr / 2
                done.append(f"discriminator lr -> {c.discriminator_lr:.3g}")
            elif part == "step_ratio":
                if dominated and c.d_steps > 1:
                    c.d_steps = max(1, c.d_steps - self.ratio_step)
                elif not dominated:
                    c.d_steps = min(self.max_d_steps, c.d_steps + self.ratio_step)
                done.append(f"d_steps -> {c.d_steps}")
            else:
                c.diversity_weight = max(c.diversity_weight, self.diversity_weight)
                done.append(f"diversity weight -> {c.diversity_weight:g}")
        self.attempts += 1
        self.last_epoch = epoch
        await c.log({"recovery_attempt": float(self.attempts), "recovery_action": float(index)})
        await c.alert(
            "recovery",
            f"mode collapse at epoch {epoch} ({', '.join(signals)}): attempt {self.attempts} of "
            f"{self.max_attempts}: {'; '.join(done)}",
            "recovery_attempt",
            float(self.attempts),
        )

    def state_dict(self) -> dict[str, Any]:
        onset = -1 if self.onset is None else self.onset
        return {"attempts": self.attempts, "last": self.last_epoch, "onset": onset}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        self.attempts, self.last_epoch = int(state["attempts"]), int(state["last"])
        onset = int(state.get("onset", -1))
        self.onset = None if onset < 0 else onset


class ModeCollapseDetector(Callback):
    """Flags a collapse after ``warmup`` epochs when any signal fires:

    * ``coverage_drop``: mode coverage ``coverage_drop`` or more below its best so far;
    * ``entropy_drop``: the generator's entropy below ``(1 - entropy_drop)`` of its best;
    * ``low_diversity``: the diversity below ``min_diversity`` (when given);
    * ``dominance``: ``d_real >= dominance_real`` and ``d_fake <= dominance_fake`` for
      ``dominance_epochs`` epochs in a row;
    * ``saturation``: the discriminator scores real and generated data alike within
      ``saturation`` of 0 or of 1 for ``dominance_epochs`` epochs in a row (it gives the
      generator no signal).

    Logs ``mode_collapse`` (1 or 0) every epoch and hands a collapse to ``recovery``.
    """

    def __init__(
        self,
        *,
        coverage_drop: float = 0.25,
        entropy_drop: float = 0.5,
        min_diversity: float | None = None,
        dominance_real: float = 0.9,
        dominance_fake: float = 0.1,
        dominance_epochs: int = 3,
        warmup: int = 2,
        saturation: float = 0.01,
        recovery: RecoveryPolicy | None = None,
    ) -> None:
        self.coverage_drop = _number(coverage_drop, "coverage_drop", strict=True)
        self.entropy_drop = _number(entropy_drop, "entropy_drop", strict=True)
        self.min_diversity = (
            None if min_diversity is None else _number(min_diversity, "min_diversity")
        )
        self.dominance_real = _number(dominance_real, "dominance_real")
        self.dominance_fake = _number(dominance_fake, "dominance_fake")
        self.dominance_epochs = _positive_int(dominance_epochs, "dominance_epochs")
        self.warmup = _positive_int(warmup, "warmup", 0)
        self.saturation = _number(saturation, "saturation", strict=True)
        if self.saturation >= 0.5:
            raise MonitorError(f"saturation must be below 0.5, got {saturation!r}")
        if recovery is not None and not isinstance(recovery, RecoveryPolicy):
            raise MonitorError(f"recovery must be a RecoveryPolicy, got {type(recovery).__name__}")
        self.recovery = recovery
        self.best_coverage: float | None = None
        self.best_entropy: float | None = None
        self.dominated_epochs = 0
        self.saturated_epochs = 0
        self.seen = 0

    def signals(self, metrics: Mapping[str, float]) -> list[str]:
        """The collapse signals these metrics fire (updating the running bests)."""
        fired = []
        coverage = _finite(metrics, "mode_coverage")
        if coverage is not None:
            if (
                self.best_coverage is not None
                and coverage <= self.best_coverage - self.coverage_drop
            ):
                fired.append("coverage_drop")
            self.best_coverage = max(self.best_coverage or coverage, coverage)
        ent = _finite(metrics, "entropy")
        if ent is not None:
            if self.best_entropy is not None and ent < (1 - self.entropy_drop) * self.best_entropy:
                fired.append("entropy_drop")
            self.best_entropy = max(self.best_entropy or ent, ent)
        diversity = _finite(metrics, "diversity")
        if (
            self.min_diversity is not None
            and diversity is not None
            and diversity < self.min_diversity
        ):
            fired.append("low_diversity")
        real, fake = _finite(metrics, "d_real"), _finite(metrics, "d_fake")
        if (
            real is not None
            and fake is not None
            and real >= self.dominance_real
            and fake <= self.dominance_fake
        ):
            self.dominated_epochs += 1
        else:
            self.dominated_epochs = 0
        if self.dominated_epochs >= self.dominance_epochs:
            fired.append("dominance")
        # A saturated discriminator scores real and generated data alike at 0 or 1: the
        # generator gets no signal (what a far too high discriminator learning rate does).
        saturated = (
            real is not None
            and fake is not None
            and abs(real - fake) < self.saturation
            and (min(real, fake) > 1 - self.saturation or max(real, fake) < self.saturation)
        )
        self.saturated_epochs = self.saturated_epochs + 1 if saturated else 0
        if self.saturated_epochs >= self.dominance_epochs:
            fired.append("saturation")
        return fired

    async def on_epoch_end(
        self, ctx: TrainingContext, epoch: int, metrics: Mapping[str, float]
    ) -> None:
        c = _controls(ctx)
        fired = self.signals(metrics)
        self.seen += 1
        if self.seen <= self.warmup or not fired:
            await c.log({"mode_collapse": 0.0})
            return
        await c.log({"mode_collapse": 1.0, "collapse_signals": float(len(fired))})
        await c.alert(
            "mode_collapse",
            f"mode collapse at epoch {epoch}: {', '.join(fired)}",
            "mode_collapse",
            1.0,
        )
        if self.recovery is not None:
            # The collapse began when its longest-running signal did.
            lasting = max(self.dominated_epochs, self.saturated_epochs, 1)
            await self.recovery.recover(c, epoch, fired, "dominance" in fired, epoch - lasting + 1)
            self.dominated_epochs = self.saturated_epochs = 0

    def state_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "coverage": math.nan if self.best_coverage is None else self.best_coverage,
            "entropy": math.nan if self.best_entropy is None else self.best_entropy,
            "dominated": self.dominated_epochs,
            "saturated": self.saturated_epochs,
            "seen": self.seen,
        }
        if self.recovery is not None:
            out["recovery"] = self.recovery.state_dict()
        return out

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        cov, ent = float(state["coverage"]), float(state["entropy"])
        self.best_coverage = None if math.isnan(cov) else cov
        self.best_entropy = None if math.isnan(ent) else ent
        self.dominated_epochs, self.seen = int(state["dominated"]), int(state["seen"])
        self.saturated_epochs = int(state["saturated"])
        if self.recovery is not None and "recovery" in state:
            self.recovery.load_state_dict(state["recovery"])


# --------------------------------------------------------------------------- control
class AdaptiveController(Callback):
    """Every ``window`` epochs, from the least-squares slopes of both losses over the
    window and their coefficients of variation:

    * the discriminator winning (its loss falling, the generator's rising): its learning
      rate times ``lr_factor``, the generator's divided by it, one D step fewer;
    * the discriminator losing (the opposite trends): the opposite moves;
    * oscillation (a loss's coefficient of variation above ``oscillation``): both
      learning rates times ``lr_factor``.

    Everything stays within its bounds; the window's losses are checkpointed.
    """

    def __init__(
        self,
        *,
        window: int = 5,
        lr_factor: float = 0.8,
        generator_lr_bounds: tuple[float, float] = (1e-5, 0.1),
        discriminator_lr_bounds: tuple[float, float] = (1e-5, 0.1),
        d_steps_bounds: tuple[int, int] = (1, 5),
        oscillation: float = 0.5,
    ) -> None:
        self.window = _positive_int(window, "window", 2)
        self.lr_factor = _number(lr_factor, "lr_factor", strict=True)
        if self.lr_factor >= 1:
            raise MonitorError(f"lr_factor must be in (0, 1), got {lr_factor!r}")
        self.g_bounds = _bounds(generator_lr_bounds, "generator_lr_bounds")
        self.d_bounds = _bounds(discriminator_lr_bounds, "discriminator_lr_bounds")
        lo, hi = (_positive_int(x, "d_steps_bounds") for x in d_steps_bounds)
        if lo > hi:
            raise MonitorError(f"d_steps_bounds are reversed: ({lo}, {hi})")
        self.steps_bounds = (lo, hi)
        self.oscillation = _number(oscillation, "oscillation", strict=True)
        self.g_losses: list[float] = []
        self.d_losses: list[float] = []

    @staticmethod
    def _clip(value: float, bounds: tuple[float, float]) -> float:
        return float(min(max(value, bounds[0]), bounds[1]))

    async def on_epoch_end(
        self, ctx: TrainingContext, epoch: int, metrics: Mapping[str, float]
    ) -> None:
        c = _controls(ctx)
        g, d = _finite(metrics, "generator_loss"), _finite(metrics, "discriminator_loss")
        if g is None or d is None:
            return
        self.g_losses.append(g)
        self.d_losses.append(d)
        if len(self.g_losses) < self.window:
            return
        x = np.arange(self.window, dtype=np.float64)
        g_slope = float(np.polyfit(x, self.g_losses, 1)[0])
        d_slope = float(np.polyfit(x, self.d_losses, 1)[0])
        cov = max(
            float(np.std(v) / abs(np.mean(v))) if np.mean(v) != 0 else 0.0
            for v in (self.g_losses, self.d_losses)
        )
        self.g_losses, self.d_losses = [], []
        g_lr, d_lr, steps = c.generator_lr, c.discriminator_lr, c.d_steps
        f = self.lr_factor
        if cov > self.oscillation:
            why = f"oscillating losses (coefficient of variation {cov:.2f})"
            g_lr, d_lr = g_lr * f, d_lr * f
        elif d_slope < 0 < g_slope:
            why = "the discriminator is winning"
            g_lr, d_lr, steps = g_lr / f, d_lr * f, steps - 1
        elif g_slope < 0 < d_slope:
            why = "the discriminator is losing"
            g_lr, d_lr, steps = g_lr * f, d_lr / f, steps + 1
        else:
            return
        g_lr, d_lr = self._clip(g_lr, self.g_bounds), self._clip(d_lr, self.d_bounds)
        steps = int(min(max(steps, self.steps_bounds[0]), self.steps_bounds[1]))
        if (g_lr, d_lr, steps) == (c.generator_lr, c.discriminator_lr, c.d_steps):
            return
        c.generator_lr, c.discriminator_lr = g_lr, d_lr
        if steps != c.d_steps:
            try:
                c.d_steps = steps
            except Exception:  # a simultaneous-update run keeps one D step
                steps = c.d_steps
        await c.log(
            {
                "controller_generator_lr": g_lr,
                "controller_discriminator_lr": d_lr,
                "controller_d_steps": float(steps),
            }
        )
        await c.alert(
            "controller",
            f"epoch {epoch}: {why}: generator lr {g_lr:.3g}, discriminator lr {d_lr:.3g}, "
            f"d_steps {steps}",
            "controller_generator_lr",
            g_lr,
        )

    def state_dict(self) -> dict[str, Any]:
        return {"g": np.asarray(self.g_losses), "d": np.asarray(self.d_losses)}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        self.g_losses = [float(v) for v in np.asarray(state["g"]).ravel()]
        self.d_losses = [float(v) for v in np.asarray(state["d"]).ravel()]


class AdaptiveShots(Callback):
    """Raise the shots by ``factor`` (to at most ``max_shots``) when the gradient's
    signal-to-noise ratio is below ``min_snr``, if the budget left pays for an epoch at the
    new count. Exact runs (no shots) are left alone."""

    def __init__(
        self, *, min_snr: float = 1.0, factor: float = 2.0, max_shots: int = 100_000
    ) -> None:
        self.min_snr = _number(min_snr, "min_snr", strict=True)
        self.factor = _number(factor, "factor", strict=True)
        if self.factor <= 1:
            raise MonitorError(f"factor must be > 1, got {factor!r}")
        self.max_shots = _positive_int(max_shots, "max_shots")
        self.budget_alerted = False

    async def on_epoch_end(
        self, ctx: TrainingContext, epoch: int, metrics: Mapping[str, float]
    ) -> None:
        c = _controls(ctx)
        snr = _finite(metrics, "grad_snr")
        if c.shots is None or snr is None or snr >= self.min_snr or c.shots >= self.max_shots:
            return
        new = int(min(math.ceil(c.shots * self.factor), self.max_shots))
        left = c.budget_left_usd
        if left is not None and c.estimate_epoch_cost(new) > left:
            if not self.budget_alerted:
                self.budget_alerted = True
                await c.alert(
                    "adaptive_shots_budget",
                    f"gradient SNR {snr:.2f} < {self.min_snr:g} but an epoch at {new} shots costs "
                    f"more than the ${left:.4f} left: staying at {c.shots}",
                    "grad_snr",
                    snr,
                )
            return
        old = c.shots
        c.shots = new
        await c.log({"adaptive_shots": float(new)})
        await c.alert(
            "adaptive_shots",
            f"gradient SNR {snr:.2f} < {self.min_snr:g} at epoch {epoch}: shots {old} -> {new}",
            "grad_snr",
            snr,
        )

    def state_dict(self) -> dict[str, Any]:
        return {"alerted": int(self.budget_alerted)}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        self.budget_alerted = bool(int(state["alerted"]))
