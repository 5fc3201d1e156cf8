"""Jobs found again after a crash: a run killed while its IonQ jobs are in flight, asked for
again by its request key, re-attaches to them instead of paying for them twice.

Real parts throughout: a subprocess that connects a ``QuantumDatabase`` and is SIGKILLed,
the real IonQ clients against the loopback emulator (whose request log says what was
sent), the real SQL ledger on SQLite and PostgreSQL, and Qiskit's ``Statevector`` as the
reference for the numbers.
"""

from __future__ import annotations

import asyncio
import hashlib
import math
import os
import signal
import subprocess
import sys
import time
import uuid
from collections import Counter
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import numpy as np
import pytest
from qiskit.quantum_info import SparsePauliOp, Statevector
from sqlalchemy import select

from backends import (
    BackendError,
    BackendManager,
    Budget,
    Circuit,
    InMemoryAccounting,
    JobRecord,
    Parameter,
    RequestKeyError,
    SimulatorBackend,
    UnknownBackendError,
)
from backends.ionq import IonQBackend
from backends.ionq.translate import DriverName
from quantum_db import QuantumDatabase
from quantum_db.accounting import SqlAccounting
from quantum_db.leases import Lease, open_reservation_owners
from quantum_db.registry import Registry, upgrade
from quantum_db.registry.schema import JobRow, LeaseRow, LedgerRow
from quantum_db.settings import Settings
from quantum_db.sweeper import sweep

from .ionq_emulator import IonQEmulator
from .randomcircuits import to_qiskit_reference

ROOT = Path(__file__).resolve().parent.parent
API_KEY = "reattach-test-key"
BUDGET = Budget(usd=200.0, name="reattach")
SEED = 11
SHOTS = 400
OBSERVABLES = ["ZZ", "XI"]  # two measurement groups: Z on both qubits, X on qubit 0
VALUES = [[0.3, -0.7], [1.1, 0.4]]
#: One IonQ job per (binding, measurement group).
SLOTS = len(VALUES) * 2
#: Request keys as the trainer makes them: hex digests of what the job computes.
ARIA_KEY = hashlib.sha256(b"reattach aria step 0").hexdigest()
EXACT_KEY = hashlib.sha256(b"reattach exact step 0").hexdigest()


def job_inputs() -> tuple[Circuit, list[list[float]], list[str]]:
    """The circuit, bindings and observables of every run here (the worker's too)."""
    a, b = Parameter("a"), Parameter("b")
    circuit = Circuit(2).ry(a, 0).ry(b, 1).cx(0, 1).rx(0.4, 0)
    return circuit, VALUES, OBSERVABLES


def reference_expectations(circuit: Circuit, values: list[list[float]]) -> np.ndarray:
    """<O_k> per binding from Qiskit's Statevector (labels read as Qiskit reads them)."""
    return np.array(
        [
            [
                Statevector(to_qiskit_reference(circuit, row, measurements=False))
                .expectation_value(SparsePauliOp(label))
                .real
                for label in OBSERVABLES
            ]
            for row in values
        ]
    )


def aria(
    emulator: IonQEmulator, target: str = "qpu.aria-1", driver: DriverName = "qiskit"
) -> IonQBackend:
    """IonQ through qiskit-ionq (the default client) or cirq-ionq, polling fast."""
    return IonQBackend(
        target,
        driver,
        api_key=API_KEY,
        api_url=emulator.url,
        poll_interval_s=0.005,
        max_poll_interval_s=0.02,
        retry_backoff_s=0.01,
        job_timeout_s=60.0,
        request_timeout_s=30.0,
        error_mitigation=False if target != "simulator" else None,
        seed=5,
    )


def manager_for(
    db: QuantumDatabase, emulator: IonQEmulator, driver: DriverName = "qiskit"
) -> BackendManager:
    """A manager of the connection's owner, with fast-polling IonQ backends."""
    return BackendManager(
        {"ionq-aria": aria(emulator, driver=driver), "simulator": SimulatorBackend()},
        accounting=SqlAccounting(db.registry, owner_id=db.owner_id),
    )


@pytest.fixture
def emulator() -> Iterator[IonQEmulator]:
    emu = IonQEmulator(API_KEY).start()
    yield emu
    emu.stop()


@pytest.fixture
async def registry(database_url: str) -> AsyncIterator[Registry]:
    reg = Registry(database_url)
    await upgrade(reg)
    yield reg
    await reg.aclose()


async def rows_by_key(url: str) -> dict[str, JobRow]:
    registry = Registry(url)
    try:
        async with registry.session() as session:
            rows = (
                await session.scalars(select(JobRow).where(JobRow.request_key.is_not(None)))
            ).all()
    finally:
        await registry.aclose()
    return {str(row.request_key): row for row in rows}


async def ledger(registry: Registry, job_id: str) -> list[tuple[str, float]]:
    async with registry.session() as session:
        rows = (
            await session.scalars(
                select(LedgerRow).where(LedgerRow.job_id == job_id).order_by(LedgerRow.id)
            )
        ).all()
    return [(r.kind, r.amount_usd) for r in rows]


def billed(emulator: IonQEmulator, ids: list[str]) -> float:
    """What the emulator bills for these jobs: the completed ones, at IonQ's rates."""
    now = time.monotonic()
    jobs = emulator.jobs
    return sum(jobs[i].cost for i in ids if i in jobs and jobs[i].status(now) == "completed")


def posts_per_slot(emulator: IonQEmulator, backend: str) -> Counter[str]:
    """How many ``POST /jobs`` each job name (one per slot) got, for one IonQ backend."""
    return Counter(
        r.body["name"]
        for r in emulator.calls("POST", "/jobs")
        if r.status == 201 and r.body["backend"] == backend
    )


# ----------------------------------------------------------------- killed, then restarted

WORKER = """
import asyncio, sys
from quantum_db import QuantumDatabase
from tests.test_reattach import ARIA_KEY, BUDGET, EXACT_KEY, SEED, SHOTS, job_inputs

async def main(url):
    async with QuantumDatabase(url).connect() as db:
        circuit, values, observables = job_inputs()
        manager = db.backend_manager
        print("connected", flush=True)
        await asyncio.gather(
            manager.run(circuit, values, observables, SHOTS, SEED, backend="ionq-aria",
                        budget=BUDGET, request_key=ARIA_KEY),
            manager.run(circuit, values, observables, None, SEED, backend="ionq-simulator",
                        budget=BUDGET, request_key=EXACT_KEY),
        )
        print("finished", flush=True)
asyncio.run(main(sys.argv[1]))
"""


def run_and_kill(url: str, emulator: IonQEmulator) -> None:
    """Run the worker; SIGKILL it once both of its runs have recorded every provider id."""

    async def both_sent() -> bool:
        rows = await rows_by_key(url)
        return all(
            key in rows and len(rows[key].provider_job_ids or []) == SLOTS
            for key in (ARIA_KEY, EXACT_KEY)
        )

    environment = {
        **os.environ,
        "QDB_IONQ_API_KEY": API_KEY,
        "QDB_IONQ_API_URL": emulator.url,
        # A short lease, so that the owner is gone a second after the kill.
        "QDB_LEASE_TTL_S": "1",
    }
    lines: list[str] = []
    with subprocess.Popen(
        [sys.executable, "-c", WORKER, url],
        cwd=ROOT,
        env=environment,
        stdout=subprocess.PIPE,
        text=True,
    ) as proc:
        assert proc.stdout is not None
        lines.append(proc.stdout.readline().strip())
        assert lines == ["connected"], lines
        deadline = time.monotonic() + 120
        while not asyncio.run(both_sent()):
            assert proc.poll() is None, "the worker ended before it was killed"
            assert time.monotonic() < deadline, "the worker never sent its jobs"
            time.sleep(0.05)
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)
    assert proc.returncode == -signal.SIGKILL


async def wait_for_expiry(url: str, owner: str) -> None:
    registry = Registry(url)
    try:
        for _ in range(200):
            async with registry.session() as session:
                lease = await session.get(LeaseRow, owner)
            if lease is None or lease.expires_at < time.time():
                return
            await asyncio.sleep(0.05)
    finally:
        await registry.aclose()
    raise AssertionError(f"the killed worker's lease {owner} never expired")


SCENARIOS = ["released-after-the-sweep", "released-before-the-sweep", "one-cancelled"]


@pytest.mark.slow
@pytest.mark.parametrize("scenario", SCENARIOS)
def test_a_killed_run_is_reattached_not_resubmitted(
    database_url: str, emulator: IonQEmulator, scenario: str
) -> None:
    # Every job the worker creates stays queued until the test lets it run.
    emulator.hang_jobs(2 * SLOTS)
    run_and_kill(database_url, emulator)
    asyncio.run(_restart(database_url, emulator, scenario))


async def _restart(url: str, emulator: IonQEmulator, scenario: str) -> None:
    left = await rows_by_key(url)
    aria_row, exact_row = left[ARIA_KEY], left[EXACT_KEY]
    assert (aria_row.status, exact_row.status) == ("running", "running")
    await wait_for_expiry(url, str(aria_row.owner_id))
    old_ids = [str(i) for i in aria_row.provider_job_ids]
    names = {i: emulator.jobs[i].request["name"] for i in old_ids}
    victim_slot = "b1 g1"
    victim = next(i for i, name in names.items() if name.endswith(victim_slot))
    if scenario == "one-cancelled":
        emulator.cancel_job(victim)  # at the provider, while the owner was dead
    if scenario != "released-after-the-sweep":
        emulator.release_jobs()
    assert len(emulator.calls("POST", "/jobs")) == 2 * SLOTS

    settings = Settings(ionq_api_key=API_KEY, ionq_api_url=emulator.url)
    async with QuantumDatabase(url, settings=settings).connect() as db:  # sweeps on connect
        registry = db.registry
        estimate = aria_row.estimated_cost
        swept = await ledger(registry, aria_row.id)
        if scenario == "released-after-the-sweep":
            # Its jobs were still queued: the sweep kept the reservation for them.
            assert [kind for kind, _ in swept] == ["reservation"]
            assert swept[0][1] == pytest.approx(estimate)
            emulator.release_jobs()
        else:
            # They had ended: the sweep charged what the emulator bills for them.
            assert [kind for kind, _ in swept] == ["reservation", "release", "charge"]
            assert swept[2][1] == pytest.approx(billed(emulator, old_ids), abs=1e-9)
        circuit, values, observables = job_inputs()
        manager = db.backend_manager
        got, exact = await asyncio.gather(
            manager.run(
                circuit,
                values,
                observables,
                SHOTS,
                SEED,
                backend="ionq-aria",
                budget=BUDGET,
                request_key=ARIA_KEY,
            ),
            manager.run(
                circuit,
                values,
                observables,
                None,
                SEED,
                backend="ionq-simulator",
                budget=BUDGET,
                request_key=EXACT_KEY,
            ),
        )
        aria_posts = posts_per_slot(emulator, "qpu.aria-1")
        exact_posts = posts_per_slot(emulator, "simulator")
        # An uninterrupted exact run of the same request, for comparison.
        uninterrupted = await manager.run(
            circuit, values, observables, None, SEED, backend="ionq-simulator"
        )
        rows = await rows_by_key(url)
        aria_ledger = await ledger(registry, aria_row.id)
        owner = db.owner_id

    # Nothing was sent twice: one POST per slot, but for the slot whose job was cancelled.
    resubmitted = [victim_slot] if scenario == "one-cancelled" else []
    assert sorted(aria_posts.values()) == sorted(
        [1] * (SLOTS - len(resubmitted)) + [2] * len(resubmitted)
    )
    assert {name.split(" ", 2)[2] for name, n in aria_posts.items() if n == 2} == set(resubmitted)
    assert list(exact_posts.values()) == [1] * SLOTS
    assert emulator.cancelled_ids() == []  # the restart cancelled nothing
    assert got.metadata["reattached"] is True and exact.metadata["reattached"] is True
    assert got.metadata["job_id"] == aria_row.id and exact.metadata["job_id"] == exact_row.id
    assert got.metadata["resubmitted"] == resubmitted
    assert got.metadata["submitted"] == [] and got.metadata["lost_provider_jobs"] == []
    assert "reattached" not in uninterrupted.metadata

    # The numbers: within shot noise of the Statevector with shots, exactly without.
    want = reference_expectations(circuit, values)
    assert got.expectations is not None and exact.expectations is not None
    assert np.max(np.abs(got.expectations - want)) < 6 / math.sqrt(SHOTS)
    np.testing.assert_allclose(exact.expectations, want, rtol=0, atol=1e-10)
    assert uninterrupted.expectations is not None
    np.testing.assert_array_equal(exact.expectations, uninterrupted.expectations)

    # The ledger charged exactly what the emulator bills for every job of the run, once.
    final = rows[ARIA_KEY]
    bill = billed(emulator, [str(i) for i in final.provider_job_ids])
    assert len(final.provider_job_ids) == SLOTS + len(resubmitted)
    charges = [amount for kind, amount in aria_ledger if kind == "charge"]
    assert sum(charges) == pytest.approx(bill, abs=1e-9)
    assert len(charges) == 1 + len(resubmitted)  # a resubmission is reserved, then charged
    kinds = Counter(kind for kind, _ in aria_ledger)
    assert kinds["reservation"] == kinds["release"] == 1 + len(resubmitted)
    if scenario == "released-before-the-sweep":
        assert aria_ledger == swept  # the sweep had charged it all: nothing more
    assert (final.status, final.owner_id) == ("completed", owner)
    assert final.actual_cost == pytest.approx(bill, abs=1e-9)
    assert final.error is not None and final.error.startswith("re-attached to")
    if resubmitted:
        assert f"resubmitted {victim_slot} ({victim_slot}: {victim} ended canceled)" in final.error
    assert (rows[EXACT_KEY].status, rows[EXACT_KEY].actual_cost) == ("completed", 0.0)


# ----------------------------------------------------------------- live owners, same owner


async def wait_for_ids(registry: Registry, key: str, count: int) -> JobRow:
    for _ in range(2000):
        async with registry.session() as session:
            row = await session.scalar(select(JobRow).where(JobRow.request_key == key))
        if row is not None and len(row.provider_job_ids or []) == count:
            return row
        await asyncio.sleep(0.01)
    raise AssertionError(f"the job of {key} never recorded {count} provider ids")


async def test_a_live_owners_running_job_is_not_taken_over(
    database_url: str, emulator: IonQEmulator
) -> None:
    circuit, values, observables = job_inputs()
    async with (
        QuantumDatabase(database_url).connect() as first,
        QuantumDatabase(database_url).connect() as second,
    ):
        running, other = manager_for(first, emulator), manager_for(second, emulator)
        emulator.hang_jobs(SLOTS)
        task = asyncio.create_task(
            running.run(
                circuit,
                values,
                observables,
                SHOTS,
                SEED,
                backend="ionq-aria",
                budget=BUDGET,
                request_key=ARIA_KEY,
            )
        )
        held = await wait_for_ids(first.registry, ARIA_KEY, SLOTS)
        # The first owner lives: the second runs its own jobs, and leaves the first's alone.
        result = await other.run(
            circuit,
            values,
            observables,
            SHOTS,
            SEED,
            backend="ionq-aria",
            budget=BUDGET,
            request_key=ARIA_KEY,
        )
        assert "reattached" not in result.metadata and result.metadata["job_id"] != held.id
        async with first.registry.session() as session:
            still = await session.get(JobRow, held.id)
        assert still is not None and (still.owner_id, still.status) == (first.owner_id, "running")
        assert len(emulator.calls("POST", "/jobs")) == 2 * SLOTS
        emulator.release_jobs()
        done = await task
        assert "reattached" not in done.metadata and done.metadata["job_id"] == held.id
        for manager in (running, other):
            await manager.aclose()
    assert set(posts_per_slot(emulator, "qpu.aria-1").values()) == {2}


async def test_a_completed_job_is_read_again_not_rerun_by_its_own_owner(
    database_url: str, emulator: IonQEmulator
) -> None:
    circuit, values, observables = job_inputs()
    async with QuantumDatabase(database_url).connect() as db:
        manager = manager_for(db, emulator)
        first = await manager.run(
            circuit,
            values,
            observables,
            SHOTS,
            SEED,
            backend="ionq-aria",
            budget=BUDGET,
            request_key=ARIA_KEY,
        )
        sent = len(emulator.calls("POST", "/jobs"))
        again = await manager.run(
            circuit,
            values,
            observables,
            SHOTS,
            SEED,
            backend="ionq-aria",
            budget=BUDGET,
            request_key=ARIA_KEY,
        )
        assert again.metadata["reattached"] is True
        assert again.metadata["job_id"] == first.metadata["job_id"]
        assert len(emulator.calls("POST", "/jobs")) == sent == SLOTS
        assert first.expectations is not None and again.expectations is not None
        np.testing.assert_array_equal(again.expectations, first.expectations)
        entries = await ledger(db.registry, first.metadata["job_id"])
        ids = [str(i) for i in first.metadata["provider_job_ids"]]
        assert [kind for kind, _ in entries] == ["reservation", "release", "charge"]
        assert entries[2][1] == pytest.approx(billed(emulator, ids), abs=1e-9)
        (row,) = (await rows_by_key(database_url)).values()
        assert (row.status, row.request_key) == ("completed", ARIA_KEY)
        await manager.aclose()


@pytest.mark.parametrize("driver", ["qiskit", "cirq"])
async def test_a_job_the_provider_lost_is_submitted_once_more_and_charged(
    database_url: str, emulator: IonQEmulator, driver: DriverName
) -> None:
    circuit, values, observables = job_inputs()
    async with QuantumDatabase(database_url).connect() as db:
        manager = manager_for(db, emulator, driver)
        first = await manager.run(
            circuit,
            values,
            observables,
            SHOTS,
            SEED,
            backend="ionq-aria",
            budget=BUDGET,
            request_key=ARIA_KEY,
        )
        ids = [str(i) for i in first.metadata["provider_job_ids"]]
        bill = billed(emulator, ids)
        lost = next(i for i in ids if emulator.jobs[i].request["name"].endswith("b0 g1"))
        emulator.delete_job(lost)  # IonQ answers 404 for it from now on
        again = await manager.run(
            circuit,
            values,
            observables,
            SHOTS,
            SEED,
            backend="ionq-aria",
            budget=BUDGET,
            request_key=ARIA_KEY,
        )
        assert again.metadata["lost_provider_jobs"] == [lost]
        assert again.metadata["submitted"] == ["b0 g1"] and again.metadata["resubmitted"] == []
        per_slot = posts_per_slot(emulator, "qpu.aria-1")
        assert sorted(per_slot.values()) == [1, 1, 1, 2]
        assert [name for name, n in per_slot.items() if n == 2] == [
            f"qdb {circuit.content_hash()[:12]} b0 g1"
        ]
        (new,) = [str(i) for i in again.metadata["provider_job_ids"] if str(i) not in ids]
        entries = await ledger(db.registry, first.metadata["job_id"])
        charges = [amount for kind, amount in entries if kind == "charge"]
        # The lost job was billed when it ran; the new one is reserved, then charged.
        assert charges == [pytest.approx(bill, abs=1e-9), pytest.approx(emulator.jobs[new].cost)]
        assert await SqlAccounting(db.registry).open_reservations(BUDGET) == 0
        (row,) = (await rows_by_key(database_url)).values()
        assert row.error is not None and f"no longer knows {lost}" in row.error
        assert row.actual_cost == pytest.approx(bill + emulator.jobs[new].cost)
        await manager.aclose()


async def test_in_memory_accounting_re_attaches_its_own_ended_job(emulator: IonQEmulator) -> None:
    circuit, values, observables = job_inputs()
    accounting = InMemoryAccounting()
    manager = BackendManager({"ionq-aria": aria(emulator)}, accounting=accounting)
    try:
        first = await manager.run(
            circuit,
            values,
            observables,
            SHOTS,
            SEED,
            backend="ionq-aria",
            budget=BUDGET,
            request_key="k1",
        )
        again = await manager.run(
            circuit,
            values,
            observables,
            SHOTS,
            SEED,
            backend="ionq-aria",
            budget=BUDGET,
            request_key="k1",
        )
        assert again.metadata["reattached"] is True
        assert len(emulator.calls("POST", "/jobs")) == SLOTS
        ids = [str(i) for i in first.metadata["provider_job_ids"]]
        assert await accounting.exposure(BUDGET) == pytest.approx(billed(emulator, ids))
        assert accounting.jobs[first.metadata["job_id"]].status == "completed"
    finally:
        await manager.aclose()


# ----------------------------------------------------------------- taking over, atomically


async def test_two_restarted_owners_cannot_both_take_a_job(registry: Registry) -> None:
    dead = f"dead-{uuid.uuid4().hex[:12]}"
    async with registry.session() as session:
        now = time.time()
        session.add(
            LeaseRow(
                id=dead,
                host="gone",
                pid=1,
                started_at=now - 100,
                heartbeat_at=now - 90,
                expires_at=now - 30,
            )
        )
    job = JobRecord(
        id=uuid.uuid4().hex,
        backend="ionq-aria",
        circuit_hash="c" * 64,
        shots=100,
        batch_size=1,
        estimated_cost=5.0,
        status="running",
        provider_job_ids=["p-1"],
        request_key="key-1",
    )
    killed = SqlAccounting(registry, owner_id=dead)
    await killed.reserve(BUDGET, job.id, 5.0)
    await killed.record_job(job)
    leases = [Lease(registry, ttl_s=60), Lease(registry, ttl_s=60)]
    for lease in leases:
        await lease.start()
    try:
        restarted = [SqlAccounting(registry, owner_id=lease.id) for lease in leases]
        found = [await accounting.find_attachable("key-1") for accounting in restarted]
        assert all(f is not None and f.id == job.id for f in found)
        taken = await asyncio.gather(
            *(accounting.take_over(f) for accounting, f in zip(restarted, found, strict=True))  # type: ignore[arg-type]
        )
        winners = [i for i, attachment in enumerate(taken) if attachment is not None]
        assert len(winners) == 1
        (winner,) = winners
        attachment = taken[winner]
        assert attachment is not None
        assert (attachment.reserved, attachment.charged, attachment.budget) == (True, 0.0, BUDGET)
        assert attachment.job.owner_id == leases[winner].id
        async with registry.session() as session:
            row = await session.get(JobRow, job.id)
            owners = await open_reservation_owners(session)
        assert row is not None and (row.owner_id, row.status) == (leases[winner].id, "running")
        assert owners == {job.id: leases[winner].id}  # the reservation moved with it
        # Now a live owner's: the other finds nothing, and a sweep leaves it alone.
        assert await restarted[1 - winner].find_attachable("key-1") is None
        before = await ledger(registry, job.id)
        summary = await sweep(registry)
        assert summary.charged == summary.released == 0
        # A sweep that had decided on the dead owner's job before the takeover closes nothing.
        closed = await SqlAccounting(registry).close(
            job.id, 1.0, job_status="completed", note="swept", expect=(dead, "running")
        )
        assert closed is False
        assert await ledger(registry, job.id) == before == [("reservation", 5.0)]
    finally:
        for lease in leases:
            await lease.aclose()


@pytest.mark.parametrize(
    ("whose", "status", "ids", "attachable"),
    [
        ("dead", "running", ["p-1"], True),  # killed mid-job
        ("dead", "completed", ["p-1"], True),  # a sweep settled it: still readable
        ("dead", "failed", ["p-1"], True),
        ("dead", "unknown", ["p-1"], False),  # a job without a known id may exist
        ("dead", "running", [], False),  # nothing reached the provider to attach to
        ("live", "running", ["p-1"], False),  # another process is running it
        ("live", "completed", ["p-1"], False),  # ... or owns it
        ("mine", "completed", ["p-1"], True),  # an earlier run of this owner's, ended
        ("mine", "cancelled", ["p-1"], True),
        ("mine", "running", ["p-1"], False),  # this owner may be running it right now
    ],
)
async def test_which_jobs_a_request_key_finds(
    registry: Registry, whose: str, status: str, ids: list[str], attachable: bool
) -> None:
    mine, live = Lease(registry, ttl_s=60), Lease(registry, ttl_s=60)
    await mine.start()
    await live.start()
    try:
        owner = {"dead": f"dead-{uuid.uuid4().hex[:8]}", "live": live.id, "mine": mine.id}[whose]
        job = JobRecord(
            id=uuid.uuid4().hex,
            backend="ionq-aria",
            circuit_hash="c" * 64,
            shots=100,
            batch_size=1,
            estimated_cost=1.0,
            status=status,
            provider_job_ids=ids,
            request_key="the-key",
        )
        await SqlAccounting(registry, owner_id=owner).record_job(job)
        accounting = SqlAccounting(registry, owner_id=mine.id)
        found = await accounting.find_attachable("the-key")
        assert (found is not None) is attachable
        assert await accounting.find_attachable("another-key") is None
        if found is not None:
            attachment = await accounting.take_over(found)
            assert attachment is not None and attachment.job.owner_id == mine.id
            assert (attachment.reserved, attachment.budget) == (False, None)
            assert await accounting.take_over(found) is None  # changed since it was found
    finally:
        await mine.aclose()
        await live.aclose()


# ----------------------------------------------------------------- bad keys


async def test_bad_request_keys_are_refused_before_anything_is_stored(
    database_url: str, emulator: IonQEmulator
) -> None:
    circuit, values, observables = job_inputs()
    async with QuantumDatabase(database_url).connect() as db:
        manager = manager_for(db, emulator)
        for key in ["", "k" * 65, "nul\x00inside", "line\nbreak", 42, b"bytes"]:
            with pytest.raises(RequestKeyError, match="request_key must be a printable string"):
                await manager.run(
                    circuit,
                    values,
                    observables,
                    SHOTS,
                    SEED,
                    backend="ionq-aria",
                    budget=BUDGET,
                    request_key=key,  # type: ignore[arg-type]
                )
            with pytest.raises(RequestKeyError, match="request_key must be a printable string"):
                await manager.adjoint_jacobian(
                    circuit,
                    values,
                    observables,
                    backend="simulator",
                    request_key=key,  # type: ignore[arg-type]
                )
        assert emulator.requests == []
        assert await SqlAccounting(db.registry).jobs() == []
        async with db.registry.session() as session:
            assert (await session.scalars(select(LedgerRow))).all() == []
        # The longest key that fits is taken and stored as it is.
        longest = "f" * 64
        await manager.run(circuit, values, observables, backend="simulator", request_key=longest)
        await manager.flush_jobs()  # a free local job is recorded with the next batch
        (row,) = await SqlAccounting(db.registry).jobs()
        assert row.request_key == longest
        await manager.aclose()


# ----------------------------------------------------------------- adjoint jobs


def shift_rule_jacobian(circuit: Circuit, values: list[list[float]]) -> np.ndarray:
    """d<O_k>/d theta_p by the parameter-shift rule on Qiskit's Statevector (each parameter
    drives one RY here, so the rule is exact)."""
    rows = []
    for row in values:
        columns = []
        for p in range(len(row)):
            plus, minus = list(row), list(row)
            plus[p] += math.pi / 2
            minus[p] -= math.pi / 2
            columns.append(
                (
                    reference_expectations(circuit, [plus])[0]
                    - reference_expectations(circuit, [minus])[0]
                )
                / 2
            )
        rows.append(np.stack(columns, axis=-1))
    return np.array(rows)


async def test_adjoint_jacobian_is_recorded_and_equals_the_simulators(
    database_url: str, emulator: IonQEmulator
) -> None:
    circuit, values, observables = job_inputs()
    async with QuantumDatabase(database_url).connect() as db:
        manager = manager_for(db, emulator)
        expectations, jacobian = await manager.adjoint_jacobian(
            circuit,
            values,
            observables,
            backend="simulator",
            wrt=[0, 1],
            run_id="adjoint-run",
            request_key="adjoint-key",
        )
        async with SimulatorBackend() as simulator:
            want = await simulator.adjoint_jacobian(circuit, values, observables, wrt=[0, 1])
        np.testing.assert_array_equal(expectations, want[0])
        np.testing.assert_array_equal(jacobian, want[1])
        np.testing.assert_allclose(
            expectations, reference_expectations(circuit, values), atol=1e-12
        )
        np.testing.assert_allclose(jacobian, shift_rule_jacobian(circuit, values), atol=1e-12)
        await manager.flush_jobs()  # a free local job is recorded with the next batch
        (row,) = await SqlAccounting(db.registry).jobs()
        assert (row.backend, row.status, row.batch_size, row.shots) == (
            "simulator",
            "completed",
            2,
            None,
        )
        assert (row.estimated_cost, row.actual_cost) == (0.0, 0.0)
        assert (row.run_id, row.request_key, row.owner_id) == (
            "adjoint-run",
            "adjoint-key",
            db.owner_id,
        )
        assert row.run_latency_s is not None and row.run_latency_s >= 0
        assert row.queue_latency_s is not None and row.queue_latency_s >= 0
        assert row.circuit_hash == circuit.content_hash()

        # Bad calls are refused before anything is recorded.
        with pytest.raises(BackendError, match="offers no adjoint differentiation"):
            await manager.adjoint_jacobian(circuit, values, observables, backend="ionq-aria")
        with pytest.raises(UnknownBackendError, match="no backend named 'nowhere'"):
            await manager.adjoint_jacobian(circuit, values, observables, backend="nowhere")
        for wrt in ([2], [True], [-1], "01"):
            with pytest.raises(BackendError, match="wrt must"):
                await manager.adjoint_jacobian(
                    circuit,
                    values,
                    observables,
                    backend="simulator",
                    wrt=wrt,  # type: ignore[arg-type]
                )
        with pytest.raises(BackendError, match="at least one observable"):
            await manager.adjoint_jacobian(circuit, values, [], backend="simulator")
        with pytest.raises(BackendError, match="parameter"):
            await manager.adjoint_jacobian(circuit, [[0.1]], observables, backend="simulator")
        assert len(await SqlAccounting(db.registry).jobs()) == 1
        assert emulator.requests == []
        await manager.aclose()
