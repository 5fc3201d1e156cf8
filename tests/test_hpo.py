"""QuantumHPOSearch: grid, random and annealing strategies, runs in the registry, validation."""

from __future__ import annotations

import itertools
import math
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from backends.errors import QuantumDBError
from backends.simulator import SimulatorBackend
from quantum_db import QuantumDatabase
from quantum_ml.hpo import HPOError, HPOResult, QuantumHPOSearch
from quantum_ml.trainer import TrainingConfig

SPACE: dict[str, list[Any]] = {
    "learning_rate": [0.05, 0.2],
    "layers": [1, 2],
    "entanglement": ["linear", "full"],
}
BASE = TrainingConfig(epochs=2, checkpoint_every=100, seed=0)


def url(tmp_path: Path, name: str = "hpo.sqlite") -> str:
    return f"sqlite+aiosqlite:///{tmp_path / name}"


async def store(db: QuantumDatabase) -> None:
    rng = np.random.default_rng(0)
    y = np.arange(60) % 2
    X = np.where(y[:, None] == 1, 1.0, -1.0) + rng.normal(scale=0.5, size=(60, 2))
    await db.store_training_data(
        "tiny", X, y, splits={"train": 0.75, "validation": 0.25}, encoding={"scaling": "minmax"}
    )


async def run_search(tmp_path: Path, name: str = "hpo.sqlite", **kwargs: Any) -> HPOResult:
    async with QuantumDatabase(url(tmp_path, name)).connect() as db:
        await store(db)
        kwargs.setdefault("space", SPACE)
        kwargs.setdefault("base_config", BASE)
        search = QuantumHPOSearch(db, SimulatorBackend(), **kwargs)
        return await search.search("tiny", batch_size=15)


def key(params: dict[str, Any]) -> tuple[Any, ...]:
    return tuple(params[name] for name in SPACE)


def best_of(result: HPOResult, mode: str = "min") -> float:
    scores = [t.score for t in result.trials]
    return min(scores) if mode == "min" else max(scores)


# ---------------------------------------------------------------- grid
async def test_grid_visits_every_combination_once_and_records_runs(tmp_path: Path) -> None:
    async with QuantumDatabase(url(tmp_path)).connect() as db:
        await store(db)
        search = QuantumHPOSearch(db, SimulatorBackend(), space=SPACE, base_config=BASE)
        result = await search.search("tiny", batch_size=15)
        runs = {r.id: r for r in await db.runs.list()}

    expected = list(itertools.product(*SPACE.values()))
    assert [key(t.params) for t in result.trials] == expected  # deterministic order, no repeat
    assert [t.run_id for t in result.trials] == [f"hpo-trial-{k}" for k in range(8)]
    assert all(math.isfinite(t.score) for t in result.trials)
    assert result.best_score == best_of(result)
    best = next(t for t in result.trials if t.score == result.best_score)
    assert result.best_params == best.params and result.best_run_id == best.run_id
    assert result.best_trial is best
    for trial in result.trials:
        run = runs[trial.run_id]
        assert run.config["hyperparameters"] == trial.params
        assert run.config["training"]["learning_rate"] == trial.params["learning_rate"]
        assert run.config["model"]["layers"] == trial.params["layers"]
        assert run.config["model"]["entanglement"] == trial.params["entanglement"]
        assert run.config["hpo"]["trial"] == trial.index
        assert run.status == "finished"
        assert trial.metrics["val_loss"] == trial.score


async def test_grid_n_trials_caps_in_order_and_max_mode(tmp_path: Path) -> None:
    result = await run_search(
        tmp_path,
        n_trials=3,
        metric="val_accuracy",
        mode="max",
        base_config=TrainingConfig(epochs=1, seed=0),
    )
    assert [key(t.params) for t in result.trials] == list(itertools.product(*SPACE.values()))[:3]
    assert result.best_score == best_of(result, "max")
    assert result.best_run_id == next(
        t.run_id for t in result.trials if t.score == result.best_score
    )


# ---------------------------------------------------------------- random
async def test_random_is_seeded_and_without_repeats(tmp_path: Path) -> None:
    a = await run_search(tmp_path, "a.sqlite", strategy="random", n_trials=4, seed=7)
    b = await run_search(tmp_path, "b.sqlite", strategy="random", n_trials=4, seed=7)
    keys = [key(t.params) for t in a.trials]
    assert len(keys) == 4 and len(set(keys)) == 4
    assert set(keys) <= set(itertools.product(*SPACE.values()))
    assert keys == [key(t.params) for t in b.trials]
    assert [t.score for t in a.trials] == [t.score for t in b.trials]
    assert a.best_params == b.best_params and a.best_score == best_of(a)


# ---------------------------------------------------------------- annealing
def _index(params: dict[str, Any]) -> tuple[int, ...]:
    return tuple(SPACE[name].index(params[name]) for name in SPACE)


async def test_annealing_is_seeded_never_repeats_and_returns_best(tmp_path: Path) -> None:
    a = await run_search(tmp_path, "a.sqlite", strategy="annealing", n_trials=5, seed=3)
    b = await run_search(tmp_path, "b.sqlite", strategy="annealing", n_trials=5, seed=3)
    points = [_index(t.params) for t in a.trials]
    assert len(points) == 5 and len(set(points)) == 5
    assert points == [_index(t.params) for t in b.trials]
    assert [t.score for t in a.trials] == [t.score for t in b.trials]
    assert a.best_score == best_of(a)
    assert a.best_params == next(t.params for t in a.trials if t.score == a.best_score)
    # Every new point is a neighbour (one hyperparameter, one step) of one seen before.
    for k, point in enumerate(points[1:], start=1):
        assert any(
            sum(abs(p - q) for p, q in zip(point, prev, strict=True)) == 1 for prev in points[:k]
        )


# ---------------------------------------------------------------- validation
@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"space": {}}, "non-empty"),
        ({"space": {"learning_rate": []}}, "non-empty list"),
        ({"space": {"learning_rate": 0.1}}, "non-empty list"),
        ({"space": {"depth": [1, 2]}}, "unknown hyperparameters"),
        ({"space": {"learning_rate": [0.1, 0.1]}}, "twice"),
        ({"space": {"learning_rate": [-1.0]}}, "learning_rate"),
        ({"space": {"entanglement": ["ring"]}}, "entanglement"),
        ({"space": {"layers": [0]}}, "layers"),
        ({"space": SPACE, "strategy": "bayesian"}, "strategy"),
        ({"space": SPACE, "n_trials": 0}, "n_trials"),
        ({"space": SPACE, "n_trials": 1.5}, "n_trials"),
        ({"space": SPACE, "metric": "f1"}, "metric"),
        ({"space": SPACE, "mode": "best"}, "mode"),
        ({"space": SPACE, "seed": -1}, "seed"),
        ({"space": SPACE, "cooling": 0.0}, "cooling"),
    ],
)
async def test_bad_inputs_raise_hpo_error(
    tmp_path: Path, kwargs: dict[str, Any], match: str
) -> None:
    async with QuantumDatabase(url(tmp_path)).connect() as db:
        with pytest.raises(HPOError, match=match) as info:
            QuantumHPOSearch(db, SimulatorBackend(), base_config=BASE, **kwargs)
    assert isinstance(info.value, QuantumDBError) and isinstance(info.value, ValueError)


async def test_existing_run_and_bad_search_arguments_raise(tmp_path: Path) -> None:
    async with QuantumDatabase(url(tmp_path)).connect() as db:
        await store(db)
        search = QuantumHPOSearch(
            db, SimulatorBackend(), space={"layers": [1]}, base_config=BASE, prefix="dup"
        )
        with pytest.raises(HPOError, match="batch_size"):
            await search.search("tiny", batch_size=0)
        with pytest.raises(HPOError, match="validation split"):
            await search.search("tiny", val_split=None)
        await db.runs.create("dup-trial-0")
        with pytest.raises(HPOError, match="already exists"):
            await search.search("tiny", batch_size=15)
