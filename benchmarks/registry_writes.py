"""Benchmark: the registry's sustained write rate, worker processes on one PostgreSQL database.

Each of ``--workers`` spawned processes opens its own ``QuantumDatabase`` on a fresh
database and, for ``--seconds``, does what an HPO trial's training run writes, without the
compute: a run of its own; every step it logs ``--keys`` metric values (the trainer's
``loss`` and ``grad_norm``, then the rest in a second call); every ``--checkpoint-every``
steps it flushes the metrics and saves a checkpoint. Exceptions are counted by type, never
fatal. Afterwards the ``metrics``, ``checkpoints`` and ``budget_ledger`` rows are counted
and checked against what the workers reported.

The ledger traffic, on ONE budget that all workers share (its row is the contended lock):

* default, paced: only paid jobs touch the ledger (``BackendManager`` reserves only when a
  job costs something; the free simulator never does), and a paid job is remote, so a
  worker has one remote paid job in flight, returning every ``--job-interval-s`` (0.5 s):
  reserved when sent, settled when it returns, the next one sent at once (the first at a
  random point of the first interval: trials do not submit in lockstep). A concurrent
  task of the worker does this, independently of its steps: at most
  ``workers / job-interval-s`` jobs/s in all.
* ``--jobs-per-step N`` (N > 0, overrides the pacing): N jobs reserved and settled inside
  every step, the contended worst case: every worker waits on the budget row's lock, so
  the steps go at the pace of the ledger.
* ``--jobs-per-step 0``: no ledger traffic at all (free jobs only).

Target, on the default (paced) workload: at least 5,000 metric rows/s sustained with 8
workers, and no lock or serialization error.

    python benchmarks/registry_writes.py                      # paced, 8 workers, 30 s
    python benchmarks/registry_writes.py --jobs-per-step 1    # the contended worst case
    python benchmarks/registry_writes.py --jobs-per-step 0    # no ledger traffic
    python benchmarks/registry_writes.py --seconds 10

Writes its section of ``benchmarks/results/registry_writes.md`` (one per workload: the
others, and anything written around them, are kept); exits 1 when the target is missed or
a count does not match.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import multiprocessing
import os
import platform
import sys
import threading
import time
import uuid
from collections import Counter
from collections.abc import Awaitable
from multiprocessing.queues import Queue
from multiprocessing.synchronize import Barrier
from pathlib import Path
from queue import Empty
from typing import Any, TypedDict, TypeVar

import asyncpg  # type: ignore[import-untyped]
import numpy as np
import psutil
from sqlalchemy.engine import make_url

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from backends.accounting import Budget  # noqa: E402
from quantum_db import QuantumDatabase  # noqa: E402
from quantum_db.registry.schema import BudgetRow  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results" / "registry_writes.md"
ADMIN_URL = "postgresql://postgres@127.0.0.1:5432/test"
BUDGET = Budget(usd=1e9, name="bench-shared")
#: What every job reserves and is charged.
JOB_USD = 0.01
#: SQLSTATEs of a lost lock or serialization conflict: serialization_failure,
#: deadlock_detected, lock_not_available, query_canceled (a lock or statement timeout).
LOCK_STATES = frozenset({"40001", "40P01", "55P03", "57014"})
LOCK_WORDS = ("deadlock", "could not serialize", "could not obtain lock", "lock timeout")

T = TypeVar("T")


class Config(TypedDict):
    url: str
    seconds: float
    keys: int
    checkpoint_every: int
    #: Jobs reserved and settled inside every step (0: none in the step loop).
    jobs_per_step: int
    #: One paid job in flight per worker, returning after this long (0: no paced jobs).
    job_interval_s: float


class Report(TypedDict):
    worker: int
    run_id: str
    started: float
    ended: float
    steps: int
    metric_rows: int
    checkpoints: int
    last_checkpoint: int
    ledger_rows: int
    jobs: int
    errors: dict[str, int]
    lock_errors: dict[str, int]
    lock_messages: int
    logged: dict[str, int]
    retries: int
    cpu_s: float
    timings: dict[str, list[float]]


def is_lock_error(exc: BaseException) -> bool:
    """Whether ``exc`` (or anything it wraps) is a lock or serialization conflict."""
    seen: set[int] = set()
    stack: list[BaseException] = [exc]
    while stack:
        current = stack.pop()
        if id(current) in seen:
            continue
        seen.add(id(current))
        if getattr(current, "sqlstate", None) in LOCK_STATES:
            return True
        if any(word in str(current).lower() for word in LOCK_WORDS):
            return True
        for inner in (getattr(current, "orig", None), current.__cause__, current.__context__):
            if isinstance(inner, BaseException):
                stack.append(inner)
    return False


class LogCounter(logging.Handler):
    """Counts what the library logs at WARNING and above, and every retry attempt."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.counts: Counter[str] = Counter()
        self.lock_messages = 0
        self.retries = 0

    def emit(self, record: logging.LogRecord) -> None:
        message = record.getMessage().lower()
        if record.name == "backends.retry":
            self.retries += 1
        if record.levelno >= logging.WARNING:
            self.counts[f"{record.levelname} {record.name}"] += 1
        if any(word in message for word in LOCK_WORDS):
            self.lock_messages += 1


class Worker:
    """One training run's writes; the state its report is made of."""

    def __init__(self, db: QuantumDatabase, index: int, config: Config) -> None:
        self.db = db
        self.config = config
        self.run_id = f"bench-w{index}-{uuid.uuid4().hex[:8]}"
        self.rng = np.random.default_rng(index)
        self.errors: Counter[str] = Counter()
        self.lock_errors: Counter[str] = Counter()
        self.timings: dict[str, list[float]] = {
            k: [] for k in ("reserve", "settle", "log", "flush", "checkpoint")
        }
        self.metric_rows = 0
        self.checkpoints = 0
        self.last_checkpoint = 0
        self.ledger_rows = 0
        self.jobs = 0
        self.steps = 0

    async def timed(self, op: str, call: Awaitable[T]) -> tuple[bool, T | None]:
        """``await call``, its time kept under ``op``; an exception is counted, not raised."""
        t = time.perf_counter()
        try:
            result = await call
        except Exception as exc:
            self.errors[f"{op}: {type(exc).__name__}"] += 1
            if is_lock_error(exc):
                self.lock_errors[op] += 1
            return False, None
        finally:
            self.timings[op].append(time.perf_counter() - t)
        return True, result

    async def reserve(self, job: str) -> bool:
        """Reserve ``job`` on the shared budget, as a paid job's submission does."""
        self.jobs += 1
        reserved, _ = await self.timed("reserve", self.db.accounting.reserve(BUDGET, job, JOB_USD))
        self.ledger_rows += reserved
        return reserved

    async def settle(self, job: str) -> None:
        """Charge ``job``, as its result's arrival does: the release and the charge."""
        settled, _ = await self.timed("settle", self.db.accounting.settle(job, JOB_USD))
        self.ledger_rows += 2 * settled

    async def paced_jobs(self, deadline: float) -> None:
        """One remote paid job in flight until ``deadline``, concurrently with the steps:
        reserved when sent, settled when it returns ``job_interval_s`` later (or at the
        deadline), the next one sent at once. The first is sent at a random point of the
        first interval: independent trials do not submit in lockstep (all of them starting
        together at the barrier would make a convoy on the budget's lock)."""
        interval = self.config["job_interval_s"]
        await asyncio.sleep(interval * float(self.rng.random()))
        n = 0
        while time.perf_counter() < deadline:
            sent = time.perf_counter()
            n += 1
            job = f"{self.run_id}-job-{n}"
            reserved = await self.reserve(job)
            await asyncio.sleep(max(min(sent + interval, deadline) - time.perf_counter(), 0.0))
            if reserved:
                await self.settle(job)

    async def step(self, step: int) -> None:
        c = self.config
        for j in range(c["jobs_per_step"]):
            job = f"{self.run_id}-{step}-{j}"
            if await self.reserve(job):
                await self.settle(job)
        loss = 1.0 / step + 0.01 * float(self.rng.random())
        trainer = {"loss": loss, "grad_norm": float(self.rng.random())}
        calls = [dict(list(trainer.items())[: c["keys"]])]
        if c["keys"] > 2:
            calls.append({f"monitor_{k}": float(self.rng.random()) for k in range(c["keys"] - 2)})
        for values in calls:
            logged, _ = await self.timed("log", self.db.metrics.log(self.run_id, values, step))
            self.metric_rows += len(values) * logged
        if step % c["checkpoint_every"] == 0:
            await self.timed("flush", self.db.metrics.flush())
            payload = {
                "params": self.rng.normal(size=100),
                "step": step,
                "optimizer": {"lr": 0.01, "t": step},
            }
            saved, _ = await self.timed(
                "checkpoint", self.db.checkpoints.save(self.run_id, step, payload)
            )
            if saved:
                self.checkpoints += 1
                self.last_checkpoint = step


async def work(index: int, config: Config, barrier: Barrier) -> Report:
    counter = LogCounter()
    logging.getLogger().addHandler(counter)
    logging.getLogger("backends.retry").setLevel(logging.DEBUG)
    async with QuantumDatabase(config["url"]).connect() as db:
        w = Worker(db, index, config)
        await db.runs.create(
            w.run_id,
            config={"worker": index, "lr": 0.01},
            backend="simulator",
            seed=index,
            owner_id=db.owner_id,
        )
        await asyncio.to_thread(barrier.wait, 600)
        started, cpu = time.time(), time.process_time()
        deadline = time.perf_counter() + config["seconds"]
        pacer = (
            asyncio.create_task(w.paced_jobs(deadline)) if config["job_interval_s"] > 0 else None
        )
        while time.perf_counter() < deadline:
            w.steps += 1
            await w.step(w.steps)
        if pacer is not None:
            await pacer  # its last job returns at the deadline
        await w.timed("flush", db.metrics.flush())  # rows logged since the last checkpoint
        ended, cpu = time.time(), time.process_time() - cpu
        w.metric_rows -= len(db.metrics.rejected)
        with contextlib.suppress(Exception):
            await db.runs.finish(w.run_id, "finished")
    return Report(
        worker=index,
        run_id=w.run_id,
        started=started,
        ended=ended,
        steps=w.steps,
        metric_rows=w.metric_rows,
        checkpoints=w.checkpoints,
        last_checkpoint=w.last_checkpoint,
        ledger_rows=w.ledger_rows,
        jobs=w.jobs,
        errors=dict(w.errors),
        lock_errors=dict(w.lock_errors),
        lock_messages=counter.lock_messages,
        logged=dict(counter.counts),
        retries=counter.retries,
        cpu_s=cpu,
        timings=w.timings,
    )


def worker_main(index: int, config: Config, barrier: Barrier, queue: Queue[Any]) -> None:
    """A spawned worker: its report, or ``{"worker": index, "failed": ...}``, on ``queue``."""
    try:
        queue.put(asyncio.run(work(index, config, barrier)))
    except BaseException as exc:
        barrier.abort()  # the parent and the others stop waiting at once
        queue.put({"worker": index, "failed": f"{type(exc).__name__}: {exc}"})


async def sample_waits(dsn: str, name: str, stop: asyncio.Event) -> Counter[str]:
    """What the database's sessions wait on, sampled every 20 ms (``pg_stat_activity``)."""
    seen: Counter[str] = Counter()
    conn = await asyncpg.connect(dsn)
    try:
        while not stop.is_set():
            rows = await conn.fetch(
                "SELECT state, wait_event_type, wait_event FROM pg_stat_activity "
                "WHERE datname = $1 AND pid <> pg_backend_pid()",
                name,
            )
            for r in rows:
                if r["state"] == "active":
                    seen[f"{r['wait_event_type'] or 'CPU'}:{r['wait_event'] or 'running'}"] += 1
                else:
                    seen[str(r["state"])] += 1
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), 0.02)
    finally:
        await conn.close()
    return seen


async def db_stats(dsn: str, name: str) -> dict[str, int]:
    conn = await asyncpg.connect(dsn)
    try:
        row = await conn.fetchrow(
            "SELECT xact_commit, xact_rollback, tup_inserted, tup_deleted, deadlocks "
            "FROM pg_stat_database WHERE datname = $1",
            name,
        )
    finally:
        await conn.close()
    assert row is not None
    return {k: int(v) for k, v in row.items()}


async def count_rows(dsn: str, t0: float, t1: float, slices: int) -> dict[str, Any]:
    """Rows per table and run, and each kind's rows in ``slices`` equal slices of the window."""
    conn = await asyncpg.connect(dsn)
    try:
        out: dict[str, Any] = {
            "metrics": dict(
                await conn.fetch("SELECT run_id, count(*) FROM metrics GROUP BY run_id")
            ),
            "checkpoints": {
                r["run_id"]: (r["n"], r["last"])
                for r in await conn.fetch(
                    "SELECT run_id, count(*) AS n, max(step) AS last FROM checkpoints "
                    "GROUP BY run_id"
                )
            },
            "ledger": dict(
                await conn.fetch("SELECT kind, count(*) FROM budget_ledger GROUP BY kind")
            ),
        }
        width = (t1 - t0) / slices
        for kind, sql in (
            ("metrics", "SELECT timestamp AS t FROM metrics"),
            ("ledger", "SELECT created_at AS t FROM budget_ledger"),
        ):
            rows = await conn.fetch(
                f"SELECT least(floor((t - $1) / $2), $3 - 1)::int AS s, count(*) AS n "
                f"FROM ({sql}) q GROUP BY 1",
                t0,
                width,
                slices,
            )
            per = dict.fromkeys(range(slices), 0)
            for r in rows:
                per[max(int(r["s"]), 0)] += int(r["n"])
            out[f"{kind} slices"] = [per[s] / width for s in range(slices)]
    finally:
        await conn.close()
    return out


def drain(queue: Queue[Any]) -> list[dict[str, Any]]:
    got: list[dict[str, Any]] = []
    with contextlib.suppress(Empty):
        while True:
            got.append(queue.get_nowait())
    return got


def percentile_ms(values: list[float], q: float) -> float:
    return float(np.percentile(values, q)) * 1000 if values else 0.0


async def bench(args: argparse.Namespace) -> tuple[list[str], bool]:
    load_before = os.getloadavg()  # the machine before this benchmark adds to it
    admin = make_url(args.url)
    name = f"qdb_bench_{uuid.uuid4().hex[:16]}"
    dsn = admin.set(drivername="postgresql", database=name).render_as_string(False)
    url = admin.set(drivername="postgresql+asyncpg", database=name).render_as_string(False)
    conn = await asyncpg.connect(admin.set(drivername="postgresql").render_as_string(False))
    try:
        await conn.execute(f'CREATE DATABASE "{name}"')
    finally:
        await conn.close()
    spawn = multiprocessing.get_context("spawn")
    processes: list[Any] = []
    try:
        # The first connect migrates the empty database; the shared budget's row exists
        # before any worker reserves, so no worker races to create it.
        async with QuantumDatabase(url).connect() as db, db.registry.session() as session:
            session.add(BudgetRow(id=BUDGET.name, limit_usd=BUDGET.usd))
        config = Config(
            url=url,
            seconds=args.seconds,
            keys=args.keys,
            checkpoint_every=args.checkpoint_every,
            jobs_per_step=args.jobs_per_step or 0,
            job_interval_s=args.job_interval_s if args.jobs_per_step is None else 0.0,
        )
        barrier = spawn.Barrier(args.workers + 1)
        queue: Queue[Any] = spawn.Queue()
        processes = [
            spawn.Process(target=worker_main, args=(i, config, barrier, queue), daemon=True)
            for i in range(args.workers)
        ]
        for p in processes:
            p.start()
        try:  # every worker connected and created its run
            await asyncio.to_thread(barrier.wait, 600)
        except threading.BrokenBarrierError:
            await asyncio.sleep(1.0)
            why = [f"worker {got['worker']}: {got['failed']}" for got in drain(queue)]
            raise RuntimeError("a worker failed to start: " + "; ".join(why)) from None
        before = await db_stats(dsn, name)
        psutil.cpu_percent()
        stop = asyncio.Event()
        sampler = asyncio.create_task(sample_waits(dsn, name, stop))
        reports: list[Report] = []
        failed: list[str] = []
        for _ in processes:
            got = await asyncio.to_thread(queue.get, True, args.seconds + 600)
            if "failed" in got:
                failed.append(f"worker {got['worker']}: {got['failed']}")
            else:
                reports.append(got)
        busy = psutil.cpu_percent()
        load_after = os.getloadavg()
        stop.set()
        waits = await sampler
        for p in processes:
            await asyncio.to_thread(p.join, 60)
        await asyncio.sleep(1.0)  # pg_stat_database is updated within a second
        after = await db_stats(dsn, name)
        if failed:
            raise RuntimeError("workers failed: " + "; ".join(failed))
        t0 = min(r["started"] for r in reports)
        t1 = max(r["ended"] for r in reports)
        found = await count_rows(dsn, t0, t1, args.slices)
    finally:
        for p in processes:
            if p.is_alive():
                p.terminate()
        conn = await asyncpg.connect(admin.set(drivername="postgresql").render_as_string(False))
        try:
            await conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        finally:
            await conn.close()
    loads = (load_before, load_after)
    return report(args, reports, found, waits, before, after, busy, loads, t0, t1)


def report(
    args: argparse.Namespace,
    reports: list[Report],
    found: dict[str, Any],
    waits: Counter[str],
    before: dict[str, int],
    after: dict[str, int],
    busy: float,
    loads: tuple[tuple[float, float, float], tuple[float, float, float]],
    t0: float,
    t1: float,
) -> tuple[list[str], bool]:
    """The workload's section of the report (its heading first), and whether it passed."""
    window = t1 - t0
    spread = max(r["started"] for r in reports) - t0
    keep_last = 3  # Settings.checkpoint_keep_last's default: older checkpoints are pruned
    mismatches: list[str] = []
    for r in reports:
        rows = found["metrics"].get(r["run_id"], 0)
        if rows != r["metric_rows"]:
            mismatches.append(f"{r['run_id']}: {rows} metric rows, reported {r['metric_rows']}")
        n, last = found["checkpoints"].get(r["run_id"], (0, 0))
        if (n, last or 0) != (min(r["checkpoints"], keep_last), r["last_checkpoint"]):
            mismatches.append(
                f"{r['run_id']}: {n} checkpoints up to step {last}, expected "
                f"{min(r['checkpoints'], keep_last)} up to {r['last_checkpoint']}"
            )
    ledger_found = sum(found["ledger"].values())
    ledger_reported = sum(r["ledger_rows"] for r in reports)
    if ledger_found != ledger_reported:
        mismatches.append(f"{ledger_found} ledger rows, reported {ledger_reported}")
    metric_rows = sum(r["metric_rows"] for r in reports)
    checkpoints = sum(r["checkpoints"] for r in reports)
    steps = sum(r["steps"] for r in reports)
    errors: Counter[str] = Counter()
    locks: Counter[str] = Counter()
    logged: Counter[str] = Counter()
    for r in reports:
        errors.update(r["errors"])
        locks.update(r["lock_errors"])
        logged.update(r["logged"])
    deadlocks = after["deadlocks"] - before["deadlocks"]
    lock_total = sum(locks.values()) + sum(r["lock_messages"] for r in reports) + deadlocks
    retries = sum(r["retries"] for r in reports)
    rate = metric_rows / window
    passed = rate >= args.target and lock_total == 0 and not mismatches
    ledger_tx = sum(len(r["timings"][op]) for r in reports for op in ("reserve", "settle"))

    def failed(ops: tuple[str, ...], counts: Counter[str]) -> int:
        return sum(v for k, v in counts.items() if k.split(":")[0] in ops)

    def slices(kind: str) -> str:
        return " / ".join(f"{v:,.0f}" for v in found[f"{kind} slices"])

    kinds = [
        ("metrics", metric_rows, f"{sum(found['metrics'].values()):,}", ("log", "flush")),
        (
            "checkpoints",
            checkpoints,
            f"{sum(n for n, _ in found['checkpoints'].values()):,} (the last {keep_last} "
            "of each run are kept)",
            ("checkpoint",),
        ),
        ("budget ledger", ledger_reported, f"{ledger_found:,}", ("reserve", "settle")),
    ]
    jobs = sum(r["jobs"] for r in reports)
    if args.jobs_per_step is None:
        most = args.workers / args.job_interval_s
        ledger = (
            f"one remote paid job in flight per worker, returning every "
            f"{args.job_interval_s:g} s (reserved when sent, settled when it returns, the next "
            f"sent at once, the first at a random point of the first interval; a task of the "
            f"worker, concurrent with its steps): at most "
            f"{most:,.0f} jobs/s, {2 * most:,.0f} ledger transactions/s in all"
        )
    elif args.jobs_per_step:
        ledger = (
            f"{args.jobs_per_step} job(s) reserved and settled inside every step (the "
            "contended worst case, not the target's workload)"
        )
    else:
        ledger = "none (free jobs only, which never touch the ledger)"
    (b1, b5, b15), (a1, a5, a15) = loads
    argv = args.argv if args.argv is not None else sys.argv[1:]
    lines = [
        f"## {mode_title(args)}",
        "",
        f"`python benchmarks/registry_writes.py{''.join(' ' + a for a in argv)}`, "
        f"{time.strftime('%Y-%m-%d %H:%M %Z')}; load average (1/5/15 min) "
        f"{b1:.2f} / {b5:.2f} / {b15:.2f} before the run, {a1:.2f} / {a5:.2f} / {a15:.2f} "
        "at its end (its own workers included).",
        "",
        f"{platform.machine()}, {os.cpu_count()} CPUs (the workers and the server share them), "
        f"Python {platform.python_version()}; {args.workers} spawned workers, each with its "
        f"own `QuantumDatabase`, {args.seconds:g} s each from one start barrier. Per step: "
        f"{args.keys} metric values in {min(args.keys, 2)} `log` calls; a metrics flush and "
        f"a checkpoint every {args.checkpoint_every} steps. Ledger, on one budget shared by "
        f"all workers: {ledger}. Measured window (first start to last final flush): "
        f"{window:.2f} s (the starts within {spread * 1000:.0f} ms).",
        "",
        "| kind | rows written | rows in the database | rows/s sustained | errors | "
        "lock/serialization errors |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for kind, written, stored, ops in kinds:
        lines.append(
            f"| {kind} | {written:,} | {stored} | {written / window:,.1f} | "
            f"{failed(ops, errors)} | {sum(locks[op] for op in ops)} |"
        )
    lines += [
        "",
        f"Target: >= {args.target:,.0f} metric rows/s and no lock error: "
        f"**{'met' if passed else 'missed'}** ({rate:,.0f} metric rows/s; {lock_total} lock "
        f"or serialization errors, server deadlocks and lock messages included; "
        f"{sum(errors.values())} errors in all; counts "
        f"{'match' if not mismatches else 'DO NOT match: ' + '; '.join(mismatches)}). "
        f"{steps:,} steps in all ({steps / window:,.0f}/s); {jobs:,} paid jobs "
        f"({jobs / window:,.1f}/s), {ledger_tx:,} ledger transactions on the shared budget "
        f"({ledger_tx / window:,.0f}/s"
        + (f", one every {window / ledger_tx * 1000:.2f} ms)." if ledger_tx else ")."),
        "",
        "Where the time goes (every worker's calls together"
        + (
            "; `reserve` and `settle` run in the paced task, beside the step loop, not in it):"
            if args.jobs_per_step is None
            else "):"
        ),
        "",
        "| call | calls | mean ms | p50 ms | p95 ms | max ms | share of worker wall time |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    total_wall = sum(r["ended"] - r["started"] for r in reports)
    for op in ("reserve", "settle", "log", "flush", "checkpoint"):
        values = [v for r in reports for v in r["timings"][op]]
        if not values:
            continue
        lines.append(
            f"| `{op}` | {len(values):,} | {np.mean(values) * 1000:.2f} | "
            f"{percentile_ms(values, 50):.2f} | {percentile_ms(values, 95):.2f} | "
            f"{max(values) * 1000:.1f} | {sum(values) / total_wall:.1%} |"
        )
    sampled = sum(waits.values()) or 1
    top = ", ".join(f"{k} {v / sampled:.0%}" for k, v in waits.most_common(6))
    lines += [
        "",
        f"Rows/s in {args.slices} equal slices of the window: metrics {slices('metrics')}; "
        f"ledger {slices('ledger')}.",
        "",
        f"Server sessions (pg_stat_activity every 20 ms): {top}. Server: "
        f"{after['xact_commit'] - before['xact_commit']:,} commits "
        f"({(after['xact_commit'] - before['xact_commit']) / window:,.0f}/s), "
        f"{after['xact_rollback'] - before['xact_rollback']:,} rollbacks (the pool's pre-ping "
        "on each session checkout), "
        f"{deadlocks} deadlocks. Machine CPU busy (every process) {busy:.0f}%; "
        f"the workers' own CPU {sum(r['cpu_s'] for r in reports):.1f} s of "
        f"{total_wall:.1f} worker-seconds. Retry attempts logged: {retries}.",
    ]
    if errors or logged:
        shown = ", ".join(f"{k} x{v}" for k, v in (errors + logged).most_common())
        lines += ["", f"Errors and warnings: {shown}."]
    return lines, passed


def mode_title(args: argparse.Namespace) -> str:
    if args.jobs_per_step is None:
        return f"Default: paced paid jobs, one per worker every {args.job_interval_s:g} s"
    if args.jobs_per_step:
        return f"Contended: {args.jobs_per_step} job(s) per step on the shared budget"
    return "No ledger traffic"


def mode_key(args: argparse.Namespace) -> str:
    if args.jobs_per_step is None:
        return "paced"
    return "per-step" if args.jobs_per_step else "no-ledger"


def write_section(out: Path, key: str, lines: list[str]) -> None:
    """Put ``lines`` in ``out`` as the ``key`` workload's section, between its markers:
    in place of its last run's, after the others, or in a new file."""
    begin, end = f"<!-- registry_writes: {key} -->", f"<!-- /registry_writes: {key} -->"
    section = "\n".join([begin, *lines, end])
    text = out.read_text() if out.exists() else ""
    if begin in text and end in text:
        head, rest = text.split(begin, 1)
        text = head + section + rest.split(end, 1)[1]
    elif "<!-- registry_writes: " in text:
        text = text.rstrip("\n") + "\n\n" + section + "\n"
    else:
        title = "# Registry writes: worker processes on one PostgreSQL database"
        text = f"{title}\n\n{section}\n"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(text)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--workers", type=int, default=8)
    parser.add_argument("--seconds", type=float, default=30.0, help="wall time of each worker")
    parser.add_argument("--url", default=ADMIN_URL, help="an admin PostgreSQL URL")
    parser.add_argument("--out", type=Path, default=RESULTS, help="the Markdown report")
    parser.add_argument("--keys", type=int, default=8, help="metric values per step (>= 1)")
    parser.add_argument("--checkpoint-every", type=int, default=10, help="steps")
    parser.add_argument(
        "--job-interval-s",
        type=float,
        default=0.5,
        help="one remote paid job in flight per worker, returning every 0.5 s (the default "
        "workload: reserved when sent, settled when it returns, beside the steps)",
    )
    parser.add_argument(
        "--jobs-per-step",
        type=int,
        default=None,
        help="N > 0: N jobs reserved and settled inside every step instead (the contended "
        "worst case); 0: no ledger traffic at all",
    )
    parser.add_argument("--target", type=float, default=5000.0, help="metric rows/s")
    parser.add_argument("--slices", type=int, default=6, help="of the window, for the trend")
    args = parser.parse_args(argv)
    if args.jobs_per_step is not None and args.jobs_per_step < 0:
        parser.error("--jobs-per-step must be >= 0")
    if args.job_interval_s <= 0:
        parser.error("--job-interval-s must be > 0 (--jobs-per-step 0: no ledger traffic)")
    args.argv = argv
    lines, passed = asyncio.run(bench(args))
    write_section(args.out, mode_key(args), lines)
    print("\n".join(lines))
    return 0 if passed else 1


if __name__ == "__main__":
    sys.exit(main())
