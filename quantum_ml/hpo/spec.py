"""A study's settings: what every worker needs to run its trials, kept in the study.

``qdb hpo create NAME --config search.toml`` reads a :class:`StudySpec` from TOML and
stores it as the study's user attribute ``qdb_spec``; a worker on any machine reads it
back, so workers need only the database URL and the study's name::

    [study]
    dataset = "moons"          # its latest version when the study is created
    metric = "val_loss"        # val_loss, val_accuracy, train_loss, train_accuracy
    mode = "min"
    sampler = "tpe"            # grid, random, tpe, cmaes
    pruner = "median"          # none, median, successive_halving
    n_trials = 12
    budget_usd = 2.0           # optional: the study-wide budget in the ledger
    seed = 0

    [training]                 # TrainingConfig settings every trial shares
    epochs = 4

    [model]                    # model settings every trial shares
    layers = 1

    [space]
    learning_rate = { low = 0.01, high = 0.3, log = true }
    layers = [1, 2]
"""

from __future__ import annotations

import dataclasses
import math
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from ..errors import HPOError, TrainingError
from ..training.config import TrainingConfig
from .space import MODEL_HYPERPARAMETERS, SearchSpace, _check_model_setting, parse_parameter

__all__ = ["METRICS", "PRUNERS", "SAMPLERS", "StudySpec"]

Mode = Literal["min", "max"]
SAMPLERS = ("grid", "random", "tpe", "cmaes")
PRUNERS = ("none", "median", "successive_halving")
METRICS = ("val_loss", "val_accuracy", "train_loss", "train_accuracy")
_STUDY_KEYS = {
    "dataset", "dataset_version", "train_split", "val_split", "batch_size", "metric", "mode",
    "sampler", "pruner", "pruner_startup_trials", "pruner_warmup_epochs", "n_trials",
    "budget_usd", "trial_cost_usd", "seed", "backend", "heartbeat_s", "grace_s",
    "max_retries",
}  # fmt: skip
_TABLES = {"study", "training", "model", "space"}


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _positive(value: object) -> bool:
    return (
        isinstance(value, int | float)
        and not isinstance(value, bool)
        and (math.isfinite(value) and value > 0)
    )


@dataclass(frozen=True)
class StudySpec:
    """Everything a trial needs besides its sampled hyperparameters.

    ``training`` holds :class:`TrainingConfig` settings shared by every trial and
    ``model`` the shared model settings (``layers``, ``entanglement``, ``readout``).
    ``n_trials`` ``None`` means the whole grid (grid sampler only). ``budget_usd`` is the
    study's budget in the ledger (budget ``hpo:NAME``), shared by all its trials;
    ``trial_cost_usd`` the cost a trial is expected to have before one has finished.
    A worker that stops heartbeating for ``grace_s`` has its trial failed and, up to
    ``max_retries`` times, run again from the run's last checkpoint.
    """

    dataset: str
    space: SearchSpace
    dataset_version: int | None = None
    train_split: str = "train"
    val_split: str | None = "validation"
    batch_size: int = 16
    metric: str = "val_loss"
    mode: Mode = "min"
    sampler: str = "tpe"
    pruner: str = "median"
    pruner_startup_trials: int = 2
    pruner_warmup_epochs: int = 0
    n_trials: int | None = None
    budget_usd: float | None = None
    trial_cost_usd: float | None = None
    seed: int = 0
    backend: str | None = None
    heartbeat_s: float = 10.0
    grace_s: float = 60.0
    max_retries: int = 1
    training: dict[str, Any] = field(default_factory=dict)
    model: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not isinstance(self.dataset, str) or not self.dataset:
            raise HPOError(f"dataset must be a dataset's name, got {self.dataset!r}")
        if not isinstance(self.space, SearchSpace):
            raise HPOError("space must be a SearchSpace")
        if self.dataset_version is not None and (
            not _is_int(self.dataset_version) or self.dataset_version < 1
        ):
            raise HPOError(f"dataset_version must be an integer >= 1, got {self.dataset_version!r}")
        if not _is_int(self.batch_size) or self.batch_size < 1:
            raise HPOError(f"batch_size must be an integer >= 1, got {self.batch_size!r}")
        if self.metric not in METRICS:
            raise HPOError(f"metric must be one of {METRICS}, got {self.metric!r}")
        if self.mode not in ("min", "max"):
            raise HPOError(f"mode must be 'min' or 'max', got {self.mode!r}")
        if self.val_split is None and self.metric.startswith("val_"):
            raise HPOError(f"metric {self.metric!r} needs a validation split (val_split)")
        if self.sampler == "annealing":
            raise HPOError(
                "the annealing strategy is gone: use sampler='tpe', which also concentrates "
                "on the good region of the space (or 'grid', 'random', 'cmaes')"
            )
        if self.sampler not in SAMPLERS:
            raise HPOError(f"sampler must be one of {SAMPLERS}, got {self.sampler!r}")
        if self.pruner not in PRUNERS:
            raise HPOError(f"pruner must be one of {PRUNERS}, got {self.pruner!r}")
        for name in ("pruner_startup_trials", "pruner_warmup_epochs", "max_retries"):
            value = getattr(self, name)
            if not _is_int(value) or value < 0:
                raise HPOError(f"{name} must be an integer >= 0, got {value!r}")
        if self.n_trials is not None and (not _is_int(self.n_trials) or self.n_trials < 1):
            raise HPOError(f"n_trials must be an integer >= 1, got {self.n_trials!r}")
        if self.sampler == "grid":
            self.space.grid()  # HPOError for a float range without a step
        if self.n_trials is None and self.sampler != "grid":
            raise HPOError("give n_trials: only a grid search has a natural end (the grid)")
        for name in ("budget_usd", "trial_cost_usd"):
            value = getattr(self, name)
            if value is not None and not (_positive(value) or value == 0):
                raise HPOError(f"{name} must be a finite number >= 0, got {value!r}")
        if not _is_int(self.seed) or self.seed < 0:
            raise HPOError(f"seed must be a non-negative integer, got {self.seed!r}")
        if self.backend is not None and (not isinstance(self.backend, str) or not self.backend):
            raise HPOError(f"backend must be a registered backend's name, got {self.backend!r}")
        if not _positive(self.heartbeat_s) or not _positive(self.grace_s):
            raise HPOError("heartbeat_s and grace_s must be numbers > 0")
        if self.grace_s <= self.heartbeat_s:
            raise HPOError(
                f"grace_s ({self.grace_s}) must be longer than heartbeat_s ({self.heartbeat_s})"
            )
        for name, value in (("train_split", self.train_split), ("val_split", self.val_split)):
            if value is not None and (not isinstance(value, str) or not value):
                raise HPOError(f"{name} must be a split's name, got {value!r}")
        self.training_config()  # checks the shared training settings
        unknown = sorted(set(self.model) - set(MODEL_HYPERPARAMETERS))
        if unknown:
            raise HPOError(
                f"unknown model settings {unknown}; the model takes {list(MODEL_HYPERPARAMETERS)}"
            )
        for name, value in self.model.items():
            _check_model_setting(name, parse_parameter(name, [value]))
        shared = sorted(set(self.space) & (set(self.training) | set(self.model)))
        if shared:
            raise HPOError(f"{shared} are both searched and fixed: give each in one place")

    # ------------------------------------------------------------------ settings
    def training_config(self, params: Mapping[str, Any] | None = None) -> TrainingConfig:
        """The TrainingConfig of a trial with ``params`` (the shared settings alone if None)."""
        values = {**self.training}
        for name, value in (params or {}).items():
            if name not in MODEL_HYPERPARAMETERS:
                values[name] = value
        try:
            config = TrainingConfig.from_dict(values)
        except (TrainingError, TypeError) as exc:
            raise HPOError(f"the training settings are not valid: {exc}") from None
        return config

    @property
    def direction(self) -> str:
        return "minimize" if self.mode == "min" else "maximize"

    # ------------------------------------------------------------------ persistence
    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            out[f.name] = value.to_json() if isinstance(value, SearchSpace) else value
        return out

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> StudySpec:
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - names)
        if unknown:
            raise HPOError(f"unknown study settings {unknown}")
        values = dict(data)
        if "space" not in values:
            raise HPOError("a study needs a search space ([space])")
        values["space"] = SearchSpace(values["space"], _base(values.get("training", {})))
        try:
            return cls(**values)
        except TypeError as exc:
            raise HPOError(f"the study settings are not valid: {exc}") from None

    @classmethod
    def from_toml(cls, path: str | Path) -> StudySpec:
        """Read ``[study]``, ``[training]``, ``[model]`` and ``[space]`` from a TOML file."""
        file = Path(path)
        try:
            data = tomllib.loads(file.read_text(encoding="utf-8"))
        except OSError as exc:
            raise HPOError(f"cannot read the study config {file}: {exc.strerror or exc}") from None
        except tomllib.TOMLDecodeError as exc:
            raise HPOError(f"{file} is not valid TOML: {exc}") from None
        unknown = sorted(set(data) - _TABLES)
        if unknown:
            raise HPOError(f"{file}: unknown tables {unknown}; expected {sorted(_TABLES)}")
        study = data.get("study", {})
        extra = sorted(set(study) - _STUDY_KEYS)
        if extra:
            raise HPOError(f"{file}: unknown [study] settings {extra}")
        return cls.from_json(
            {
                **study,
                "training": data.get("training", {}),
                "model": data.get("model", {}),
                "space": data.get("space", {}),
            }
        )

    def differences(self, other: StudySpec) -> list[str]:
        """The names of the settings that differ from ``other``'s."""
        mine, theirs = self.to_json(), other.to_json()
        return sorted(k for k in mine if mine[k] != theirs.get(k))


def _base(training: object) -> TrainingConfig:
    if not isinstance(training, Mapping):
        raise HPOError("[training] must be a table of TrainingConfig settings")
    try:
        return TrainingConfig.from_dict(dict(training))
    except (TrainingError, TypeError) as exc:
        raise HPOError(f"the training settings are not valid: {exc}") from None
