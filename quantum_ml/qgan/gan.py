"""QuantumGAN: a quantum generator against a discriminator, on the trainer's machinery.

``await QuantumGAN(generator, discriminator, GANConfig(...), db).fit(data, run_id=...)``
trains a Born machine (:class:`~quantum_ml.qgan.generators.QuantumGenerator`) or a latent
generator (:class:`~quantum_ml.qgan.generators.LatentGenerator`) against any
``torch.nn.Module`` discriminator (or none, with the MMD loss). ``data`` is a stored
dataset's name, an array of samples, or a :class:`TargetDistribution` on the generator's
grid.

Every circuit runs through the database's BackendManager (``ManagedBackend``): job rows,
the budget, the ledger, retries and the degrade policy apply, and a run restarted after a
crash re-attaches to its jobs. On the exact simulator the Born machine's gradient is one
adjoint pass per step (the vector-Jacobian product of its probabilities); with shots it
is parameter shift, the shifted circuits sent concurrently.

A Born machine's loss is the exact expectation over its grid: the discriminator scores
every grid point once per step and each score is weighted by the generator's probability
(measured from counts with shots). The distribution it measures after a step is the one
the next step trains from, so an epoch costs one distribution per step and nothing more.

Checkpoints (every ``checkpoint_every`` epochs, at the last epoch and at every stop) hold
both networks, both optimizers, the torch/NumPy/Python random states, the levers the
callbacks move (learning rates, D:G ratio, shots, diversity weight), the callbacks' state
and the shot ledger; a run killed at any point resumes bitwise equal to one never
interrupted: every random draw comes from ``(seed, epoch, step)``, never the wall clock.
"""

from __future__ import annotations

import asyncio
import hashlib
import math
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from backends.errors import MissingDependencyError

try:
    import torch
except ImportError as exc:  # the QGAN trains torch networks: say how to get torch
    raise MissingDependencyError(
        f"{__name__} needs PyTorch ({exc}): pip install 'quantum-db[torch]'"
    ) from exc
from numpy.typing import ArrayLike, NDArray

from backends.accounting import Budget
from backends.base import Backend
from backends.errors import BudgetExceededError
from quantum_db.runs import validate_run_id

from ..distributions import distribution_report, pairwise_diversity, sample_variance
from ..errors import DiscriminatorError, GANError, ResumeMismatchError
from ..gradients import QuantumGradientComputer, supports_adjoint
from ..torch_layer import route_evaluations
from ..training.callbacks import Callback, CallbackList, ProgressBar, TrainingContext
from ..training.config import torch_optimizer_class
from ..training.execution import ManagedBackend
from ..training.lifecycle import SignalWatch, begin_run, end_run, record_failure
from ..training.torch_task import (
    from_storable,
    global_rng_state,
    seed_global_rngs,
    set_global_rng_state,
    to_storable,
)
from .config import MATH_SETTINGS, GANConfig
from .discriminators import input_width
from .generators import LatentGenerator, QuantumGenerator
from .grid import Grid
from .losses import discriminator_loss, generator_loss, gradient_penalty, mmd_squared

if TYPE_CHECKING:
    from quantum_db.database import QuantumDatabase
    from quantum_db.models import ModelVersion

__all__ = ["GANContext", "GANHistory", "GANState", "QuantumGAN", "TargetDistribution"]

Array = NDArray[np.float64]
_FORMAT = 1


@dataclass(frozen=True)
class TargetDistribution:
    """An exact target: probabilities over the generator's grid (Born machines only)."""

    probabilities: ArrayLike
    name: str = "target"


# --------------------------------------------------------------------------- state
@dataclass
class GANHistory:
    """Per-epoch metrics (``history["relative_entropy"]``), the cost and why the run ended."""

    epochs: list[int] = field(default_factory=list)
    metrics: dict[str, list[float]] = field(default_factory=dict)
    initial: dict[str, float] = field(default_factory=dict)
    stop_reason: str | None = None
    steps: int = 0
    cost_usd: float = 0.0

    def __getitem__(self, key: str) -> list[float]:
        return self.metrics[key]

    @property
    def final(self) -> dict[str, float]:
        """The last epoch's metrics."""
        return {k: v[-1] for k, v in self.metrics.items() if v}

    def add(self, epoch: int, metrics: Mapping[str, float]) -> None:
        n = len(self.epochs)
        self.epochs.append(epoch)
        for key, value in metrics.items():
            column = self.metrics.setdefault(key, [math.nan] * n)
            column.append(float(value))
        for column in self.metrics.values():
            if len(column) < n + 1:
                column.append(math.nan)


@dataclass
class GANState:
    """What the loop carries from step to step; all of it goes into every checkpoint."""

    epoch: int = 0
    step: int = 0
    batch: int = 0
    finished: bool = False
    d_steps: int = 1
    shots: int | None = None
    diversity_weight: float = 0.0
    #: The ledger: generator shots measured and dollars spent, over the run.
    samples_total: int = 0
    cost_total: float = 0.0
    #: This epoch's running sums (reset at every epoch end).
    epoch_cost: float = 0.0
    epoch_samples: int = 0
    sums: dict[str, float] = field(default_factory=dict)
    count: int = 0
    history: GANHistory = field(default_factory=GANHistory)

    def to_state(self) -> dict[str, Any]:
        h = self.history
        return {
            "epoch": self.epoch,
            "step": self.step,
            "batch": self.batch,
            "finished": self.finished,
            "d_steps": self.d_steps,
            "shots": -1 if self.shots is None else self.shots,
            "diversity_weight": self.diversity_weight,
            "samples_total": self.samples_total,
            "cost_total": self.cost_total,
            "epoch_cost": self.epoch_cost,
            "epoch_samples": self.epoch_samples,
            "sums": dict(self.sums),
            "count": self.count,
            "history": {
                "epochs": list(h.epochs),
                "metrics": {k: np.asarray(v, dtype=np.float64) for k, v in h.metrics.items()},
                "initial": dict(h.initial),
                "stop_reason": h.stop_reason or "",
                "steps": h.steps,
                "cost_usd": h.cost_usd,
            },
        }

    @classmethod
    def from_state(cls, s: Mapping[str, Any]) -> GANState:
        h = s["history"]
        history = GANHistory(
            epochs=[int(e) for e in h["epochs"]],
            metrics={k: [float(x) for x in np.asarray(v)] for k, v in h["metrics"].items()},
            initial={k: float(v) for k, v in h["initial"].items()},
            stop_reason=str(h["stop_reason"]) or None,
            steps=int(h["steps"]),
            cost_usd=float(h["cost_usd"]),
        )
        shots = int(s["shots"])
        return cls(
            epoch=int(s["epoch"]),
            step=int(s["step"]),
            batch=int(s["batch"]),
            finished=bool(s["finished"]),
            d_steps=int(s["d_steps"]),
            shots=None if shots < 0 else shots,
            diversity_weight=float(s["diversity_weight"]),
            samples_total=int(s["samples_total"]),
            cost_total=float(s["cost_total"]),
            epoch_cost=float(s["epoch_cost"]),
            epoch_samples=int(s["epoch_samples"]),
            sums={k: float(v) for k, v in s["sums"].items()},
            count=int(s["count"]),
            history=history,
        )


# --------------------------------------------------------------------------- context
class GANContext(TrainingContext):
    """What a callback sees of a QGAN run, and the levers it may pull.

    ``generator_lr``, ``discriminator_lr``, ``d_steps``, ``shots`` and ``diversity_weight``
    can be read and set; :meth:`rollback_to_best`, :meth:`perturb_generator`,
    :meth:`alert` and :meth:`log` act on the run. Every lever's value is checkpointed.
    """

    def __init__(self, loop: _GANLoop) -> None:
        super().__init__(
            run_id=loop.run_id,
            config=loop.config,
            state=loop.state,
            steps_per_epoch=loop.data.steps_per_epoch,
            get_lr=lambda: loop.get_lr(loop.g_opt),
            set_lr=lambda lr: loop.set_lr(loop.g_opt, lr),
            db=loop.db,
            backend=loop.backend,
            task=loop.gen,
        )
        self._loop = loop

    @property
    def generator_lr(self) -> float:
        return self._loop.get_lr(self._loop.g_opt)

    @generator_lr.setter
    def generator_lr(self, value: float) -> None:
        self._loop.set_lr(self._loop.g_opt, _checked_lr(value))

    @property
    def discriminator_lr(self) -> float:
        d_opt = self._loop.d_opt
        return self._loop.get_lr(d_opt) if d_opt is not None else 0.0

    @discriminator_lr.setter
    def discriminator_lr(self, value: float) -> None:
        if self._loop.d_opt is not None:
            self._loop.set_lr(self._loop.d_opt, _checked_lr(value))

    @property
    def d_steps(self) -> int:
        return self._loop.state.d_steps

    @d_steps.setter
    def d_steps(self, value: int) -> None:
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise GANError(f"d_steps (the D:G step ratio) must be an integer >= 1, got {value!r}")
        if self._loop.config.update == "simultaneous" and value != 1:
            raise GANError("a simultaneous-update run keeps d_steps=1")
        self._loop.state.d_steps = value

    @property
    def shots(self) -> int | None:
        return self._loop.state.shots

    @shots.setter
    def shots(self, value: int | None) -> None:
        if value is not None and (
            isinstance(value, bool) or not isinstance(value, int) or value < 1
        ):
            raise GANError(f"shots must be an integer >= 1 or None, got {value!r}")
        if (value is None) != (self._loop.state.shots is None):
            raise GANError("a run keeps measuring with shots, or exactly, from start to end")
        self._loop.state.shots = value

    @property
    def diversity_weight(self) -> float:
        return self._loop.state.diversity_weight

    @diversity_weight.setter
    def diversity_weight(self, value: float) -> None:
        if not math.isfinite(value) or value < 0:
            raise GANError(f"diversity_weight must be a finite number >= 0, got {value!r}")
        self._loop.state.diversity_weight = float(value)

    @property
    def budget_left_usd(self) -> float | None:
        return self._loop.budget_left()

    def estimate_epoch_cost(self, shots: int | None) -> float:
        """The estimated USD price of one epoch's circuits with ``shots``."""
        return self._loop.gan.estimate_epoch_cost(self._loop.data.steps_per_epoch, shots)

    async def rollback_to_best(self, before_epoch: int | None = None) -> bool:
        """Restore both networks and optimizers from the best checkpoint (written before
        epoch ``before_epoch`` when given: before a collapse began). False: there is none."""
        return await self._loop.rollback_to_best(before_epoch)

    def perturb_generator(self, scale: float, seed: int) -> None:
        """Add ``N(0, scale^2)`` noise (from ``seed``) to every generator weight."""
        self._loop.perturb_generator(scale, seed)

    async def alert(
        self, kind: str, message: str, metric_key: str | None = None, value: float | None = None
    ) -> None:
        await self._loop.db.alerts.raise_alert(
            self.run_id, kind, message, metric_key=metric_key, value=value
        )

    async def log(self, metrics: Mapping[str, float]) -> None:
        finite = {k: float(v) for k, v in metrics.items() if math.isfinite(float(v))}
        if finite:
            await self._loop.db.metrics.log(self.run_id, finite, self._loop.state.step)


def _checked_lr(value: float) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise GANError(f"a learning rate must be a finite number > 0, got {value!r}")
    if value <= 0:
        raise GANError(f"a learning rate must be a finite number > 0, got {value!r}")
    return float(value)


# --------------------------------------------------------------------------- data
@dataclass
class _Data:
    """The training data as the loop uses it."""

    name: str
    #: Born machines: the data distribution on the grid, and each sample's grid index.
    target: Array | None = None
    indices: NDArray[np.int64] | None = None
    #: Latent generators: the samples, and the grid their metrics are measured on.
    samples: Array | None = None
    metric_grid: Grid | None = None
    steps_per_epoch: int = 1

    def digest(self) -> str:
        h = hashlib.sha256()
        for part in (self.target, self.indices, self.samples):
            if part is not None:
                h.update(np.ascontiguousarray(part).tobytes())
        return h.hexdigest()[:16]


def _as_samples(values: ArrayLike, dim: int) -> Array:
    try:
        arr = np.asarray(values, dtype=np.float64)
    except (TypeError, ValueError) as exc:
        raise GANError(f"data must be numbers: {exc}") from None
    if arr.ndim == 1 and dim == 1:
        arr = arr[:, None]
    if arr.ndim != 2 or arr.shape[1] != dim:
        raise GANError(f"data must be samples of shape [N, {dim}], got {arr.shape}")
    if arr.shape[0] == 0:
        raise GANError("data holds no samples")
    if not np.all(np.isfinite(arr)):
        raise GANError("data holds NaN or infinite values")
    return arr


def _step_seed(seed: int, *key: int) -> int:
    return int(np.random.SeedSequence([seed, *key]).generate_state(2, dtype=np.uint64)[0] >> 2)


# --------------------------------------------------------------------------- the GAN
class QuantumGAN:
    """A quantum generator, a discriminator (``None`` with ``loss="mmd"``) and a config.

    ``backend`` is a backend registered in ``db.backend_manager`` (an instance or its name),
    or ``None`` (the manager's ``"simulator"``).
    """

    def __init__(
        self,
        generator: QuantumGenerator | LatentGenerator,
        discriminator: torch.nn.Module | None,
        config: GANConfig,
        db: QuantumDatabase,
        backend: Backend | str | None = None,
        *,
        callbacks: Sequence[Callback] = (),
    ) -> None:
        if not isinstance(generator, QuantumGenerator | LatentGenerator):
            raise GANError(
                "generator must be a QuantumGenerator (Born machine) or a LatentGenerator, got "
                f"{type(generator).__name__}"
            )
        if not isinstance(config, GANConfig):
            raise GANError(f"config must be a GANConfig, got {type(config).__name__}")
        if config.loss == "mmd":
            if discriminator is not None:
                raise DiscriminatorError("loss='mmd' trains without a discriminator: pass None")
        elif not isinstance(discriminator, torch.nn.Module):
            raise DiscriminatorError(
                f"loss {config.loss!r} needs a torch.nn.Module discriminator, got "
                f"{type(discriminator).__name__}"
            )
        if backend is not None and not isinstance(backend, Backend | str):
            raise GANError(f"backend must be a Backend, a registered name or None, got {backend!r}")
        self.generator = generator
        self.discriminator = discriminator
        self.config = config
        self.db = db
        self._backend_arg = backend
        self.callbacks = CallbackList(list(callbacks))
        self._signals = SignalWatch()
        self.dim = (
            generator.grid.dim if isinstance(generator, QuantumGenerator) else generator.output_dim
        )
        if discriminator is not None:
            width = input_width(discriminator)
            if width is not None and width != self.dim:
                raise DiscriminatorError(
                    f"the discriminator takes {width} features per sample, the generator makes "
                    f"samples of {self.dim}"
                )

    # ------------------------------------------------------------------ backend
    def _backend_name(self) -> str:
        manager = self.db.backend_manager
        arg = self._backend_arg
        if arg is None:
            return "simulator" if "simulator" in manager.names() else manager.names()[0]
        if isinstance(arg, str):
            manager.get(arg)  # UnknownBackendError naming the registered ones
            return arg
        for name in manager.names():
            if manager.get(name) is arg:
                return name
        name, k = arg.name, 1
        while name in manager.names():
            k += 1
            name = f"{arg.name}-{k}"
        manager.register(name, arg)
        self._backend_arg = name
        return name

    def _managed(self, run_id: str | None) -> ManagedBackend:
        c = self.config
        budget = None if c.budget_usd is None else Budget(float(c.budget_usd), c.budget_name)
        return ManagedBackend(
            self.db.backend_manager, self._backend_name(), budget=budget, run_id=run_id
        )

    def gradient_method(self, backend: Backend, shots: int | None) -> str:
        """The generator's gradient method: the config's, else adjoint when exact on the
        simulator, else parameter shift."""
        method = self.config.gradient_method
        if method is None:
            return "adjoint" if supports_adjoint(backend) and shots is None else "parameter-shift"
        if method == "adjoint" and not supports_adjoint(backend):
            raise GANError(f"gradient_method='adjoint' needs the simulator, not {backend.name!r}")
        return method

    def estimate_epoch_cost(
        self, steps: int, shots: int | None, backend: Backend | None = None
    ) -> float:
        """The estimated USD price of ``steps`` steps' circuits with ``shots`` (every
        generator distribution and every gradient of one epoch), before anything runs."""
        backend = (
            backend if backend is not None else self.db.backend_manager.get(self._backend_name())
        )
        gen = self.generator
        method = self.gradient_method(backend, shots)
        computer = QuantumGradientComputer(method)
        g = self.config.g_steps
        if isinstance(gen, QuantumGenerator):
            forward = backend.estimate_run_cost(gen.circuit, shots, None, 1)
            grad = computer.plan(backend, gen.circuit, 1).cost(backend, "I" * gen.n_qubits, shots)
            per_step = g * (forward + grad)
        else:
            b = self.config.batch_size or 64
            obs = gen.observables
            forward = backend.estimate_run_cost(gen.circuit, shots, obs, self.config.eval_samples)
            wrt = list(range(gen.latent_dim, gen.circuit.num_parameters))
            per_step = g * computer.plan(backend, gen.circuit, b, wrt=wrt).cost(backend, obs, shots)
            return float(steps * per_step + forward)
        return float(steps * per_step)

    # ------------------------------------------------------------------ data
    async def _prepare(self, data: object) -> _Data:
        c = self.config
        gen = self.generator
        name = "samples"
        if isinstance(data, TargetDistribution):
            if not isinstance(gen, QuantumGenerator):
                raise GANError("a TargetDistribution trains a Born machine (QuantumGenerator)")
            q = np.asarray(data.probabilities, dtype=np.float64).ravel()
            size = gen.grid.size
            if q.shape != (size,) or not np.all(np.isfinite(q)) or np.any(q < 0):
                raise GANError(
                    f"the target must be {size} finite probabilities >= 0 (one per grid point)"
                )
            if not math.isclose(float(q.sum()), 1.0, abs_tol=1e-6):
                raise GANError(f"the target's probabilities must sum to 1, not {q.sum():.6g}")
            if c.batch_size is not None:
                raise GANError("a TargetDistribution is exact: train it with batch_size=None")
            return _Data(data.name, target=q / q.sum())
        if isinstance(data, str):
            name = data
            dataset = await self.db.get_dataset(data)
            samples = _as_samples(dataset.data, self.dim)
        else:
            samples = _as_samples(data, self.dim)  # type: ignore[arg-type]
        n = samples.shape[0]
        steps = 1 if c.batch_size is None else -(-n // c.batch_size)
        if isinstance(gen, QuantumGenerator):
            indices = gen.grid.to_index(samples, policy=c.data_policy)
            q = np.bincount(indices, minlength=gen.grid.size).astype(np.float64) / n
            return _Data(name, target=q, indices=indices, steps_per_epoch=steps)
        lo, hi = samples.min(axis=0), samples.max(axis=0)
        hi = np.where(hi > lo, hi, lo + 1.0)
        grid = Grid(
            [(float(a), float(b)) for a, b in zip(lo, hi, strict=True)], [c.metric_bits] * self.dim
        )
        return _Data(name, samples=samples, metric_grid=grid, steps_per_epoch=steps)

    # ------------------------------------------------------------------ fit
    async def fit(self, data: object, run_id: str | None = None) -> GANHistory:
        """Train on ``data``; resumes ``run_id`` from its latest checkpoint if it has one.

        Everything is checked before anything is stored: the data's shape, bounds (by
        ``data_policy``) and the discriminator's width; on resume, that the checkpoint was
        written by the same generator, discriminator and settings.
        """
        c = self.config
        prepared = await self._prepare(data)
        run_id = validate_run_id(run_id or f"qgan-{c.seed}-{prepared.name}")
        backend = self._managed(run_id)
        loop = _GANLoop(self, backend, prepared, run_id)
        checkpoint = await self.db.checkpoints.latest(run_id)
        if checkpoint is not None:
            saved = checkpoint.state
            self._check_resumable(saved, loop, prepared, run_id)
            loop.load_state_dict(saved["task"])
            loop.state = GANState.from_state(saved["state"])
            self.callbacks.load_state_dict(saved["callbacks"])
            if loop.state.finished:
                return loop.state.history
            if loop.state.history.stop_reason in ("interrupted", "budget"):
                loop.state.history.stop_reason = None  # a stop that leaves the run resumable
        else:
            seed_global_rngs(c.seed)
            loop.state = GANState(
                d_steps=c.d_steps, shots=c.shots, diversity_weight=c.diversity_weight
            )
        await begin_run(
            self.db,
            run_id,
            resume_step=None if checkpoint is None else loop.state.step,
            config={**c.to_dict(), "kind": "qgan", "generator": self.generator.kind},
            backend=backend.name,
            seed=c.seed,
        )
        ctx = GANContext(loop)
        loop.ctx = ctx
        callbacks = CallbackList(
            [*([ProgressBar()] if c.progress else []), *self.callbacks.callbacks]
        )
        loop.callback_list = callbacks
        restore = self._signals.install()
        try:
            await callbacks.call("on_train_begin", ctx)
            await loop.run()
            await callbacks.call("on_train_end", ctx)
        except BaseException as exc:
            restore()
            await callbacks.call_on_exception(ctx, exc)
            await record_failure(self.db, run_id, exc)
            raise
        restore()
        await end_run(self.db, run_id, loop.state.history.stop_reason, ctx.stop_message)
        return loop.state.history

    def _signature(self, prepared: _Data) -> dict[str, Any]:
        gen = self.generator
        sig: dict[str, Any] = {
            "generator": gen.kind,
            "circuit": gen.circuit.content_hash(),
            "weights": int(gen.num_weights),
            "data": prepared.digest(),
        }
        if self.discriminator is not None:
            sig["discriminator"] = {
                k: list(t.shape) for k, t in self.discriminator.state_dict().items()
            }
        return sig

    def _check_resumable(
        self, saved: Mapping[str, Any], loop: _GANLoop, prepared: _Data, run_id: str
    ) -> None:
        if saved.get("format") != _FORMAT or saved.get("kind") != "qgan":
            raise ResumeMismatchError(
                f"run {run_id!r} was not written by this QuantumGAN version; start a new run "
                "with another run_id"
            )
        mine = self._signature(prepared)
        if saved["signature"] != mine:
            changed = sorted(
                k
                for k in set(mine) | set(saved["signature"])
                if saved["signature"].get(k) != mine.get(k)
            )
            raise ResumeMismatchError(
                f"run {run_id!r} trained another generator, discriminator or data "
                f"({', '.join(changed)}); resume it with the same ones, or start a new run "
                "with another run_id"
            )
        now = self.config.to_dict()
        changed = [k for k in MATH_SETTINGS if saved["config"].get(k) != now.get(k)]
        if changed:
            raise ResumeMismatchError(
                f"run {run_id!r} was started with other settings ({', '.join(changed)}); resume "
                "it with the same GANConfig, or start a new run with another run_id"
            )

    # ------------------------------------------------------------------ registry
    async def register(
        self,
        name: str,
        *,
        metrics: Mapping[str, float] | None = None,
        run_id: str | None = None,
        discriminator_name: str | None = None,
    ) -> ModelVersion:
        """Register the generator (its weights, circuit and grid contract) as ``name``;
        with ``discriminator_name``, the discriminator too (a module built by a
        ``@torch_factory`` function, see :class:`~quantum_ml.torch_models.TorchModel`)."""
        provenance = {"trained_by": "QuantumGAN", "run_id": run_id, "loss": self.config.loss}
        version = await self.db.models.register(
            name, self.generator, metrics=dict(metrics or {}), provenance=provenance
        )
        if discriminator_name is not None:
            if self.discriminator is None:
                raise DiscriminatorError("this QuantumGAN has no discriminator to register")
            from ..torch_models import TorchModel

            await self.db.models.register(
                discriminator_name, TorchModel(self.discriminator), provenance=provenance
            )
        return version


# --------------------------------------------------------------------------- the loop
class _GANLoop:
    """One ``fit``: the optimizers, the step, the epoch's end and the checkpoints."""

    def __init__(self, gan: QuantumGAN, backend: ManagedBackend, data: _Data, run_id: str) -> None:
        self.gan = gan
        self.db = gan.db
        self.config = gan.config
        self.backend = backend
        self.data = data
        self.run_id = run_id
        self.gen = gan.generator
        self.disc = gan.discriminator
        self.born = isinstance(self.gen, QuantumGenerator)
        self.state = GANState()
        self.ctx: GANContext | None = None
        self.callback_list = CallbackList([])
        self.event_loop = asyncio.get_running_loop()
        c = self.config
        self.theta = torch.nn.Parameter(torch.tensor(self.gen.weights, dtype=torch.float64))
        g_params: list[torch.nn.Parameter] = [self.theta]
        head = getattr(self.gen, "head", None)
        if head is not None:
            g_params += [p for p in head.parameters() if p.requires_grad]
        self.g_opt = self._optimizer(
            c.generator_optimizer,
            g_params,
            c.generator_lr,
            c.generator_optimizer_kwargs,
            "generator",
        )
        self.d_opt: torch.optim.Optimizer | None = None
        if self.disc is not None:
            params = [p for p in self.disc.parameters() if p.requires_grad]
            if not params:
                raise DiscriminatorError("the discriminator has no trainable parameter")
            self.d_opt = self._optimizer(
                c.discriminator_optimizer,
                params,
                c.discriminator_lr,
                c.discriminator_optimizer_kwargs,
                "discriminator",
            )
            floating = [p for p in self.disc.parameters() if p.is_floating_point()]
            self.d_dtype = floating[0].dtype
        else:
            self.d_dtype = torch.float64
        self._points: torch.Tensor | None = None
        if self.born:
            assert isinstance(self.gen, QuantumGenerator)
            self.grid_points = np.asarray(self.gen.grid.points(), dtype=np.float64)
        self._bandwidths = self._mmd_bandwidths()
        self._dist_cache: tuple[bytes, Array, int | None] | None = None
        self._shots_seen = 0

    @staticmethod
    def _optimizer(
        name: str,
        params: list[torch.nn.Parameter],
        lr: float,
        kwargs: Mapping[str, Any],
        which: str,
    ) -> torch.optim.Optimizer:
        cls = torch_optimizer_class(name)
        try:
            opt: torch.optim.Optimizer = cls(params, lr=lr, **dict(kwargs))
        except (TypeError, ValueError) as exc:
            raise GANError(f"{which} optimizer {name!r}: {exc}") from None
        return opt

    @staticmethod
    def get_lr(opt: torch.optim.Optimizer) -> float:
        return float(opt.param_groups[0]["lr"])

    @staticmethod
    def set_lr(opt: torch.optim.Optimizer, lr: float) -> None:
        for group in opt.param_groups:
            group["lr"] = float(lr)

    def budget_left(self) -> float | None:
        c = self.config
        if c.budget_usd is None:
            return None
        return max(float(c.budget_usd) - self.state.cost_total, 0.0)

    def _mmd_bandwidths(self) -> tuple[float, ...]:
        c = self.config
        if c.mmd_bandwidths is not None:
            return tuple(float(b) for b in c.mmd_bandwidths)
        # The median heuristic on the points the kernel compares: the grid (Born machine)
        # or the data (latent generator), fixed for the run.
        pts = self.grid_points if self.born else np.asarray(self.data.samples)[:512]
        d = np.sqrt(((pts[:, None, :] - pts[None, :, :]) ** 2).sum(-1))
        nonzero = d[d > 0]
        median = float(np.median(nonzero)) if nonzero.size else 1.0
        return (median / 2, median, 2 * median)

    # ------------------------------------------------------------------ state
    def state_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "weights": self.theta.detach().numpy().copy(),
            "g_opt": to_storable(self.g_opt.state_dict()),
            "rng": global_rng_state(),
        }
        head = getattr(self.gen, "head", None)
        if head is not None:
            out["head"] = to_storable(head.state_dict())
        if self.disc is not None and self.d_opt is not None:
            out["disc"] = to_storable(self.disc.state_dict())
            out["d_opt"] = to_storable(self.d_opt.state_dict())
        return out

    def load_state_dict(self, saved: Mapping[str, Any], *, rng: bool = True) -> None:
        weights = np.array(saved["weights"], dtype=np.float64)
        with torch.no_grad():
            self.theta.copy_(torch.from_numpy(weights))
        self.gen.weights = weights
        self.g_opt.load_state_dict(from_storable(saved["g_opt"]))
        head = getattr(self.gen, "head", None)
        if head is not None:
            head.load_state_dict(from_storable(saved["head"]), strict=True)
        if self.disc is not None and self.d_opt is not None:
            self.disc.load_state_dict(from_storable(saved["disc"]), strict=True)
            self.d_opt.load_state_dict(from_storable(saved["d_opt"]))
        if rng:
            set_global_rng_state(saved["rng"])
        self._dist_cache = None

    async def checkpoint(self, metric: float | None) -> None:
        s = self.state
        payload = {
            "format": _FORMAT,
            "kind": "qgan",
            "signature": self.gan._signature(self.data),
            "task": self.state_dict(),
            "state": s.to_state(),
            "callbacks": self.callback_list.state_dict(),
            "config": self.config.to_dict(),
            "encoding": self.gen.to_contract(),
        }
        await self.db.metrics.flush()
        c = self.config
        if metric is not None and math.isfinite(metric):
            await self.db.checkpoints.save(
                self.run_id,
                s.step,
                payload,
                metric_name=c.monitor,
                metric_value=metric,
                mode=c.monitor_mode,
            )
        else:
            await self.db.checkpoints.save(self.run_id, s.step, payload, mode=c.monitor_mode)
        assert self.ctx is not None
        await self.callback_list.call("on_checkpoint", self.ctx, s.step, metric)

    async def rollback_to_best(self, before_epoch: int | None = None) -> bool:
        c = self.config
        infos = await self.db.checkpoints.list(self.run_id)
        if before_epoch is not None:
            limit = before_epoch * self.data.steps_per_epoch
            infos = [i for i in infos if i.step <= limit]
        if not infos:
            return False
        scored = [i for i in infos if i.metric_value is not None and math.isfinite(i.metric_value)]
        if scored:
            sign = 1.0 if c.monitor_mode == "min" else -1.0
            chosen = min(scored, key=lambda i: (sign * float(i.metric_value or 0.0), -i.step))
        else:
            chosen = max(infos, key=lambda i: i.step)
        best = await self.db.checkpoints.load(self.run_id, chosen.step)
        # The networks and optimizers go back; the counters, levers (learning rates
        # included), ledger and the callbacks' memory do not: the run goes on from here,
        # knowing what happened.
        g_lr = self.get_lr(self.g_opt)
        d_lr = self.get_lr(self.d_opt) if self.d_opt is not None else None
        self.load_state_dict(best.state["task"], rng=False)
        self.set_lr(self.g_opt, g_lr)
        if self.d_opt is not None and d_lr is not None:
            self.set_lr(self.d_opt, d_lr)
        return True

    def perturb_generator(self, scale: float, seed: int) -> None:
        if not math.isfinite(scale) or scale < 0:
            raise GANError(f"a perturbation scale must be a finite number >= 0, got {scale!r}")
        noise = np.random.default_rng(seed).normal(0.0, scale, self.gen.num_weights)
        weights = self.theta.detach().numpy() + noise
        with torch.no_grad():
            self.theta.copy_(torch.from_numpy(weights))
        self.gen.weights = weights
        self._dist_cache = None

    # ------------------------------------------------------------------ circuits
    def _sync_weights(self) -> Array:
        weights = self.theta.detach().numpy().astype(np.float64, copy=True)
        self.gen.weights = weights
        return weights

    def _eval_seed(self, weights: Array) -> int | None:
        # With shots, a distribution's seed comes from the weights measured: a resumed run
        # measures (and re-attaches to) exactly what the uninterrupted one did.
        if self.state.shots is None:
            return None
        digest = hashlib.sha256(weights.tobytes() + str(self.state.shots).encode()).digest()
        return _step_seed(self.config.seed, int.from_bytes(digest[:7], "little"))

    async def distribution(self) -> tuple[Array, int | None]:
        """The Born machine's distribution at the current weights (and its seed), cached:
        the distribution measured after a step is the one the next step trains from."""
        assert isinstance(self.gen, QuantumGenerator)
        weights = self._sync_weights()
        key = weights.tobytes() + str(self.state.shots).encode()
        if self._dist_cache is not None and self._dist_cache[0] == key:
            return self._dist_cache[1], self._dist_cache[2]
        seed = self._eval_seed(weights)
        p = await self.gen.probabilities(self.backend, shots=self.state.shots, seed=seed)
        self._dist_cache = (key, np.asarray(p, dtype=np.float64), seed)
        return self._dist_cache[1], seed

    def _in_thread(self, fn: Any) -> Any:
        """Torch work in a worker thread, quantum discriminator layers routed to our loop."""

        def routed() -> Any:
            with route_evaluations(self.backend, self.event_loop, shots=self.state.shots):
                return fn()

        return asyncio.to_thread(routed)

    def _points_tensor(self) -> torch.Tensor:
        if self._points is None:
            self._points = torch.from_numpy(self.grid_points).to(self.d_dtype)
        return self._points

    # ------------------------------------------------------------------ steps
    async def step(self, batch: Any, step_seed: int) -> dict[str, float]:
        if self.born:
            return await self._born_step(batch, step_seed)
        return await self._latent_step(batch, step_seed)

    def _d_update(
        self,
        real_w: torch.Tensor,
        real_x: torch.Tensor,
        fake_w: torch.Tensor,
        fake_x: torch.Tensor | None,
        seed: int,
    ) -> tuple[float, float, float]:
        """One discriminator update; ``(loss, mean D(real), mean D(fake))``."""
        assert self.disc is not None
        assert self.d_opt is not None
        c = self.config
        disc = self.disc
        self.d_opt.zero_grad()
        scores_real = disc(real_x).reshape(-1)
        scores_fake = scores_real if fake_x is None else disc(fake_x).reshape(-1)
        penalty = None
        if c.loss == "wgan-gp" and c.gp_weight > 0:
            gen = torch.Generator().manual_seed(seed)
            n = 64
            ri = torch.multinomial(
                real_w.detach().to(torch.float64), n, replacement=True, generator=gen
            )
            fi = torch.multinomial(
                fake_w.detach().to(torch.float64), n, replacement=True, generator=gen
            )
            fake_pts = real_x if fake_x is None else fake_x
            penalty = c.gp_weight * gradient_penalty(
                disc, real_x[ri].detach(), fake_pts[fi].detach(), gen
            )
        loss = discriminator_loss(
            c.loss, real_w, scores_real, fake_w.detach(), scores_fake, penalty
        )
        loss.backward()  # type: ignore[no-untyped-call]
        value = float(loss.detach())
        if math.isfinite(value) or not c.stop_on_nan:
            self.d_opt.step()
        with torch.no_grad():
            d_real = float((real_w * scores_real).sum())
            d_fake = float((fake_w.detach() * scores_fake).sum())
        return value, d_real, d_fake

    async def _born_step(self, q: Array, step_seed: int) -> dict[str, float]:
        c = self.config
        s = self.state
        assert isinstance(self.gen, QuantumGenerator)
        logs: dict[str, float] = {}
        p, _ = await self.distribution()
        points = self._points_tensor() if self.disc is not None else None
        q_t = torch.from_numpy(q).to(self.d_dtype)
        d_vals: list[float] = []

        def d_steps(p_now: Array) -> tuple[float, float, float]:
            p_t = torch.from_numpy(p_now).to(self.d_dtype)
            assert points is not None
            out = (math.nan, math.nan, math.nan)
            for k in range(s.d_steps):
                out = self._d_update(q_t, points, p_t, None, step_seed + k)
                d_vals.append(out[0])
            return out

        def g_loss(p_now: Array) -> tuple[float, Array]:
            p_t = torch.from_numpy(p_now).to(torch.float64).requires_grad_(True)
            scores = None
            if self.disc is not None:
                assert points is not None
                with torch.no_grad():
                    scores = self.disc(points).reshape(-1).to(torch.float64)
            q64 = torch.from_numpy(q)
            pts = torch.from_numpy(self.grid_points)
            loss = generator_loss(
                c.loss,
                p_t,
                scores,
                mmd=lambda: mmd_squared(pts, p_t, pts, q64, self._bandwidths),
            )
            if s.diversity_weight > 0:
                # Negative Shannon entropy: minimizing it spreads the generator's mass.
                loss = loss + s.diversity_weight * (p_t * torch.log(p_t.clamp_min(1e-12))).sum()
            loss.backward()  # type: ignore[no-untyped-call]
            assert p_t.grad is not None
            return float(loss.detach()), p_t.grad.numpy().astype(np.float64)

        if c.update == "simultaneous":
            # Both losses from the same forward pass (the tutorial's order: G, then D).
            g_value, v = await self._in_thread(lambda: g_loss(p))
            if self.disc is not None:
                d_value, d_real, d_fake = await self._in_thread(lambda: d_steps(p))
                logs.update(discriminator_loss=d_value, d_real=d_real, d_fake=d_fake)
            grad = await self._generator_grad(v, step_seed)
            self._apply_generator(grad, g_value)
        else:
            if self.disc is not None:
                d_value, d_real, d_fake = await self._in_thread(lambda: d_steps(p))
                logs.update(discriminator_loss=d_value, d_real=d_real, d_fake=d_fake)
            g_value, grad = math.nan, np.zeros(self.gen.num_weights)
            for k in range(c.g_steps):
                p, _ = await self.distribution()
                g_value, v = await self._in_thread(lambda p=p: g_loss(p))
                grad = await self._generator_grad(v, step_seed + 7919 * (k + 1))
                if not self._apply_generator(grad, g_value):
                    break
        logs["generator_loss"] = g_value
        self._grad_logs(logs, grad)
        if s.shots is not None:
            self._snr_logs(logs, grad, p, v)
        return logs

    async def _generator_grad(self, v: Array, seed: int) -> Array:
        assert isinstance(self.gen, QuantumGenerator)
        s = self.state
        method = self.gan.gradient_method(self.backend, s.shots)
        grad = await self.gen.vjp(
            self.backend, v, shots=s.shots, seed=None if s.shots is None else seed, method=method
        )
        return np.asarray(grad, dtype=np.float64)

    def _apply_generator(self, grad: Array, loss: float) -> bool:
        """The generator's optimizer step (skipped for a NaN loss when stop_on_nan)."""
        if not (math.isfinite(loss) and np.all(np.isfinite(grad))) and self.config.stop_on_nan:
            return False
        self.g_opt.zero_grad()
        self.theta.grad = torch.from_numpy(grad.copy())
        self.g_opt.step()
        self._sync_weights()
        return True

    def _grad_logs(self, logs: dict[str, float], grad: Array) -> None:
        logs["grad_norm_generator"] = float(np.linalg.norm(grad))
        logs["grad_active_fraction"] = float(np.mean(np.abs(grad) > self.config.grad_threshold))
        if self.disc is not None:
            norms = [float(p.grad.norm()) for p in self.disc.parameters() if p.grad is not None]
            logs["grad_norm_discriminator"] = float(math.sqrt(sum(n * n for n in norms)))

    def _snr_logs(self, logs: dict[str, float], grad: Array, p: Array, v: Array) -> None:
        # Shot noise of a parameter-shift gradient g_j = (v.p(+) - v.p(-)) / 2: each term is
        # a mean over `shots` multinomial draws, with variance Var_p(v) / shots; with
        # p(+-) ~ p that is Var(g_j) ~ Var_p(v) / (2 shots) for every parameter.
        shots = self.state.shots
        assert shots is not None
        var_v = float(p @ (v * v) - (p @ v) ** 2)
        per_param = max(var_v, 0.0) / (2.0 * shots)
        total = per_param * grad.size
        logs["grad_variance"] = total
        logs["grad_snr"] = float(np.linalg.norm(grad) / math.sqrt(total)) if total > 0 else math.inf

    async def _latent_step(self, real: Array, step_seed: int) -> dict[str, float]:
        c = self.config
        s = self.state
        gen = self.gen
        assert isinstance(gen, LatentGenerator)
        rng = np.random.default_rng(step_seed)
        method = self.gan.gradient_method(self.backend, s.shots)
        logs: dict[str, float] = {}
        real_x = torch.from_numpy(real).to(self.d_dtype)
        b = real.shape[0]
        real_w = torch.full((b,), 1.0 / b, dtype=self.d_dtype)
        head = gen.head
        wrt_seed = None if s.shots is None else step_seed

        async def fake_batch() -> tuple[Array, Array, Array]:
            z = gen.draw_latent(b, rng)
            self._sync_weights()
            e, jac = await gen.expectations_and_jacobian(
                self.backend, z, shots=s.shots, seed=wrt_seed, method=method
            )
            return z, np.asarray(e, dtype=np.float64), np.asarray(jac, dtype=np.float64)

        def to_samples(e: Array) -> torch.Tensor:
            e_t = torch.from_numpy(e)
            out = head(e_t.to(self.d_dtype)) if head is not None else e_t
            return out.to(self.d_dtype)

        _, e, jac = await fake_batch()
        if self.disc is not None:

            def d_steps() -> tuple[float, float, float]:
                with torch.no_grad():
                    fake_x = to_samples(e)
                out = (math.nan, math.nan, math.nan)
                for k in range(s.d_steps):
                    out = self._d_update(real_w, real_x, real_w, fake_x, step_seed + k)
                return out

            d_value, d_real, d_fake = await self._in_thread(d_steps)
            logs.update(discriminator_loss=d_value, d_real=d_real, d_fake=d_fake)
        g_value, grad = math.nan, np.zeros(gen.num_weights)
        for k in range(c.g_steps):
            if k > 0:
                _, e, jac = await fake_batch()

            def g_loss(e: Array = e) -> tuple[float, Array]:
                self.g_opt.zero_grad()
                e_t = torch.from_numpy(e).requires_grad_(True)
                fake = (head(e_t.to(self.d_dtype)) if head is not None else e_t).to(self.d_dtype)
                w = torch.full((b,), 1.0 / b, dtype=self.d_dtype)
                scores = self.disc(fake).reshape(-1) if self.disc is not None else None
                loss = generator_loss(
                    c.loss,
                    w,
                    scores,
                    mmd=lambda: mmd_squared(fake, w, real_x, real_w, self._bandwidths),
                )
                if s.diversity_weight > 0:
                    loss = loss - s.diversity_weight * torch.pdist(fake).mean()
                loss.backward()  # type: ignore[no-untyped-call]
                assert e_t.grad is not None
                return float(loss.detach()), e_t.grad.numpy().astype(np.float64)

            g_value, d_e = await self._in_thread(g_loss)
            grad = np.einsum("bo,bow->w", d_e, jac)
            if not (math.isfinite(g_value) and np.all(np.isfinite(grad))) and c.stop_on_nan:
                break
            # The head's gradients were left by backward(); the circuit's are set here.
            self.theta.grad = torch.from_numpy(np.ascontiguousarray(grad))
            self.g_opt.step()
            self._sync_weights()
        logs["generator_loss"] = g_value
        self._grad_logs(logs, grad)
        return logs

    # ------------------------------------------------------------------ epoch metrics
    async def epoch_metrics(self, epoch: int) -> dict[str, float]:
        c = self.config
        s = self.state
        if self.born:
            p, _ = await self.distribution()
            counts = None
            if s.shots is not None:
                counts = np.rint(p * s.shots).astype(np.int64)
            assert self.data.target is not None
            report = distribution_report(
                p,
                self.data.target,
                self.grid_points,
                counts=counts,
                shots=s.shots,
                seed=c.seed + epoch,
            )
            mean = p @ self.grid_points
            var = p @ (self.grid_points - mean) ** 2
            d = np.sqrt(
                ((self.grid_points[:, None, :] - self.grid_points[None, :, :]) ** 2).sum(-1)
            )
            extra = {"sample_variance": float(np.mean(var)), "diversity": float(p @ d @ p)}
        else:
            gen = self.gen
            assert isinstance(gen, LatentGenerator)
            assert self.data.metric_grid is not None
            rng = np.random.default_rng(_step_seed(c.seed, 0x6576, epoch + 1))
            fake = await gen.sample(
                c.eval_samples, seed=int(rng.integers(2**62)), backend=self.backend, shots=s.shots
            )
            fake = np.asarray(fake, dtype=np.float64).reshape(len(fake), -1)
            grid = self.data.metric_grid
            assert self.data.samples is not None
            p = grid.histogram(fake, policy="clip")
            q = grid.histogram(self.data.samples, policy="clip")
            report = distribution_report(p, q, grid.points(), seed=c.seed + epoch)
            extra = {
                "sample_variance": float(sample_variance(fake)),
                "diversity": float(pairwise_diversity(fake, seed=c.seed)),
            }
        metrics = {k: float(v) for k, v in report.items()}
        metrics.update(extra)
        return metrics

    async def _account(self) -> None:
        cost, degradations, fallbacks = self.backend.drain()
        s = self.state
        s.epoch_samples += self.backend.shots_run - self._shots_seen
        self._shots_seen = self.backend.shots_run
        s.epoch_cost += cost
        s.cost_total += cost
        s.history.cost_usd += cost
        for d in degradations:
            await self.db.alerts.raise_alert(
                self.run_id,
                "budget_degraded",
                f"the budget ran short at step {s.step}: jobs on {d.backend} run degraded "
                f"({d.how})",
            )
        for source in fallbacks:
            await self.db.alerts.raise_alert(
                self.run_id, "backend_fallback", f"{source} was unavailable at step {s.step}"
            )

    async def stop(self, reason: str, message: str, *, final: bool) -> None:
        s = self.state
        s.history.stop_reason = reason
        assert self.ctx is not None
        self.ctx.stop_message = message
        s.finished = final
        await self.checkpoint(None)
        await self.callback_list.call("on_stop", self.ctx, reason)
        print(f"[quantum-db] QGAN run {self.run_id!r}: {message}", file=sys.stderr, flush=True)

    def batches(self, epoch: int) -> list[Array]:
        c = self.config
        d = self.data
        if c.batch_size is None:
            return [d.target if self.born else d.samples]  # type: ignore[list-item]
        rng = np.random.default_rng(_step_seed(c.seed, 0x6261, epoch))
        n = len(d.indices) if self.born else len(d.samples)  # type: ignore[arg-type]
        order = rng.permutation(n)
        out: list[Array] = []
        for start in range(0, n, c.batch_size):
            take = order[start : start + c.batch_size]
            if self.born:
                assert d.indices is not None
                size = len(self.grid_points)
                out.append(
                    np.bincount(d.indices[take], minlength=size).astype(np.float64) / len(take)
                )
            else:
                assert d.samples is not None
                out.append(d.samples[take])
        return out

    async def run(self) -> None:
        c = self.config
        s = self.state
        assert self.ctx is not None
        ctx = self.ctx
        gan = self.gan
        h = s.history
        if not h.initial and s.step == 0:
            h.initial = await self.epoch_metrics(-1)
            await self._account()
        while s.epoch < c.epochs and not s.finished:
            epoch = s.epoch
            await self.callback_list.call("on_epoch_begin", ctx, epoch)
            batches = self.batches(epoch)
            for index in range(s.batch, len(batches)):
                if gan._signals.received is not None:
                    await self.stop(
                        "interrupted",
                        f"{gan._signals.name} received; checkpointed at step {s.step}",
                        final=False,
                    )
                    return
                if ctx.stop_reason is not None:
                    await self.stop(
                        ctx.stop_reason, ctx.stop_message or ctx.stop_reason, final=True
                    )
                    return
                try:
                    logs = await self.step(batches[index], _step_seed(c.seed, s.step))
                except BudgetExceededError as exc:
                    self.backend.drain()
                    self._dist_cache = None
                    await self.stop(
                        "budget", f"stopped at step {s.step} by the budget: {exc}", final=False
                    )
                    return
                await self._account()
                losses = [logs.get("generator_loss", 0.0), logs.get("discriminator_loss", 0.0)]
                if c.stop_on_nan and not all(math.isfinite(x) for x in losses):
                    await ctx.log({"nan_loss": 1.0})
                    await ctx.alert(
                        "nan_loss",
                        f"a NaN or infinite loss at step {s.step + 1}: {logs}",
                        "nan_loss",
                        1.0,
                    )
                    await self.stop(
                        "nan_loss",
                        f"a loss became NaN or infinite at step {s.step + 1}",
                        final=True,
                    )
                    return
                s.step += 1
                s.batch = index + 1
                h.steps = s.step
                s.count += 1
                for key, value in logs.items():
                    s.sums[key] = s.sums.get(key, 0.0) + value
                # Per step as step_<name>; the epoch's means keep the plain names.
                await self.db.metrics.log(
                    self.run_id,
                    {f"step_{k}": v for k, v in logs.items() if math.isfinite(v)},
                    s.step,
                )
                # "loss" is the generator's, for callbacks written for the trainer (the
                # progress bar shows it).
                step_logs = {**logs, "loss": logs.get("generator_loss", math.nan)}
                await self.callback_list.call("on_step_end", ctx, s.step, step_logs)
            metrics = await self.end_epoch(epoch)
            await self.callback_list.call("on_epoch_end", ctx, epoch, metrics)
            if ctx.stop_reason is not None:
                h.stop_reason = ctx.stop_reason
                s.finished = True
            if s.finished or (epoch + 1) % c.checkpoint_every == 0:
                await self.checkpoint(metrics.get(c.monitor))
            if s.finished and ctx.stop_reason is not None:
                await self.callback_list.call("on_stop", ctx, ctx.stop_reason)

    async def end_epoch(self, epoch: int) -> dict[str, float]:
        s = self.state
        h = s.history
        metrics = {k: v / max(s.count, 1) for k, v in s.sums.items()}
        metrics.update(await self.epoch_metrics(epoch))
        await self._account()
        metrics["cost_usd"] = s.epoch_cost
        metrics["d_steps"] = float(s.d_steps)
        metrics["generator_lr"] = self.get_lr(self.g_opt)
        if self.d_opt is not None:
            metrics["discriminator_lr"] = self.get_lr(self.d_opt)
        if s.shots is not None:
            metrics["shots"] = float(s.shots)
            s.samples_total += s.epoch_samples
            if s.epoch_samples:
                metrics["cost_per_sample_usd"] = s.epoch_cost / s.epoch_samples
            first = h.initial.get("relative_entropy")
            now = metrics.get("relative_entropy")
            if first is not None and now is not None and first - now > 0:
                metrics["cost_per_kl_improvement_usd"] = s.cost_total / (first - now)
        h.add(epoch, metrics)
        await self.db.metrics.log(
            self.run_id, {k: v for k, v in metrics.items() if math.isfinite(v)}, s.step
        )
        s.epoch += 1
        s.batch = 0
        s.sums, s.count, s.epoch_cost, s.epoch_samples = {}, 0, 0.0, 0
        if s.epoch >= self.config.epochs:
            s.finished = True
        return metrics
