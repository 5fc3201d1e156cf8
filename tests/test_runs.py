"""The run lifecycle and alerts, on a real SQLite file and the real PostgreSQL server.

A run owned by a dead process is found interrupted: the process is a real one, SIGKILLed,
whose lease then expires by itself; a run owned by a live lease is never flipped.
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import subprocess
import sys
import textwrap
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select, text, update

from quantum_db import (
    ENDED_RUN_STATUSES,
    MAX_ALERT_MESSAGE_LENGTH,
    MAX_REASON_LENGTH,
    RUN_STATUSES,
    DataValidationError,
    InvalidNameError,
    NotFoundError,
    QuantumDatabase,
    RunNotFoundError,
    Settings,
)
from quantum_db.leases import live_owner_ids
from quantum_db.registry.schema import AlertRow, LeaseRow, RunRow

ROOT = Path(__file__).resolve().parent.parent
INTERRUPTED = "the process training it stopped without ending the run (lease {} expired)"


@pytest.fixture
async def db(database_url: str) -> AsyncIterator[QuantumDatabase]:
    database = QuantumDatabase(database_url, settings=Settings(sweep_on_connect=False))
    async with database.connect():
        yield database


async def _rows(db: QuantumDatabase) -> list[tuple[Any, ...]]:
    """Every run as stored, to check that a refused call changed nothing."""
    async with db.registry.session() as session:
        rows = (await session.scalars(select(RunRow).order_by(RunRow.id))).all()
        return [(r.id, r.status, r.owner_id, r.reason, r.updated_at) for r in rows]


async def _add_lease(db: QuantumDatabase, lease_id: str, expires_in: float) -> None:
    now = time.time()
    async with db.registry.session() as session:
        session.add(LeaseRow(id=lease_id, host="h", pid=1, expires_at=now + expires_in))


def test_the_statuses() -> None:
    assert RUN_STATUSES == ("running", "finished", "stopped", "failed", "interrupted")
    assert ENDED_RUN_STATUSES == ("finished", "stopped", "failed", "interrupted")


# ------------------------------------------------------------------ lifecycle
async def test_a_run_is_created_owned_and_finished(db: QuantumDatabase) -> None:
    assert db.owner_id is not None
    run = await db.runs.create(
        "r1", config={"lr": 0.1}, backend="simulator", seed=3, owner_id=db.owner_id
    )
    assert (run.status, run.owner_id, run.reason) == ("running", db.owner_id, None)
    assert await db.runs.get("r1") == run
    done = await db.runs.finish("r1", "finished")
    assert (done.status, done.owner_id, done.reason) == ("finished", None, None)
    assert await db.runs.get("r1") == done
    assert done.updated_at >= run.updated_at
    assert (done.config, done.backend, done.seed) == ({"lr": 0.1}, "simulator", 3)


async def test_stopped_and_failed_keep_their_reason(db: QuantumDatabase) -> None:
    await db.runs.create("stop")
    await db.runs.create("fail")
    stopped = await db.runs.finish("stop", "stopped", "budget of $5 reached")
    failed = await db.runs.finish("fail", "failed", "RuntimeError: boom")
    assert (stopped.status, stopped.reason) == ("stopped", "budget of $5 reached")
    assert (await db.runs.get("fail")).reason == failed.reason == "RuntimeError: boom"
    assert [r.id for r in await db.runs.list("failed")] == ["fail"]
    assert [r.id for r in await db.runs.list("stopped")] == ["stop"]
    assert [r.id for r in await db.runs.list()] == ["stop", "fail"]


async def test_a_long_reason_is_cut_to_the_column(db: QuantumDatabase) -> None:
    await db.runs.create("long")
    error = "Traceback: " + "x" * 5000
    ended = await db.runs.finish("long", "failed", error)
    stored = (await db.runs.get("long")).reason
    assert stored == ended.reason == error[: MAX_REASON_LENGTH - 3] + "..."
    assert len(stored) == MAX_REASON_LENGTH == 2000


async def test_resume_starts_an_ended_run_again_under_a_new_owner(db: QuantumDatabase) -> None:
    await db.runs.create("again", owner_id="old-owner")
    await db.runs.finish("again", "interrupted", "SIGTERM")
    assert (await db.runs.get("again")).reason == "SIGTERM"
    resumed = await db.runs.start("again", db.owner_id)
    assert (resumed.status, resumed.owner_id, resumed.reason) == ("running", db.owner_id, None)
    assert await db.runs.get("again") == resumed
    # Starting again from the same process is harmless.
    assert (await db.runs.start("again", db.owner_id)).owner_id == db.owner_id
    assert (await db.runs.finish("again", "finished")).status == "finished"


async def test_an_interrupted_run_may_still_be_ended_by_its_process(db: QuantumDatabase) -> None:
    await db.runs.create("late")
    await db.runs.finish("late", "interrupted")
    assert (await db.runs.finish("late", "finished")).status == "finished"


async def test_an_ended_run_is_not_ended_twice(db: QuantumDatabase) -> None:
    await db.runs.create("once")
    await db.runs.finish("once", "stopped", "patience")
    before = await _rows(db)
    with pytest.raises(DataValidationError, match="already ended as stopped; start"):
        await db.runs.finish("once", "failed", "late error")
    assert await _rows(db) == before


async def test_a_stored_completed_reads_as_finished(db: QuantumDatabase) -> None:
    async with db.registry.session() as session:
        await session.execute(
            text(
                "INSERT INTO runs (id, status, config, created_at, updated_at) "
                "VALUES ('legacy', 'completed', '{}', 1.0, 1.0)"
            )
        )
    assert (await db.runs.get("legacy")).status == "finished"
    assert [r.id for r in await db.runs.list("finished")] == ["legacy"]
    # Ended already: finish refuses, start resumes it.
    with pytest.raises(DataValidationError, match="already ended as finished"):
        await db.runs.finish("legacy", "finished")
    assert (await db.runs.start("legacy", None)).status == "running"


async def test_set_status_takes_completed_as_finished(db: QuantumDatabase) -> None:
    await db.runs.create("old-api", owner_id=db.owner_id)
    await db.runs.set_status("old-api", "completed")
    async with db.registry.session() as session:
        row = await session.get(RunRow, "old-api")
        assert row is not None and (row.status, row.owner_id) == ("finished", None)
    await db.runs.set_status("old-api", "interrupted")
    assert (await db.runs.get("old-api")).status == "interrupted"


@pytest.mark.parametrize(
    ("call", "error", "match"),
    [
        (lambda db: db.runs.finish("r", "bogus"), DataValidationError, "must be one of"),
        (lambda db: db.runs.finish("r", "running"), DataValidationError, "must be one of"),
        (lambda db: db.runs.finish("r", "completed"), DataValidationError, "must be one of"),
        (lambda db: db.runs.finish("r", None), DataValidationError, "must be one of"),
        (lambda db: db.runs.finish("r", "failed"), DataValidationError, "needs a reason"),
        (lambda db: db.runs.finish("r", "stopped"), DataValidationError, "needs a reason"),
        (lambda db: db.runs.finish("r", "failed", "  "), DataValidationError, "empty"),
        (lambda db: db.runs.finish("r", "failed", 42), DataValidationError, "must be a string"),
        (lambda db: db.runs.finish("bad id", "finished"), InvalidNameError, "not allowed"),
        (lambda db: db.runs.finish("ghost", "finished"), RunNotFoundError, "no run 'ghost'"),
        (lambda db: db.runs.start("ghost", None), RunNotFoundError, "no run 'ghost'"),
        (lambda db: db.runs.start("r/1", None), InvalidNameError, "not allowed"),
        (lambda db: db.runs.start("r", "o" * 65), DataValidationError, "at most 64"),
        (lambda db: db.runs.start("r", ""), DataValidationError, "non-empty"),
        (lambda db: db.runs.create("r2", owner_id=7), DataValidationError, "owner_id"),
        (lambda db: db.runs.create("r"), DataValidationError, "already exists"),
        (lambda db: db.runs.get(""), InvalidNameError, "not allowed"),
        (lambda db: db.runs.list("completed"), DataValidationError, "must be one of"),
        (lambda db: db.runs.set_status("r", "done"), DataValidationError, "must be one of"),
        (lambda db: db.runs.set_status("ghost", "failed"), RunNotFoundError, "ghost"),
        (lambda db: db.runs.detect_interrupted("ghost"), RunNotFoundError, "ghost"),
        (lambda db: db.runs.detect_interrupted("no such"), InvalidNameError, "not allowed"),
        (lambda db: db.runs.last_steps(["a b"]), InvalidNameError, "not allowed"),
    ],
)
async def test_bad_lifecycle_calls_are_refused_and_change_nothing(
    db: QuantumDatabase, call: Any, error: type[Exception], match: str
) -> None:
    await db.runs.create("r", owner_id=db.owner_id)
    before = await _rows(db)
    with pytest.raises(error, match=match):
        await call(db)
    assert await _rows(db) == before


# ------------------------------------------------------------------ interrupted runs
async def test_runs_of_dead_owners_are_interrupted_and_live_ones_left(
    db: QuantumDatabase,
) -> None:
    await _add_lease(db, "dead-lease", expires_in=-1.0)
    await _add_lease(db, "live-lease", expires_in=60.0)
    await db.runs.create("dead", owner_id="dead-lease")
    await db.runs.create("missing", owner_id="never-was-a-lease")
    await db.runs.create("mine", owner_id=db.owner_id)
    await db.runs.create("other-live", owner_id="live-lease")
    await db.runs.create("orphan-stale")
    await db.runs.create("orphan-fresh")
    await db.runs.create("ended", owner_id="dead-lease")
    await db.runs.finish("ended", "finished")
    async with db.registry.session() as session:
        # Older than the lease TTL (60 s by default) without an update.
        await session.execute(
            update(RunRow).where(RunRow.id == "orphan-stale").values(updated_at=time.time() - 61)
        )
    untouched = {r.id: r for r in await db.runs.list() if r.id not in ("dead", "missing")}

    found = await db.runs.detect_interrupted()
    assert sorted(found) == ["dead", "missing", "orphan-stale"]
    dead = await db.runs.get("dead")
    assert (dead.status, dead.owner_id) == ("interrupted", None)
    assert dead.reason == INTERRUPTED.format("dead-lease")
    assert (await db.runs.get("missing")).reason == INTERRUPTED.format("never-was-a-lease")
    stale = await db.runs.get("orphan-stale")
    assert stale.status == "interrupted"
    assert stale.reason is not None and "no owner lease, and no update for 61 s" in stale.reason
    for run_id in ("mine", "other-live", "orphan-fresh", "ended"):
        assert await db.runs.get(run_id) == untouched[run_id]
    assert await db.runs.detect_interrupted() == []  # nothing left to find


async def test_the_per_run_check_looks_at_that_run_only(db: QuantumDatabase) -> None:
    await _add_lease(db, "dead-lease", expires_in=-1.0)
    await db.runs.create("a", owner_id="dead-lease")
    await db.runs.create("b", owner_id="dead-lease")
    await db.runs.create("live", owner_id=db.owner_id)
    assert await db.runs.detect_interrupted("live") == []
    assert await db.runs.detect_interrupted("a") == ["a"]
    assert (await db.runs.get("b")).status == "running"
    assert await db.runs.detect_interrupted("a") == []  # already interrupted
    assert await db.runs.detect_interrupted() == ["b"]


async def test_a_live_run_is_never_flipped_by_a_concurrent_check(database_url: str) -> None:
    """A resume (start) races detect_interrupted on two connections: whichever goes
    first, the run ends up running under the live owner, never interrupted."""
    settings = Settings(sweep_on_connect=False)
    trainer, checker = (
        QuantumDatabase(database_url, settings=settings),
        QuantumDatabase(database_url, settings=settings),
    )
    async with trainer.connect(), checker.connect():
        await _add_lease(trainer, "dead-lease", expires_in=-1.0)
        for attempt in range(15):
            run_id = f"race-{attempt}"
            await trainer.runs.create(run_id, owner_id="dead-lease")
            found, _ = await asyncio.gather(
                checker.runs.detect_interrupted(run_id),
                trainer.runs.start(run_id, trainer.owner_id),
            )
            run = await trainer.runs.get(run_id)
            assert (run.status, run.owner_id) == ("running", trainer.owner_id), found
        # Afterwards the live owner's runs are left alone.
        assert await checker.runs.detect_interrupted() == []


async def test_start_takes_over_a_run_of_another_live_lease_with_a_warning(
    db: QuantumDatabase, caplog: pytest.LogCaptureFixture
) -> None:
    # After a SIGKILL the dead process's lease stays live for up to its TTL; a restart
    # takes the run over at once rather than waiting for that.
    caplog.set_level(logging.WARNING, logger="quantum_db.runs")
    await _add_lease(db, "live-lease", expires_in=60.0)
    await db.runs.create("busy", owner_id="live-lease")
    taken = await db.runs.start("busy", db.owner_id)
    assert (taken.status, taken.owner_id) == ("running", db.owner_id)
    (record,) = [r for r in caplog.records if r.name == "quantum_db.runs"]
    assert record.levelno == logging.WARNING
    assert f"lease {db.owner_id} takes it over" in record.getMessage()
    assert "live-lease" in record.getMessage()
    caplog.clear()
    await db.runs.start("busy", db.owner_id)  # its own run: no warning
    await _add_lease(db, "dead-lease", expires_in=-1.0)
    await db.runs.create("abandoned", owner_id="dead-lease")
    await db.runs.start("abandoned", db.owner_id)  # a dead owner's run: no warning
    assert [r for r in caplog.records if r.name == "quantum_db.runs"] == []


_OWNER_SCRIPT = textwrap.dedent(
    """
    import asyncio, sys
    from quantum_db import QuantumDatabase, Settings

    async def main():
        db = QuantumDatabase(sys.argv[1], settings=Settings(lease_ttl_s=1.0,
                                                            sweep_on_connect=False))
        async with db.connect():
            await db.runs.create("victim", owner_id=db.owner_id, backend="simulator")
            await db.metrics.log("victim", {"loss": 0.5}, step=7)
            await db.metrics.flush()
            print("ready", db.owner_id, flush=True)
            await asyncio.sleep(600)

    asyncio.run(main())
    """
)


@pytest.mark.slow
async def test_a_killed_process_s_run_is_found_interrupted(db: QuantumDatabase) -> None:
    proc = subprocess.Popen(
        [sys.executable, "-c", _OWNER_SCRIPT, db.url],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout is not None
        line = await asyncio.to_thread(proc.stdout.readline)
        assert line.startswith("ready "), proc.stderr.read() if proc.stderr else line
        owner = line.split()[1]
        # Alive: its heartbeat keeps the lease (TTL 1 s) live for well over a TTL.
        for _ in range(4):
            assert await db.runs.detect_interrupted() == []
            assert (await db.runs.get("victim")).owner_id == owner
            await asyncio.sleep(0.4)
        os.kill(proc.pid, signal.SIGKILL)
        assert await asyncio.to_thread(proc.wait, 30) == -signal.SIGKILL
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        for pipe in (proc.stdout, proc.stderr):
            if pipe is not None:
                pipe.close()
    deadline = time.monotonic() + 10
    while True:
        async with db.registry.session() as session:
            if owner not in await live_owner_ids(session):
                break
        assert time.monotonic() < deadline, "the killed process's lease never expired"
        await asyncio.sleep(0.1)
    assert await db.runs.detect_interrupted() == ["victim"]
    run = await db.runs.get("victim")
    assert (run.status, run.owner_id, run.reason) == (
        "interrupted",
        None,
        INTERRUPTED.format(owner),
    )
    assert await db.runs.last_steps() == {"victim": 7}
    # This process resumes it.
    assert (await db.runs.start("victim", db.owner_id)).owner_id == db.owner_id


async def test_last_steps_count_metrics_and_checkpoints(db: QuantumDatabase) -> None:
    await db.metrics.log("m", {"loss": 1.0}, step=3)
    await db.metrics.log("m", {"loss": 1.0}, step=5)
    await db.checkpoints.save("m", 4, {"x": 1})
    await db.checkpoints.save("c", 9, {"x": 1})
    await db.metrics.log("c", {"loss": 1.0}, step=2)
    await db.runs.create("empty")
    await db.metrics.flush()  # last_steps reads what is stored
    assert await db.runs.last_steps() == {"m": 5, "c": 9}
    assert await db.runs.last_steps(["c", "empty"]) == {"c": 9}


# ------------------------------------------------------------------ alerts
async def _alert_rows(db: QuantumDatabase) -> list[tuple[Any, ...]]:
    async with db.registry.session() as session:
        rows = (await session.scalars(select(AlertRow).order_by(AlertRow.id))).all()
        return [(r.id, r.run_id, r.kind, r.message, r.acknowledged) for r in rows]


async def test_alerts_are_stored_logged_listed_and_acknowledged(
    db: QuantumDatabase, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="quantum_db.alerts")
    await db.runs.create("watched")
    loss = await db.alerts.raise_alert(
        "watched",
        "loss_threshold",
        "loss 2.5 above 2.0",
        metric_key="loss",
        value=2.5,
        threshold=2.0,
    )
    assert (loss.run_id, loss.kind, loss.metric_key, loss.value, loss.threshold) == (
        "watched",
        "loss_threshold",
        "loss",
        2.5,
        2.0,
    )
    assert loss.acknowledged is False and loss.id >= 1
    budget = await db.alerts.raise_alert(None, "budget", "80% of the budget spent")
    nan = await db.alerts.raise_alert("watched", "nan", "loss is NaN at step 12")
    assert [r.getMessage() for r in caplog.records if r.name == "quantum_db.alerts"] == [
        f"alert {loss.id} (loss_threshold) on run 'watched': loss 2.5 above 2.0",
        f"alert {budget.id} (budget): 80% of the budget spent",
        f"alert {nan.id} (nan) on run 'watched': loss is NaN at step 12",
    ]
    assert all(r.levelno == logging.WARNING for r in caplog.records)

    assert await db.alerts.list() == [loss, budget, nan]
    assert await db.alerts.list(run_id="watched") == [loss, nan]
    assert await db.alerts.list(kind="nan") == [nan]
    assert await db.alerts.list(run_id="watched", kind="budget") == []
    acked = await db.alerts.acknowledge(loss.id)
    assert acked.acknowledged is True and acked.id == loss.id
    assert await db.alerts.acknowledge(loss.id) == acked  # again: a no-op
    assert await db.alerts.list(unacknowledged=True) == [budget, nan]
    assert await db.alerts.list(run_id="watched", unacknowledged=True) == [nan]
    assert (await db.alerts.list())[0] == acked


async def test_a_long_alert_message_is_cut_and_says_so(db: QuantumDatabase) -> None:
    message = "m" * 3000
    alert = await db.alerts.raise_alert(None, "verbose", message)
    assert alert.message == "m" * (MAX_ALERT_MESSAGE_LENGTH - 3) + "..."
    assert (await db.alerts.list())[0].message == alert.message
    assert len(alert.message) == 2000


@pytest.mark.parametrize(
    ("call", "error", "match"),
    [
        (lambda db: db.alerts.raise_alert("r", "", "m"), DataValidationError, "kind"),
        (lambda db: db.alerts.raise_alert("r", "k" * 65, "m"), DataValidationError, "at most 64"),
        (lambda db: db.alerts.raise_alert("r", "a\nb", "m"), DataValidationError, "printable"),
        (lambda db: db.alerts.raise_alert("r", " k", "m"), DataValidationError, "blanks"),
        (lambda db: db.alerts.raise_alert("r", 3, "m"), DataValidationError, "kind"),
        (lambda db: db.alerts.raise_alert("r", "k", ""), DataValidationError, "message"),
        (lambda db: db.alerts.raise_alert("r", "k", None), DataValidationError, "message"),
        (
            lambda db: db.alerts.raise_alert("r", "k", "m", value=float("nan")),
            DataValidationError,
            "finite",
        ),
        (
            lambda db: db.alerts.raise_alert("r", "k", "m", threshold=float("inf")),
            DataValidationError,
            "finite",
        ),
        (
            lambda db: db.alerts.raise_alert("r", "k", "m", value="1.0"),
            DataValidationError,
            "must be a number",
        ),
        (
            lambda db: db.alerts.raise_alert("r", "k", "m", metric_key="x" * 129),
            DataValidationError,
            "metric_key",
        ),
        (lambda db: db.alerts.raise_alert("r r", "k", "m"), InvalidNameError, "not allowed"),
        (lambda db: db.alerts.raise_alert("ghost", "k", "m"), RunNotFoundError, "ghost"),
        (lambda db: db.alerts.acknowledge(0), DataValidationError, ">= 1"),
        (lambda db: db.alerts.acknowledge(True), DataValidationError, "integer"),
        (lambda db: db.alerts.acknowledge(10_000), NotFoundError, "no alert 10000"),
        (lambda db: db.alerts.list(kind=""), DataValidationError, "kind"),
        (lambda db: db.alerts.list(run_id="?"), InvalidNameError, "not allowed"),
        (lambda db: db.alerts.list(unacknowledged="yes"), DataValidationError, "bool"),
    ],
)
async def test_bad_alerts_are_refused_and_store_nothing(
    db: QuantumDatabase, call: Any, error: type[Exception], match: str
) -> None:
    await db.runs.create("r")
    await db.alerts.raise_alert("r", "kept", "an earlier alert")
    before = await _alert_rows(db)
    with pytest.raises(error, match=match):
        await call(db)
    assert await _alert_rows(db) == before
