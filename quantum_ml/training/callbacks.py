"""Callbacks: hooks into a training run, in the spirit of Keras and PyTorch Lightning.

A callback subclasses :class:`Callback` and overrides the hooks it needs; each hook may be
a plain method or a coroutine. Hooks get the :class:`TrainingContext` of the run, through
which they read the run's state and metrics, change the learning rate or ask the run to
stop. Callbacks with state (early stopping's best value, a plateau controller's counter)
implement ``state_dict``/``load_state_dict``; their state goes into every checkpoint, so a
resumed run makes exactly the decisions an uninterrupted one would.

Early stopping, the plateau LR controller, torch LR schedulers and the progress bar are
callbacks themselves; the trainer adds those its :class:`TrainingConfig` asks for.
"""

from __future__ import annotations

import inspect
import logging
import math
import os
import sys
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal

from ..errors import TrainingError

if TYPE_CHECKING:
    from .config import TrainingConfig
    from .state import TrainingState

__all__ = [
    "FORCE_PROGRESS_ENV",
    "Callback",
    "CallbackList",
    "EarlyStopping",
    "LambdaCallback",
    "ProgressBar",
    "ReduceLROnPlateau",
    "TorchLRScheduler",
    "TrainingContext",
]

#: Set (to anything but "" or "0") to show ``progress=True`` bars even when not on a TTY.
FORCE_PROGRESS_ENV = "QDB_FORCE_PROGRESS"

Mode = Literal["min", "max"]


@dataclass(slots=True)
class TrainingContext:
    """What a hook sees of the run: its id, settings and state, and a few levers."""

    run_id: str
    #: The run's settings and state: a TrainingConfig and TrainingState in the trainer, a
    #: GANConfig and GANState in a QuantumGAN (whose context is a GANContext).
    config: TrainingConfig | Any
    state: TrainingState | Any
    steps_per_epoch: int
    get_lr: Callable[[], float]
    set_lr: Callable[[float], None]
    #: Set by :meth:`request_stop`: the run stops at the next step or epoch boundary.
    stop_reason: str | None = None
    stop_message: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)
    #: The run's QuantumDatabase, its (managed) backend and what it trains (a ModelTask in
    #: the trainer, the generator in a QuantumGAN): what monitors read, never replace.
    db: Any = None
    backend: Any = None
    task: Any = None

    @property
    def learning_rate(self) -> float:
        return self.get_lr()

    @learning_rate.setter
    def learning_rate(self, value: float) -> None:
        if not math.isfinite(value) or value <= 0:
            raise TrainingError(f"a learning rate must be a finite number > 0, got {value!r}")
        self.set_lr(float(value))

    def request_stop(self, reason: str, message: str | None = None) -> None:
        """Stop the run (status ``stopped`` with ``reason``) at the next boundary."""
        if self.stop_reason is None:
            self.stop_reason = reason
            self.stop_message = message


class Callback:
    """Base class: every hook does nothing. Override the ones you need (sync or async)."""

    def on_train_begin(self, ctx: TrainingContext) -> Awaitable[None] | None:
        return None

    def on_train_end(self, ctx: TrainingContext) -> Awaitable[None] | None:
        return None

    def on_epoch_begin(self, ctx: TrainingContext, epoch: int) -> Awaitable[None] | None:
        return None

    def on_epoch_end(
        self, ctx: TrainingContext, epoch: int, metrics: Mapping[str, float]
    ) -> Awaitable[None] | None:
        return None

    def on_step_end(
        self, ctx: TrainingContext, step: int, logs: Mapping[str, float]
    ) -> Awaitable[None] | None:
        return None

    def on_checkpoint(
        self, ctx: TrainingContext, step: int, metric: float | None
    ) -> Awaitable[None] | None:
        return None

    def on_stop(self, ctx: TrainingContext, reason: str) -> Awaitable[None] | None:
        return None

    def on_exception(self, ctx: TrainingContext, exc: BaseException) -> Awaitable[None] | None:
        """The run ends with ``exc`` (a crash, a cancellation): release what you hold."""
        return None

    def state_dict(self) -> dict[str, Any]:
        """What must survive a crash (numbers, strings, lists; default: nothing)."""
        return {}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Restore :meth:`state_dict`."""


class LambdaCallback(Callback):
    """A callback from plain functions (sync or async), e.g. ``on_step_end=print``."""

    def __init__(self, **hooks: Callable[..., Any]) -> None:
        names = {n for n in dir(Callback) if n.startswith("on_")}
        unknown = set(hooks) - names
        if unknown:
            raise TrainingError(f"unknown callback hooks {sorted(unknown)}; use {sorted(names)}")
        for name, fn in hooks.items():
            if not callable(fn):
                raise TrainingError(f"{name} must be callable, got {fn!r}")
            setattr(self, name, fn)


class CallbackList:
    """Calls every callback's hook in order, awaiting the ones that are coroutines."""

    def __init__(self, callbacks: Sequence[Callback]) -> None:
        for cb in callbacks:
            if not isinstance(cb, Callback):
                raise TrainingError(
                    f"callbacks must be quantum_ml Callback instances, got {type(cb).__name__}"
                )
        self.callbacks = list(callbacks)

    async def call(self, hook: str, *args: Any) -> None:
        for cb in self.callbacks:
            result = getattr(cb, hook)(*args)
            if inspect.isawaitable(result):
                await result

    async def call_on_exception(self, ctx: TrainingContext, exc: BaseException) -> None:
        """``on_exception`` of every callback; a hook that fails too is logged, so that
        the run's own error is the one raised."""
        for cb in self.callbacks:
            try:
                result = cb.on_exception(ctx, exc)
                if inspect.isawaitable(result):
                    await result
            except Exception as hook_error:
                logging.getLogger(__name__).warning(
                    "%s.on_exception failed: %s", type(cb).__name__, hook_error
                )

    def state_dict(self) -> dict[str, Any]:
        return {f"{i}:{type(cb).__name__}": cb.state_dict() for i, cb in enumerate(self.callbacks)}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        for i, cb in enumerate(self.callbacks):
            saved = state.get(f"{i}:{type(cb).__name__}")
            if saved is not None:
                cb.load_state_dict(saved)


class _PlateauWatch(Callback):
    """Counts epochs without an improvement of more than ``min_delta`` in ``monitor``;
    the count and the best value are checkpointed."""

    def __init__(self, monitor: str, patience: int, min_delta: float, mode: Mode) -> None:
        if patience < 1:
            raise TrainingError(f"patience must be >= 1, got {patience}")
        self.monitor, self.patience, self.min_delta, self.mode = monitor, patience, min_delta, mode
        self.best: float | None = None
        self.bad_epochs = 0

    def _plateaued(self, metrics: Mapping[str, float]) -> bool:
        """Whether this epoch makes ``patience`` epochs in a row without an improvement."""
        value = metrics.get(self.monitor)
        if value is None or not math.isfinite(value):
            return False
        best = self.best
        if best is None or (best - value if self.mode == "min" else value - best) > self.min_delta:
            self.best, self.bad_epochs = value, 0
            return False
        self.bad_epochs += 1
        return self.bad_epochs >= self.patience

    def state_dict(self) -> dict[str, Any]:
        return {"best": self.best, "bad_epochs": self.bad_epochs}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        self.best = None if state["best"] is None else float(state["best"])
        self.bad_epochs = int(state["bad_epochs"])


class EarlyStopping(_PlateauWatch):
    """Stop after ``patience`` epochs without an improvement of more than ``min_delta``."""

    def __init__(
        self, monitor: str, patience: int, *, min_delta: float = 0.0, mode: Mode = "min"
    ) -> None:
        super().__init__(monitor, patience, min_delta, mode)

    def on_epoch_end(self, ctx: TrainingContext, epoch: int, metrics: Mapping[str, float]) -> None:
        if self._plateaued(metrics):
            ctx.request_stop(
                "early_stopping",
                f"{self.monitor} did not improve for {self.patience} epochs (best {self.best:.6g})",
            )


class ReduceLROnPlateau(_PlateauWatch):
    """Multiply the learning rate by ``factor`` after ``patience`` epochs without an
    improvement of ``monitor``, never below ``min_lr`` (any model, any optimizer)."""

    def __init__(
        self,
        monitor: str,
        *,
        factor: float = 0.5,
        patience: int = 2,
        min_lr: float = 1e-6,
        min_delta: float = 0.0,
        mode: Mode = "min",
    ) -> None:
        super().__init__(monitor, patience, min_delta, mode)
        if not 0 < factor < 1:
            raise TrainingError(f"factor must be in (0, 1), got {factor}")
        if not min_lr > 0:
            raise TrainingError(f"min_lr must be > 0, got {min_lr}")
        self.factor, self.min_lr = factor, min_lr

    def on_epoch_end(self, ctx: TrainingContext, epoch: int, metrics: Mapping[str, float]) -> None:
        if self._plateaued(metrics):
            self.bad_epochs = 0
            ctx.learning_rate = max(ctx.learning_rate * self.factor, self.min_lr)


class TorchLRScheduler(Callback):
    """Steps a ``torch.optim.lr_scheduler`` scheduler at the end of every epoch (its state
    is checkpointed with the optimizer's by the trainer)."""

    def __init__(self, scheduler: Any, monitor: str | None = None) -> None:
        self.scheduler = scheduler
        self.monitor = monitor

    def on_epoch_end(self, ctx: TrainingContext, epoch: int, metrics: Mapping[str, float]) -> None:
        if type(self.scheduler).__name__ == "ReduceLROnPlateau":
            value = metrics.get(self.monitor or ctx.config.monitor)
            if value is not None:
                self.scheduler.step(value)
        else:
            self.scheduler.step()


class ProgressBar(Callback):
    """A tqdm bar per epoch on stderr (shown on a TTY, or with ``QDB_FORCE_PROGRESS``)."""

    def __init__(self) -> None:
        self._bar: Any = None

    def on_epoch_begin(self, ctx: TrainingContext, epoch: int) -> None:
        from tqdm import tqdm  # type: ignore[import-untyped]

        forced = os.environ.get(FORCE_PROGRESS_ENV, "") not in ("", "0")
        self._bar = tqdm(
            total=ctx.steps_per_epoch,
            initial=ctx.state.batch,
            desc=f"epoch {epoch + 1}/{ctx.config.epochs}",
            unit="step",
            file=sys.stderr,
            disable=False if forced else None,  # None: off when stderr is not a TTY
            leave=True,
            dynamic_ncols=True,
        )

    def on_step_end(self, ctx: TrainingContext, step: int, logs: Mapping[str, float]) -> None:
        if self._bar is not None:
            self._bar.update(1)
            self._bar.set_postfix(loss=f"{logs['loss']:.4f}", refresh=False)

    def _close(self) -> None:
        if self._bar is not None:
            self._bar.close()
            self._bar = None

    def on_epoch_end(self, ctx: TrainingContext, epoch: int, metrics: Mapping[str, float]) -> None:
        self._close()

    def on_train_end(self, ctx: TrainingContext) -> None:
        self._close()
