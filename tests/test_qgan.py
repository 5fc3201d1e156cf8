"""QuantumGAN end to end: losses that train, the Qiskit ML tutorial reproduced, resume
after SIGKILL, mode collapse detected and recovered, the IonQ emulator's jobs and costs,
the registry, and every bad input refused with nothing stored."""

from __future__ import annotations

import asyncio
import copy
import math
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import torch
from scipy.stats import entropy, lognorm
from sqlalchemy import func, select

from backends.ionq import IonQBackend
from backends.simulator import SimulatorBackend
from quantum_db import QuantumDatabase
from quantum_db.registry.schema import CheckpointRow, JobRow, LedgerRow, MetricRow, RunRow
from quantum_ml.errors import (
    DataOutOfBoundsError,
    DiscriminatorError,
    GANConfigError,
    GANError,
    ResumeMismatchError,
)
from quantum_ml.qgan import (
    GANConfig,
    LatentGenerator,
    ModeCollapseDetector,
    QuantumGAN,
    QuantumGenerator,
    RecoveryPolicy,
    TargetDistribution,
    mlp_discriminator,
    ry_cz_ansatz,
)

from .clitools import kill_at_step
from .ionq_emulator import IonQEmulator

REPO = Path(__file__).resolve().parent.parent


def sqlite_url(tmp_path: Path, name: str = "qgan.sqlite") -> str:
    return f"sqlite+aiosqlite:///{tmp_path / name}"


def lognormal_target() -> np.ndarray:
    edges = np.concatenate([[0.0], np.arange(8) + 0.5])
    mass = np.diff(lognorm(s=1.0, scale=np.e).cdf(edges))
    return mass / mass.sum()


def born(seed: int = 0, reps: int = 2) -> QuantumGenerator:
    return QuantumGenerator(
        ry_cz_ansatz(3, reps=reps), bounds=[(0, 7)], bits=[3], initial_state="uniform", seed=seed
    )


async def count_rows(db: QuantumDatabase, row: type) -> int:
    async with db.registry.session() as session:
        return int(await session.scalar(select(func.count()).select_from(row)) or 0)


# ---------------------------------------------------------------- every loss trains
ADAM = {"betas": (0.7, 0.99), "amsgrad": True}


@pytest.mark.parametrize(
    ("loss", "metric"),
    [
        ("weighted-bce", "relative_entropy"),
        ("non-saturating", "relative_entropy"),
        ("bce", "relative_entropy"),
        ("wgan-gp", "wasserstein1"),  # what a critic estimates and the generator lowers
        ("mmd", "relative_entropy"),
    ],
)
async def test_every_loss_trains_the_born_machine(tmp_path: Path, loss: str, metric: str) -> None:
    target = lognormal_target()
    gen = QuantumGenerator(
        ry_cz_ansatz(3, reps=2),
        bounds=[(0, 7)],
        bits=[3],
        initial_state="uniform",
        weights=np.random.default_rng(1).random(9) * 0.02,
    )
    torch.manual_seed(0)
    disc = None if loss == "mmd" else mlp_discriminator(1, sigmoid=loss != "wgan-gp")
    config = GANConfig(
        epochs=200,
        loss=loss,
        generator_lr=0.01 if loss == "mmd" else 1e-3,
        discriminator_lr=1e-3,
        generator_optimizer_kwargs=ADAM,
        discriminator_optimizer_kwargs=ADAM,
        d_steps=5 if loss == "wgan-gp" else 1,
        checkpoint_every=50,
        seed=1,
    )
    async with QuantumDatabase(sqlite_url(tmp_path)).connect() as db:
        history = await QuantumGAN(gen, disc, config, db).fit(TargetDistribution(target))
        run = await db.runs.get("qgan-1-target")
    # The logged relative entropy is scipy's, of the generator's own distribution.
    p = await gen.probabilities(SimulatorBackend())
    expected = float(entropy(np.maximum(p, 1e-8), np.maximum(target, 1e-8)))
    assert history.final["relative_entropy"] == pytest.approx(expected, abs=1e-9)
    first, last = history.initial[metric], history.final[metric]
    assert last < 0.7 * first, (loss, first, last)
    assert run.status == "finished"
    assert len(history.epochs) == 200 and history.steps == 200


async def test_a_latent_generator_learns_the_mean_and_spread_of_its_data(tmp_path: Path) -> None:
    from backends.templates import hardware_efficient_circuit

    rng = np.random.default_rng(3)
    data = rng.normal(0.4, 0.15, (256, 1))
    torch.manual_seed(2)
    head = torch.nn.Linear(2, 1).double()
    gen = LatentGenerator(hardware_efficient_circuit(2, 2), latent_dim=2, head=head, seed=5)
    config = GANConfig(
        epochs=30, loss="mmd", generator_lr=0.05, batch_size=64, seed=2, eval_samples=256
    )
    async with QuantumDatabase(sqlite_url(tmp_path)).connect() as db:
        history = await QuantumGAN(gen, None, config, db).fit(data, run_id="latent")
    samples = await gen.sample(2000, seed=0)
    # Checked on fresh samples against the data's own mean and spread.
    assert abs(float(np.mean(samples)) - 0.4) < 0.1
    assert abs(float(np.std(samples)) - 0.15) < 0.1
    assert history.final["mmd"] < history.initial["mmd"]


# ---------------------------------------------------------------- the Qiskit ML tutorial
def test_the_torch_tutorial_matches_qiskit_machine_learning_epoch_by_epoch(tmp_path: Path) -> None:
    """The tutorial's loop on qiskit-machine-learning (exact sampler) against QuantumGAN,
    a smaller ansatz (reps=2) and 4 epochs to keep the test short: the relative entropy
    after every epoch agrees within 1e-3 (benchmarks/qgan.py runs the full setup)."""
    pytest.importorskip("qiskit_machine_learning")
    from qiskit import QuantumCircuit
    from qiskit.circuit.library import efficient_su2

    from benchmarks import qgan as bench

    qc = QuantumCircuit(6)
    qc.h(qc.qubits)
    qc.compose(efficient_su2(6, reps=2), inplace=True)
    weights = np.random.default_rng(7).random(qc.num_parameters)
    torch.manual_seed(7)
    disc = bench.TutorialDiscriminator(2)
    theirs, _ = bench.run_qiskit_circuit(4, qc, weights, copy.deepcopy(disc))
    ours, _ = asyncio.run(
        bench.run_quantum_db_circuit(4, qc, weights, copy.deepcopy(disc), tmp_path)
    )
    assert len(ours) == len(theirs) == 4
    assert max(abs(a - b) for a, b in zip(ours, theirs, strict=True)) < 1e-3
    assert len(set(ours)) == 4  # the generator moved every epoch


# ---------------------------------------------------------------- resume after SIGKILL
def _script(url: str, run_id: str, out: Path, kind: str) -> list[str]:
    return [sys.executable, "-m", "tests.qgan_script", url, run_id, str(out), kind]


@pytest.mark.slow
@pytest.mark.parametrize("kind", ["exact", "shots", "latent"])
def test_sigkill_mid_run_resumes_bitwise(
    tmp_path: Path, kind: str, rng: np.random.Generator
) -> None:
    reference = tmp_path / "reference.npz"
    done = subprocess.run(
        _script(sqlite_url(tmp_path, "ref.sqlite"), "run", reference, kind),
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=300,
        check=True,
    )
    total = int(done.stdout.split("done")[-1].split()[0])
    assert total == 24  # 4 epochs of 6 batches
    kill_at = int(rng.integers(3, total - 2))
    url = sqlite_url(tmp_path, "resumed.sqlite")
    resumed = tmp_path / "resumed.npz"
    seen = kill_at_step(_script(url, "run", resumed, kind), kill_at, cwd=REPO)
    again = subprocess.run(
        _script(url, "run", resumed, kind),
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=300,
        check=True,
    )
    steps = [int(line.split()[1]) for line in again.stdout.splitlines() if line[:5] == "step "]
    assert steps and steps[0] <= seen + 1 and steps[-1] == total
    with np.load(reference) as a, np.load(resumed) as b:
        assert sorted(a.files) == sorted(b.files)
        for key in a.files:
            assert a[key].tobytes() == b[key].tobytes(), key  # bitwise

    async def check() -> None:
        async with QuantumDatabase(url).connect() as db:
            assert (await db.runs.get("run")).status == "finished"
            async with db.registry.session() as session:
                rows = (
                    await session.execute(
                        select(MetricRow.key, MetricRow.step, func.count())
                        .where(MetricRow.run_id == "run")
                        .group_by(MetricRow.key, MetricRow.step)
                    )
                ).all()
            assert rows and all(n == 1 for _, _, n in rows), "a metric step was duplicated"
            steps = {s for k, s, _ in rows if k == "step_generator_loss"}
            assert steps == set(range(1, total + 1))

    asyncio.run(check())


# ---------------------------------------------------------------- mode collapse
async def test_a_collapsing_run_is_detected_and_handled_by_policy(tmp_path: Path) -> None:
    """A discriminator learning 30x too fast (lr 0.3, 3 steps per generator step)
    saturates within two epochs: it scores real and generated data alike at 1 and the
    generator gets no signal. The detector sees it; the policy rolls back to the best
    checkpoint written before the collapse and halves the discriminator's learning rate,
    once per collapse, and after ``max_attempts`` stops the run with ``mode_collapse``.
    Every decision is a stored alert and metric."""
    target = lognormal_target()
    torch.manual_seed(0)
    config = GANConfig(
        epochs=40, loss="non-saturating", generator_lr=0.01, discriminator_lr=0.3, d_steps=3, seed=4
    )
    policy = RecoveryPolicy(("rollback+halve_discriminator_lr",), max_attempts=3, cooldown=1)
    detector = ModeCollapseDetector(dominance_epochs=2, warmup=1, recovery=policy)
    async with QuantumDatabase(sqlite_url(tmp_path)).connect() as db:
        gan = QuantumGAN(born(2), mlp_discriminator(1), config, db, callbacks=[detector])
        history = await gan.fit(TargetDistribution(target), run_id="collapse")
        alerts = await db.alerts.list("collapse")
        collapse = await db.metrics.history("collapse", "mode_collapse")
        attempts = await db.metrics.history("collapse", "recovery_attempt")
        run = await db.runs.get("collapse")
    kinds = [a.kind for a in alerts]
    assert kinds.count("recovery") == 3
    assert all("saturation" in a.message for a in alerts if a.kind == "mode_collapse")
    first = next(a for a in alerts if a.kind == "recovery")
    assert "rollback;" in first.message  # a checkpoint from before the collapse existed
    assert list(attempts.values) == [1.0, 2.0, 3.0]
    assert 1.0 in collapse.values and 0.0 in collapse.values
    # Each attempt halved the discriminator's rate; the checkpointed lever says so.
    assert history["discriminator_lr"][-1] == pytest.approx(0.3 / 2**3, rel=1e-12)
    assert history.stop_reason == "mode_collapse"
    assert run.status == "stopped" and "mode_collapse" in (run.reason or "")
    assert len(history.epochs) < 40


# ---------------------------------------------------------------- IonQ emulator
API_KEY = "qgan-key"


@pytest.fixture
def emulator() -> Iterator[IonQEmulator]:
    emu = IonQEmulator(API_KEY).start()
    yield emu
    emu.stop()


async def test_a_qgan_on_the_ionq_emulator_records_its_jobs_and_cost_per_sample(
    tmp_path: Path, emulator: IonQEmulator
) -> None:
    aria = IonQBackend(
        "qpu.aria-1",
        "qiskit",
        api_key=API_KEY,
        api_url=emulator.url,
        poll_interval_s=0.005,
        max_poll_interval_s=0.02,
        error_mitigation=False,
        seed=5,
    )
    target = lognormal_target()
    torch.manual_seed(0)
    config = GANConfig(
        epochs=2, loss="non-saturating", shots=100, seed=3, budget_usd=1000.0, generator_lr=0.05
    )
    async with QuantumDatabase(sqlite_url(tmp_path)).connect() as db:
        db.backend_manager.register("ionq-aria", aria)
        gen = born(3, reps=1)
        gan = QuantumGAN(gen, mlp_discriminator(1), config, db, backend="ionq-aria")
        history = await gan.fit(TargetDistribution(target), run_id="ionq-qgan")
        async with db.registry.session() as session:
            jobs = (await session.scalars(select(JobRow).where(JobRow.run_id == "ionq-qgan"))).all()
            charged = (
                await session.scalars(
                    select(LedgerRow.amount_usd).where(LedgerRow.kind == "charge")
                )
            ).all()
    weights = gen.num_weights
    # One measured distribution before training, then per epoch one gradient (2 shifted
    # circuits per weight, one IonQ job each) and the distribution after the step: five
    # manager runs, each a job row holding its IonQ job ids.
    assert len(emulator.jobs) == 1 + 2 * (2 * weights + 1)
    assert len(jobs) == 5
    assert sorted(i for j in jobs for i in j.provider_job_ids) == sorted(emulator.jobs)
    bill = sum(j.cost for j in emulator.jobs.values())
    assert sum(charged) == pytest.approx(bill, rel=1e-9)
    assert sum(j.actual_cost or 0.0 for j in jobs) == pytest.approx(bill, rel=1e-9)
    assert history.cost_usd == pytest.approx(bill, rel=1e-9)
    # Every shot is a generated sample, 100 per job; the first epoch also pays for the
    # distribution measured before training.
    samples = [100 * (2 * weights + 2), 100 * (2 * weights + 1)]
    for cost, value, n in zip(
        history["cost_usd"], history["cost_per_sample_usd"], samples, strict=True
    ):
        assert value == pytest.approx(cost / n, rel=1e-9)
    assert all(math.isfinite(x) and x > 0 for x in history["grad_snr"])


# ---------------------------------------------------------------- registry
async def test_the_generator_is_registered_with_its_grid_contract(tmp_path: Path) -> None:
    async with QuantumDatabase(sqlite_url(tmp_path)).connect() as db:
        gen = born(5, reps=1)
        gan = QuantumGAN(gen, mlp_discriminator(1), GANConfig(epochs=2, seed=5), db)
        history = await gan.fit(TargetDistribution(lognormal_target()), run_id="reg")
        version = await gan.register("lognormal-gen", metrics=history.final, run_id="reg")
        stored = await db.models.get("lognormal-gen")
        rebuilt = QuantumGenerator.from_registry(stored)
        sim = db.backend_manager.get("simulator")
        np.testing.assert_array_equal(
            await rebuilt.probabilities(sim), await gen.probabilities(sim)
        )
    assert version.encoding is not None
    assert version.encoding["bounds"] == [[0.0, 7.0]] and version.encoding["bits"] == [3]
    assert version.provenance["run_id"] == "reg"


# ---------------------------------------------------------------- resume and bad input
async def test_a_finished_run_is_not_trained_again_and_other_settings_are_refused(
    tmp_path: Path,
) -> None:
    target = TargetDistribution(lognormal_target())
    async with QuantumDatabase(sqlite_url(tmp_path)).connect() as db:
        torch.manual_seed(0)
        disc = mlp_discriminator(1)
        gen = born(6)
        first = await QuantumGAN(gen, disc, GANConfig(epochs=3, seed=6), db).fit(target, run_id="r")
        weights = gen.weights.copy()
        again = await QuantumGAN(gen, disc, GANConfig(epochs=3, seed=6), db).fit(target, run_id="r")
        assert again.final == first.final and np.array_equal(gen.weights, weights)
        with pytest.raises(ResumeMismatchError, match="loss"):
            await QuantumGAN(gen, disc, GANConfig(epochs=3, seed=6, loss="bce"), db).fit(
                target, run_id="r"
            )
        with pytest.raises(ResumeMismatchError):
            await QuantumGAN(born(6, reps=1), disc, GANConfig(epochs=3, seed=6), db).fit(
                target, run_id="r"
            )


async def test_bad_inputs_are_refused_and_nothing_is_stored(tmp_path: Path) -> None:
    async with QuantumDatabase(sqlite_url(tmp_path)).connect() as db:
        torch.manual_seed(0)
        gen = born(0)
        config = GANConfig(epochs=2)
        outside = np.array([[1.0], [3.0], [9.5]])  # 9.5 is beyond the bounds (0, 7)
        with pytest.raises(DataOutOfBoundsError):
            await QuantumGAN(gen, mlp_discriminator(1), config, db).fit(outside, run_id="a")
        with pytest.raises(DiscriminatorError, match="2 features"):
            QuantumGAN(gen, mlp_discriminator(2), config, db)
        with pytest.raises(DiscriminatorError):
            QuantumGAN(gen, mlp_discriminator(1), GANConfig(loss="mmd"), db)
        with pytest.raises(DiscriminatorError):
            QuantumGAN(gen, None, config, db)
        with pytest.raises(GANError, match=r"\[N, 1\]"):
            await QuantumGAN(gen, mlp_discriminator(1), config, db).fit(np.ones((4, 2)))
        with pytest.raises(GANError, match="NaN"):
            await QuantumGAN(gen, mlp_discriminator(1), config, db).fit(np.array([[1.0], [np.nan]]))
        with pytest.raises(GANError, match="8 finite"):
            await QuantumGAN(gen, mlp_discriminator(1), config, db).fit(
                TargetDistribution([0.5, 0.5])
            )
        with pytest.raises(GANError, match="sum to 1"):
            await QuantumGAN(gen, mlp_discriminator(1), config, db).fit(
                TargetDistribution(np.full(8, 0.2))
            )
        assert await count_rows(db, RunRow) == 0
        assert await count_rows(db, CheckpointRow) == 0
        assert await count_rows(db, MetricRow) == 0
        # "clip" trains on the same data, the outlier moved onto the last grid point.
        await QuantumGAN(
            gen, mlp_discriminator(1), GANConfig(epochs=1, data_policy="clip"), db
        ).fit(outside, run_id="clipped")
        assert (await db.runs.get("clipped")).status == "finished"


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"d_steps": 0}, "d_steps"),
        ({"shots": 0}, "shots"),
        ({"g_steps": 0}, "g_steps"),
        ({"loss": "hinge"}, "unknown loss"),
        ({"generator_lr": 0.0}, "generator_lr"),
        ({"discriminator_lr": math.nan}, "discriminator_lr"),
        ({"update": "simultaneous", "d_steps": 2}, "simultaneous"),
        ({"generator_optimizer": "nope"}, "generator_optimizer"),
        ({"gradient_method": "adjoint", "shots": 100}, "adjoint"),
        ({"data_policy": "drop"}, "data_policy"),
        ({"mmd_bandwidths": ()}, "bandwidth"),
        ({"batch_size": 0}, "batch_size"),
    ],
)
def test_bad_settings_get_a_specific_error(kwargs: dict[str, object], match: str) -> None:
    with pytest.raises(GANConfigError, match=match):
        GANConfig(**kwargs)  # type: ignore[arg-type]


async def test_a_target_is_exact_and_refuses_batches_and_latent_generators(tmp_path: Path) -> None:
    from backends.templates import hardware_efficient_circuit

    async with QuantumDatabase(sqlite_url(tmp_path)).connect() as db:
        with pytest.raises(GANError, match="batch_size=None"):
            await QuantumGAN(born(0), mlp_discriminator(1), GANConfig(batch_size=4), db).fit(
                TargetDistribution(lognormal_target())
            )
        latent = LatentGenerator(hardware_efficient_circuit(2, 1), latent_dim=2)
        with pytest.raises(GANError, match="Born machine"):
            await QuantumGAN(latent, mlp_discriminator(2), GANConfig(), db).fit(
                TargetDistribution(lognormal_target())
            )
        assert await count_rows(db, RunRow) == 0


async def test_levers_refuse_bad_values(tmp_path: Path) -> None:
    from quantum_ml.training.callbacks import Callback

    seen: list[str] = []

    class Pull(Callback):
        def on_epoch_end(self, ctx, epoch, metrics):  # type: ignore[no-untyped-def]
            for name, value in (
                ("d_steps", 0),
                ("generator_lr", -1.0),
                ("shots", 10),
                ("diversity_weight", -1.0),
            ):
                try:
                    setattr(ctx, name, value)
                except GANError as exc:
                    seen.append(f"{name}: {exc}")
            ctx.d_steps = 2
            ctx.generator_lr = 0.003

    async with QuantumDatabase(sqlite_url(tmp_path)).connect() as db:
        history = await QuantumGAN(
            born(0), mlp_discriminator(1), GANConfig(epochs=2), db, callbacks=[Pull()]
        ).fit(TargetDistribution(lognormal_target()), run_id="levers")
    assert len(seen) == 8 and all(s.split(":")[0] in s for s in seen)
    assert history["d_steps"] == [1.0, 2.0]
    assert history["generator_lr"][1] == pytest.approx(0.003)
