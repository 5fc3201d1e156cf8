"""What the loop trains: a :class:`ModelTask` wraps one kind of model.

The loop (``trainer.py``) is the same for every model; a task knows how to compute one
batch's loss and gradient, apply the update, evaluate, and put its parameters, optimizer
and RNG state into a checkpoint and back. :class:`QuantumModelTask` trains a
:class:`QuantumModel` with the NumPy optimizers and the gradient engine;
:class:`~quantum_ml.training.torch_task.TorchModuleTask` trains any ``torch.nn.Module``.
"""

from __future__ import annotations

import abc
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
from numpy.typing import NDArray

from backends.simulator.dense import DENSE_MAX_QUBITS

from ..encoders import amplitude_state, state_preparation_circuit
from ..errors import (
    ModelInputError,
    NoTrainableParametersError,
    ResumeMismatchError,
    TrainingError,
    UnknownComponentError,
)
from ..gradients import QuantumGradientComputer
from ..models import QuantumModel
from ..optimizers import SGD, SPSA, Adam, Optimizer, optimizer_from_state
from .config import TrainingConfig
from .losses import correct_predictions, loss_and_grad, numpy_loss

if TYPE_CHECKING:
    from backends.base import Backend
    from backends.circuit import Circuit

__all__ = ["ModelTask", "QuantumModelTask", "StepResult"]

Array = NDArray[np.float64]


@dataclass(frozen=True, slots=True)
class StepResult:
    """One batch's loss, gradient norm and right predictions (``None``: regression)."""

    loss: float
    grad_norm: float
    correct: int | None


class ModelTask(abc.ABC):
    """One kind of model, as the training loop drives it."""

    #: ``"quantum"`` or ``"torch"``: stored with every checkpoint.
    kind: str

    @abc.abstractmethod
    def check_data(self, n_features: int) -> None:
        """Raise :class:`ModelInputError` if the model cannot take samples this wide."""

    @abc.abstractmethod
    def signature(self) -> dict[str, Any]:
        """What a checkpoint must match to be resumed: parameter names and shapes."""

    @abc.abstractmethod
    async def compute(self, X: NDArray[Any], y: NDArray[Any], step_seed: int) -> StepResult:
        """Loss and gradient of one batch (the gradient is kept for :meth:`apply`)."""

    @abc.abstractmethod
    async def apply(self) -> None:
        """Take the optimizer step with the gradient of the last :meth:`compute`."""

    @abc.abstractmethod
    async def evaluate_batch(
        self, X: NDArray[Any], y: NDArray[Any], seed: int | None
    ) -> tuple[float, int | None]:
        """Mean loss and right predictions of one batch, without training."""

    @abc.abstractmethod
    def state_dict(self) -> dict[str, Any]:
        """Parameters, optimizer (and scheduler) and RNG state, as storable values."""

    @abc.abstractmethod
    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Restore :meth:`state_dict` exactly."""

    @abc.abstractmethod
    def get_lr(self) -> float: ...

    @abc.abstractmethod
    def set_lr(self, lr: float) -> None: ...

    def encoding_contract(self) -> dict[str, Any] | None:
        """The encoding contract the model was trained with, if it has one."""
        return None

    def seed_everything(self, seed: int) -> None:  # noqa: B027 - optional hook
        """Seed the global generators the model draws from, as a fresh run starts."""

    def check_signature(self, saved: Mapping[str, Any], run_id: str) -> None:
        mine = self.signature()
        if dict(saved) != mine:
            changed = sorted(k for k in set(saved) | set(mine) if saved.get(k) != mine.get(k))[:5]
            raise ResumeMismatchError(
                f"run {run_id!r} was trained with another architecture (parameters that differ: "
                f"{', '.join(changed)}); resume it with the same model, or start a new run "
                "with another run_id"
            )


# --------------------------------------------------------------------------- QuantumModel
class QuantumModelTask(ModelTask):
    """A :class:`QuantumModel`: circuit weights and classical head, one flat vector.

    The loss gradient is exact chain rule: the head analytically in NumPy, the circuit
    through the jacobian of :meth:`QuantumGradientComputer.value_and_jacobian` with
    respect to the weight parameters only (data inputs are never differentiated).
    """

    kind = "quantum"

    def __init__(
        self,
        model: QuantumModel,
        config: TrainingConfig,
        backend: Backend,
        gradient_method: str,
    ) -> None:
        if not isinstance(config.optimizer, str) or config.optimizer not in ("adam", "sgd", "spsa"):
            raise UnknownComponentError(
                f"a QuantumModel trains with optimizer 'adam', 'sgd' or 'spsa', not "
                f"{config.to_dict()['optimizer']!r} (torch optimizers need a torch.nn.Module)"
            )
        if config.scheduler not in (None, "plateau"):
            raise UnknownComponentError(
                f"a QuantumModel takes scheduler='plateau' or None, not {config.scheduler!r} "
                "(torch schedulers need a torch.nn.Module)"
            )
        self.loss_kind = numpy_loss(config.loss)
        if self.loss_kind == "cross-entropy" and (model.n_outputs or model.readout_dim) < 2:
            raise TrainingError("cross-entropy needs a model with at least 2 outputs")
        if not model.trainable_mask.any() and model.head_weight is None:
            raise NoTrainableParametersError(
                "every circuit weight of the model is frozen and it has no head: nothing to "
                "train (unfreeze some layers with model.unfreeze(...))"
            )
        self.model = model
        self.config = config
        self.backend = backend
        self.gradient_method = gradient_method
        self.optimizer: Optimizer = self._make_optimizer()
        self._pending: tuple[Array, Array] | None = None
        #: The loss gradient of the last :meth:`compute`, over :meth:`parameter_vector`.
        self.last_gradient: Array | None = None

    def _make_optimizer(self) -> Optimizer:
        c = self.config
        if c.optimizer == "adam":
            return Adam(lr=c.learning_rate, **dict(c.optimizer_kwargs))
        if c.optimizer == "sgd":
            return SGD(lr=c.learning_rate, momentum=c.momentum, **dict(c.optimizer_kwargs))
        return SPSA(lr=c.learning_rate, **dict(c.optimizer_kwargs))

    # ------------------------------------------------------------------ parameters
    def parameter_vector(self) -> Array:
        """``[weights, head_weight.ravel(), head_bias]``: what the optimizer updates."""
        m = self.model
        parts = [m.weights]
        if m.head_weight is not None and m.head_bias is not None:
            parts += [m.head_weight.ravel(), m.head_bias]
        return np.concatenate(parts).astype(np.float64)

    def set_parameter_vector(self, theta: Array) -> None:
        m = self.model
        n_w = m.num_weights
        m.weights = theta[:n_w].copy()
        if m.head_weight is not None and m.head_bias is not None:
            shape = m.head_weight.shape
            size = shape[0] * shape[1]
            m.head_weight = theta[n_w : n_w + size].reshape(shape).copy()
            m.head_bias = theta[n_w + size :].copy()

    def check_data(self, n_features: int) -> None:
        m = self.model
        if m.encoding == "angle":
            width = m.encoder.n_features if m.encoder is not None else m.n_qubits
            if width is not None and width != n_features:
                raise ModelInputError(
                    f"the model takes {width} features per sample, the dataset has {n_features}"
                )

    def signature(self) -> dict[str, Any]:
        return {
            "architecture": {
                k: v for k, v in self.model.architecture().items() if k not in ("frozen", "seed")
            },
            "params": int(self.parameter_vector().size),
        }

    def get_lr(self) -> float:
        return float(self.optimizer.lr)

    def set_lr(self, lr: float) -> None:
        self.optimizer.lr = float(lr)

    def encoding_contract(self) -> dict[str, Any] | None:
        enc = self.model.encoder
        return enc.to_contract() if enc is not None and enc.is_fitted else None

    # ------------------------------------------------------------------ evaluation
    def _readout_map(self) -> Array:
        """``T`` with readout = expectations @ T.T (identity, or Z strings -> probabilities)."""
        m = self.model
        if m.readout == "expectation":
            return np.eye(len(m.observables))
        masks = np.arange(2**m.n_qubits)
        parity = np.array([[bin(k & s).count("1") & 1 for s in masks] for k in masks])
        return np.asarray((1.0 - 2.0 * parity) / 2**m.n_qubits, dtype=np.float64)

    def _plan(self, X: Array) -> list[tuple[Circuit, Array, list[int]]]:
        """The evaluations of one step: ``(circuit, bindings [R, P], wrt)`` per backend call."""
        m = self.model
        trainable = np.flatnonzero(m.trainable_mask)
        n_w = m.num_weights
        if m.encoding == "angle":
            angles = m.encoder.transform(X) if m.encoder is not None else X
            if angles.shape[1] != m.n_qubits or not np.all(np.isfinite(angles)):
                raise ModelInputError(
                    f"angle encoding needs {m.n_qubits} finite features, got {angles.shape[1]}"
                )
            n_in = m.circuit.num_parameters - n_w
            values = np.hstack([angles, np.broadcast_to(m.weights, (len(angles), n_w))])
            return [(m.circuit, values, [int(n_in + i) for i in trainable])]
        states = (
            m.encoder.transform(X)
            if m.encoder is not None
            else np.stack([amplitude_state(row, m.n_qubits) for row in X])
        )
        return [
            (
                m.weighted_circuit(state_preparation_circuit(state, m.n_qubits)),
                m.weights[None, :],
                [int(i) for i in trainable],
            )
            for state in states
        ]

    def _computer(self, perturbation: float | None) -> QuantumGradientComputer:
        return QuantumGradientComputer(
            self.gradient_method, step=perturbation if self.gradient_method == "spsa" else None
        )

    async def _expectations_and_jacobian(
        self, X: Array, step_seed: int, perturbation: float | None
    ) -> tuple[Array, Array]:
        """Expectations ``[B, O]`` and their jacobian w.r.t. the weights ``[B, O, W]``."""
        m = self.model
        computer = self._computer(perturbation)
        shots = self.config.shots
        seed = step_seed if (shots is not None or self.gradient_method == "spsa") else None
        plan = self._plan(X)
        if m.encoding == "angle":
            circuit, values, wrt = plan[0]
            n_in = m.circuit.num_parameters - m.num_weights
            exp, jac = await computer.value_and_jacobian(
                self.backend, circuit, values, m.observables, shots=shots, seed=seed, wrt=wrt
            )
            return exp, jac[:, :, n_in:]
        exps, jacs = [], []
        for circuit, values, wrt in plan:
            exp, jac = await computer.value_and_jacobian(
                self.backend, circuit, values, m.observables, shots=shots, seed=seed, wrt=wrt
            )
            exps.append(exp[0])
            jacs.append(jac[0])
        return np.stack(exps), np.stack(jacs)

    def _uses_vjp(self) -> bool:
        """Exact gradients of a circuit wider than dense differentiation covers: a forward
        pass and one vector-Jacobian product beat the Jacobian's one backward pass per
        observable. Narrower circuits contract their (dense) Jacobian in one call."""
        return (
            self.gradient_method == "adjoint"
            and self.config.shots is None
            and self.backend.supports_derivatives("vjp", None)
            and self.model.n_qubits > DENSE_MAX_QUBITS
        )

    async def _expectations(self, X: Array) -> Array:
        """Exact expectations ``[B, O]`` of one batch (the forward pass of a VJP step)."""
        m = self.model
        exps = []
        for circuit, values, _ in self._plan(X):
            result = await self.backend.run(circuit, values, observables=m.observables)
            assert result.expectations is not None
            exps.append(result.expectations)
        return np.concatenate(exps, axis=0)

    async def _weight_vjp(self, X: Array, cotangents: Array) -> Array:
        """``sum_b sum_o c[b, o] dE_bo/dw``: the weights' share of the loss gradient."""
        m = self.model
        computer = self._computer(None)
        n_w = m.num_weights
        total = np.zeros(n_w)
        at = 0
        for circuit, values, wrt in self._plan(X):
            rows = values.shape[0]
            _, vjp = await computer.value_and_vjp(
                self.backend, circuit, values, m.observables, cotangents[at : at + rows], wrt=wrt
            )
            total += vjp[:, circuit.num_parameters - n_w :].sum(axis=0)
            at += rows
        return total

    async def compute(self, X: NDArray[Any], y: NDArray[Any], step_seed: int) -> StepResult:
        m = self.model
        pert = self.optimizer.perturbation() if isinstance(self.optimizer, SPSA) else None
        vjp = self._uses_vjp()
        if vjp:
            exp, jac = await self._expectations(X), None
        else:
            exp, jac = await self._expectations_and_jacobian(X, step_seed, pert)
        t_map = self._readout_map()
        readout = exp @ t_map.T
        w_head, b_head = m.head_weight, m.head_bias
        with np.errstate(over="ignore", invalid="ignore"):
            z = (
                readout @ w_head.T + b_head
                if w_head is not None and b_head is not None
                else readout
            )
            loss, dz = loss_and_grad(self.loss_kind, z, y)
            d_readout = dz @ w_head if w_head is not None else dz
        if jac is None:
            cotangents = d_readout @ t_map
            g_w = (
                await self._weight_vjp(X, cotangents)
                if np.all(np.isfinite(cotangents))
                else np.full(m.num_weights, np.nan)  # a NaN loss: the run stops on it
            )
        else:
            with np.errstate(over="ignore", invalid="ignore"):
                g_w = np.einsum("bo,bow->w", d_readout @ t_map, jac)
        g_w[~m.trainable_mask] = 0.0
        parts: list[Array] = [g_w]
        if w_head is not None:
            parts += [(dz.T @ readout).ravel(), dz.sum(axis=0)]
        grad = np.concatenate(parts)
        self._pending = (self.parameter_vector(), grad)
        self.last_gradient = grad
        return StepResult(
            loss, float(np.linalg.norm(grad)), correct_predictions(self.loss_kind, z, y)
        )

    async def apply(self) -> None:
        assert self._pending is not None, "apply() follows compute()"
        theta, grad = self._pending
        self._pending = None
        frozen = ~self.model.trainable_mask
        n_w = self.model.num_weights
        new = self.optimizer.step(theta, grad)
        new[:n_w][frozen] = theta[:n_w][frozen]
        self.set_parameter_vector(new)

    async def evaluate_batch(
        self, X: NDArray[Any], y: NDArray[Any], seed: int | None
    ) -> tuple[float, int | None]:
        z = await self.model.forward(self.backend, X, shots=self.config.shots, seed=seed)
        with np.errstate(over="ignore", invalid="ignore"):
            loss, _ = loss_and_grad(self.loss_kind, z, y)
        return loss, correct_predictions(self.loss_kind, z, y)

    # ------------------------------------------------------------------ state
    def state_dict(self) -> dict[str, Any]:
        return {
            "params": self.parameter_vector(),
            "trainable_mask": self.model.trainable_mask.astype(np.bool_),
            "optimizer": self.optimizer.state_dict(),
        }

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        params = np.array(state["params"], dtype=np.float64)
        if params.shape != self.parameter_vector().shape:
            raise ResumeMismatchError("the checkpoint's parameters do not fit this model")
        self.set_parameter_vector(params)
        self.optimizer = optimizer_from_state(state["optimizer"])
