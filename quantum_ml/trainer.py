"""Training loop for :class:`QuantumModel`: gradients, checkpoints, metrics, exact resume.

:class:`QuantumTrainer` trains the circuit weights (those ``trainable_mask`` allows) and the
classical head of a model together, with one optimizer over the concatenated parameter
vector ``[weights, head_weight.ravel(), head_bias]``. The loss gradient is exact chain rule:
the head analytically in NumPy, the circuit through the jacobian of
:meth:`QuantumGradientComputer.value_and_jacobian` with respect to the weight parameters
only (data inputs are never differentiated).

Every step logs ``loss`` and ``grad_norm``; every epoch logs ``train_loss`` (and
``val_loss``/``val_accuracy`` with a validation loader). A checkpoint (parameters,
optimizer state, loader position, RNG state, history, config) is written every
``checkpoint_every`` steps and at the end of each epoch. ``fit`` on a run that already has
a checkpoint resumes from the latest one and skips the batches already done, so a run
killed at any point and restarted ends with bitwise the same parameters as one that was
never interrupted: the batch order comes from the loader's ``(seed, epoch)``, every random
draw from a checkpointed generator, and nothing depends on the wall clock.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import math
import os
import signal
import sys
import threading
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal

import numpy as np
from numpy.typing import NDArray

from backends.accounting import Accounting, Budget
from backends.errors import BudgetExceededError
from backends.simulator import SimulatorBackend

from .billing import BilledCall
from .encoders import amplitude_state, state_preparation_circuit
from .errors import TrainingError
from .gradients import QuantumGradientComputer, _occurrences, shift_rule
from .models import QuantumModel
from .optimizers import SGD, SPSA, Adam, Optimizer, optimizer_from_state

if TYPE_CHECKING:
    from backends.base import Backend
    from backends.circuit import Circuit
    from quantum_db.database import QuantumDatabase
    from quantum_db.loader import MLDataLoader

__all__ = ["History", "QuantumTrainer", "TrainingConfig", "TrainingError"]

Array = NDArray[np.float64]
OptimizerKind = Literal["adam", "sgd", "spsa"]
LossKind = Literal["cross-entropy", "mse", "bce"]
_OPTIMIZERS = ("adam", "sgd", "spsa")
_LOSSES = ("cross-entropy", "mse", "bce")
_GRADIENT_METHODS = ("adjoint", "parameter-shift", "finite-diff", "spsa")
_MONITORS = ("train_loss", "val_loss", "train_accuracy", "val_accuracy")
_STATE_FORMAT = 1
#: Settings that do not change the trained parameters: a run may resume with other values.
_RESUMABLE_SETTINGS = ("progress", "budget_usd", "budget_name")
#: Set (to anything but "" or "0") to show ``progress=True`` bars even when not on a TTY.
FORCE_PROGRESS_ENV = "QDB_FORCE_PROGRESS"

#: Called after every step (``global_step``, ``loss``); may be a coroutine function.
StepCallback = Callable[[int, float], "Awaitable[None] | None"]


def _math_settings(config: TrainingConfig) -> dict[str, Any]:
    """The settings that decide the trained parameters (those a resume must keep)."""
    return {k: v for k, v in config.to_dict().items() if k not in _RESUMABLE_SETTINGS}


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _finite_number(value: object) -> bool:
    return (
        isinstance(value, int | float)
        and not isinstance(value, bool)
        and math.isfinite(float(value))
    )


@dataclass(frozen=True, slots=True)
class TrainingConfig:
    """Settings of a training run; invalid values raise :class:`TrainingError`.

    ``gradient_method`` ``None`` picks ``"adjoint"`` on an exact :class:`SimulatorBackend`
    (no ``shots``), ``"spsa"`` with the SPSA optimizer, else ``"parameter-shift"``.
    ``patience`` (epochs without an improvement of more than ``min_delta`` in ``monitor``)
    enables early stopping. A step whose gradient norm is below
    ``max_grad_norm_vanishing`` stops the run (``0`` disables that); a loss that is NaN,
    infinite or above ``max_loss`` stops it too.
    """

    learning_rate: float = 0.05
    epochs: int = 10
    optimizer: OptimizerKind = "adam"
    loss: LossKind = "cross-entropy"
    gradient_method: str | None = None
    checkpoint_every: int = 10
    seed: int = 0
    patience: int | None = None
    min_delta: float = 0.0
    monitor: str = "val_loss"
    max_grad_norm_vanishing: float = 1e-8
    max_loss: float = 1e6
    shots: int | None = None
    momentum: float = 0.0
    progress: bool = False
    budget_usd: float | None = None
    budget_name: str = "training"

    def __post_init__(self) -> None:
        if not _finite_number(self.learning_rate) or self.learning_rate <= 0:
            raise TrainingError(f"learning_rate must be > 0, got {self.learning_rate!r}")
        if not _is_int(self.epochs) or self.epochs < 1:
            raise TrainingError(f"epochs must be an integer >= 1, got {self.epochs!r}")
        if self.optimizer not in _OPTIMIZERS:
            raise TrainingError(f"optimizer must be one of {_OPTIMIZERS}, got {self.optimizer!r}")
        if self.loss not in _LOSSES:
            raise TrainingError(f"loss must be one of {_LOSSES}, got {self.loss!r}")
        if self.gradient_method is not None and self.gradient_method not in _GRADIENT_METHODS:
            raise TrainingError(
                f"gradient_method must be one of {_GRADIENT_METHODS} or None, "
                f"got {self.gradient_method!r}"
            )
        if not _is_int(self.checkpoint_every) or self.checkpoint_every < 1:
            raise TrainingError(
                f"checkpoint_every must be an integer >= 1, got {self.checkpoint_every!r}"
            )
        if not _is_int(self.seed) or self.seed < 0:
            raise TrainingError(f"seed must be a non-negative integer, got {self.seed!r}")
        if self.patience is not None and (not _is_int(self.patience) or self.patience < 1):
            raise TrainingError(f"patience must be an integer >= 1 or None, got {self.patience!r}")
        if not _finite_number(self.min_delta) or self.min_delta < 0:
            raise TrainingError(f"min_delta must be >= 0, got {self.min_delta!r}")
        if self.monitor not in _MONITORS:
            raise TrainingError(f"monitor must be one of {_MONITORS}, got {self.monitor!r}")
        if not _finite_number(self.max_grad_norm_vanishing) or self.max_grad_norm_vanishing < 0:
            raise TrainingError(
                f"max_grad_norm_vanishing must be >= 0, got {self.max_grad_norm_vanishing!r}"
            )
        if not _finite_number(self.max_loss) or self.max_loss <= 0:
            raise TrainingError(f"max_loss must be a finite number > 0, got {self.max_loss!r}")
        if self.shots is not None and (not _is_int(self.shots) or self.shots < 1):
            raise TrainingError(f"shots must be a positive integer or None, got {self.shots!r}")
        if not _finite_number(self.momentum) or not 0 <= self.momentum < 1:
            raise TrainingError(f"momentum must be in [0, 1), got {self.momentum!r}")
        if self.optimizer != "sgd" and self.momentum != 0:
            raise TrainingError("momentum applies to optimizer='sgd' only")
        if self.gradient_method == "adjoint" and self.shots is not None:
            raise TrainingError("gradient_method='adjoint' is exact and takes no shots")
        if not isinstance(self.progress, bool):
            raise TrainingError(f"progress must be a bool, got {self.progress!r}")
        if self.budget_usd is not None and (
            not _finite_number(self.budget_usd) or self.budget_usd < 0
        ):
            raise TrainingError(
                f"budget_usd must be a finite amount >= 0 or None, got {self.budget_usd!r}"
            )
        if not isinstance(self.budget_name, str) or not 1 <= len(self.budget_name) <= 128:
            raise TrainingError(f"budget_name must be 1-128 characters, got {self.budget_name!r}")

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> TrainingConfig:
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = set(data) - names
        if unknown:
            raise TrainingError(f"unknown training settings {sorted(unknown)}")
        return cls(**dict(data))

    @property
    def monitor_mode(self) -> Literal["min", "max"]:
        return "max" if self.monitor.endswith("accuracy") else "min"


@dataclass(slots=True)
class History:
    """Per-epoch metrics (validation lists stay empty without a validation loader)."""

    epochs: list[int] = field(default_factory=list)
    train_loss: list[float] = field(default_factory=list)
    train_accuracy: list[float] = field(default_factory=list)
    val_loss: list[float] = field(default_factory=list)
    val_accuracy: list[float] = field(default_factory=list)
    steps: int = 0
    stop_reason: str | None = None
    stopped_early: bool = False
    cost_usd: float = 0.0

    @property
    def final(self) -> dict[str, float]:
        """The last value of every metric recorded, plus ``steps`` and ``epochs``."""
        out: dict[str, float] = {"steps": float(self.steps), "epochs": float(len(self.epochs))}
        for key in ("train_loss", "train_accuracy", "val_loss", "val_accuracy"):
            values: list[float] = getattr(self, key)
            if values:
                out[key] = values[-1]
        return out

    def to_state(self) -> dict[str, Any]:
        return {
            "epochs": list(self.epochs),
            "train_loss": list(self.train_loss),
            "train_accuracy": list(self.train_accuracy),
            "val_loss": list(self.val_loss),
            "val_accuracy": list(self.val_accuracy),
            "steps": self.steps,
            "stop_reason": self.stop_reason,
            "stopped_early": self.stopped_early,
            "cost_usd": self.cost_usd,
        }

    @classmethod
    def from_state(cls, state: Mapping[str, Any]) -> History:
        return cls(
            epochs=[int(v) for v in state["epochs"]],
            train_loss=[float(v) for v in state["train_loss"]],
            train_accuracy=[float(v) for v in state["train_accuracy"]],
            val_loss=[float(v) for v in state["val_loss"]],
            val_accuracy=[float(v) for v in state["val_accuracy"]],
            steps=int(state["steps"]),
            stop_reason=None if state["stop_reason"] is None else str(state["stop_reason"]),
            stopped_early=bool(state["stopped_early"]),
            cost_usd=float(state.get("cost_usd", 0.0)),
        )


# --------------------------------------------------------------------------- losses
def _targets(y: NDArray[Any], n_out: int) -> Array:
    """Targets shaped like the outputs: one-hot for integer labels with several outputs."""
    labels = np.asarray(y)
    if labels.ndim == 1 and n_out > 1:
        if not np.issubdtype(labels.dtype, np.integer):
            raise TrainingError(f"{n_out} outputs need integer class labels, got {labels.dtype}")
        if labels.size and (labels.min() < 0 or labels.max() >= n_out):
            raise TrainingError(f"class labels must lie in 0..{n_out - 1}")
        return np.eye(n_out)[labels.astype(np.int64)]
    return np.asarray(labels, dtype=np.float64).reshape(len(labels), n_out)


def loss_and_grad(kind: LossKind, z: Array, y: NDArray[Any]) -> tuple[float, Array]:
    """Mean loss over the batch and its gradient with respect to the outputs ``z [B, K]``."""
    b, k = z.shape
    if kind == "cross-entropy":
        if k < 2:
            raise TrainingError("cross-entropy needs at least 2 outputs (use 'bce' for one)")
        t = _targets(y, k)
        shifted = z - z.max(axis=1, keepdims=True)
        log_norm = np.log(np.exp(shifted).sum(axis=1, keepdims=True))
        log_p = shifted - log_norm
        loss = float(-(t * log_p).sum() / b)
        return loss, (np.exp(log_p) - t) / b
    t = _targets(y, k)
    if kind == "mse":
        diff = z - t
        return float((diff * diff).sum() / (b * k)), 2.0 * diff / (b * k)
    # bce with logits: softplus(z) - t z, stable for either sign of z.
    softplus = np.maximum(z, 0.0) + np.log1p(np.exp(-np.abs(z)))
    sigmoid = np.exp(z - softplus)  # z - softplus(z) <= 0: never overflows
    return float((softplus - t * z).sum() / (b * k)), (sigmoid - t) / (b * k)


def _correct(kind: LossKind, z: Array, y: NDArray[Any]) -> int | None:
    """How many predictions are right, or ``None`` for regression targets."""
    labels = np.asarray(y)
    if labels.ndim != 1 or not (
        np.issubdtype(labels.dtype, np.integer) or np.all(labels == np.round(labels))
    ):
        return None
    if z.shape[1] == 1:
        pred = (z[:, 0] > (0.0 if kind == "bce" else 0.5)).astype(np.int64)
    else:
        pred = np.argmax(z, axis=1)
    return int(np.sum(pred == labels.astype(np.int64)))


# --------------------------------------------------------------------------- the trainer
class QuantumTrainer:
    """Fits a :class:`QuantumModel` on a database loader; see the module docstring.

    ``backend`` defaults to a new :class:`SimulatorBackend`. ``on_step`` is called after
    every step (after that step's checkpoint, if any) with the global step and its loss.
    """

    def __init__(
        self,
        config: TrainingConfig,
        db: QuantumDatabase,
        backend: Backend | None = None,
        *,
        on_step: StepCallback | None = None,
    ) -> None:
        if not isinstance(config, TrainingConfig):
            raise TrainingError(f"config must be a TrainingConfig, got {type(config).__name__}")
        self.config = config
        self.db = db
        self._owns_backend = backend is None
        self.backend: Backend = backend if backend is not None else SimulatorBackend()
        self.on_step = on_step
        #: The run being fitted (job records of its circuits name it).
        self._run_id: str | None = None
        method = config.gradient_method
        if method is None:
            if isinstance(self.backend, SimulatorBackend) and config.shots is None:
                method = "spsa" if config.optimizer == "spsa" else "adjoint"
            else:
                method = "spsa" if config.optimizer == "spsa" else "parameter-shift"
        if method == "adjoint" and not isinstance(self.backend, SimulatorBackend):
            raise TrainingError(
                f"gradient_method='adjoint' needs the SimulatorBackend, not {self.backend.name!r}"
            )
        self.gradient_method: str = method

    async def aclose(self) -> None:
        """Close the backend if the trainer made it (a given backend is left open)."""
        if self._owns_backend:
            await self.backend.aclose()

    # ------------------------------------------------------------------ parameters
    @staticmethod
    def _flat(model: QuantumModel) -> Array:
        parts = [model.weights]
        if model.head_weight is not None and model.head_bias is not None:
            parts += [model.head_weight.ravel(), model.head_bias]
        return np.concatenate(parts).astype(np.float64)

    @staticmethod
    def _unflat(model: QuantumModel, theta: Array) -> None:
        n_w = model.num_weights
        model.weights = theta[:n_w].copy()
        if model.head_weight is not None and model.head_bias is not None:
            shape = model.head_weight.shape
            size = shape[0] * shape[1]
            model.head_weight = theta[n_w : n_w + size].reshape(shape).copy()
            model.head_bias = theta[n_w + size :].copy()

    def _make_optimizer(self) -> Optimizer:
        c = self.config
        if c.optimizer == "adam":
            return Adam(lr=c.learning_rate)
        if c.optimizer == "sgd":
            return SGD(lr=c.learning_rate, momentum=c.momentum)
        return SPSA(lr=c.learning_rate)

    # ------------------------------------------------------------------ model pieces
    @staticmethod
    def _readout_map(model: QuantumModel) -> Array:
        """``T`` with readout = expectations @ T.T (identity, or Z strings -> probabilities)."""
        n_obs = len(model.observables)
        if model.readout == "expectation":
            return np.eye(n_obs)
        masks = np.arange(2**model.n_qubits)
        parity = np.array([[bin(k & s).count("1") & 1 for s in masks] for k in masks])
        return np.asarray((1.0 - 2.0 * parity) / 2**model.n_qubits, dtype=np.float64)

    def _plan(self, model: QuantumModel, X: Array) -> list[tuple[Circuit, Array, list[int]]]:
        """The evaluations of one step: ``(circuit, bindings [R, P], wrt)`` per backend call."""
        trainable = np.flatnonzero(model.trainable_mask)
        n_w = model.num_weights
        if model.encoding == "angle":
            angles = model.encoder.transform(X) if model.encoder is not None else X
            if angles.shape[1] != model.n_qubits or not np.all(np.isfinite(angles)):
                raise TrainingError(
                    f"angle encoding needs {model.n_qubits} finite features, got {angles.shape[1]}"
                )
            n_in = model.circuit.num_parameters - n_w
            values = np.hstack([angles, np.broadcast_to(model.weights, (len(angles), n_w))])
            return [(model.circuit, values, [int(n_in + i) for i in trainable])]
        states = (
            model.encoder.transform(X)
            if model.encoder is not None
            else np.stack([amplitude_state(row, model.n_qubits) for row in X])
        )
        return [
            (
                model._build(False, state_preparation_circuit(state, model.n_qubits)),
                model.weights[None, :],
                [int(i) for i in trainable],
            )
            for state in states
        ]

    def _computer(self, perturbation: float | None) -> QuantumGradientComputer:
        return QuantumGradientComputer(
            self.gradient_method, step=perturbation if self.gradient_method == "spsa" else None
        )

    def _step_cost(
        self, model: QuantumModel, plan: list[tuple[Circuit, Array, list[int]]]
    ) -> float:
        """Estimated USD price of every evaluation the step's gradient computation submits."""
        computer = self._computer(None)
        total = 0.0
        for circuit, values, wrt in plan:
            rows = int(values.shape[0])
            if self.gradient_method == "parameter-shift":
                wanted = set(wrt)
                shifts = sum(
                    len(shift_rule(o.gate).shifts)
                    for o in _occurrences(circuit)
                    if o.param in wanted
                )
                rows *= 1 + shifts
            elif self.gradient_method == "finite-diff":
                rows *= 1 + 2 * len(wrt)
            elif self.gradient_method == "spsa":
                rows *= 1 + 2 * computer.n_samples
            total += self.backend.estimate_run_cost(
                circuit, self.config.shots, model.observables, batch_size=rows
            )
        return float(total)

    def _forward_cost(self, model: QuantumModel, X: Array) -> float:
        """Estimated USD price of the evaluations :meth:`QuantumModel.forward` submits."""
        return float(
            sum(
                self.backend.estimate_run_cost(
                    circuit, self.config.shots, model.observables, batch_size=len(values)
                )
                for circuit, values, _ in self._plan(model, X)
            )
        )

    async def _expectations_and_jacobian(
        self,
        model: QuantumModel,
        X: Array,
        step_seed: int,
        perturbation: float | None,
        plan: list[tuple[Circuit, Array, list[int]]] | None = None,
    ) -> tuple[Array, Array]:
        """Expectations ``[B, O]`` and their jacobian w.r.t. the weights ``[B, O, W]``."""
        computer = self._computer(perturbation)
        shots = self.config.shots
        seed = step_seed if (shots is not None or self.gradient_method == "spsa") else None
        if plan is None:
            plan = self._plan(model, X)
        if model.encoding == "angle":
            circuit, values, wrt = plan[0]
            n_in = model.circuit.num_parameters - model.num_weights
            exp, jac = await computer.value_and_jacobian(
                self.backend, circuit, values, model.observables, shots=shots, seed=seed, wrt=wrt
            )
            return exp, jac[:, :, n_in:]
        exps, jacs = [], []
        for circuit, values, wrt in plan:
            exp, jac = await computer.value_and_jacobian(
                self.backend, circuit, values, model.observables, shots=shots, seed=seed, wrt=wrt
            )
            exps.append(exp[0])
            jacs.append(jac[0])
        return np.stack(exps), np.stack(jacs)

    async def _loss_and_gradient(
        self,
        model: QuantumModel,
        X: Array,
        y: NDArray[Any],
        step_seed: int,
        pert: float | None,
        plan: list[tuple[Circuit, Array, list[int]]] | None = None,
    ) -> tuple[float, Array, int | None]:
        exp, jac = await self._expectations_and_jacobian(model, X, step_seed, pert, plan)
        t_map = self._readout_map(model)
        readout = exp @ t_map.T
        w_head, b_head = model.head_weight, model.head_bias
        with np.errstate(over="ignore", invalid="ignore"):
            z = (
                readout @ w_head.T + b_head
                if w_head is not None and b_head is not None
                else readout
            )
            loss, dz = loss_and_grad(self.config.loss, z, y)
            d_readout = dz @ w_head if w_head is not None else dz
            g_w = np.einsum("bo,bow->w", d_readout @ t_map, jac)
        g_w[~model.trainable_mask] = 0.0
        parts: list[Array] = [g_w]
        if w_head is not None:
            parts += [(dz.T @ readout).ravel(), dz.sum(axis=0)]
        return loss, np.concatenate(parts), _correct(self.config.loss, z, y)

    def _billed(
        self,
        accounting: Accounting,
        budget: Budget,
        cost: float,
        model: QuantumModel,
        batch_size: int,
        kind: str,
    ) -> BilledCall:
        """The books of one batch's circuits on this trainer's backend."""
        return BilledCall(
            accounting,
            budget,
            cost,
            backend=self.backend.name,
            circuit_hash=model.circuit.content_hash(),
            batch_size=batch_size,
            shots=self.config.shots,
            run_id=self._run_id,
            kind=kind,
        )

    async def evaluate(
        self, model: QuantumModel, loader: MLDataLoader, epoch: int = 0
    ) -> tuple[float, float | None]:
        """Mean loss and accuracy (``None`` for regression) over one pass of ``loader``.

        With ``budget_usd`` set, each batch reserves its estimated cost before it is sent
        (:class:`BudgetExceededError` when it does not fit); with ``shots``, expectations
        are estimated from seeded samples.
        """
        await loader.load()
        c = self.config
        budget = None if c.budget_usd is None else Budget(float(c.budget_usd), c.budget_name)
        accounting = self.db.backend_manager.accounting
        total, count, correct = 0.0, 0, 0
        classify = True
        for index, (X, y) in enumerate(loader.iter_epoch(epoch)):
            seed = None
            if c.shots is not None:
                seed = int(np.random.default_rng((c.seed, epoch, index)).integers(2**62))
            cost = self._forward_cost(model, X) if budget is not None else 0.0
            billed: contextlib.AbstractAsyncContextManager[object] = (
                self._billed(accounting, budget, cost, model, len(X), "eval")
                if budget is not None and cost > 0
                else contextlib.nullcontext()
            )
            async with billed:
                z = await model.forward(self.backend, X, shots=c.shots, seed=seed)
            with np.errstate(over="ignore", invalid="ignore"):
                loss, _ = loss_and_grad(self.config.loss, z, y)
            total += loss * len(X)
            count += len(X)
            right = _correct(self.config.loss, z, y)
            if right is None:
                classify = False
            else:
                correct += right
        if count == 0:
            raise TrainingError(f"the validation loader {loader.name!r} yielded no samples")
        return total / count, (correct / count if classify else None)

    # ------------------------------------------------------------------ checkpoint state
    def _state(
        self,
        model: QuantumModel,
        optimizer: Optimizer,
        rng: np.random.Generator,
        progress: dict[str, Any],
        history: History,
    ) -> dict[str, Any]:
        return {
            "format": _STATE_FORMAT,
            "params": self._flat(model),
            "trainable_mask": model.trainable_mask.astype(np.bool_),
            "optimizer": optimizer.state_dict(),
            "rng": rng.bit_generator.state,
            "progress": dict(progress),
            "history": history.to_state(),
            "config": self.config.to_dict(),
            "gradient_method": self.gradient_method,
        }

    async def _save(self, run_id: str, step: int, state: dict[str, Any], history: History) -> None:
        metric = history.val_loss[-1] if history.val_loss else None
        if metric is not None and math.isfinite(metric):
            await self.db.checkpoints.save(
                run_id, step, state, metric_name="val_loss", metric_value=metric
            )
        else:
            await self.db.checkpoints.save(run_id, step, state)

    # ------------------------------------------------------------------ fit
    async def fit(
        self,
        model: QuantumModel,
        train_loader: MLDataLoader,
        val_loader: MLDataLoader | None = None,
        run_id: str | None = None,
    ) -> History:
        """Train ``model`` in place; resumes ``run_id`` from its latest checkpoint if any."""
        c = self.config
        if not isinstance(model, QuantumModel):
            raise TrainingError(f"model must be a QuantumModel, got {type(model).__name__}")
        if c.monitor.startswith("val_") and c.patience is not None and val_loader is None:
            raise TrainingError(f"early stopping on {c.monitor!r} needs a validation loader")
        if c.loss == "cross-entropy" and (model.n_outputs or model.readout_dim) < 2:
            raise TrainingError("cross-entropy needs a model with at least 2 outputs")
        await train_loader.load()
        if val_loader is not None:
            await val_loader.load()
        if len(train_loader) == 0:
            raise TrainingError("the training loader yields no batches")

        run_id = run_id or f"train-{c.seed}-{train_loader.name}"
        self._run_id = run_id
        optimizer = self._make_optimizer()
        rng = np.random.default_rng(c.seed)
        history = History()
        progress: dict[str, Any] = {
            "epoch": 0,  # the epoch in progress
            "batch": 0,  # batches of it already done
            "step": 0,  # optimizer steps taken over the run
            "loss_sum": 0.0,  # sum of batch loss * batch size in this epoch
            "correct": 0,
            "count": 0,
            "classify": True,
            "best": None,
            "bad_epochs": 0,
            "finished": False,
        }
        checkpoint = await self.db.checkpoints.latest(run_id)
        if checkpoint is not None:
            state = checkpoint.state
            if state.get("format") != _STATE_FORMAT:
                raise TrainingError(f"checkpoint of run {run_id!r} has an unknown format")
            if _math_settings(TrainingConfig.from_dict(state["config"])) != _math_settings(c):
                raise TrainingError(
                    f"run {run_id!r} was started with another TrainingConfig; "
                    "resume it with the same settings or use a new run_id"
                )
            params = np.array(state["params"], dtype=np.float64)
            if params.shape != self._flat(model).shape:
                raise TrainingError(f"checkpoint of run {run_id!r} does not fit this model")
            self._unflat(model, params)
            optimizer = optimizer_from_state(state["optimizer"])
            rng.bit_generator.state = state["rng"]
            progress = dict(state["progress"])
            history = History.from_state(state["history"])
            if history.stop_reason in ("interrupted", "budget"):
                history.stop_reason = None  # a stop that leaves the run resumable
            if progress["finished"]:
                return history
        elif not await self.db.runs.exists(run_id):
            await self.db.runs.create(
                run_id, config=c.to_dict(), backend=self.backend.name, seed=c.seed
            )

        self._stop_signal: int | None = None
        restore = self._install_signal_handlers()
        try:
            await self._loop(
                model, train_loader, val_loader, run_id, optimizer, rng, progress, history
            )
        except BaseException:
            await self.db.metrics.flush()
            raise
        finally:
            restore()
        await self.db.metrics.flush()
        if history.stop_reason in (None, "early_stopping"):
            status = "completed"
        elif history.stop_reason == "interrupted":
            status = "interrupted"
        else:
            status = "stopped"
        await self.db.runs.set_status(run_id, status)
        return history

    def _request_stop(self, signum: int) -> None:
        self._stop_signal = signum

    def _install_signal_handlers(self) -> Callable[[], None]:
        """Make SIGINT/SIGTERM request a stop at the next step boundary; returns the undo.

        Only possible in the main thread on an event loop that supports signal handlers
        (not on Windows); elsewhere nothing is installed and signals act as before.
        """
        if threading.current_thread() is not threading.main_thread():
            return lambda: None
        loop = asyncio.get_running_loop()
        installed: list[tuple[signal.Signals, Any]] = []
        for sig in (signal.SIGINT, signal.SIGTERM):
            try:
                previous = signal.getsignal(sig)
                loop.add_signal_handler(sig, self._request_stop, int(sig))
            except (NotImplementedError, RuntimeError, ValueError, OSError):
                continue
            installed.append((sig, previous))

        def restore() -> None:
            for sig, previous in installed:
                try:
                    loop.remove_signal_handler(sig)
                    if previous is not None:
                        signal.signal(sig, previous)
                except (RuntimeError, ValueError, OSError):  # pragma: no cover - loop closed
                    pass

        return restore

    def _progress_bar(self, total: int, initial: int, epoch: int) -> Any:
        """A tqdm bar on stderr for one epoch, or ``None`` (``progress`` off)."""
        if not self.config.progress:
            return None
        from tqdm import tqdm  # type: ignore[import-untyped]

        forced = os.environ.get(FORCE_PROGRESS_ENV, "") not in ("", "0")
        return tqdm(
            total=total,
            initial=initial,
            desc=f"epoch {epoch + 1}/{self.config.epochs}",
            unit="step",
            file=sys.stderr,
            disable=False if forced else None,  # None: off when stderr is not a TTY
            leave=True,
            dynamic_ncols=True,
        )

    async def _loop(
        self,
        model: QuantumModel,
        train_loader: MLDataLoader,
        val_loader: MLDataLoader | None,
        run_id: str,
        optimizer: Optimizer,
        rng: np.random.Generator,
        progress: dict[str, Any],
        history: History,
    ) -> None:
        c = self.config
        frozen = ~model.trainable_mask
        n_w = model.num_weights

        accounting = self.db.backend_manager.accounting
        budget = None if c.budget_usd is None else Budget(float(c.budget_usd), c.budget_name)
        progress.setdefault("cost", 0.0)

        async def checkpoint() -> None:
            state = self._state(model, optimizer, rng, progress, history)
            await self._save(run_id, int(progress["step"]), state, history)

        async def stop(reason: str, message: str) -> None:
            """Log the epoch's cost so far, checkpoint the step boundary and record why."""
            history.stop_reason = reason
            if progress["cost"]:
                await self.db.metrics.log(
                    run_id, {"cost_usd": float(progress["cost"])}, int(progress["step"])
                )
                progress["cost"] = 0.0
            await checkpoint()
            print(f"[quantum-db] run {run_id!r}: {message}", file=sys.stderr, flush=True)

        while progress["epoch"] < c.epochs and not progress["finished"]:
            epoch = int(progress["epoch"])
            train_loader.set_epoch(epoch)
            bar = self._progress_bar(len(train_loader), int(progress["batch"]), epoch)
            try:
                k = 0
                async for X, y in train_loader:
                    if k < progress["batch"]:
                        k += 1
                        continue
                    if self._stop_signal is not None:
                        name = signal.Signals(self._stop_signal).name
                        await stop(
                            "interrupted",
                            f"{name} received; checkpointed at step {progress['step']}",
                        )
                        return
                    plan = self._plan(model, X)
                    cost = self._step_cost(model, plan)
                    call: BilledCall | None = None
                    if budget is not None and cost > 0:
                        call = self._billed(accounting, budget, cost, model, len(X), "train")
                        try:
                            await call.open()
                        except BudgetExceededError as exc:
                            await stop(
                                "budget",
                                f"stopped at step {progress['step']} by the budget: {exc}",
                            )
                            return
                    try:
                        step_seed = int(rng.integers(2**62))
                        pert = optimizer.perturbation() if isinstance(optimizer, SPSA) else None
                        theta = self._flat(model)
                        loss, grad, right = await self._loss_and_gradient(
                            model, X, y, step_seed, pert, plan
                        )
                    except BaseException as exc:
                        if call is not None:
                            await call.close(exc)
                        raise
                    if call is not None:
                        await call.close()
                    progress["cost"] += cost
                    history.cost_usd += cost
                    if bar is not None:
                        bar.update(1)
                        bar.set_postfix(loss=f"{loss:.4f}", refresh=False)
                    grad_norm = float(np.linalg.norm(grad))
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
                        history.stop_reason = reason
                        progress["finished"] = True
                        await checkpoint()
                        return
                    new = optimizer.step(theta, grad)
                    new[:n_w][frozen] = theta[:n_w][frozen]
                    self._unflat(model, new)
                    k += 1
                    progress["batch"] = k
                    progress["step"] += 1
                    progress["loss_sum"] += loss * len(X)
                    progress["count"] += len(X)
                    if right is None:
                        progress["classify"] = False
                    else:
                        progress["correct"] += right
                    history.steps = int(progress["step"])
                    step = int(progress["step"])
                    await self.db.metrics.log(run_id, {"loss": loss, "grad_norm": grad_norm}, step)
                    if reason is not None:
                        history.stop_reason = reason
                        progress["finished"] = True
                        await checkpoint()
                        return
                    if step % c.checkpoint_every == 0:
                        await checkpoint()
                    if self.on_step is not None:
                        maybe = self.on_step(step, loss)
                        if maybe is not None:
                            await maybe
            finally:
                if bar is not None:
                    bar.close()
            try:
                await self._end_epoch(model, val_loader, run_id, progress, history)
            except BudgetExceededError as exc:
                # Nothing of the epoch's end is recorded yet: a resume redoes the validation.
                await stop("budget", f"stopped by the budget at the end of epoch {epoch}: {exc}")
                return
            await checkpoint()

    async def _end_epoch(
        self,
        model: QuantumModel,
        val_loader: MLDataLoader | None,
        run_id: str,
        progress: dict[str, Any],
        history: History,
    ) -> None:
        c = self.config
        epoch = int(progress["epoch"])
        count = max(int(progress["count"]), 1)
        metrics: dict[str, float] = {"train_loss": float(progress["loss_sum"]) / count}
        if progress["classify"]:
            metrics["train_accuracy"] = int(progress["correct"]) / count
        if val_loader is not None:
            val_loss, val_acc = await self.evaluate(model, val_loader, 0)
            metrics["val_loss"] = val_loss
            if val_acc is not None:
                metrics["val_accuracy"] = val_acc
        history.epochs.append(epoch)
        for key, value in metrics.items():
            getattr(history, key).append(value)
        finite = {k: v for k, v in metrics.items() if math.isfinite(v)}
        finite["cost_usd"] = float(progress.get("cost", 0.0))
        await self.db.metrics.log(run_id, finite, int(progress["step"]))
        progress.update(
            epoch=epoch + 1, batch=0, loss_sum=0.0, correct=0, count=0, classify=True, cost=0.0
        )
        if progress["epoch"] >= c.epochs:
            progress["finished"] = True
        if c.patience is None or c.monitor not in metrics:
            return
        value = metrics[c.monitor]
        best = progress["best"]
        sign = 1.0 if c.monitor_mode == "min" else -1.0
        if best is None or sign * (float(best) - value) > c.min_delta:
            progress["best"] = value
            progress["bad_epochs"] = 0
        else:
            progress["bad_epochs"] += 1
            if progress["bad_epochs"] >= c.patience:
                history.stop_reason = "early_stopping"
                history.stopped_early = True
                progress["finished"] = True
