"""The typed state of a training run: where it is, and what it has recorded so far."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

__all__ = ["History", "TrainingState"]


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
        return dataclasses.asdict(self)

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


@dataclass(slots=True)
class TrainingState:
    """Where a run is: the loader position, the epoch's running sums, and how it ends.

    Everything here goes into every checkpoint, so a resumed run continues from exactly
    this point (the batch order itself comes from the loader's ``(seed, epoch)``).
    """

    #: The epoch in progress and how many of its batches are done.
    epoch: int = 0
    batch: int = 0
    #: Optimizer steps taken over the whole run.
    step: int = 0
    #: This epoch's sum of batch loss x batch size, right predictions and samples.
    loss_sum: float = 0.0
    correct: int = 0
    count: int = 0
    classify: bool = True
    #: This epoch's cost of jobs, in USD.
    cost: float = 0.0
    finished: bool = False
    #: The metrics of the last finished epoch (``{}`` mid-epoch before any epoch ended).
    epoch_metrics: dict[str, float] = field(default_factory=dict)
    history: History = field(default_factory=History)
    #: The encoding differences accepted with ``allow_encoding_mismatch``.
    encoding_override: list[str] = field(default_factory=list)

    def reset_epoch(self) -> None:
        self.epoch += 1
        self.batch = 0
        self.loss_sum = 0.0
        self.correct = 0
        self.count = 0
        self.classify = True
        self.cost = 0.0

    def to_state(self) -> dict[str, Any]:
        out = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}
        out["history"] = self.history.to_state()
        out["epoch_metrics"] = dict(self.epoch_metrics)
        out["encoding_override"] = list(self.encoding_override)
        return out

    @classmethod
    def from_state(cls, state: Mapping[str, Any]) -> TrainingState:
        return cls(
            epoch=int(state["epoch"]),
            batch=int(state["batch"]),
            step=int(state["step"]),
            loss_sum=float(state["loss_sum"]),
            correct=int(state["correct"]),
            count=int(state["count"]),
            classify=bool(state["classify"]),
            cost=float(state["cost"]),
            finished=bool(state["finished"]),
            epoch_metrics={str(k): float(v) for k, v in state["epoch_metrics"].items()},
            history=History.from_state(state["history"]),
            encoding_override=[str(v) for v in state["encoding_override"]],
        )
