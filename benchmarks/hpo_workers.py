"""Benchmark: HPO trials per minute with 1, 2 and 4 ``qdb hpo worker`` processes.

For each worker count, a fresh PostgreSQL database (``qdb_bench_<hex>``, dropped at the
end) gets a seeded 2-feature, 120-sample classification dataset (train/validation) and a
study written as TOML: random sampler, pruner ``none`` (every trial does the same work),
``--trials`` trials of a 2-qubit model on the built-in simulator, ``--epochs`` epochs,
a space over ``learning_rate`` and ``layers``. ``qdb hpo create`` stores it; then N
``qdb hpo worker`` processes start at once and the wall time runs from their start to
the last one's exit (so it includes each process's start-up: imports, connecting, loading
the backend). ``qdb hpo show --json`` must then report every trial ``complete`` and every
trial's run ``finished``, else the benchmark exits 1. A warm-up study in a database of its
own runs first so that numba's on-disk cache (``cache=True``) is filled and no worker
compiles; timing one more worker on that finished study gives a worker's fixed cost.

    python benchmarks/hpo_workers.py                          # 1, 2, 4 workers, 96 trials (~4 min)
    python benchmarks/hpo_workers.py --workers 1,2 --trials 16

Read trials/min and the speed-up over 1 worker: on a 2-core machine the ideal is 2x at 2
workers and no more at 4; the mean trial time shows how much each trial slows down when
the workers share the cores (and the database). The 1-minute load average before each
measurement is in the table: other work on the machine lowers every number. Writes the
table to ``benchmarks/results/hpo_workers.md`` (``--out``).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import re
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import asyncpg  # type: ignore[import-untyped]
import numpy as np

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from quantum_db import QuantumDatabase  # noqa: E402

ADMIN_URL = "postgresql://postgres@127.0.0.1:5432/test"
RESULTS = ROOT / "benchmarks" / "results" / "hpo_workers.md"
DATASET = "hpo-bench"
SAMPLES = 120
BATCH = 15
#: The longest one measurement may take before its workers are killed.
TIMEOUT_S = 300.0
STUDY_TOML = """\
[study]
dataset = "{dataset}"
metric = "val_loss"
sampler = "random"
pruner = "none"
n_trials = {trials}
batch_size = {batch}
seed = 0

[training]
epochs = {epochs}
checkpoint_every = 1000

[space]
learning_rate = {{ low = 0.01, high = 0.3, log = true }}
layers = [1, 2, 3]
"""


class BenchmarkError(RuntimeError):
    """A command failed, or the study did not end with every trial complete."""


@dataclass(frozen=True)
class Measurement:
    workers: int
    trials: int
    wall_s: float
    mean_trial_s: float
    per_worker: list[int]
    load_before: float
    last_trial_s: float
    first_trial_s: float

    @property
    def per_minute(self) -> float:
        return self.trials / (self.wall_s / 60.0)


# --------------------------------------------------------------------------- databases
def registry_url(admin_url: str, name: str) -> str:
    """The asyncpg URL of database ``name`` on the admin URL's server."""
    from sqlalchemy.engine import make_url

    return (
        make_url(admin_url)
        .set(drivername="postgresql+asyncpg", database=name)
        .render_as_string(hide_password=False)
    )


async def create_database(admin_url: str) -> str:
    name = f"qdb_bench_{uuid.uuid4().hex[:12]}"
    admin = await asyncpg.connect(admin_url, timeout=5)
    try:
        await admin.execute(f'CREATE DATABASE "{name}"')
    finally:
        await admin.close()
    return name


async def drop_database(admin_url: str, name: str) -> None:
    admin = await asyncpg.connect(admin_url, timeout=5)
    try:
        await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    finally:
        await admin.close()


async def store_dataset(url: str) -> None:
    """Two noisy clusters, labels 0/1 alternating, 75/25 train/validation."""
    rng = np.random.default_rng(0)
    y = np.arange(SAMPLES) % 2
    x = np.where(y[:, None] == 1, 1.0, -1.0) + rng.normal(scale=0.5, size=(SAMPLES, 2))
    async with QuantumDatabase(url).connect() as db:
        await db.store_training_data(
            DATASET,
            x,
            y,
            splits={"train": 0.75, "validation": 0.25},
            encoding={"scaling": "minmax"},
        )


# --------------------------------------------------------------------------- commands
def qdb(*args: str) -> list[str]:
    """``qdb ARGS`` with this interpreter (``python -m quantum_ml.cli`` is ``qdb``)."""
    return [sys.executable, "-m", "quantum_ml.cli", *args]


def tail(path: Path, lines: int = 30) -> str:
    text = path.read_text(errors="replace").splitlines()
    return "\n".join(text[-lines:])


def check_call(args: list[str], folder: Path, label: str) -> str:
    """Run a command to its end; its stdout, or BenchmarkError with its output."""
    done = subprocess.run(
        args, cwd=ROOT, capture_output=True, text=True, timeout=TIMEOUT_S, check=False
    )
    if done.returncode != 0:
        (folder / f"{label}.log").write_text(done.stdout + done.stderr)
        raise BenchmarkError(
            f"{label} exited {done.returncode}: {' '.join(args[2:])}\n{done.stdout}{done.stderr}"
        )
    return done.stdout


@dataclass(frozen=True)
class WorkerRun:
    """What N workers did: times in seconds from their start."""

    wall_s: float
    #: Trials each worker ran (its "worker done: K trial(s)" line).
    counts: list[int]
    #: When the last "trial K: ..." line arrived (the last trial's end).
    last_trial_s: float
    #: Each worker's first trial's seconds, as it printed them (0 workers: none).
    first_trials_s: list[float]


TRIAL_LINE = re.compile(r"^trial \d+: .*, (\d+(?:\.\d+)?) s\)$")


def _read(
    proc: subprocess.Popen[str], log: Path, start: float, lines: list[tuple[float, str]]
) -> None:
    """Copy ``proc``'s output to ``log``, keeping each line's arrival time."""
    assert proc.stdout is not None
    with log.open("w") as out:
        for line in proc.stdout:
            lines.append((time.perf_counter() - start, line.rstrip("\n")))
            out.write(line)


def run_workers(url: str, study: str, count: int, folder: Path) -> WorkerRun:
    """Start ``count`` workers at once and wait for all of them."""
    logs = [folder / f"{study}-worker-{i}.log" for i in range(count)]
    outputs: list[list[tuple[float, str]]] = [[] for _ in range(count)]
    args = qdb("hpo", "worker", study, "--url", url)
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    start = time.perf_counter()
    procs = [
        subprocess.Popen(
            args, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
        )
        for _ in range(count)
    ]
    readers = [
        threading.Thread(target=_read, args=(proc, log, start, out), daemon=True)
        for proc, log, out in zip(procs, logs, outputs, strict=True)
    ]
    for reader in readers:
        reader.start()
    try:
        for proc in procs:
            proc.wait(timeout=max(1.0, TIMEOUT_S - (time.perf_counter() - start)))
        wall = time.perf_counter() - start
    finally:
        for proc in procs:  # only on a timeout or an interrupt: the ones still running
            if proc.poll() is None:
                proc.kill()
                proc.wait()
        for reader in readers:
            reader.join(timeout=10)
    counts: list[int] = []
    firsts: list[float] = []
    last = 0.0
    for i, (proc, log, out) in enumerate(zip(procs, logs, outputs, strict=True)):
        if proc.returncode != 0:
            raise BenchmarkError(f"worker {i} exited {proc.returncode}:\n{tail(log)}")
        found = re.search(r"worker done: (\d+) trial", log.read_text())
        if found is None:
            raise BenchmarkError(f"worker {i} printed no 'worker done' line:\n{tail(log)}")
        counts.append(int(found.group(1)))
        trials = [(at, TRIAL_LINE.match(line)) for at, line in out]
        seconds = [(at, float(m.group(1))) for at, m in trials if m is not None]
        if len(seconds) != counts[-1]:
            raise BenchmarkError(
                f"worker {i} printed {len(seconds)} trial line(s) for {counts[-1]} trial(s):\n"
                f"{tail(log)}"
            )
        if seconds:
            firsts.append(seconds[0][1])
            last = max(last, seconds[-1][0])
    return WorkerRun(wall, counts, last, firsts)


def show(url: str, study: str, folder: Path) -> dict[str, Any]:
    data: dict[str, Any] = json.loads(
        check_call(qdb("hpo", "show", study, "--url", url, "--json"), folder, f"{study}-show")
    )
    return data


def check_study(data: dict[str, Any], trials: int) -> list[float]:
    """Every trial complete with its run finished; the trials' durations."""
    found = data["trials"]
    bad = [
        f"trial {t['number']}: {t['state']}, run {t['run_id']} {t['run_status']}"
        + (f", error {t['error']}" if t.get("error") else "")
        for t in found
        if t["state"] != "complete" or t["run_status"] != "finished"
    ]
    if len(found) != trials or bad:
        raise BenchmarkError(
            f"study {data['study']}: {len(found)} trial(s) of {trials}, counts "
            f"{data['counts']}; not complete/finished: {bad or 'none'}"
        )
    durations = [t["duration_s"] for t in found]
    if any(d is None for d in durations):
        raise BenchmarkError(f"study {data['study']}: a complete trial without duration_s")
    return [float(d) for d in durations]


# --------------------------------------------------------------------------- measuring
async def with_study(
    admin_url: str, folder: Path, study: str, trials: int, epochs: int
) -> tuple[str, str]:
    """A fresh database with the dataset and study ``study`` created; (name, URL)."""
    name = await create_database(admin_url)
    url = registry_url(admin_url, name)
    try:
        await store_dataset(url)
        toml = folder / f"{study}.toml"
        toml.write_text(
            STUDY_TOML.format(dataset=DATASET, trials=trials, batch=BATCH, epochs=epochs)
        )
        check_call(
            qdb("hpo", "create", study, "--config", str(toml), "--url", url),
            folder,
            f"{study}-create",
        )
    except BaseException:
        await drop_database(admin_url, name)
        raise
    return name, url


async def warm_up(admin_url: str, folder: Path, epochs: int) -> tuple[float, float]:
    """A 2-trial study run by one worker (fills numba's cache), then one more worker on the
    finished study: (the warm-up's seconds, an idle worker's seconds)."""
    name, url = await with_study(admin_url, folder, "warmup", 2, epochs)
    try:
        warm = await asyncio.to_thread(run_workers, url, "warmup", 1, folder)
        check_study(await asyncio.to_thread(show, url, "warmup", folder), 2)
        idle = await asyncio.to_thread(run_workers, url, "warmup", 1, folder)
        if idle.counts != [0]:
            raise BenchmarkError(f"a worker on a finished study ran {idle.counts[0]} trial(s)")
    finally:
        await drop_database(admin_url, name)
    return warm.wall_s, idle.wall_s


async def measure(
    admin_url: str, folder: Path, workers: int, trials: int, epochs: int
) -> Measurement:
    study = f"bench-{workers}w"
    name, url = await with_study(admin_url, folder, study, trials, epochs)
    try:
        load = os.getloadavg()[0]
        run = await asyncio.to_thread(run_workers, url, study, workers, folder)
        durations = check_study(await asyncio.to_thread(show, url, study, folder), trials)
    finally:
        await drop_database(admin_url, name)
    if sum(run.counts) != trials:
        raise BenchmarkError(f"{workers} workers ran {run.counts} trials, expected {trials}")
    return Measurement(
        workers,
        trials,
        run.wall_s,
        statistics.fmean(durations),
        run.counts,
        load,
        run.last_trial_s,
        statistics.fmean(run.first_trials_s) if run.first_trials_s else float("nan"),
    )


# --------------------------------------------------------------------------- report
def report(results: list[Measurement], args: argparse.Namespace, warm: tuple[float, float]) -> str:
    base = next((m for m in results if m.workers == 1), None)
    lines = [
        "# HPO workers: trials per minute with several `qdb hpo worker` processes",
        "",
        f"One study per row, each in a fresh PostgreSQL database; {args.trials} trials, random "
        f"sampler, pruner none, {args.epochs} epochs of a 2-qubit model (1-3 layers) on the "
        f"built-in simulator, {SAMPLES} samples x 2 features (75/25 train/validation), batch "
        f"{BATCH}. Wall time: from starting the `qdb hpo worker` processes to the last exit "
        f"(process start-up included). Generated by `python benchmarks/hpo_workers.py "
        f"--workers {','.join(map(str, args.workers))} --trials {args.trials} --epochs "
        f"{args.epochs}`.",
        "",
        f"- date: {datetime.now(UTC).strftime('%Y-%m-%d %H:%M UTC')}",
        f"- machine: {len(os.sched_getaffinity(0))} CPUs (nproc), {platform.system()} "
        f"{platform.machine()}, python {platform.python_version()}",
        "- load average (1, 5, 15 min) at the end: "
        + ", ".join(f"{v:.2f}" for v in os.getloadavg()),
        "",
        "| workers | trials | wall s | trials/min | speed-up vs 1 worker | mean trial s "
        "| each worker's first trial s | trials per worker | last trial done at s "
        "| 1-min load before |",
        "|---:|---:|---:|---:|---:|---:|---:|---|---:|---:|",
    ]
    for m in results:
        speedup = f"{m.per_minute / base.per_minute:.2f}x" if base is not None else "-"
        lines.append(
            f"| {m.workers} | {m.trials} | {m.wall_s:.1f} | {m.per_minute:.1f} | {speedup} "
            f"| {m.mean_trial_s:.2f} | {m.first_trial_s:.2f} "
            f"| {'/'.join(map(str, m.per_worker))} | {m.last_trial_s:.1f} "
            f"| {m.load_before:.2f} |"
        )
    lines += [
        "",
        f"- warm-up (2 trials, 1 worker, fills numba's cache; not in the table): "
        f"{warm[0]:.1f} s; a worker on a finished study (imports, connecting, nothing to "
        f"run): {warm[1]:.1f} s, part of every row's wall time.",
        "- every trial ended `complete` and its run `finished` (checked with "
        "`qdb hpo show --json`); mean trial s is Optuna's trial duration (asked to told), "
        "over every trial; each worker's first trial s is the mean over the workers of the "
        "seconds their first trial took (it pays what a process pays once: loading the "
        "backend and numba's cached kernels).",
        "- last trial done at s: when the last trial's line arrived, from the workers' start. "
        "After it the workers still exit: a worker that finds no trial to ask while another "
        "runs sleeps `min(heartbeat_s, 5)` = 5 s before it looks again (a running trial may "
        "still fail and be retried), so with more than one worker the wall time can exceed "
        "it by up to 5 s more than the ~1 s a lone worker takes to exit.",
    ]
    return "\n".join(lines)


def parse_workers(value: str) -> list[int]:
    try:
        counts = [int(v) for v in value.split(",") if v.strip()]
    except ValueError as e:
        raise argparse.ArgumentTypeError(f"not a list of integers: {value!r}") from e
    if not counts or min(counts) < 1:
        raise argparse.ArgumentTypeError(f"worker counts must be >= 1, got {value!r}")
    return counts


async def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--workers", type=parse_workers, default=[1, 2, 4], help="e.g. 1,2,4")
    parser.add_argument("--trials", type=int, default=96, help="trials per study (default 96)")
    parser.add_argument("--epochs", type=int, default=3, help="epochs per trial (default 3)")
    parser.add_argument("--url", default=ADMIN_URL, help=f"admin URL (default {ADMIN_URL})")
    parser.add_argument("--out", type=Path, default=RESULTS, help="the Markdown file to write")
    args = parser.parse_args()
    if args.trials < max(args.workers):
        parser.error("--trials must be at least the largest worker count")
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="hpo-bench-") as tmp:
        folder = Path(tmp)
        try:
            warm = await warm_up(args.url, folder, args.epochs)
            print(f"warm-up {warm[0]:.1f} s, idle worker {warm[1]:.1f} s", flush=True)
            results = []
            for workers in args.workers:
                m = await measure(args.url, folder, workers, args.trials, args.epochs)
                print(
                    f"{workers} worker(s): {m.trials} trials in {m.wall_s:.1f} s "
                    f"({m.per_minute:.1f}/min), per worker {m.per_worker}",
                    flush=True,
                )
                results.append(m)
        except BenchmarkError as e:
            print(f"FAILED: {e}", file=sys.stderr)
            return 1
    text = (
        report(results, args, warm)
        + f"\n- benchmark wall time {time.perf_counter() - started:.0f} s"
    )
    print(text)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(text + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
