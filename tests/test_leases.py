"""Four processes share one budget; two are SIGKILLed mid-job; a sweep makes it whole again.

Run as ``python -m tests.test_leases URL API_URL TTL`` it is one of those processes: it
connects (taking a lease) and runs IonQ QPU jobs one after another until the budget
refuses one.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import select

from backends import BackendManager, Budget, BudgetExceededError, Circuit
from backends.ionq import IonQBackend
from quantum_db import QuantumDatabase
from quantum_db.accounting import SqlAccounting
from quantum_db.leases import Lease, live_owner_ids
from quantum_db.registry import Registry, upgrade
from quantum_db.registry.schema import JobRow, LeaseRow, LedgerRow
from quantum_db.settings import Settings
from quantum_db.sweeper import sweep

from .ionq_emulator import IonQEmulator

API_KEY = "lease-test-key"
BUDGET = Budget(usd=250.0, name="shared-aria")
SHOTS = 100
#: How long each emulated QPU job stays queued: long enough to be caught mid-flight.
QUEUE_S = 1.5
LEASE_TTL_S = 2.0
ROOT = Path(__file__).resolve().parent.parent


def bell() -> Circuit:
    return Circuit(2).h(0).cx(0, 1).measure_all()


def aria(api_url: str) -> IonQBackend:
    return IonQBackend(
        "qpu.aria-1",
        "qiskit",
        api_key=API_KEY,
        api_url=api_url,
        poll_interval_s=0.02,
        max_poll_interval_s=0.05,
        retry_backoff_s=0.01,
        request_timeout_s=30.0,
        job_timeout_s=120.0,
        error_mitigation=False,
        seed=11,
    )


async def _work(url: str, api_url: str, ttl: float) -> int:
    db = QuantumDatabase(url, settings=Settings(lease_ttl_s=ttl, sweep_on_connect=False))
    async with db.connect():
        # The connection's ledger, so that every reservation carries this process's lease.
        manager = BackendManager(
            {"ionq-aria": aria(api_url)},
            accounting=SqlAccounting(db.registry, owner_id=db.owner_id),
            fallback=None,
        )
        ran = 0
        try:
            while True:
                try:
                    await manager.run(bell(), shots=SHOTS, backend="ionq-aria", budget=BUDGET)
                except BudgetExceededError:
                    return ran
                ran += 1
        finally:
            await manager.aclose()


@pytest.fixture
def emulator() -> Iterator[IonQEmulator]:
    emu = IonQEmulator(API_KEY).start()
    yield emu
    emu.stop()


async def _owner_of(registry: Registry, pid: int) -> str | None:
    async with registry.session() as session:
        return await session.scalar(select(LeaseRow.id).where(LeaseRow.pid == pid))


async def _in_flight(registry: Registry, owner: str) -> list[str]:
    """Provider ids of the owner's jobs that are recorded while still running."""
    async with registry.session() as session:
        rows = (
            await session.scalars(
                select(JobRow).where(JobRow.owner_id == owner, JobRow.status == "running")
            )
        ).all()
    return [str(i) for row in rows for i in (row.provider_job_ids or [])]


@pytest.mark.slow
async def test_four_processes_two_sigkilled_mid_job_nothing_lost_nothing_overspent(
    database_url: str, emulator: IonQEmulator
) -> None:
    per_job = aria(emulator.url).estimate_run_cost(bell(), SHOTS)
    affordable = math.floor(BUDGET.usd / per_job + 1e-9)
    assert affordable == 19  # $250 at IonQ's Aria price of a 100-shot Bell pair
    registry = Registry(database_url)
    await upgrade(registry)
    emulator.slow_jobs(QUEUE_S)
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    procs = [
        subprocess.Popen(
            [
                sys.executable,
                "-m",
                "tests.test_leases",
                database_url,
                emulator.url,
                str(LEASE_TTL_S),
            ],
            cwd=ROOT,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
        for _ in range(4)
    ]
    victims, survivors = procs[:2], procs[2:]
    killed_in_flight: dict[int, str] = {}
    try:
        deadline = time.monotonic() + 120
        while len(killed_in_flight) < len(victims):
            assert time.monotonic() < deadline, "the victims never had a job in flight"
            for proc in victims:
                if proc.pid in killed_in_flight:
                    continue
                assert proc.poll() is None, proc.communicate()
                owner = await _owner_of(registry, proc.pid)
                if owner is None:
                    continue
                for provider_id in await _in_flight(registry, owner):
                    job = emulator.jobs.get(provider_id)
                    # Killed while IonQ still has the job queued: it will run and bill.
                    if job is not None and time.monotonic() - job.created < QUEUE_S - 0.5:
                        os.kill(proc.pid, signal.SIGKILL)
                        killed_in_flight[proc.pid] = provider_id
                        break
            await asyncio.sleep(0.05)
        for proc in victims:
            assert await asyncio.to_thread(proc.wait, 30) == -signal.SIGKILL
        for proc in survivors:
            _out, err = await asyncio.to_thread(proc.communicate, None, 240)
            assert proc.returncode == 0, err.decode()[-3000:]
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
            for pipe in (proc.stdout, proc.stderr):
                if pipe is not None:
                    pipe.close()

    # Before the sweep: each victim left its in-flight job's id and its reservation.
    victim_owners = {pid: await _owner_of(registry, pid) for pid in killed_in_flight}
    accounting = SqlAccounting(registry)
    for pid, provider_id in killed_in_flight.items():
        owner = victim_owners[pid]
        assert owner is not None and provider_id in await _in_flight(registry, owner)
    held_before = await accounting.open_reservations(BUDGET)
    assert held_before == 2
    # Wait for the victims' leases to lapse and for IonQ to finish their jobs.
    while True:
        async with registry.session() as session:
            live = await live_owner_ids(session)
        ended = all(
            emulator.jobs[p].status(time.monotonic()) == "completed"
            for p in killed_in_flight.values()
        )
        if ended and not live & set(filter(None, victim_owners.values())):
            break
        await asyncio.sleep(0.1)
    await registry.aclose()

    emulator.slow_jobs(0.0)
    sweeper = BackendManager({"ionq-aria": aria(emulator.url)}, fallback=None)
    db = QuantumDatabase(
        database_url,
        backend_manager=sweeper,
        settings=Settings(lease_ttl_s=LEASE_TTL_S, sweep_on_connect=False),
    )
    async with db.connect():
        summary = await sweep(db.registry, backends=sweeper, vectors=db.vector_store)
        # The victims' jobs had reached IonQ: charged what IonQ bills, never released.
        assert (summary.charged, summary.released, summary.pending) == (2, 0, 0)
        billed_victims = sum(emulator.jobs[p].cost for p in killed_in_flight.values())
        assert math.isclose(summary.charged_usd, billed_victims)
        assert (await sweep(db.registry, backends=sweeper, vectors=db.vector_store)).idle

        ledger = SqlAccounting(db.registry, owner_id=db.owner_id)
        async with db.registry.session() as session:
            ran = len(
                (
                    await session.scalars(select(LedgerRow.id).where(LedgerRow.kind == "charge"))
                ).all()
            )
        runner = BackendManager({"ionq-aria": aria(emulator.url)}, accounting=ledger, fallback=None)
        still = 0
        try:
            while True:
                try:
                    await runner.run(bell(), shots=SHOTS, backend="ionq-aria", budget=BUDGET)
                except BudgetExceededError:
                    break
                still += 1
        finally:
            await runner.aclose()
        assert ran + still == affordable
        charged = await ledger.spent(BUDGET)
        assert charged <= BUDGET.usd  # 0 cents of overspend
        # Every job IonQ ran is charged, exactly what IonQ bills; nothing else is.
        assert len(emulator.jobs) == affordable
        assert math.isclose(charged, sum(job.cost for job in emulator.jobs.values()))
        assert await ledger.open_reservations(BUDGET) == 0


async def test_a_lease_lives_by_its_heartbeat_and_is_gone_after_close(database_url: str) -> None:
    registry = Registry(database_url)
    await upgrade(registry)
    lease = Lease(registry, ttl_s=0.6)
    try:
        await lease.start()
        started = time.time()
        while time.time() < started + 2.0:  # over three TTLs: alive only if it beats
            await asyncio.sleep(0.2)
            async with registry.session() as session:
                assert lease.id in await live_owner_ids(session)
        await lease.aclose()
        async with registry.session() as session:
            assert await session.get(LeaseRow, lease.id) is None
    finally:
        await lease.aclose()
        await registry.aclose()


async def test_a_provider_id_is_in_the_job_row_while_the_job_still_runs(
    database_url: str, emulator: IonQEmulator
) -> None:
    registry = Registry(database_url)
    await upgrade(registry)
    backend = aria(emulator.url)
    manager = BackendManager(
        {"ionq-aria": backend},
        accounting=SqlAccounting(registry, owner_id="owner-1"),
        fallback=None,
    )
    emulator.hang_jobs(1)
    task = asyncio.create_task(
        manager.run(bell(), shots=SHOTS, backend="ionq-aria", budget=Budget(usd=50, name="one"))
    )
    try:
        while not backend.provider_job_ids:
            assert not task.done(), task
            await asyncio.sleep(0.01)
        (provider_id,) = backend.provider_job_ids
        while True:
            async with registry.session() as session:
                row = await session.scalar(select(JobRow))
            if row is not None and row.provider_job_ids:
                break
            await asyncio.sleep(0.01)
        assert (row.provider_job_ids, row.status, row.owner_id) == (
            [provider_id],
            "running",
            "owner-1",
        )
        assert not task.done()  # IonQ still holds the job: nothing has completed
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        await manager.aclose()
        await registry.aclose()


if __name__ == "__main__":
    print(asyncio.run(_work(sys.argv[1], sys.argv[2], float(sys.argv[3]))))
