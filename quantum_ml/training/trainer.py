"""The training loop: one :class:`QuantumTrainer` for QuantumModels and torch modules.

``fit`` trains a :class:`QuantumModel` or any ``torch.nn.Module`` on a database loader.
Every circuit it runs goes through the database's BackendManager (see ``execution.py``):
job rows, reservations under ``budget_usd``, actual costs, retries, fallback and the
degrade policy apply mid-run, and a degraded job is recorded as a metric and an alert.

Every step logs ``loss`` and ``grad_norm``; every epoch logs ``train_loss``,
``train_accuracy`` (classification), ``val_loss``/``val_accuracy`` (with a validation
loader) and ``cost_usd``. A checkpoint (model, optimizer, scheduler and RNG states, the
typed :class:`TrainingState`, the callbacks' state, the config) is written every
``checkpoint_every`` steps and at the end of every epoch; the end-of-epoch ones carry the
``monitor`` metric, so the best checkpoint follows ``monitor`` and its mode.

``fit`` on a run that has a checkpoint resumes from the latest one: metric rows written
after that checkpoint's step are replaced (deleted, then written again), the batches
already done are skipped, and a run killed at any point ends with bitwise the same
parameters as one never interrupted: the batch order comes from the loader's
``(seed, epoch)``, every random draw from checkpointed generators, and nothing depends on
the wall clock. The run's status is ``running`` while it trains, then ``finished``,
``stopped`` (early stopping, the budget, a NaN loss...: the reason is kept), ``failed``
(the error is kept) or ``interrupted`` (SIGINT/SIGTERM; a run whose process died is found
interrupted by the next ``fit`` or ``qdb runs``).
"""

from __future__ import annotations

import asyncio
import logging
import math
import sys
from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from backends.accounting import Budget
from backends.base import Backend
from backends.errors import BudgetExceededError
from backends.simulator import SimulatorBackend
from quantum_db.runs import validate_run_id

from ..contracts import check_encoding
from ..errors import TrainingError
from ..gradients import QuantumGradientComputer, supports_adjoint
from ..models import QuantumModel
from .callbacks import (
    Callback,
    CallbackList,
    EarlyStopping,
    LambdaCallback,
    ProgressBar,
    ReduceLROnPlateau,
    TorchLRScheduler,
    TrainingContext,
)
from .config import TrainingConfig, math_settings
from .execution import ManagedBackend
from .lifecycle import SignalWatch, begin_run, end_run, record_failure
from .state import History, TrainingState
from .tasks import ModelTask, QuantumModelTask

if TYPE_CHECKING:
    from quantum_db.database import QuantumDatabase
    from quantum_db.loader import MLDataLoader

__all__ = ["QuantumTrainer", "StepCallback"]

logger = logging.getLogger(__name__)

#: Called after every step (``global_step``, ``loss``); may be a coroutine function.
StepCallback = Callable[[int, float], "Awaitable[None] | None"]

_STATE_FORMAT = 2


def _is_torch_module(model: object) -> bool:
    torch = sys.modules.get("torch")
    return torch is not None and isinstance(model, torch.nn.Module)


class QuantumTrainer:
    """Fits a :class:`QuantumModel` or a ``torch.nn.Module``; see the module docstring.

    ``backend`` is a backend registered in ``db.backend_manager`` (an instance, or its
    name), a backend of your own (registered on first use under its name), or ``None``
    (the manager's ``"simulator"``). ``callbacks`` are :class:`Callback`\\ s; ``on_step``
    is called after every step (after that step's checkpoint, if any) with the global
    step and its loss.
    """

    def __init__(
        self,
        config: TrainingConfig,
        db: QuantumDatabase,
        backend: Backend | str | None = None,
        *,
        callbacks: Sequence[Callback] = (),
        on_step: StepCallback | None = None,
    ) -> None:
        if not isinstance(config, TrainingConfig):
            raise TrainingError(f"config must be a TrainingConfig, got {type(config).__name__}")
        if backend is not None and not isinstance(backend, Backend | str):
            raise TrainingError(
                f"backend must be a Backend, a registered backend's name or None, got {backend!r}"
            )
        self.config = config
        self.db = db
        self._backend_arg = backend
        self.user_callbacks = CallbackList(list(callbacks))  # checks their types
        if on_step is not None:
            step_fn = on_step
            self.user_callbacks.callbacks.append(
                LambdaCallback(on_step_end=lambda ctx, step, logs: step_fn(step, logs["loss"]))
            )
        #: The backend the trainer's circuits run on (resolved in the manager on first use).
        self.backend: Backend = backend if isinstance(backend, Backend) else SimulatorBackend()
        self._backend_name: str | None = None
        self.gradient_method: str = (
            self._pick_method(self.backend) if not isinstance(backend, str) else "parameter-shift"
        )
        self._signals = SignalWatch()

    async def aclose(self) -> None:
        """Nothing to release: backends belong to the database's BackendManager."""

    # ------------------------------------------------------------------ backend
    def _pick_method(self, backend: Backend) -> str:
        c = self.config
        method = c.gradient_method
        if method is None:
            exact = supports_adjoint(backend) and c.shots is None
            method = (
                "spsa" if c.optimizer == "spsa" else ("adjoint" if exact else "parameter-shift")
            )
        if method == "adjoint" and not supports_adjoint(backend):
            raise TrainingError(
                f"gradient_method='adjoint' needs the SimulatorBackend, not {backend.name!r}"
            )
        return method

    def _resolve_backend(self) -> str:
        """The name, in the database's BackendManager, of the backend this trainer uses."""
        if self._backend_name is not None:
            return self._backend_name
        manager = self.db.backend_manager
        arg = self._backend_arg
        if arg is None:
            name = "simulator" if "simulator" in manager.names() else manager.names()[0]
        elif isinstance(arg, str):
            manager.get(arg)  # UnknownBackendError naming the registered ones
            name = arg
        else:
            found = [n for n in manager.names() if manager.get(n) is arg]
            if found:
                name = found[0]
            else:
                name, k = arg.name, 1
                while name in manager.names():
                    k += 1
                    name = f"{arg.name}-{k}"
                manager.register(name, arg)
        self.backend = manager.get(name)
        self.gradient_method = self._pick_method(self.backend)
        self._backend_name = name
        return name

    def _managed(self, run_id: str | None) -> ManagedBackend:
        c = self.config
        budget = None if c.budget_usd is None else Budget(float(c.budget_usd), c.budget_name)
        name = self._resolve_backend()
        return ManagedBackend(self.db.backend_manager, name, budget=budget, run_id=run_id)

    def _task(self, model: object, backend: ManagedBackend) -> ModelTask:
        if isinstance(model, QuantumModel):
            return QuantumModelTask(model, self.config, backend, self.gradient_method)
        if _is_torch_module(model):
            from .torch_task import TorchModuleTask

            # On the exact simulator each layer keeps its own method (adjoint, unless it
            # was built otherwise); elsewhere, or when the config names one, every layer
            # uses the trainer's (parameter shift by default).
            exact = self.config.shots is None and backend.supports_derivatives("adjoint")
            gradient = (
                None
                if exact and self.config.gradient_method is None
                else QuantumGradientComputer(self.gradient_method)
            )
            return TorchModuleTask(
                model,  # type: ignore[arg-type]
                self.config,
                backend,
                gradient,
                asyncio.get_running_loop(),
            )
        raise TrainingError(
            f"model must be a QuantumModel or a torch.nn.Module, got {type(model).__name__}"
        )

    def _check_encoding(
        self, task: ModelTask, loader: MLDataLoader, what: str, state: TrainingState | None
    ) -> None:
        differences = check_encoding(
            task.encoding_contract(),
            loader.info.encoding,
            allow_mismatch=self.config.allow_encoding_mismatch,
            what=what,
        )
        if differences and state is not None:
            for d in differences:
                note = f"{what}: {d}"
                if note not in state.encoding_override:
                    state.encoding_override.append(note)

    # ------------------------------------------------------------------ evaluation
    async def evaluate(
        self, model: object, loader: MLDataLoader, epoch: int = 0
    ) -> tuple[float, float | None]:
        """Mean loss and accuracy (``None`` for regression) over one pass of ``loader``.

        The circuits go through the BackendManager like training's; data encoded otherwise
        than the model was trained for raises :class:`EncodingMismatchError` (unless
        ``allow_encoding_mismatch``).
        """
        await loader.load()
        task = self._task(model, self._managed(None))
        self._check_encoding(task, loader, "evaluation data", None)
        return await self._evaluate(task, loader, epoch)

    async def _evaluate(
        self, task: ModelTask, loader: MLDataLoader, epoch: int
    ) -> tuple[float, float | None]:
        c = self.config
        total, count, correct, classify = 0.0, 0, 0, True
        for index, (X, y) in enumerate(loader.iter_epoch(epoch)):
            seed = None
            if c.shots is not None:
                seed = int(np.random.default_rng((c.seed, epoch, index)).integers(2**62))
            loss, right = await task.evaluate_batch(X, y, seed)
            total += loss * len(X)
            count += len(X)
            if right is None:
                classify = False
            else:
                correct += right
        if count == 0:
            raise TrainingError(f"loader {loader.name!r} yields no samples to evaluate")
        return total / count, (correct / count if classify else None)

    # ------------------------------------------------------------------ fit
    async def fit(
        self,
        model: object,
        train_loader: MLDataLoader,
        val_loader: MLDataLoader | None = None,
        run_id: str | None = None,
        *,
        validation: MLDataLoader | None = None,
    ) -> History:
        """Train ``model`` in place; resumes ``run_id`` from its latest checkpoint if any.

        Everything is checked before anything is stored: the model, the optimizer, loss
        and scheduler names, the data's width and encoding contract, and (on resume) that
        the checkpoint fits the model and the settings.
        """
        c = self.config
        if validation is not None:
            if val_loader is not None:
                raise TrainingError("give the validation loader once (validation=...)")
            val_loader = validation
        if not isinstance(model, QuantumModel) and not _is_torch_module(model):
            raise TrainingError(
                f"model must be a QuantumModel or a torch.nn.Module, got {type(model).__name__}"
            )
        if c.monitor.startswith("val_") and c.patience is not None and val_loader is None:
            raise TrainingError(f"early stopping on {c.monitor!r} needs a validation loader")
        await train_loader.load()
        if val_loader is not None:
            await val_loader.load()
        if len(train_loader) == 0:
            raise TrainingError("the training loader yields no batches")
        run_id = validate_run_id(run_id or f"train-{c.seed}-{train_loader.name}")
        backend = self._managed(run_id)
        task = self._task(model, backend)
        task.check_data(train_loader.info.dim)
        state = TrainingState()
        self._check_encoding(task, train_loader, "training data", state)
        if val_loader is not None:
            task.check_data(val_loader.info.dim)
            self._check_encoding(task, val_loader, "validation data", state)
        callbacks = self._callbacks(task)
        rng = np.random.default_rng(c.seed)

        checkpoint = await self.db.checkpoints.latest(run_id)
        if checkpoint is not None:
            saved = checkpoint.state
            self._check_resumable(saved, task, run_id)
            task.load_state_dict(saved["task"])
            rng.bit_generator.state = saved["rng"]
            restored = TrainingState.from_state(saved["state"])
            restored.encoding_override = sorted(
                set(restored.encoding_override) | set(state.encoding_override)
            )
            state = restored
            callbacks.load_state_dict(saved["callbacks"])
            if state.finished:
                self._set_trained_contract(model, train_loader)
                return state.history
            if state.history.stop_reason in ("interrupted", "budget"):
                state.history.stop_reason = None  # a stop that leaves the run resumable
        else:
            task.seed_everything(c.seed)
        await begin_run(
            self.db,
            run_id,
            resume_step=None if checkpoint is None else state.step,
            config=c.to_dict(),
            backend=backend.name,
            seed=c.seed,
        )
        if state.encoding_override:
            # Recorded in the run: its alerts, and every checkpoint's state.
            await self.db.alerts.raise_alert(
                run_id,
                "encoding_override",
                "trained with allow_encoding_mismatch=True on data encoded otherwise than the "
                "model: " + "; ".join(state.encoding_override),
            )

        ctx = TrainingContext(
            run_id=run_id,
            config=c,
            state=state,
            steps_per_epoch=len(train_loader),
            get_lr=task.get_lr,
            set_lr=task.set_lr,
            db=self.db,
            backend=backend,
            task=task,
        )
        restore = self._signals.install()
        try:
            await callbacks.call("on_train_begin", ctx)
            await _Loop(self, task, backend, callbacks, ctx, rng, train_loader, val_loader).run()
            await callbacks.call("on_train_end", ctx)
        except BaseException as exc:
            restore()
            await callbacks.call_on_exception(ctx, exc)
            await record_failure(self.db, run_id, exc)
            raise
        restore()
        await end_run(self.db, run_id, state.history.stop_reason, ctx.stop_message)
        self._set_trained_contract(model, train_loader)
        return state.history

    @staticmethod
    def _set_trained_contract(model: object, loader: MLDataLoader) -> None:
        """A torch module remembers the contract of the data it was trained on."""
        if _is_torch_module(model) and getattr(model, "qdb_encoding", None) is None:
            model.qdb_encoding = dict(loader.info.encoding)  # type: ignore[attr-defined]

    def _check_resumable(self, saved: Mapping[str, Any], task: ModelTask, run_id: str) -> None:
        from ..errors import ResumeMismatchError

        if saved.get("format") != _STATE_FORMAT:
            raise ResumeMismatchError(
                f"the checkpoints of run {run_id!r} were written by another version of the "
                "trainer; start a new run with another run_id"
            )
        if saved.get("kind") != task.kind:
            raise ResumeMismatchError(
                f"run {run_id!r} trained a {saved.get('kind')} model, not a {task.kind} one; "
                "start a new run with another run_id"
            )
        if math_settings(saved["config"]) != math_settings(self.config.to_dict()):
            changed = sorted(
                k
                for k in math_settings(self.config.to_dict())
                if saved["config"].get(k) != self.config.to_dict()[k]
            )
            raise ResumeMismatchError(
                f"run {run_id!r} was started with other settings ({', '.join(changed)}); resume "
                "it with the same TrainingConfig, or start a new run with another run_id"
            )
        task.check_signature(saved["signature"], run_id)

    def _callbacks(self, task: ModelTask) -> CallbackList:
        c = self.config
        built: list[Callback] = []
        if c.patience is not None:
            built.append(
                EarlyStopping(c.monitor, c.patience, min_delta=c.min_delta, mode=c.monitor_mode)
            )
        if c.scheduler == "plateau":
            built.append(
                ReduceLROnPlateau(c.monitor, mode=c.monitor_mode, **dict(c.scheduler_kwargs))
            )
        scheduler = getattr(task, "scheduler", None)
        if scheduler is not None:
            built.append(TorchLRScheduler(scheduler, c.monitor))
        if c.progress:
            built.append(ProgressBar())
        return CallbackList([*built, *self.user_callbacks.callbacks])


class _Loop:
    """One ``fit``'s epochs and steps (the trainer holds what outlives a fit)."""

    def __init__(
        self,
        trainer: QuantumTrainer,
        task: ModelTask,
        backend: ManagedBackend,
        callbacks: CallbackList,
        ctx: TrainingContext,
        rng: np.random.Generator,
        train: MLDataLoader,
        val: MLDataLoader | None,
    ) -> None:
        self.trainer = trainer
        self.db = trainer.db
        self.config = trainer.config
        self.task = task
        self.backend = backend
        self.callbacks = callbacks
        self.ctx = ctx
        self.state = ctx.state
        self.rng = rng
        self.train = train
        self.val = val
        self.run_id = ctx.run_id
        self._alerted: set[str] = set()

    async def checkpoint(self, metric: float | None) -> None:
        s = self.state
        payload = {
            "format": _STATE_FORMAT,
            "kind": self.task.kind,
            "signature": self.task.signature(),
            "task": self.task.state_dict(),
            "rng": self.rng.bit_generator.state,
            "state": s.to_state(),
            "callbacks": self.callbacks.state_dict(),
            "config": self.config.to_dict(),
            "gradient_method": self.trainer.gradient_method,
            "encoding": self.task.encoding_contract(),
        }
        # Rows up to this step are in the database before the checkpoint that covers them.
        await self.db.metrics.flush()
        if metric is not None and math.isfinite(metric):
            await self.db.checkpoints.save(
                self.run_id,
                s.step,
                payload,
                metric_name=self.config.monitor,
                metric_value=metric,
                mode=self.config.monitor_mode,
            )
        else:
            await self.db.checkpoints.save(
                self.run_id, s.step, payload, mode=self.config.monitor_mode
            )
        await self.callbacks.call("on_checkpoint", self.ctx, s.step, metric)

    async def stop(self, reason: str, message: str) -> None:
        """Log the epoch's cost so far, checkpoint the step boundary and record why."""
        s = self.state
        s.history.stop_reason = reason
        self.ctx.stop_message = message
        if s.cost:
            await self.db.metrics.log(self.run_id, {"cost_usd": s.cost}, s.step)
            s.cost = 0.0
        await self.checkpoint(None)
        await self.callbacks.call("on_stop", self.ctx, reason)
        print(f"[quantum-db] run {self.run_id!r}: {message}", file=sys.stderr, flush=True)

    async def _account(self, step: int) -> None:
        """The cost of ``step``'s jobs, and every one the manager degraded or sent elsewhere."""
        cost, degradations, fallbacks = self.backend.drain()
        s = self.state
        s.cost += cost
        s.history.cost_usd += cost
        if degradations:
            await self.db.metrics.log(
                self.run_id, {"degraded_jobs": float(len(degradations))}, step
            )
        for d in degradations:
            kind = d.how.split(":", 1)[0]
            if kind not in self._alerted:
                self._alerted.add(kind)
                await self.db.alerts.raise_alert(
                    self.run_id,
                    "budget_degraded",
                    f"the budget ran short at step {step}: jobs on {d.backend} now run "
                    f"degraded ({d.how}); training goes on",
                    metric_key="degraded_jobs",
                    value=float(len(degradations)),
                )
        for source in fallbacks:
            if f"fallback:{source}" not in self._alerted:
                self._alerted.add(f"fallback:{source}")
                await self.db.alerts.raise_alert(
                    self.run_id,
                    "backend_fallback",
                    f"{source} was unavailable at step {step}; its jobs ran on the fallback",
                )

    async def run(self) -> None:
        c = self.config
        s = self.state
        trainer = self.trainer
        while s.epoch < c.epochs and not s.finished:
            epoch = s.epoch
            self.train.set_epoch(epoch)
            await self.callbacks.call("on_epoch_begin", self.ctx, epoch)
            k = 0
            n_batches = len(self.train)
            async for X, y in self.train:
                if k < s.batch:
                    k += 1
                    continue
                if trainer._signals.received is not None:
                    name = trainer._signals.name
                    await self.stop(
                        "interrupted", f"{name} received; checkpointed at step {s.step}"
                    )
                    return
                if self.ctx.stop_reason is not None:
                    s.finished = True  # a callback's stop is final: the checkpoint says so
                    await self.stop(self.ctx.stop_reason, self.ctx.stop_message or "")
                    return
                before_draw = self.rng.bit_generator.state
                step_seed = int(self.rng.integers(2**62))
                try:
                    result = await self.task.compute(X, y, step_seed)
                except BudgetExceededError as exc:
                    # The step is not taken: a resumed run draws its seed again.
                    self.backend.drain()
                    self.rng.bit_generator.state = before_draw
                    await self.stop("budget", f"stopped at step {s.step} by the budget: {exc}")
                    return
                await self._account(s.step + 1)
                loss, grad_norm = result.loss, result.grad_norm
                reason = None
                if not math.isfinite(loss):
                    reason = "nan_loss"
                elif loss > c.max_loss:
                    reason = "exploding_loss"
                elif not math.isfinite(grad_norm):
                    reason = "nan_gradient"
                elif grad_norm < c.max_grad_norm_vanishing:
                    reason = "vanishing_gradient"
                if reason is not None and reason != "vanishing_gradient":
                    s.history.stop_reason = reason
                    s.finished = True
                    self.ctx.stop_message = f"loss {loss:.6g}, gradient norm {grad_norm:.6g}"
                    await self.checkpoint(None)
                    return
                await self.task.apply()
                k += 1
                s.batch = k
                s.step += 1
                s.loss_sum += loss * len(X)
                s.count += len(X)
                if result.correct is None:
                    s.classify = False
                else:
                    s.correct += result.correct
                s.history.steps = s.step
                logs = {"loss": loss, "grad_norm": grad_norm}
                await self.db.metrics.log(self.run_id, logs, s.step)
                if reason is not None:
                    s.history.stop_reason = reason
                    s.finished = True
                    self.ctx.stop_message = f"gradient norm {grad_norm:.3g} vanished"
                    await self.checkpoint(None)
                    return
                # The last batch's checkpoint is the epoch's, written once its metrics exist.
                if s.step % c.checkpoint_every == 0 and k < n_batches:
                    await self.checkpoint(None)
                await self.callbacks.call("on_step_end", self.ctx, s.step, logs)
            try:
                metrics = await self._end_epoch()
            except BudgetExceededError as exc:
                # Nothing of the epoch's end is recorded yet: a resume redoes the validation.
                self.backend.drain()
                await self.stop(
                    "budget", f"stopped by the budget at the end of epoch {epoch}: {exc}"
                )
                return
            await self.callbacks.call("on_epoch_end", self.ctx, epoch, metrics)
            if self.ctx.stop_reason is not None:
                s.history.stop_reason = self.ctx.stop_reason
                s.history.stopped_early = self.ctx.stop_reason == "early_stopping"
                s.finished = True
            await self.checkpoint(metrics.get(c.monitor))
            if s.finished and self.ctx.stop_reason is not None:
                await self.callbacks.call("on_stop", self.ctx, self.ctx.stop_reason)

    async def _end_epoch(self) -> dict[str, float]:
        s = self.state
        count = max(s.count, 1)
        metrics: dict[str, float] = {"train_loss": s.loss_sum / count}
        if s.classify:
            metrics["train_accuracy"] = s.correct / count
        if self.val is not None:
            val_loss, val_acc = await self.trainer._evaluate(self.task, self.val, 0)
            await self._account(s.step)
            metrics["val_loss"] = val_loss
            if val_acc is not None:
                metrics["val_accuracy"] = val_acc
        h = s.history
        h.epochs.append(s.epoch)
        for key, value in metrics.items():
            getattr(h, key).append(value)
        finite = {k: v for k, v in metrics.items() if math.isfinite(v)}
        finite["cost_usd"] = s.cost
        await self.db.metrics.log(self.run_id, finite, s.step)
        s.epoch_metrics = dict(metrics)
        s.reset_epoch()
        if s.epoch >= self.config.epochs:
            s.finished = True
        return metrics
