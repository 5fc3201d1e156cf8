"""Optimizers for circuit parameters (SGD with momentum, Adam, SPSA) with checkpointable state.

Each optimizer is a small NumPy state machine: ``step(params, grad)`` returns the new
parameters and ``state_dict()`` holds nothing but arrays and numbers, so a checkpoint
(``quantum_db`` stores it without pickling) restores it exactly and a resumed run follows
the very same trajectory as an uninterrupted one.
"""

from __future__ import annotations

import abc
import math
from collections.abc import Mapping
from typing import Any, ClassVar

import numpy as np
from numpy.typing import NDArray

from .errors import OptimizerError

__all__ = ["SGD", "SPSA", "Adam", "Optimizer", "OptimizerError", "optimizer_from_state"]

Array = NDArray[np.float64]


def _positive(name: str, value: float, *, allow_zero: bool = False) -> float:
    value = float(value)
    if not math.isfinite(value) or value < 0 or (value == 0 and not allow_zero):
        raise OptimizerError(f"{name} must be {'>= 0' if allow_zero else '> 0'}, got {value}")
    return value


class Optimizer(abc.ABC):
    """``step(params, grad) -> new params``; state as arrays and numbers only."""

    kind: ClassVar[str]

    def __init__(self, lr: float) -> None:
        self.lr = _positive("lr", lr)
        self.steps = 0

    def step(self, params: Array, grad: Array) -> Array:
        params = np.asarray(params, dtype=np.float64)
        grad = np.asarray(grad, dtype=np.float64)
        if params.shape != grad.shape:
            raise OptimizerError(
                f"the gradient has shape {grad.shape} but the parameters have {params.shape}"
            )
        if not np.all(np.isfinite(grad)):
            raise OptimizerError("the gradient holds NaN or infinity; the step was not taken")
        new = self._update(params, grad)
        self.steps += 1
        return new

    @abc.abstractmethod
    def _update(self, params: Array, grad: Array) -> Array:
        """One update; ``self.steps`` counts the steps taken before this one."""

    def state_dict(self) -> dict[str, Any]:
        return {"kind": self.kind, "lr": self.lr, "steps": self.steps, **self._state()}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        if state.get("kind") != self.kind:
            raise OptimizerError(f"a {state.get('kind')!r} state cannot load into {self.kind!r}")
        self.lr = float(state["lr"])
        self.steps = int(state["steps"])
        self._load(state)

    @abc.abstractmethod
    def _state(self) -> dict[str, Any]: ...

    @abc.abstractmethod
    def _load(self, state: Mapping[str, Any]) -> None: ...


class SGD(Optimizer):
    """Gradient descent with (optionally Nesterov) momentum, as ``torch.optim.SGD`` defines it."""

    kind = "sgd"

    def __init__(self, lr: float = 0.1, momentum: float = 0.0, nesterov: bool = False) -> None:
        super().__init__(lr)
        self.momentum = _positive("momentum", momentum, allow_zero=True)
        if nesterov and self.momentum == 0:
            raise OptimizerError("Nesterov momentum needs momentum > 0")
        self.nesterov = nesterov
        self._buffer: Array | None = None

    def _update(self, params: Array, grad: Array) -> Array:
        direction = grad
        if self.momentum:
            if self._buffer is None:
                self._buffer = grad.copy()
            else:
                self._buffer = self.momentum * self._buffer + grad
            direction = grad + self.momentum * self._buffer if self.nesterov else self._buffer
        return params - self.lr * direction

    def _state(self) -> dict[str, Any]:
        state: dict[str, Any] = {"momentum": self.momentum, "nesterov": self.nesterov}
        if self._buffer is not None:
            state["buffer"] = self._buffer.copy()
        return state

    def _load(self, state: Mapping[str, Any]) -> None:
        self.momentum = float(state["momentum"])
        self.nesterov = bool(state["nesterov"])
        buffer = state.get("buffer")
        self._buffer = None if buffer is None else np.array(buffer, dtype=np.float64)


class Adam(Optimizer):
    """Adam (Kingma & Ba), bias-corrected, as ``torch.optim.Adam`` computes it."""

    kind = "adam"

    def __init__(
        self, lr: float = 0.01, betas: tuple[float, float] = (0.9, 0.999), eps: float = 1e-8
    ) -> None:
        super().__init__(lr)
        b1, b2 = (float(b) for b in betas)
        if not (0 <= b1 < 1 and 0 <= b2 < 1):
            raise OptimizerError(f"betas must be in [0, 1), got {betas}")
        self.betas = (b1, b2)
        self.eps = _positive("eps", eps)
        self._m: Array | None = None
        self._v: Array | None = None

    def _update(self, params: Array, grad: Array) -> Array:
        b1, b2 = self.betas
        if self._m is None or self._v is None:
            self._m = np.zeros_like(grad)
            self._v = np.zeros_like(grad)
        t = self.steps + 1
        self._m = b1 * self._m + (1 - b1) * grad
        self._v = b2 * self._v + (1 - b2) * grad * grad
        step_size = self.lr / (1 - b1**t)
        denom = np.sqrt(self._v) / math.sqrt(1 - b2**t) + self.eps
        return params - step_size * self._m / denom

    def _state(self) -> dict[str, Any]:
        state: dict[str, Any] = {"betas": list(self.betas), "eps": self.eps}
        if self._m is not None and self._v is not None:
            state["m"] = self._m.copy()
            state["v"] = self._v.copy()
        return state

    def _load(self, state: Mapping[str, Any]) -> None:
        b1, b2 = state["betas"]
        self.betas = (float(b1), float(b2))
        self.eps = float(state["eps"])
        m, v = state.get("m"), state.get("v")
        self._m = None if m is None else np.array(m, dtype=np.float64)
        self._v = None if v is None else np.array(v, dtype=np.float64)


class SPSA(Optimizer):
    """Spall's SPSA: gains ``a_k = lr / (k + 1 + A)^alpha`` and ``c_k = c / (k + 1)^gamma``.

    The gradient it is given should be an SPSA estimate taken with perturbation
    :meth:`perturbation` (``QuantumGradientComputer(method="spsa", step=opt.perturbation())``);
    ``step`` then moves by ``a_k`` times it.
    """

    kind = "spsa"

    def __init__(
        self,
        lr: float = 0.2,
        c: float = 0.1,
        alpha: float = 0.602,
        gamma: float = 0.101,
        stability: float = 0.0,
    ) -> None:
        super().__init__(lr)
        self.c = _positive("c", c)
        self.alpha = _positive("alpha", alpha)
        self.gamma = _positive("gamma", gamma)
        self.stability = _positive("stability", stability, allow_zero=True)

    def gain(self) -> float:
        return float(self.lr / (self.steps + 1 + self.stability) ** self.alpha)

    def perturbation(self) -> float:
        return float(self.c / (self.steps + 1) ** self.gamma)

    def _update(self, params: Array, grad: Array) -> Array:
        return params - self.gain() * grad

    def _state(self) -> dict[str, Any]:
        return {"c": self.c, "alpha": self.alpha, "gamma": self.gamma, "stability": self.stability}

    def _load(self, state: Mapping[str, Any]) -> None:
        self.c = float(state["c"])
        self.alpha = float(state["alpha"])
        self.gamma = float(state["gamma"])
        self.stability = float(state["stability"])


_KINDS: dict[str, type[SGD] | type[Adam] | type[SPSA]] = {
    cls.kind: cls for cls in (SGD, Adam, SPSA)
}


def optimizer_from_state(state: Mapping[str, Any]) -> Optimizer:
    """Rebuild an optimizer from its ``state_dict()`` (e.g. read back from a checkpoint)."""
    kind = state.get("kind")
    if kind not in _KINDS:
        raise OptimizerError(f"unknown optimizer kind {kind!r}; known: {sorted(_KINDS)}")
    optimizer = _KINDS[str(kind)]()  # defaults, then every setting from the state
    optimizer.load_state_dict(state)
    return optimizer
