"""Hyperparameter studies on Optuna: samplers on SQLite and PostgreSQL, pruning, the study
budget, bad input, and worker processes sharing one PostgreSQL study (one of them killed)."""

from __future__ import annotations

import asyncio
import math
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from backends.circuit import Circuit
from backends.errors import QuantumDBError
from backends.simulator import SimulatorBackend
from quantum_db import QuantumDatabase
from quantum_ml.hpo import (
    HPOError,
    QuantumHPOSearch,
    StudySpec,
    create_study,
    optuna_url,
    run_worker,
    study_report,
)
from quantum_ml.hpo.space import SearchSpace
from quantum_ml.trainer import TrainingConfig

SPACE: dict[str, Any] = {"learning_rate": [0.05, 0.2], "layers": [1, 2]}
BASE = TrainingConfig(epochs=2, checkpoint_every=100, seed=0)


def sqlite_url(tmp_path: Path, name: str = "hpo.sqlite") -> str:
    return f"sqlite+aiosqlite:///{tmp_path / name}"


async def store(db: QuantumDatabase, n: int = 60) -> None:
    rng = np.random.default_rng(0)
    y = np.arange(n) % 2
    X = np.where(y[:, None] == 1, 1.0, -1.0) + rng.normal(scale=0.5, size=(n, 2))
    await db.store_training_data(
        "tiny", X, y, splits={"train": 0.75, "validation": 0.25}, encoding={"scaling": "minmax"}
    )


def optuna_trials(url: str, name: str) -> list[Any]:
    import optuna

    storage = optuna.storages.RDBStorage(optuna_url(url))
    try:
        return optuna.load_study(study_name=name, storage=storage).get_trials()
    finally:
        storage.engine.dispose()


# ---------------------------------------------------------------- samplers, both dialects
@pytest.mark.parametrize("sampler", ["grid", "random", "tpe"])
async def test_samplers_run_trials_as_runs(database_url: str, sampler: str) -> None:
    async with QuantumDatabase(database_url).connect() as db:
        await store(db)
        search = QuantumHPOSearch(
            db,
            SimulatorBackend(),
            space=SPACE if sampler == "grid" else {**SPACE, "learning_rate": {"low": 0.01,
                                                   "high": 0.3, "log": True}},
            sampler=sampler,
            n_trials=None if sampler == "grid" else 4,
            pruner="none",
            base_config=BASE,
            study_name=f"s-{sampler}",
        )  # fmt: skip
        result = await search.search("tiny", batch_size=15)
        runs = {r.id: r for r in await db.runs.list()}
        report = await study_report(db, f"s-{sampler}")

    assert len(result.trials) == 4 and {t.state for t in result.trials} == {"complete"}
    if sampler == "grid":  # every combination exactly once
        assert sorted((t.params["learning_rate"], t.params["layers"]) for t in result.trials) == [
            (0.05, 1), (0.05, 2), (0.2, 1), (0.2, 2)]  # fmt: skip
    else:
        assert all(0.01 <= t.params["learning_rate"] <= 0.3 for t in result.trials)
        assert len({t.params["learning_rate"] for t in result.trials}) == 4
    assert result.best_score == min(t.score for t in result.trials)
    assert result.best_trial.params == result.best_params
    for trial in result.trials:
        run = runs[trial.run_id]  # each trial is a run of the registry, linked both ways
        assert trial.run_id == f"s-{sampler}-trial-{trial.number}"
        assert run.status == "finished" and trial.run_status == "finished"
        assert run.config["hyperparameters"] == trial.params
        assert run.config["training"]["learning_rate"] == trial.params["learning_rate"]
        assert run.config["model"]["layers"] == trial.params["layers"]
        assert run.config["hpo"] == {
            "study": f"s-{sampler}", "trial": trial.number, "sampler": sampler,
            "pruner": "none", "metric": "val_loss", "mode": "min", "seed": 0,
            "dataset": "tiny", "dataset_version": 1}  # fmt: skip
        assert trial.score == pytest.approx(trial.metrics["val_loss"])
    assert report.best is not None and report.best.number == result.best_trial.number
    assert set(report.importances) == {"learning_rate", "layers"}
    assert math.isclose(sum(report.importances.values()), 1.0)


async def test_tpe_is_seeded(tmp_path: Path) -> None:
    found = []
    for name in ("a.sqlite", "b.sqlite"):
        async with QuantumDatabase(sqlite_url(tmp_path, name)).connect() as db:
            await store(db)
            search = QuantumHPOSearch(
                db, space={"learning_rate": {"low": 0.01, "high": 0.3}, "layers": [1, 2]},
                sampler="tpe", n_trials=3, seed=7, pruner="none", base_config=BASE,
            )  # fmt: skip
            result = await search.search("tiny", batch_size=15)
        found.append([(t.params, t.score) for t in result.trials])
    assert found[0] == found[1]


async def test_optuna_tables_are_their_own(database_url: str) -> None:
    """Optuna's tables (and its alembic_version) never touch the registry's schema."""
    from sqlalchemy import create_engine, inspect

    from quantum_db.registry import Registry, current_revision, head_revision

    async with QuantumDatabase(database_url).connect() as db:
        await store(db)
        spec = StudySpec(dataset="tiny", space=SearchSpace({"layers": [1]}), sampler="grid",
                         training={"epochs": 1})  # fmt: skip
        await create_study(db, "own", spec)
    registry = Registry(database_url)
    try:
        assert await current_revision(registry) == head_revision()
    finally:
        await registry.aclose()
    engine = create_engine(optuna_url(database_url))
    try:
        tables = set(inspect(engine).get_table_names())
    finally:
        engine.dispose()
    assert {"studies", "trials", "alembic_version"} <= tables
    assert not {"runs", "metrics", "budget_ledger"} & tables


# ---------------------------------------------------------------- pruning
async def test_pruning_stops_bad_trials(tmp_path: Path) -> None:
    async with QuantumDatabase(sqlite_url(tmp_path)).connect() as db:
        await store(db)
        search = QuantumHPOSearch(
            db,
            space={"learning_rate": [0.3, 0.2, 0.002, 0.001]},
            sampler="grid",
            seed=5,  # the grid's order under seed 5: the good rates first
            pruner="median",
            pruner_startup_trials=2,
            base_config=TrainingConfig(epochs=4, checkpoint_every=100, seed=0),
            study_name="prune",
        )
        result = await search.search("tiny", batch_size=15)
        runs = {r.id: r for r in await db.runs.list()}
        epochs = {
            t.run_id: len(np.asarray((await db.metrics.history(t.run_id, "val_loss")).values))
            for t in result.trials
        }
        trials = optuna_trials(sqlite_url(tmp_path), "prune")

    pruned = [t for t in result.trials if t.state == "pruned"]
    assert pruned, [(t.params, t.state) for t in result.trials]
    by_number = {t.number: t for t in trials}
    for trial in pruned:
        run = runs[trial.run_id]
        assert run.status == "stopped" and run.reason is not None and "pruned" in run.reason
        assert epochs[trial.run_id] < 4  # stopped before its last epoch
        # Optuna saw every epoch's val_loss, the same values the registry holds.
        reported = by_number[trial.number].intermediate_values
        assert len(reported) == epochs[trial.run_id]
    for trial in result.trials:
        if trial.state == "complete":
            assert epochs[trial.run_id] == 4 and runs[trial.run_id].status == "finished"
    assert result.best_trial.state == "complete"
    assert all(t.params["learning_rate"] < 0.01 for t in pruned)


# ---------------------------------------------------------------- the study budget
class PricedSimulator(SimulatorBackend):
    """The simulator at $0.01 per circuit execution (one per binding)."""

    name = "priced-simulator"

    def estimate_cost(self, circuit: Circuit, shots: int | None) -> float:
        return 0.01


async def test_study_budget_stops_new_trials(tmp_path: Path) -> None:
    from backends.accounting import Budget

    async with QuantumDatabase(sqlite_url(tmp_path)).connect() as db:
        await store(db)
        search = QuantumHPOSearch(
            db,
            PricedSimulator(),
            space={"learning_rate": {"low": 0.05, "high": 0.3}},
            sampler="random",
            n_trials=6,
            pruner="none",
            budget_usd=1.5,
            base_config=TrainingConfig(epochs=1, checkpoint_every=100, seed=0),
            study_name="budget",
        )
        result = await search.search("tiny", batch_size=15)
        exposure = await db.accounting.exposure(Budget(1.5, "hpo:budget"))
        ledger = await db.accounting.ledger("hpo:budget")

    # A trial: 3 steps of 15 bindings and a validation pass of 15 at $0.01 = $0.60.
    assert [t.cost_usd for t in result.trials] == pytest.approx([0.6, 0.6])
    assert result.stop == "budget" and len(result.trials) == 2
    assert exposure == pytest.approx(1.2) and exposure <= 1.5
    assert ledger  # the trials' jobs went through the ledger


# ---------------------------------------------------------------- bad input
@pytest.mark.parametrize(
    ("space", "match"),
    [
        ({"learning_rate": []}, "empty list of choices"),
        ({"learning_rate": {"low": 0.3, "high": 0.01}}, "reversed"),
        ({"learning_rate": {"low": 0.1, "high": 0.1}}, "reversed or empty"),
        ({"learning_rate": {"low": 0.0, "high": 0.1, "log": True}}, "log range"),
        ({"learning_rat": [0.1]}, "did you mean 'learning_rate'"),
        ({"depth": [1, 2]}, "unknown hyperparameters"),
        ({"learning_rate": [0.1, 0.1]}, "twice"),
        ({"learning_rate": [-1.0]}, "learning_rate"),
        ({"entanglement": ["ring"]}, "entanglement"),
        ({"layers": [0]}, "layers"),
        ({"layers": {"low": 1.0, "high": 2.5}}, "layers"),
        ({}, "non-empty"),
    ],
)
async def test_bad_spaces_are_refused_before_anything_is_stored(
    tmp_path: Path, space: dict[str, Any], match: str
) -> None:
    async with QuantumDatabase(sqlite_url(tmp_path)).connect() as db:
        await store(db)
        with pytest.raises(HPOError, match=match) as info:
            QuantumHPOSearch(db, space=space, n_trials=2, base_config=BASE)
        assert await db.runs.list() == []
    assert isinstance(info.value, QuantumDBError) and isinstance(info.value, ValueError)
    assert not (tmp_path / "hpo.optuna.sqlite").exists()


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"sampler": "annealing"}, "annealing strategy is gone"),
        ({"sampler": "bayesian"}, "sampler"),
        ({"pruner": "hyperband"}, "pruner"),
        ({"n_trials": 0}, "n_trials"),
        ({"metric": "f1"}, "metric"),
        ({"mode": "best"}, "mode"),
        ({"seed": -1}, "seed"),
        ({"sampler": "tpe", "n_trials": None}, "give n_trials"),
        ({"budget_usd": -1.0}, "budget_usd"),
        ({"heartbeat_s": 5.0, "grace_s": 2.0}, "grace_s"),
    ],
)
async def test_bad_settings_raise_hpo_error(
    tmp_path: Path, kwargs: dict[str, Any], match: str
) -> None:
    async with QuantumDatabase(sqlite_url(tmp_path)).connect() as db:
        with pytest.raises(HPOError, match=match):
            QuantumHPOSearch(db, space=SPACE, base_config=BASE, **{"n_trials": 2, **kwargs})


async def test_a_float_range_has_no_grid(tmp_path: Path) -> None:
    async with QuantumDatabase(sqlite_url(tmp_path)).connect() as db:
        with pytest.raises(HPOError, match="grid search needs"):
            QuantumHPOSearch(db, space={"learning_rate": {"low": 0.1, "high": 0.2}},
                             sampler="grid", base_config=BASE)  # fmt: skip


async def test_a_study_with_another_space_is_refused_and_kept(database_url: str) -> None:
    async with QuantumDatabase(database_url).connect() as db:
        await store(db)
        spec = StudySpec(dataset="tiny", space=SearchSpace({"layers": [1, 2]}),
                         sampler="grid", training={"epochs": 1})  # fmt: skip
        created, new = await create_study(db, "fixed", spec)
        assert new and created.dataset_version == 1
        again, new = await create_study(db, "fixed", spec)  # the same settings: found
        assert not new and again == created
        other = StudySpec(dataset="tiny", space=SearchSpace({"layers": [1, 3]}),
                          sampler="grid", training={"epochs": 1})  # fmt: skip
        with pytest.raises(HPOError, match=r"exists with other settings \(space\)"):
            await create_study(db, "fixed", other)
        assert (await study_report(db, "fixed")).spec == created  # unchanged
        with pytest.raises(QuantumDBError, match="nope"):
            await create_study(db, "x", StudySpec(dataset="nope", space=SearchSpace(SPACE),
                                                  sampler="grid"))  # fmt: skip
        with pytest.raises(HPOError, match="no samples in split 'test'"):
            await create_study(db, "x", StudySpec(dataset="tiny", space=SearchSpace(SPACE),
                                                  sampler="grid", val_split="test"))  # fmt: skip
        assert await db.runs.list() == []


async def test_a_worker_on_a_database_without_the_study(tmp_path: Path) -> None:
    async with QuantumDatabase(sqlite_url(tmp_path)).connect() as db:
        with pytest.raises(HPOError, match=r"no study 'ghost'.*qdb hpo create ghost"):
            await run_worker(db, "ghost")
        assert not (tmp_path / "hpo.optuna.sqlite").exists()  # nothing created
        await store(db)
        spec = StudySpec(dataset="tiny", space=SearchSpace({"layers": [1]}), sampler="grid")
        await create_study(db, "real", spec)
        with pytest.raises(HPOError, match=r"no study 'ghost'.*\['real'\]"):
            await run_worker(db, "ghost")


async def test_runs_of_an_earlier_study_are_not_taken_over(tmp_path: Path) -> None:
    async with QuantumDatabase(sqlite_url(tmp_path)).connect() as db:
        await store(db)
        await db.runs.create("dup-trial-0")
        spec = StudySpec(dataset="tiny", space=SearchSpace({"layers": [1]}), sampler="grid")
        with pytest.raises(HPOError, match="runs named like study 'dup'"):
            await create_study(db, "dup", spec)
        assert [r.id for r in await db.runs.list()] == ["dup-trial-0"]


def test_toml_spec(tmp_path: Path) -> None:
    path = tmp_path / "s.toml"
    path.write_text(
        '[study]\ndataset = "tiny"\nsampler = "tpe"\nn_trials = 3\nbudget_usd = 2.0\n'
        '[training]\ncheckpoint_every = 5\n[model]\nentanglement = "full"\n'
        "[space]\nlearning_rate = { low = 0.01, high = 0.3, log = true }\n"
        "layers = { choices = [1, 2] }\nepochs = { low = 1, high = 4 }\n"
    )
    spec = StudySpec.from_toml(path)
    assert spec.space.to_json() == {
        "learning_rate": {"type": "float", "low": 0.01, "high": 0.3, "log": True, "step": None},
        "layers": {"type": "choice", "choices": [1, 2]},
        "epochs": {"type": "int", "low": 1, "high": 4, "log": False, "step": 1},
    }
    assert StudySpec.from_json(spec.to_json()) == spec
    path.write_text('[study]\ndataset = "tiny"\nn_trials = 2\n[space]\nlayers = [1]\n[extra]\n')
    with pytest.raises(HPOError, match="unknown tables"):
        StudySpec.from_toml(path)
    path.write_text('[study]\ndataset = "tiny"\nn_trial = 2\n[space]\nlayers = [1]\n')
    with pytest.raises(HPOError, match=r"unknown \[study\] settings \['n_trial'\]"):
        StudySpec.from_toml(path)
    path.write_text('[study]\ndataset = "tiny"\nn_trials = 2\n[space]\nlayers = [1]\n'
                    '[training]\nlayers = 2\n')  # fmt: skip
    with pytest.raises(HPOError, match="training settings"):
        StudySpec.from_toml(path)
    path.write_text("[study\n")
    with pytest.raises(HPOError, match="not valid TOML"):
        StudySpec.from_toml(path)


# ---------------------------------------------------------------- workers in processes
def _worker(url: str, name: str, *extra: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "quantum_ml.cli", "--url", url, "hpo", "worker", name, *extra],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )


def _create(url: str, name: str, toml: str, tmp_path: Path) -> None:
    path = tmp_path / f"{name}.toml"
    path.write_text(toml)
    done = subprocess.run(
        [sys.executable, "-m", "quantum_ml.cli", "--url", url, "hpo", "create", name,
         "--config", str(path)],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr


STUDY_TOML = """
[study]
dataset = "tiny"
sampler = "random"
pruner = "none"
n_trials = 12
batch_size = 15
heartbeat_s = 1
grace_s = 4
max_retries = 1

[training]
epochs = {epochs}
checkpoint_every = 2

[space]
learning_rate = {{ low = 0.02, high = 0.3 }}
layers = [1, 2]
"""


async def _stored(url: str) -> None:
    async with QuantumDatabase(url).connect() as db:
        await store(db)


@pytest.mark.postgres
@pytest.mark.slow
async def test_three_workers_share_one_postgres_study(postgres_url: str, tmp_path: Path) -> None:
    await _stored(postgres_url)
    _create(postgres_url, "shared", STUDY_TOML.format(epochs=2), tmp_path)
    workers = [_worker(postgres_url, "shared") for _ in range(3)]
    outputs = [await asyncio.to_thread(w.communicate, timeout=300) for w in workers]
    assert [w.returncode for w in workers] == [0, 0, 0], outputs

    async with QuantumDatabase(postgres_url).connect() as db:
        report = await study_report(db, "shared")
        runs = await db.runs.list()
        steps = {r.id: (await db.metrics.history(r.id, "loss")).steps for r in runs}
    assert len(report.trials) == 12 and report.counts == {"complete": 12}
    assert sorted(t.number for t in report.trials) == list(range(12))
    # Every trial ran to completion exactly once, as its own finished run.
    assert sorted(r.id for r in runs) == sorted(f"shared-trial-{k}" for k in range(12))
    assert {r.status for r in runs} == {"finished"}
    for run_id, logged in steps.items():
        assert list(np.asarray(logged)) == list(range(1, 7)), run_id  # 2 epochs x 3 steps
    # The work was shared: each worker process ran some of the trials.
    ran_by = [sum(line.startswith("trial ") for line in out.splitlines()) for out, _ in outputs]
    assert sum(ran_by) == 12 and all(n >= 1 for n in ran_by), ran_by


@pytest.mark.postgres
@pytest.mark.slow
async def test_a_killed_worker_trial_is_retried_and_the_study_finishes(
    postgres_url: str, tmp_path: Path
) -> None:
    import optuna
    from optuna.trial import TrialState

    await _stored(postgres_url)
    _create(postgres_url, "killed", STUDY_TOML.format(epochs=12), tmp_path)
    workers = [_worker(postgres_url, "killed") for _ in range(3)]
    victim = workers[0]
    storage = optuna.storages.RDBStorage(optuna_url(postgres_url))
    killed_trial = None
    deadline = time.monotonic() + 240
    async with QuantumDatabase(postgres_url).connect() as db:
        while killed_trial is None and time.monotonic() < deadline:
            study = optuna.load_study(study_name="killed", storage=storage)
            for t in study.get_trials(states=(TrialState.RUNNING,)):
                if str(t.user_attrs.get("worker", "")).endswith(f":{victim.pid}"):
                    run_id = t.user_attrs.get("run_id")
                    checkpoint = await db.checkpoints.latest(run_id) if run_id else None
                    if checkpoint is not None and checkpoint.step >= 4:
                        victim.send_signal(signal.SIGKILL)  # mid-trial, after a checkpoint
                        killed_trial = t.number
                        break
            await asyncio.sleep(0.05)
    assert killed_trial is not None, "the victim never ran a trial past a checkpoint"
    victim.communicate(timeout=30)  # reaps it and closes its pipe
    outputs = [await asyncio.to_thread(w.communicate, timeout=300) for w in workers[1:]]
    assert [w.returncode for w in workers[1:]] == [0, 0], outputs

    async with QuantumDatabase(postgres_url).connect() as db:
        report = await study_report(db, "killed")
        runs = {r.id: r for r in await db.runs.list()}
        by_number = {t.number: t for t in report.trials}
        failed = by_number[killed_trial]
        retries = [t for t in report.trials if t.retry_of == killed_trial]
        steps = {rid: (await db.metrics.history(rid, "loss")).steps for rid in runs}
    storage.engine.dispose()
    assert failed.state == "fail" and len(retries) == 1
    retry = retries[0]
    # The retry trained the killed trial's run on from its last checkpoint, to the end.
    assert retry.state == "complete" and retry.run_id == failed.run_id
    assert retry.params == failed.params
    assert list(np.asarray(steps[failed.run_id])) == list(range(1, 37))  # 12 epochs x 3
    # The study still finished its 12 trials; no run is left running.
    assert len(report.trials) == 13 and report.counts == {"complete": 12, "fail": 1}
    assert len(runs) == 12 and {r.status for r in runs.values()} == {"finished"}
