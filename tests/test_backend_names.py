"""One name per backend everywhere, and a cost estimate that knows what each backend can run.

``qdb backends`` lists the names a connection's manager registers, each of them is
accepted by ``BackendManager.run(backend=...)`` (IonQ's against the loopback emulator),
and ``qdb estimate`` marks the backends that cannot run a job instead of pricing them,
counting every circuit evaluation the trainer makes, validation passes included.
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Sequence
from pathlib import Path

import numpy as np
import pytest
from numpy.typing import ArrayLike

from backends import (
    FREE,
    IONQ_ARIA,
    BackendManager,
    Circuit,
    CostPlanError,
    ObservableLike,
    RunResult,
    ShotsError,
    SimulatorBackend,
    UnknownBackendError,
    plan_training_cost,
)
from backends.ionq.targets import BACKEND_NAMES, TARGETS
from backends.templates import hardware_efficient_circuit
from quantum_db import QuantumDatabase
from quantum_db.database import IONQ_TARGETS
from quantum_ml import QuantumDataEncoder, QuantumModel, QuantumTrainer, TrainingConfig
from quantum_ml.backend_report import CatalogueEntry, blockers, catalogue

from .clitools import qdb
from .ionq_emulator import IonQEmulator

API_KEY = "names-test-key"
NAMES = ("simulator", "aer", "ionq-simulator", "ionq-aria", "ionq-forte")
BELL = Circuit(2).h(0).cx(0, 1).measure_all()


def listed_names(stdout: str) -> list[str]:
    """The first column of the table ``qdb backends`` prints (up to its blank line)."""
    table = stdout.split("\n\n", 1)[0].splitlines()
    assert table[0].split()[0] == "name"
    return [row.split()[0] for row in table[1:]]


def estimate_rows(stdout: str) -> dict[str, str]:
    """``name -> what the estimate says about it`` for every backend row."""
    rows = stdout.split("\n\n")[1].splitlines()
    return {row.split()[0]: row.split(maxsplit=1)[1] for row in rows if row.split()[0] in NAMES}


@pytest.fixture
def emulator() -> Iterator[IonQEmulator]:
    emu = IonQEmulator(API_KEY).start()
    yield emu
    emu.stop()


# ---------------------------------------------------------------- one naming
def test_qdb_backends_lists_the_names_run_takes(tmp_path: Path) -> None:
    out = qdb("backends", cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    assert listed_names(out.stdout) == list(NAMES)
    assert "BackendManager.run(backend=NAME)" in out.stdout
    assert "ionq-aria is IonQ's qpu.aria-1" in out.stdout
    assert re.search(
        r"^ionq-aria\s+25\s+shots\s+needs IONQ_API_KEY\s+\$12\.4166/job", out.stdout, re.M
    )
    assert re.search(r"^ionq-simulator\s+29\s+exact\+shots", out.stdout, re.M)
    # The IonQ API's own spelling is no longer a first-column name anywhere.
    assert not re.search(r"^ionq qpu", out.stdout, re.M)


async def test_every_listed_name_runs_through_a_connection(
    tmp_path: Path, emulator: IonQEmulator, monkeypatch: pytest.MonkeyPatch
) -> None:
    env = {"IONQ_API_KEY": API_KEY, "QDB_IONQ_API_URL": emulator.url}
    out = qdb("backends", cwd=tmp_path, env=env)
    assert out.returncode == 0, out.stderr
    printed = listed_names(out.stdout)
    assert printed == list(NAMES)
    assert "ready (IONQ_API_KEY set)" in out.stdout and API_KEY not in out.stdout
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    async with QuantumDatabase(f"sqlite+aiosqlite:///{tmp_path / 'q.sqlite'}").connect() as db:
        manager = db.backend_manager
        assert manager.names() == tuple(printed)
        results = [await manager.run(BELL, shots=64, seed=5, backend=name) for name in printed]
        recorded = await manager.accounting.jobs()  # type: ignore[attr-defined]
    assert [r.backend for r in results] == printed
    for result in results:
        assert result.counts is not None and sum(result.counts[0].values()) == 64
    assert sorted(job.backend for job in recorded) == sorted(printed)
    # The three IonQ names each created one job at the emulator, on the target they name.
    assert sorted(job.backend for job in emulator.jobs.values()) == sorted(TARGETS)


async def test_an_unknown_name_lists_the_names_and_writes_nothing(tmp_path: Path) -> None:
    async with QuantumDatabase(f"sqlite+aiosqlite:///{tmp_path / 'q.sqlite'}").connect() as db:
        manager = db.backend_manager
        accounting = manager.accounting
        before = await accounting.jobs()  # type: ignore[attr-defined]
        with pytest.raises(UnknownBackendError) as info:
            await manager.run(BELL, shots=10, backend="ionq qpu.aria-1")
        message = str(info.value)
        assert "'ionq qpu.aria-1'" in message and "run(backend=...)" in message
        for name in manager.names():
            assert name in message
        assert await accounting.jobs() == before  # type: ignore[attr-defined]
        with pytest.raises(UnknownBackendError):
            manager.get("qpu.aria-1")


def test_names_agree_between_ionq_backend_connection_and_catalogue() -> None:
    from backends import IonQBackend

    assert {name: target for target, name in BACKEND_NAMES.items()} == IONQ_TARGETS
    assert set(BACKEND_NAMES) == set(TARGETS)
    for target, name in BACKEND_NAMES.items():
        assert IonQBackend(target).name == name
    assert [e.name for e in catalogue(ionq_configured=False)] == list(NAMES)
    manager = BackendManager()
    assert manager.names() == ("simulator",)


# ---------------------------------------------------------------- what can run
def test_estimate_refuses_to_price_what_cannot_run(tmp_path: Path) -> None:
    out = qdb("estimate", "--qubits", "40", cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    rows = estimate_rows(out.stdout)
    assert list(rows) == list(NAMES)
    assert rows["ionq-aria"] == "cannot run this job: needs 40 qubits, offers 25"
    assert rows["ionq-forte"] == "cannot run this job: needs 40 qubits, offers 36"
    assert all(text.startswith("cannot run this job") for text in rows.values())
    assert out.stdout.split("\n\n")[1].endswith("\nno backend here can run this job")
    assert "$" not in out.stdout.split("\n\n")[1]

    out = qdb("estimate", "--qubits", "30", "--shots", "20000", cwd=tmp_path)
    rows = estimate_rows(out.stdout)
    assert "at most 10,000 shots per job, 20,000 asked" in rows["ionq-forte"]
    assert "needs 30 qubits, offers 25" in rows["ionq-aria"]
    assert "at most 10,000 shots" in rows["ionq-aria"]  # every reason is given
    assert rows["ionq-simulator"] == "cannot run this job: needs 30 qubits, offers 29"

    out = qdb("estimate", "--exact", cwd=tmp_path)
    rows = estimate_rows(out.stdout)
    assert rows["ionq-aria"] == "cannot run this job: no exact mode (give --shots)"
    assert rows["simulator"].startswith("free: ")
    assert rows["ionq-simulator"].startswith("free: ")
    assert "no backend here can run" not in out.stdout


def test_estimate_counts_training_and_validation_evaluations(tmp_path: Path) -> None:
    out = qdb(
        "estimate",
        *("--qubits", "4", "--layers", "2", "--shots", "100", "--epochs", "3"),
        *("--samples", "10", "--batch-size", "4", "--validation-samples", "7"),
        cwd=tmp_path,
    )
    assert out.returncode == 0, out.stderr
    # 24 weights: 2 x 24 shifted circuits + 1 forward per training sample, 1 per
    # validation sample, every epoch.
    jobs = 3 * (10 * (2 * 24 + 1) + 7)
    per_job = 12.4166 + 0.000220 * 28 * 100 + 0.000975 * 6 * 100
    rows = estimate_rows(out.stdout)
    assert rows["ionq-aria"] == (
        f"3 epochs x (10 samples x 49 circuits + 7 validation samples x 1) = {jobs:,} jobs "
        f"of 100 shots at ${per_job:,.4f} each: ${jobs * per_job:,.2f}"
    )
    assert rows["simulator"] == (
        f"free: 3 epochs x (10 samples x 49 circuits + 7 validation samples x 1) = {jobs:,} jobs"
    )
    assert "7 validation samples evaluated once per epoch" in out.stdout


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("--validation-samples", "-1"), "--validation-samples must be 0 or more"),
        (("--qubits", "0"), "--qubits must be positive"),
        (("--shots", "0"), "--shots must be positive"),
    ],
)
def test_estimate_bad_options(tmp_path: Path, args: tuple[str, ...], message: str) -> None:
    out = qdb("estimate", *args, cwd=tmp_path)
    assert out.returncode == 2
    assert message in out.stderr and out.stdout == ""
    assert list(tmp_path.iterdir()) == []


def test_exact_and_shots_exclude_each_other(tmp_path: Path) -> None:
    out = qdb("estimate", "--exact", "--shots", "10", cwd=tmp_path)
    assert out.returncode == 2 and "--shots and --exact exclude each other" in out.stderr


def test_blockers_name_gates_a_backend_cannot_run() -> None:
    sim = SimulatorBackend()
    narrow = CatalogueEntry("narrow", sim.capabilities, frozenset({"rx", "ry", "rz"}), FREE, "ok")
    circuit = hardware_efficient_circuit(3, 1)
    assert blockers(narrow, circuit, 100) == ["cannot run gates cx"]
    wide = CatalogueEntry("wide", sim.capabilities, sim.capabilities.native_gates, FREE, "ok")
    assert blockers(wide, circuit, 100) == []
    missing = CatalogueEntry("gone", None, frozenset(), FREE, "unavailable: no SDK")
    assert blockers(missing, circuit, None) == ["unavailable: no SDK"]


def test_plan_training_cost_refuses_what_it_cannot_plan() -> None:
    circuit = hardware_efficient_circuit(2, 1)
    good = {"shots": 10, "epochs": 1, "n_samples": 4, "batch_size": 2}
    for bad in (
        {"epochs": 0},
        {"n_samples": True},
        {"batch_size": 2.5},
        {"n_validation": -1},
        {"gradient_evaluations": 0},
    ):
        with pytest.raises(CostPlanError, match=next(iter(bad))):
            plan_training_cost(FREE, circuit, **{**good, **bad})  # type: ignore[arg-type]
    with pytest.raises(ShotsError, match="no exact mode"):
        plan_training_cost(IONQ_ARIA, circuit, **{**good, "shots": None})  # type: ignore[arg-type]
    plan = plan_training_cost(FREE, circuit, **{**good, "shots": None})  # type: ignore[arg-type]
    assert plan.total == 0.0 and plan.jobs == 1 * 4 * (2 * 6 + 1)


# ---------------------------------------------------------------- the count is the trainer's
class CountingSimulator(SimulatorBackend):
    """The built-in simulator, counting every circuit evaluation (binding) it runs."""

    def __init__(self) -> None:
        super().__init__()
        self.evaluations = 0

    async def run(
        self,
        circuit: Circuit,
        parameter_values: ArrayLike | None = None,
        observables: Sequence[ObservableLike] | ObservableLike | None = None,
        shots: int | None = None,
        seed: int | None = None,
    ) -> RunResult:
        result = await super().run(circuit, parameter_values, observables, shots, seed)
        self.evaluations += result.batch_size
        return result


async def test_the_plan_counts_what_the_trainer_evaluates(tmp_path: Path) -> None:
    rng = np.random.default_rng(11)
    X, y = rng.normal(size=(20, 2)), np.arange(20) % 2
    epochs, batch_size = 2, 4
    async with QuantumDatabase(f"sqlite+aiosqlite:///{tmp_path / 'q.sqlite'}").connect() as db:
        info = await db.store_training_data(
            "points",
            X,
            y,
            splits={"train": 0.75, "validation": 0.25},
            encoding={"scaling": "minmax"},
        )
        model = QuantumModel(
            2,
            1,
            task="classification",
            n_outputs=2,
            seed=3,
            encoder=QuantumDataEncoder.from_contract(info.encoding),
        )
        backend = CountingSimulator()
        config = TrainingConfig(
            learning_rate=0.1, epochs=epochs, seed=1, shots=50, gradient_method="parameter-shift"
        )
        trainer = QuantumTrainer(config, db, backend)
        train = db.create_ml_data_loader("points", batch_size=batch_size, seed=1, split="train")
        val = db.create_ml_data_loader("points", batch_size=8, shuffle=False, split="validation")
        history = await trainer.fit(model, train, val, run_id="counted")
    n_train, n_val = info.splits["counts"]["train"], info.splits["counts"]["validation"]
    assert n_train > 0 and n_val > 0
    assert history.epochs == list(range(epochs))  # no early stop: every epoch ran
    plan = plan_training_cost(
        FREE,
        model.circuit,
        shots=50,
        epochs=epochs,
        n_samples=n_train,
        batch_size=batch_size,
        n_validation=n_val,
    )
    weights = len(model.circuit.parameters_of_kind("weight"))
    assert plan.jobs == epochs * (n_train * (2 * weights + 1) + n_val)
    assert backend.evaluations == plan.jobs
