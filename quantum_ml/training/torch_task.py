"""Training any ``torch.nn.Module`` (with or without TorchQuantumLayers) in the loop.

Forward and backward passes run in a worker thread (``asyncio.to_thread``), so the event
loop stays free: every :class:`~quantum_ml.torch_layer.TorchQuantumLayer` inside the module
hands its circuits back to the loop (see ``route_evaluations``), where they run through
the BackendManager. Checkpoints hold the module's ``state_dict``, the optimizer's and the
scheduler's, and the torch, NumPy and Python RNG states, all as arrays and numbers (never
pickled), so a resumed run continues bit for bit.
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import Mapping
from typing import Any, cast

import numpy as np

from backends.errors import MissingDependencyError

try:
    import torch
except ImportError as exc:  # the module is part of the torch bridge: say how to get torch
    raise MissingDependencyError(
        f"{__name__} needs PyTorch ({exc}): pip install 'quantum-db[torch]'"
    ) from exc
from numpy.typing import NDArray

from ..errors import ModelInputError, NoTrainableParametersError, TrainingError
from ..gradients import QuantumGradientComputer
from ..torch_layer import TorchQuantumLayer, route_evaluations
from .config import TrainingConfig, torch_optimizer_class, torch_scheduler_class
from .losses import correct_predictions, torch_loss
from .tasks import ModelTask, StepResult

__all__ = [
    "TorchModuleTask",
    "from_storable",
    "global_rng_state",
    "seed_global_rngs",
    "set_global_rng_state",
    "to_storable",
]

_CLASS_LOSSES = ("cross_entropy", "nll_loss", "multi_margin_loss")


def to_storable(value: Any) -> Any:
    """Tensors as arrays and int-keyed dicts as pairs: what ``pack_state`` stores."""
    if isinstance(value, torch.Tensor):
        return {"~tensor": value.detach().cpu().numpy().copy()}
    if isinstance(value, Mapping):
        if any(not isinstance(k, str) for k in value):
            return {"~pairs": [[k, to_storable(v)] for k, v in value.items()]}
        return {k: to_storable(v) for k, v in value.items()}
    if isinstance(value, tuple):
        return tuple(to_storable(v) for v in value)
    if isinstance(value, list):
        return [to_storable(v) for v in value]
    return value


def from_storable(value: Any) -> Any:
    """The inverse of :func:`to_storable`."""
    if isinstance(value, Mapping):
        if set(value) == {"~tensor"}:
            return torch.from_numpy(np.array(value["~tensor"]))
        if set(value) == {"~pairs"}:
            return {k: from_storable(v) for k, v in value["~pairs"]}
        return {k: from_storable(v) for k, v in value.items()}
    if isinstance(value, tuple):
        return tuple(from_storable(v) for v in value)
    if isinstance(value, list):
        return [from_storable(v) for v in value]
    return value


def seed_global_rngs(seed: int) -> None:
    """Seed torch's, NumPy's and Python's global generators from a run's seed, as a fresh
    run starts (what dropout and other layers draw from: torch seeds its own generator at
    random in every process). A resumed run restores them instead."""
    derived = np.random.SeedSequence([seed, 0x7071]).generate_state(3, dtype=np.uint32)
    torch.manual_seed(int(derived[0]))
    np.random.seed(int(derived[1]))
    random.seed(int(derived[2]))


def global_rng_state() -> dict[str, Any]:
    """Torch's, NumPy's and Python's global random states, as storable arrays."""
    np_state = cast(tuple[Any, ...], np.random.get_state(legacy=True))
    py_version, py_state, py_gauss = random.getstate()
    return {
        "torch": torch.get_rng_state().numpy().copy(),
        "numpy": [np_state[0], np_state[1].copy(), *map(float, np_state[2:])],
        "python": [py_version, np.array(py_state, dtype=np.uint64), py_gauss],
    }


def set_global_rng_state(rng: Mapping[str, Any]) -> None:
    """Restore :func:`global_rng_state` exactly."""
    torch.set_rng_state(torch.from_numpy(np.array(rng["torch"], dtype=np.uint8)))
    name, keys, pos, has_gauss, cached = rng["numpy"]
    np.random.set_state(
        (str(name), np.array(keys, dtype=np.uint32), int(pos), int(has_gauss), float(cached))
    )
    version, py_state, gauss = rng["python"]
    random.setstate((int(version), tuple(int(v) for v in py_state), gauss))


def _input_width(module: torch.nn.Module) -> int | None:
    """The sample width the module's first layer takes, where it says so."""
    for child in module.modules():
        if isinstance(child, TorchQuantumLayer):
            return child.num_inputs
        width = getattr(child, "in_features", None)
        if isinstance(width, int):
            return width
    return None


class TorchModuleTask(ModelTask):
    """A ``torch.nn.Module``: its trainable parameters, a ``torch.optim`` optimizer."""

    kind = "torch"

    def __init__(
        self,
        module: torch.nn.Module,
        config: TrainingConfig,
        backend: Any,
        gradient: QuantumGradientComputer | None,
        loop: asyncio.AbstractEventLoop,
    ) -> None:
        params = [p for p in module.parameters() if p.requires_grad]
        if not params:
            raise NoTrainableParametersError(
                f"{type(module).__name__} has no parameter that requires a gradient: nothing "
                "to train (unfreeze some of it, or give another module)"
            )
        self.module = module
        self.config = config
        self.backend = backend
        self.gradient = gradient
        self.loop = loop
        self.loss_name = config.loss
        self.loss_fn = torch_loss(config.loss)
        #: The torch function's own name: what the targets and accuracy depend on.
        self._loss_kind = str(getattr(self.loss_fn, "__name__", config.loss))
        self.optimizer = self._make_optimizer(params)
        self.scheduler: Any = None
        if config.scheduler not in (None, "plateau"):
            cls = torch_scheduler_class(config.scheduler)
            try:
                self.scheduler = cls(self.optimizer, **dict(config.scheduler_kwargs))
            except TypeError as exc:
                raise TrainingError(f"scheduler {config.scheduler!r}: {exc}") from None
        floating = [p for p in module.parameters() if p.is_floating_point()]
        self.dtype = floating[0].dtype if floating else torch.float32

    def _make_optimizer(self, params: list[torch.nn.Parameter]) -> torch.optim.Optimizer:
        c = self.config
        kwargs = dict(c.optimizer_kwargs)
        if isinstance(c.optimizer, str):
            if c.optimizer == "spsa":
                raise TrainingError("optimizer 'spsa' trains a QuantumModel, not a torch module")
            cls = torch_optimizer_class(c.optimizer)
            if c.momentum and "momentum" not in kwargs:
                kwargs["momentum"] = c.momentum
            try:
                opt: torch.optim.Optimizer = cls(params, lr=c.learning_rate, **kwargs)
            except TypeError as exc:
                raise TrainingError(f"optimizer {c.optimizer!r}: {exc}") from None
            return opt
        made = c.optimizer(params)
        if not isinstance(made, torch.optim.Optimizer):
            raise TrainingError(
                f"the optimizer factory returned {type(made).__name__}, not a torch.optim.Optimizer"
            )
        return made

    # ------------------------------------------------------------------ structure
    def check_data(self, n_features: int) -> None:
        width = _input_width(self.module)
        if width is not None and width != n_features:
            raise ModelInputError(
                f"{type(self.module).__name__} takes {width} features per sample, the dataset "
                f"has {n_features}"
            )

    def signature(self) -> dict[str, Any]:
        return {
            key: [list(t.shape), str(t.dtype).removeprefix("torch.")]
            for key, t in self.module.state_dict().items()
        }

    def get_lr(self) -> float:
        return float(self.optimizer.param_groups[0]["lr"])

    def set_lr(self, lr: float) -> None:
        for group in self.optimizer.param_groups:
            group["lr"] = float(lr)

    def encoding_contract(self) -> dict[str, Any] | None:
        contract = getattr(self.module, "qdb_encoding", None)
        return dict(contract) if isinstance(contract, Mapping) else None

    # ------------------------------------------------------------------ steps
    def _tensors(self, X: NDArray[Any], y: NDArray[Any]) -> tuple[torch.Tensor, torch.Tensor]:
        xt = torch.from_numpy(np.ascontiguousarray(X)).to(self.dtype)
        if self._loss_kind in _CLASS_LOSSES:
            yt = torch.from_numpy(np.asarray(y)).to(torch.int64)
        else:
            yt = torch.from_numpy(np.asarray(y)).to(self.dtype)
        return xt, yt

    def _loss(self, out: torch.Tensor, yt: torch.Tensor) -> torch.Tensor:
        if yt.is_floating_point() and yt.dim() == 1 and out.dim() == 2 and out.shape[1] == 1:
            yt = yt.unsqueeze(1)
        try:
            loss: torch.Tensor = self.loss_fn(out, yt)
        except (RuntimeError, ValueError, IndexError) as exc:
            raise TrainingError(
                f"loss {self.loss_name!r} cannot compare outputs {tuple(out.shape)} with "
                f"targets {tuple(yt.shape)}: {exc}"
            ) from None
        return loss

    def _forward(self, xt: torch.Tensor) -> torch.Tensor:
        try:
            out: torch.Tensor = self.module(xt)
        except RuntimeError as exc:
            if "shape" in str(exc) or "size" in str(exc):
                raise ModelInputError(
                    f"{type(self.module).__name__} cannot take batches of shape "
                    f"{tuple(xt.shape)}: {exc}"
                ) from None
            raise
        return out

    def _in_thread(self, fn: Any) -> Any:
        """Run ``fn`` in a worker thread with the layers' circuits routed to our loop."""

        def routed() -> Any:
            with route_evaluations(
                self.backend, self.loop, gradient=self.gradient, shots=self.config.shots
            ):
                return fn()

        return asyncio.to_thread(routed)

    async def compute(self, X: NDArray[Any], y: NDArray[Any], step_seed: int) -> StepResult:
        xt, yt = self._tensors(X, y)

        def step() -> tuple[float, float, int | None]:
            self.module.train()
            self.optimizer.zero_grad(set_to_none=True)
            out = self._forward(xt)
            loss = self._loss(out, yt)
            loss.backward()  # type: ignore[no-untyped-call]
            grads = [p.grad.double() for p in self.module.parameters() if p.grad is not None]
            flat = torch.cat([g.reshape(-1) for g in grads]) if grads else torch.zeros(1)
            norm = float(torch.linalg.vector_norm(flat))
            logits = out.detach().double().numpy()
            return float(loss.detach()), norm, self._correct(logits, y)

        loss, norm, right = await self._in_thread(step)
        return StepResult(loss, norm, right)

    def _correct(self, logits: NDArray[np.float64], y: NDArray[Any]) -> int | None:
        if logits.ndim != 2:
            return None
        # Logits of one output are positive above 0; other one-output losses read 0.5.
        kind = "bce" if self._loss_kind == "binary_cross_entropy_with_logits" else self._loss_kind
        return correct_predictions(kind, logits, y)

    async def apply(self) -> None:
        self.optimizer.step()

    async def evaluate_batch(
        self, X: NDArray[Any], y: NDArray[Any], seed: int | None
    ) -> tuple[float, int | None]:
        xt, yt = self._tensors(X, y)

        def run() -> tuple[float, int | None]:
            self.module.eval()
            try:
                with torch.no_grad():
                    out = self._forward(xt)
                    loss = self._loss(out, yt)
            finally:
                self.module.train()
            return float(loss), self._correct(out.double().numpy(), y)

        result: tuple[float, int | None] = await self._in_thread(run)
        return result

    def seed_everything(self, seed: int) -> None:
        seed_global_rngs(seed)

    # ------------------------------------------------------------------ state
    def state_dict(self) -> dict[str, Any]:
        return {
            "module": to_storable(self.module.state_dict()),
            "optimizer": to_storable(self.optimizer.state_dict()),
            "scheduler": None
            if self.scheduler is None
            else to_storable(self.scheduler.state_dict()),
            "rng": global_rng_state(),
        }

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        self.module.load_state_dict(from_storable(state["module"]), strict=True)
        self.optimizer.load_state_dict(from_storable(state["optimizer"]))
        if self.scheduler is not None and state.get("scheduler") is not None:
            self.scheduler.load_state_dict(from_storable(state["scheduler"]))
        set_global_rng_state(state["rng"])
