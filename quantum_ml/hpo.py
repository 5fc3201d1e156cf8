"""Hyperparameter search for :class:`QuantumModel` training: grid, random, simulated annealing.

:class:`QuantumHPOSearch` explores a finite ``space`` (hyperparameter name -> list of candidate
values). Each evaluated configuration is one *trial*: a run ``"{prefix}-trial-{k}"`` in
``db.runs`` (created before fitting, its config holding the trial's hyperparameters under
``"hyperparameters"``, the full training settings under ``"training"`` and the search
bookkeeping under ``"hpo"``), a fresh model from ``model_factory`` and one
:meth:`QuantumTrainer.fit`. The trial's score is the last epoch's value of ``metric``.

Strategies (the grid is the product of the value lists, first key slowest, in the order given):

* ``grid``: every combination in that order, the first ``n_trials`` of them if capped;
* ``random``: ``n_trials`` distinct combinations drawn without replacement, seeded;
* ``annealing``: simulated annealing over the grid. It starts at a seeded random point and
  proposes a neighbour (one hyperparameter moved to an adjacent value in its list), accepted
  by the Metropolis rule at temperature ``temperature * cooling**step``. A configuration is
  never trained twice: revisited points reuse the cached score. It stops after ``n_trials``
  trials, when the whole grid is evaluated, or after ``max_steps`` proposals.

Hyperparameter names are :class:`TrainingConfig` fields plus the model settings ``layers``,
``entanglement`` and ``readout``.
"""

from __future__ import annotations

import dataclasses
import itertools
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal, cast

import numpy as np

from .encoders import QuantumDataEncoder
from .errors import HPOError
from .models import Entanglement, QuantumModel, Readout
from .trainer import QuantumTrainer, TrainingConfig, TrainingError

if TYPE_CHECKING:
    from backends.base import Backend
    from quantum_db.database import QuantumDatabase
    from quantum_db.datasets import DatasetInfo

__all__ = ["MODEL_HYPERPARAMETERS", "HPOError", "HPOResult", "QuantumHPOSearch", "Trial"]

Strategy = Literal["grid", "random", "annealing"]
Mode = Literal["min", "max"]
Value = str | int | float | bool | None
Params = dict[str, Any]
ModelFactory = Callable[[Params], QuantumModel]

#: Hyperparameters that shape the model rather than the training run.
MODEL_HYPERPARAMETERS = ("layers", "entanglement", "readout")
_TRAINING_HYPERPARAMETERS = tuple(f.name for f in dataclasses.fields(TrainingConfig))
_STRATEGIES = ("grid", "random", "annealing")
_METRICS = ("val_loss", "val_accuracy", "train_loss", "train_accuracy")
_MODES = ("min", "max")
_ENTANGLEMENTS = ("linear", "circular", "full")
_READOUTS = ("expectation", "probabilities")


@dataclass(frozen=True, slots=True)
class Trial:
    """One evaluated configuration: its run, hyperparameters, score and final metrics."""

    index: int
    run_id: str
    params: Params
    score: float
    metrics: dict[str, float]
    stop_reason: str | None = None


@dataclass(frozen=True, slots=True)
class HPOResult:
    """The outcome of :meth:`QuantumHPOSearch.search`; ``trials`` in evaluation order."""

    strategy: Strategy
    metric: str
    mode: Mode
    best_params: Params
    best_score: float
    best_run_id: str
    trials: list[Trial] = field(default_factory=list)

    @property
    def best_trial(self) -> Trial:
        return next(t for t in self.trials if t.run_id == self.best_run_id)


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _check_value(name: str, value: object) -> None:
    if value is not None and not isinstance(value, str | int | float | bool):
        raise HPOError(
            f"hyperparameter {name!r}: values must be str, int, float, bool or None, "
            f"got {type(value).__name__}"
        )
    if isinstance(value, float) and not math.isfinite(value):
        raise HPOError(f"hyperparameter {name!r}: values must be finite, got {value!r}")


def _validate_space(space: object) -> dict[str, list[Any]]:
    if not isinstance(space, Mapping) or not space:
        raise HPOError("the search space must be a non-empty mapping of name -> list of values")
    allowed = (*_TRAINING_HYPERPARAMETERS, *MODEL_HYPERPARAMETERS)
    unknown = sorted(str(k) for k in space if k not in allowed)
    if unknown:
        raise HPOError(f"unknown hyperparameters {unknown}; known: {sorted(allowed)}")
    out: dict[str, list[Any]] = {}
    for name, values in space.items():
        if isinstance(values, str | bytes) or not isinstance(values, Sequence) or not values:
            raise HPOError(f"hyperparameter {name!r} needs a non-empty list of values")
        seen: list[Any] = []
        for value in values:
            _check_value(name, value)
            if any(type(value) is type(s) and value == s for s in seen):
                raise HPOError(f"hyperparameter {name!r} lists {value!r} twice")
            seen.append(value)
        out[str(name)] = seen
    return out


class QuantumHPOSearch:
    """Searches ``space`` for the training and model settings that optimise ``metric``.

    ``base_config`` gives every training setting not in the space. ``model_factory`` builds
    a fresh model from a trial's hyperparameters; by default a classifier (or regressor) on
    the dataset's encoder with ``layers`` (default 1), ``entanglement`` and ``readout`` from
    the trial and ``seed`` as weight seed. ``n_trials`` ``None`` means the whole grid.
    """

    def __init__(
        self,
        db: QuantumDatabase,
        backend: Backend | None = None,
        *,
        space: Mapping[str, Sequence[Any]],
        strategy: Strategy = "grid",
        n_trials: int | None = None,
        seed: int = 0,
        metric: str = "val_loss",
        mode: Mode = "min",
        base_config: TrainingConfig | None = None,
        model_factory: ModelFactory | None = None,
        prefix: str = "hpo",
        temperature: float = 1.0,
        cooling: float = 0.9,
        max_steps: int | None = None,
    ) -> None:
        self.space = _validate_space(space)
        if strategy not in _STRATEGIES:
            raise HPOError(f"strategy must be one of {_STRATEGIES}, got {strategy!r}")
        if n_trials is not None and (not _is_int(n_trials) or n_trials < 1):
            raise HPOError(f"n_trials must be an integer >= 1 or None, got {n_trials!r}")
        if not _is_int(seed) or seed < 0:
            raise HPOError(f"seed must be a non-negative integer, got {seed!r}")
        if metric not in _METRICS:
            raise HPOError(f"metric must be one of {_METRICS}, got {metric!r}")
        if mode not in _MODES:
            raise HPOError(f"mode must be 'min' or 'max', got {mode!r}")
        base = base_config if base_config is not None else TrainingConfig()
        if not isinstance(base, TrainingConfig):
            raise HPOError(f"base_config must be a TrainingConfig, got {type(base).__name__}")
        if model_factory is not None and not callable(model_factory):
            raise HPOError("model_factory must be callable")
        if not isinstance(prefix, str) or not prefix:
            raise HPOError(f"prefix must be a non-empty string, got {prefix!r}")
        if not isinstance(temperature, int | float) or not (
            math.isfinite(temperature) and temperature > 0
        ):
            raise HPOError(f"temperature must be a finite number > 0, got {temperature!r}")
        if not isinstance(cooling, int | float) or not 0 < cooling <= 1:
            raise HPOError(f"cooling must be in (0, 1], got {cooling!r}")
        if max_steps is not None and (not _is_int(max_steps) or max_steps < 1):
            raise HPOError(f"max_steps must be an integer >= 1 or None, got {max_steps!r}")
        for value in self.space.get("layers", []):
            if not _is_int(value) or value < 1:
                raise HPOError(f"hyperparameter 'layers' needs integers >= 1, got {value!r}")
        for value in self.space.get("entanglement", []):
            if value not in _ENTANGLEMENTS:
                raise HPOError(f"entanglement must be one of {_ENTANGLEMENTS}, got {value!r}")
        for value in self.space.get("readout", []):
            if value not in _READOUTS:
                raise HPOError(f"readout must be one of {_READOUTS}, got {value!r}")
        # Every training value must make a valid config on its own (combinations are checked
        # when their trial starts).
        for name, values in self.space.items():
            if name in _TRAINING_HYPERPARAMETERS:
                for value in values:
                    try:
                        dataclasses.replace(base, **{name: value})
                    except (TrainingError, TypeError) as exc:
                        raise HPOError(f"hyperparameter {name!r}={value!r}: {exc}") from None
        self.db = db
        self.backend = backend
        self.strategy: Strategy = strategy
        self.n_trials = n_trials
        self.seed = seed
        self.metric = metric
        self.mode: Mode = mode
        self.base_config = base
        self.model_factory = model_factory
        self.prefix = prefix
        self.temperature = float(temperature)
        self.cooling = float(cooling)
        self.max_steps = max_steps
        self._names = list(self.space)
        self._sizes = [len(self.space[n]) for n in self._names]

    # ------------------------------------------------------------------ the grid
    @property
    def grid_size(self) -> int:
        return math.prod(self._sizes)

    def _params(self, point: tuple[int, ...]) -> Params:
        return {n: self.space[n][i] for n, i in zip(self._names, point, strict=True)}

    def _point(self, flat: int) -> tuple[int, ...]:
        """Mixed-radix decoding of a grid index (first name slowest, like the grid order)."""
        out: list[int] = []
        for size in reversed(self._sizes):
            flat, digit = divmod(flat, size)
            out.append(digit)
        return tuple(reversed(out))

    def _neighbours(self, point: tuple[int, ...]) -> list[tuple[int, ...]]:
        out: list[tuple[int, ...]] = []
        for axis, size in enumerate(self._sizes):
            for step in (-1, 1):
                j = point[axis] + step
                if 0 <= j < size:
                    out.append((*point[:axis], j, *point[axis + 1 :]))
        return out

    def _limit(self) -> int:
        return min(self.n_trials, self.grid_size) if self.n_trials else self.grid_size

    def _better(self, a: float, b: float) -> bool:
        """Whether score ``a`` beats ``b`` (NaN never beats anything)."""
        if math.isnan(a):
            return False
        if math.isnan(b):
            return True
        return a < b if self.mode == "min" else a > b

    # ------------------------------------------------------------------ one trial
    def _default_model(self, params: Params, info: DatasetInfo) -> QuantumModel:
        encoder = QuantumDataEncoder.from_contract(info.encoding) if info.encoding else None
        n_qubits = (encoder.n_qubits if encoder is not None else None) or info.dim
        classify = info.label_kind == "class"
        return QuantumModel(
            n_qubits,
            int(params.get("layers", 1)),
            encoding=encoder.encoder if encoder is not None else "angle",
            entanglement=cast(Entanglement, params.get("entanglement", "linear")),
            readout=cast(Readout, params.get("readout", "expectation")),
            task="classification" if classify else "regression",
            n_outputs=max(int(info.n_classes or 2), 2) if classify else 1,
            seed=self.seed,
            encoder=encoder,
        )

    async def _run_trial(
        self,
        k: int,
        params: Params,
        info: DatasetInfo,
        train_split: str,
        val_split: str | None,
        batch_size: int,
    ) -> Trial:
        run_id = f"{self.prefix}-trial-{k}"
        if await self.db.runs.exists(run_id):
            raise HPOError(f"run {run_id!r} already exists; use another prefix")
        training = {k_: v for k_, v in params.items() if k_ in _TRAINING_HYPERPARAMETERS}
        config = TrainingConfig.from_dict({**self.base_config.to_dict(), **training})
        if self.model_factory is not None:
            model = self.model_factory(dict(params))
        else:
            model = self._default_model(params, info)
        if not isinstance(model, QuantumModel):
            raise HPOError(f"model_factory must return a QuantumModel, got {type(model).__name__}")
        trainer = QuantumTrainer(config, self.db, self.backend)
        try:
            await self.db.runs.create(
                run_id,
                config={
                    "hyperparameters": dict(params),
                    "training": config.to_dict(),
                    "model": model.architecture(),
                    "hpo": {
                        "prefix": self.prefix,
                        "trial": k,
                        "strategy": self.strategy,
                        "metric": self.metric,
                        "mode": self.mode,
                        "seed": self.seed,
                        "dataset": info.name,
                        "dataset_version": info.version,
                    },
                },
                backend=trainer.backend.name,
                seed=config.seed,
            )
            train = self.db.create_ml_data_loader(
                info.name, batch_size, seed=config.seed, split=train_split, version=info.version
            )
            val = (
                None
                if val_split is None
                else self.db.create_ml_data_loader(
                    info.name, batch_size, shuffle=False, split=val_split, version=info.version
                )
            )
            history = await trainer.fit(model, train, val, run_id=run_id)
        finally:
            await trainer.aclose()
        final = history.final
        if self.metric not in final:
            raise HPOError(
                f"trial {run_id!r} recorded no {self.metric!r} (regression data has no "
                "accuracy; val_* metrics need a validation split)"
            )
        return Trial(k, run_id, dict(params), float(final[self.metric]), final, history.stop_reason)

    # ------------------------------------------------------------------ the search
    async def search(
        self,
        dataset: str,
        *,
        train_split: str = "train",
        val_split: str | None = "validation",
        batch_size: int = 16,
        version: int | None = None,
    ) -> HPOResult:
        """Run the trials on ``dataset`` (latest version by default) and return the best."""
        if not _is_int(batch_size) or batch_size < 1:
            raise HPOError(f"batch_size must be an integer >= 1, got {batch_size!r}")
        if val_split is None and self.metric.startswith("val_"):
            raise HPOError(f"metric {self.metric!r} needs a validation split")
        info = (await self.db.get_dataset(dataset, version)).info
        trials: list[Trial] = []

        async def evaluate(point: tuple[int, ...]) -> Trial:
            trial = await self._run_trial(
                len(trials), self._params(point), info, train_split, val_split, batch_size
            )
            trials.append(trial)
            return trial

        limit = self._limit()
        if self.strategy == "grid":
            for point in itertools.islice(itertools.product(*map(range, self._sizes)), limit):
                await evaluate(point)
        elif self.strategy == "random":
            rng = np.random.default_rng(self.seed)
            for flat in rng.choice(self.grid_size, size=limit, replace=False):
                await evaluate(self._point(int(flat)))
        else:
            await self._anneal(evaluate, limit)

        best = trials[0]
        for trial in trials[1:]:
            if self._better(trial.score, best.score):
                best = trial
        return HPOResult(
            self.strategy,
            self.metric,
            self.mode,
            dict(best.params),
            best.score,
            best.run_id,
            trials,
        )

    async def _anneal(self, evaluate: Callable[[tuple[int, ...]], Any], limit: int) -> None:
        rng = np.random.default_rng(self.seed)
        cache: dict[tuple[int, ...], float] = {}
        current = self._point(int(rng.integers(self.grid_size)))
        cache[current] = (await evaluate(current)).score
        max_steps = self.max_steps if self.max_steps is not None else 50 * limit
        sign = 1.0 if self.mode == "min" else -1.0
        step = 0
        while len(cache) < limit and step < max_steps:
            neighbours = self._neighbours(current)
            if not neighbours:
                break
            proposal = neighbours[int(rng.integers(len(neighbours)))]
            if proposal not in cache:
                cache[proposal] = (await evaluate(proposal)).score
            temperature = self.temperature * self.cooling**step
            step += 1
            cur, new = cache[current], cache[proposal]
            if math.isnan(new):
                continue
            delta = 0.0 if math.isnan(cur) else sign * (new - cur)
            if (
                math.isnan(cur)
                or delta <= 0
                or (temperature > 0 and rng.random() < math.exp(-delta / temperature))
            ):
                current = proposal
