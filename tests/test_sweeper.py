"""The sweeper: what owners that are gone left behind, reclaimed without ever overspending."""

from __future__ import annotations

import asyncio
import logging
import math
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from typing import Any

import numpy as np
import pytest
from sqlalchemy import select

from backends import BackendManager, Budget, Circuit, SimulatorBackend
from backends.accounting import JobRecord
from backends.base import ProviderJob
from backends.errors import BackendError, InvalidBudgetError
from backends.ionq import IonQBackend
from quantum_db import QuantumDatabase
from quantum_db.accounting import SqlAccounting
from quantum_db.leases import Lease
from quantum_db.registry import Registry, upgrade
from quantum_db.registry.schema import DatasetWriteRow, JobRow, LeaseRow, LedgerRow
from quantum_db.sweeper import SweepSummary, sweep
from quantum_db.vectorstores.base import VectorRecord
from quantum_db.vectorstores.local import LocalVectorStore
from quantum_ml.cli import main

from .ionq_emulator import IonQEmulator

API_KEY = "sweeper-test-key"
BUDGET = Budget(usd=100.0, name="sweeper")


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


def aria(emulator: IonQEmulator) -> IonQBackend:
    return IonQBackend(
        "qpu.aria-1",
        "qiskit",
        api_key=API_KEY,
        api_url=emulator.url,
        poll_interval_s=0.005,
        max_poll_interval_s=0.02,
        retry_backoff_s=0.01,
        error_mitigation=False,
        seed=5,
    )


async def dead_owner(registry: Registry, *, with_row: bool = True) -> str:
    """An owner that is gone: its lease expired long ago, or it has no lease row at all."""
    owner = f"dead-{uuid.uuid4().hex[:12]}"
    if with_row:
        async with registry.session() as session:
            session.add(
                LeaseRow(
                    id=owner,
                    host="elsewhere",
                    pid=1,
                    started_at=time.time() - 100,
                    heartbeat_at=time.time() - 90,
                    expires_at=time.time() - 30,
                )
            )
    return owner


async def held(
    registry: Registry,
    owner: str,
    amount: float,
    *,
    status: str = "running",
    ids: list[str] | None = None,
    backend: str = "aria",
    budget: Budget = BUDGET,
) -> str:
    """A reservation and a job row of ``owner``, as its BackendManager left them."""
    accounting = SqlAccounting(registry, owner_id=owner)
    job = JobRecord(
        id=uuid.uuid4().hex,
        backend=backend,
        circuit_hash="c" * 64,
        shots=100,
        batch_size=1,
        estimated_cost=amount,
        status=status,
        provider_job_ids=list(ids or []),
    )
    await accounting.reserve(budget, job.id, amount)
    await accounting.record_job(job)
    return job.id


async def ledger(registry: Registry, job_id: str) -> list[tuple[str, float]]:
    async with registry.session() as session:
        rows = (
            await session.scalars(
                select(LedgerRow).where(LedgerRow.job_id == job_id).order_by(LedgerRow.id)
            )
        ).all()
    return [(r.kind, r.amount_usd) for r in rows]


async def job_row(registry: Registry, job_id: str) -> JobRow:
    async with registry.session() as session:
        row = await session.get(JobRow, job_id)
    assert row is not None
    return row


def provider_job(emulator: IonQEmulator, *, hang: bool = False) -> str:
    """A QPU job created at the emulator, as a client that was then killed left it."""
    if hang:
        emulator.hang_jobs(1)
    created = emulator.create_job(
        {
            "type": "ionq.circuit.v1",
            "backend": "qpu.aria-1",
            "shots": 100,
            "input": {"gateset": "qis", "qubits": 1, "circuit": [{"gate": "h", "target": 0}]},
        }
    )
    return str(created["id"])


# ---------------------------------------------------------------- money


async def test_a_gone_owners_job_that_never_left_is_released_and_a_live_owners_kept(
    registry: Registry,
) -> None:
    gone = await dead_owner(registry)
    vanished = await dead_owner(registry, with_row=False)
    never_sent = await held(registry, gone, 10.0, status="queued")
    vanished_queued = await held(registry, vanished, 7.0, status="queued")
    # Marked sent, but no id came back: its POST may have created a job, so it is kept.
    maybe_sent = await held(registry, gone, 3.0, status="running")
    live = Lease(registry, ttl_s=60)
    await live.start()
    try:
        mine = await held(registry, live.id, 5.0, status="running", ids=["p-live"])
        summary = await sweep(registry)
        assert (summary.released, summary.charged, summary.pending) == (2, 0, 1)
        assert await ledger(registry, never_sent) == [("reservation", 10.0), ("release", -10.0)]
        assert await ledger(registry, vanished_queued) == [("reservation", 7.0), ("release", -7.0)]
        assert await ledger(registry, maybe_sent) == [("reservation", 3.0)]
        assert (await job_row(registry, never_sent)).status == "abandoned"
        # Past the expiry it is released, with the reason on its row.
        later = await sweep(registry, unknown_expiry_s=0.0)
        assert (later.released, later.expired) == (1, 1)
        assert await ledger(registry, maybe_sent) == [("reservation", 3.0), ("release", -3.0)]
        # The live owner's reservation and job are exactly as they were.
        assert await ledger(registry, mine) == [("reservation", 5.0)]
        assert (await job_row(registry, mine)).status == "running"
        assert math.isclose(await SqlAccounting(registry).exposure(BUDGET), 5.0)
    finally:
        await live.aclose()


async def test_a_completed_provider_job_is_charged_what_the_provider_bills(
    registry: Registry, emulator: IonQEmulator
) -> None:
    backend = aria(emulator)
    manager = BackendManager({"aria": backend}, fallback=None)
    try:
        circuit = Circuit(2).h(0).cx(0, 1).measure_all()
        result = await backend.run(circuit, shots=100)
        ids = list(result.metadata["provider_job_ids"])
        billed = sum(emulator.jobs[i].cost for i in ids)
        assert billed > 12  # a QPU job: IonQ's minimum at least
        gone = await dead_owner(registry)
        reserved = backend.estimate_run_cost(circuit, 100)
        job_id = await held(registry, gone, reserved, ids=ids)
        summary = await sweep(registry, backends=manager)
        assert (summary.charged, summary.released, summary.pending) == (1, 0, 0)
        assert math.isclose(summary.charged_usd, billed)
        kinds = await ledger(registry, job_id)
        assert [k for k, _ in kinds] == ["reservation", "release", "charge"]
        assert math.isclose(kinds[-1][1], billed)
        row = await job_row(registry, job_id)
        assert row.status == "completed"
        assert row.actual_cost is not None and math.isclose(row.actual_cost, billed)
        assert math.isclose(await SqlAccounting(registry).spent(BUDGET), billed)
    finally:
        await manager.aclose()


async def test_a_job_still_running_at_the_provider_stays_reserved_until_it_ends(
    registry: Registry, emulator: IonQEmulator
) -> None:
    manager = BackendManager({"aria": aria(emulator)}, fallback=None)
    try:
        pid = provider_job(emulator, hang=True)
        gone = await dead_owner(registry)
        job_id = await held(registry, gone, 12.5, ids=[pid])
        first = await sweep(registry, backends=manager)
        assert (first.pending, first.released, first.charged, first.cancelled) == (1, 0, 0, 0)
        assert await ledger(registry, job_id) == [("reservation", 12.5)]
        # Asked to, the sweeper cancels it at IonQ; the money stays reserved until IonQ
        # reports the job ended, and then it is charged what IonQ bills (nothing here).
        second = await sweep(registry, backends=manager, cancel_running=True)
        assert (second.pending, second.cancelled) == (1, 1)
        assert emulator.cancelled_ids() == [pid]
        assert await ledger(registry, job_id) == [("reservation", 12.5)]
        third = await sweep(registry, backends=manager)
        assert (third.charged, third.charged_usd, third.pending) == (1, 0.0, 0)
        assert await ledger(registry, job_id) == [
            ("reservation", 12.5),
            ("release", -12.5),
            ("charge", 0.0),
        ]
        assert (await job_row(registry, job_id)).status == "cancelled"
    finally:
        await manager.aclose()


async def test_a_job_on_a_backend_this_connection_lacks_or_cannot_ask_stays_reserved(
    registry: Registry,
) -> None:
    gone = await dead_owner(registry)
    elsewhere = await held(registry, gone, 3.0, ids=["p-1"], backend="ionq-forte")
    local = await held(registry, gone, 4.0, ids=["p-2"], backend="simulator")
    manager = BackendManager({"simulator": SimulatorBackend()})
    summary = await sweep(registry, backends=manager)
    assert (summary.pending, summary.released, summary.charged) == (2, 0, 0)
    assert await ledger(registry, elsewhere) == [("reservation", 3.0)]
    assert await ledger(registry, local) == [("reservation", 4.0)]
    # The lease that still holds them is kept too.
    async with registry.session() as session:
        assert await session.get(LeaseRow, gone) is not None


async def test_an_unknown_submission_is_kept_until_its_expiry_then_released_with_a_warning(
    registry: Registry, caplog: pytest.LogCaptureFixture
) -> None:
    gone = await dead_owner(registry)
    job_id = await held(registry, gone, 9.0, status="unknown")
    early = await sweep(registry, unknown_expiry_s=3600)
    assert (early.pending, early.released, early.expired) == (1, 0, 0)
    assert await ledger(registry, job_id) == [("reservation", 9.0)]
    with caplog.at_level(logging.WARNING, logger="quantum_db.sweeper"):
        late = await sweep(registry, unknown_expiry_s=3600, now=time.time() + 3601)
    assert (late.pending, late.released, late.expired) == (0, 1, 1)
    assert await ledger(registry, job_id) == [("reservation", 9.0), ("release", -9.0)]
    assert (await job_row(registry, job_id)).status == "expired"
    assert any(job_id in r.getMessage() and "unknown" in r.getMessage() for r in caplog.records)


async def test_sweeping_twice_is_a_no_op_and_concurrent_sweeps_close_each_job_once(
    registry: Registry,
) -> None:
    gone = await dead_owner(registry)
    jobs = [await held(registry, gone, 2.0, status="queued") for _ in range(6)]
    summaries = await asyncio.gather(*(sweep(registry) for _ in range(3)))
    assert sum(s.released for s in summaries) == 6
    for job_id in jobs:
        assert await ledger(registry, job_id) == [("reservation", 2.0), ("release", -2.0)]
    again = await sweep(registry)
    assert again == SweepSummary()
    assert again.idle
    assert await SqlAccounting(registry).exposure(BUDGET) == 0.0


# ---------------------------------------------------------------- samples


async def test_the_samples_of_an_aborted_dataset_write_are_deleted(database_url: str) -> None:
    db = QuantumDatabase(database_url)
    async with db.connect():
        data = np.arange(24, dtype=np.float64).reshape(8, 3)
        info = await db.store_training_data("kept", data, np.arange(8) % 2)
        gone = await dead_owner(db.registry)
        vectors = db.vector_store
        assert isinstance(vectors, LocalVectorStore)
        orphan = f"ds-{uuid.uuid4().hex}"
        live_write = f"ds-{uuid.uuid4().hex}"
        async with db.registry.session() as session:
            session.add(DatasetWriteRow(namespace=orphan, dataset_name="lost", owner_id=gone))
            assert db.owner_id is not None
            session.add(
                DatasetWriteRow(namespace=live_write, dataset_name="busy", owner_id=db.owner_id)
            )
        for namespace in (orphan, live_write):
            await vectors.upsert(
                [VectorRecord(id=f"s{i}", values=np.ones(3) * i) for i in range(5)],
                namespace=namespace,
            )
        summary = await sweep(db.registry, vectors=vectors)
        assert summary.namespaces_deleted == 1
        assert await vectors.count(namespace=orphan) == 0
        assert await vectors.count(namespace=live_write) == 5  # its owner is alive
        async with db.registry.session() as session:
            left = (await session.scalars(select(DatasetWriteRow.namespace))).all()
        assert left == [live_write]
        stored = await db.get_dataset("kept")
        assert stored.info.version == info.version
        np.testing.assert_array_equal(stored.data, data)
        assert (await sweep(db.registry, vectors=vectors)).namespaces_deleted == 0
        async with db.registry.session() as session:
            await session.execute(
                DatasetWriteRow.__table__.delete().where(DatasetWriteRow.namespace == live_write)
            )


# ---------------------------------------------------------------- connect, leases, gc


async def test_connect_takes_a_lease_sweeps_and_close_gives_it_back(database_url: str) -> None:
    registry = Registry(database_url)
    await upgrade(registry)
    gone = await dead_owner(registry)
    job_id = await held(registry, gone, 4.0, status="queued")
    await registry.aclose()

    db = QuantumDatabase(database_url)
    async with db.connect():
        lease = db._state().lease
        assert lease is not None
        async with db.registry.session() as session:
            row = await session.get(LeaseRow, lease.id)
            assert row is not None and row.expires_at > time.time()
            before = row.expires_at
        await lease.renew()
        async with db.registry.session() as session:
            renewed = await session.get(LeaseRow, lease.id)
            assert renewed is not None and renewed.expires_at >= before
            # The connect's sweep released the gone owner's reservation and removed it.
            assert await session.get(LeaseRow, gone) is None
        assert await ledger(db.registry, job_id) == [("reservation", 4.0), ("release", -4.0)]
        # What this connection reserves carries its lease.
        accounting = db.backend_manager.accounting
        assert isinstance(accounting, SqlAccounting) and accounting.owner_id == lease.id
        lease_id = lease.id
    registry = Registry(database_url)
    async with registry.session() as session:
        assert await session.get(LeaseRow, lease_id) is None
    await registry.aclose()


async def test_a_lease_that_still_holds_a_reservation_expires_at_close(database_url: str) -> None:
    db = QuantumDatabase(database_url)
    async with db.connect():
        lease_id = db.owner_id
        assert lease_id is not None
        job_id = await held(db.registry, lease_id, 6.0, status="unknown")
    registry = Registry(database_url)
    try:
        async with registry.session() as session:
            row = await session.get(LeaseRow, lease_id)
            assert row is not None and row.expires_at <= time.time()
        # Gone now: an unknown submission is still kept (it may bill), the lease with it.
        summary = await sweep(registry)
        assert (summary.pending, summary.released, summary.leases_removed) == (1, 0, 0)
        assert await ledger(registry, job_id) == [("reservation", 6.0)]
    finally:
        await registry.aclose()


def test_qdb_gc_prints_the_summary(database_url: str, capsys: pytest.CaptureFixture[str]) -> None:
    async def setup() -> None:
        registry = Registry(database_url)
        await upgrade(registry)
        gone = await dead_owner(registry)
        await held(registry, gone, 1.5, status="queued")
        await held(registry, gone, 2.5, status="queued")
        await registry.aclose()

    asyncio.run(setup())
    assert main(["gc", "--url", database_url]) == 0
    out = capsys.readouterr().out.strip()
    assert out.startswith("qdb gc: released 2 reservation(s), charged 0 job(s)")
    assert "removed 1 expired lease(s)" in out
    assert main(["gc", "--url", database_url]) == 0
    assert "released 0 reservation(s)" in capsys.readouterr().out


# ---------------------------------------------------------------- types


@pytest.mark.parametrize(
    ("usd", "name"),
    [(1, 5), (1, None), (1, ""), (1, "x" * 129), (float("nan"), "b"), (-1, "b"), ("1", "b")],
)
def test_a_bad_budget_is_a_typed_value_error(usd: Any, name: Any) -> None:
    with pytest.raises(InvalidBudgetError) as caught:
        Budget(usd=usd, name=name)
    assert isinstance(caught.value, ValueError) and isinstance(caught.value, BackendError)


def test_a_provider_job_has_one_of_the_contract_statuses() -> None:
    assert ProviderJob("p", "completed", 1.0).ended
    assert not ProviderJob("p", "queued").ended
    with pytest.raises(BackendError, match="status"):
        ProviderJob("p", "submitted")  # type: ignore[arg-type]
    assert not SimulatorBackend().supports_job_lookup()


async def test_first_reservations_racing_to_create_the_budget_all_count(
    registry: Registry,
) -> None:
    accounting = SqlAccounting(registry, owner_id="racer")
    budget = Budget(usd=10.0, name=f"fresh-{uuid.uuid4().hex[:8]}")
    outcomes = await asyncio.gather(
        *(accounting.reserve(budget, f"j{i}", 1.0) for i in range(14)), return_exceptions=True
    )
    assert sum(o is None for o in outcomes) == 10
    assert await accounting.exposure(budget) == 10.0
