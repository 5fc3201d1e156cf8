"""The BackendManager with the real IonQ clients against the loopback IonQ emulator.

What a paid job needs from the service boundary: a submission is never repeated when
IonQ may have created the job (its reservation is kept instead), retries happen in one
layer only, and the budget ledger agrees with what the emulator billed.
"""

from __future__ import annotations

import asyncio
import logging
import math
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
from sqlalchemy import text

from backends import (
    BackendManager,
    BackendUnavailableError,
    Budget,
    BudgetExceededError,
    Circuit,
    RunResult,
    SimulatorBackend,
    TransientBackendError,
)
from backends.errors import ReservationLostError, SubmissionUnknownError
from backends.ionq import IonQBackend
from quantum_db.accounting import SqlAccounting
from quantum_db.leases import Lease
from quantum_db.registry import Registry, upgrade
from quantum_db.sweeper import sweep

from .ionq_emulator import IonQEmulator

API_KEY = "manager-test-key"
DRIVERS = ["qiskit", "cirq"]


def aria(emulator: IonQEmulator, driver: str = "qiskit", **options: object) -> IonQBackend:
    settings: dict[str, object] = {
        "api_key": API_KEY,
        "api_url": emulator.url,
        "poll_interval_s": 0.005,
        "max_poll_interval_s": 0.02,
        "retry_backoff_s": 0.01,
        "job_timeout_s": 60.0,
        "request_timeout_s": 30.0,
        "seed": 3,
        "error_mitigation": False,
    }
    settings.update(options)
    return IonQBackend("qpu.aria-1", driver, **settings)  # type: ignore[arg-type]


@pytest.fixture
def emulator() -> Iterator[IonQEmulator]:
    emu = IonQEmulator(API_KEY).start()
    yield emu
    emu.stop()


@pytest.fixture(params=DRIVERS)
def driver(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
async def accounting(tmp_path: Path) -> AsyncIterator[SqlAccounting]:
    """The ledger on a real SQLite registry file, migrated to the current schema."""
    registry = Registry(f"sqlite+aiosqlite:///{tmp_path / 'ledger.sqlite'}")
    await upgrade(registry)
    yield SqlAccounting(registry)
    await registry.aclose()


async def ledger(accounting: SqlAccounting) -> list[tuple[str, float]]:
    """Every ledger row as (kind, amount), oldest first."""
    async with accounting._registry.engine.connect() as conn:
        rows = await conn.execute(text("SELECT kind, amount_usd FROM budget_ledger ORDER BY id"))
        return [(str(kind), float(amount)) for kind, amount in rows.all()]


BELL = Circuit(2).h(0).cx(0, 1).measure_all()
#: One Aria job of BELL at 100 shots, unmitigated: 1 one-qubit and 1 two-qubit gate.
BELL_COST = 12.4166 + 0.000220 * 1 * 100 + 0.000975 * 1 * 100


async def test_a_500_on_submission_is_not_resubmitted_and_keeps_its_reservation(
    emulator: IonQEmulator, driver: str, accounting: SqlAccounting
) -> None:
    # IonQ created the job, then answered 500: a second POST would run and bill it twice.
    emulator.fail_next(500, method="POST", path="/jobs", after_serving=True)
    backend = aria(emulator, driver)
    manager = BackendManager(
        {"aria": backend, "simulator": SimulatorBackend()}, accounting=accounting
    )
    budget = Budget(usd=100.0, name="submission-unknown")
    with pytest.raises(SubmissionUnknownError, match="may have created the job") as caught:
        await manager.run(BELL, shots=100, backend="aria", budget=budget)
    assert not isinstance(caught.value, TransientBackendError)
    assert "reservation is kept" in str(caught.value)
    # Exactly one job exists at IonQ, from exactly one POST, and nothing else was asked.
    assert [r.status for r in emulator.calls("POST", "/jobs")] == [500]
    assert len(emulator.jobs) == 1
    assert emulator.calls("GET", "/jobs/[^/]+") == []
    # The reservation is open exactly once: no release, no charge, until a sweep settles it.
    assert await ledger(accounting) == [("reservation", pytest.approx(BELL_COST))]
    assert await accounting.open_reservations(budget) == 1
    assert await accounting.exposure(budget) == pytest.approx(BELL_COST)
    # The job is on record as unknown with the error; the simulator fallback was not used.
    (job,) = await accounting.jobs()
    assert (job.backend, job.status) == ("aria", "unknown")
    assert job.error is not None and job.error.startswith("SubmissionUnknownError: ")
    await manager.aclose()


async def test_a_job_that_ran_at_ionq_but_failed_here_is_charged_not_released(
    emulator: IonQEmulator, driver: str, accounting: SqlAccounting
) -> None:
    # IonQ runs (and bills) the job, then every results fetch fails: the run fails here,
    # but releasing the reservation would let the budget be spent twice over.
    emulator.fail_next(500, count=50, method="GET", path=r"/jobs/[^/]+/results.*")
    backend = aria(emulator, driver, max_retries=1)
    manager = BackendManager(
        {"aria": backend, "simulator": SimulatorBackend()}, accounting=accounting
    )
    budget = Budget(usd=100.0, name="reached-then-failed")
    with pytest.raises(TransientBackendError):
        await manager.run(BELL, shots=100, backend="aria", budget=budget)
    (job_id,) = emulator.jobs
    billed = emulator.jobs[job_id].cost
    assert billed == pytest.approx(BELL_COST)
    # Settled once, at what IonQ billed: reservation, release, charge.
    assert await ledger(accounting) == [
        ("reservation", pytest.approx(BELL_COST)),
        ("release", pytest.approx(-BELL_COST)),
        ("charge", pytest.approx(billed)),
    ]
    assert await accounting.open_reservations(budget) == 0
    (job,) = await accounting.jobs()
    assert (job.status, job.provider_job_ids) == ("failed", [job_id])
    assert job.actual_cost == pytest.approx(billed)
    await manager.aclose()


async def test_a_failed_job_ionq_cannot_describe_keeps_its_reservation(
    emulator: IonQEmulator, accounting: SqlAccounting
) -> None:
    # Results and the job's own record both fail: nobody can say what IonQ will bill, so
    # the reservation stays for the owner's sweep instead of being released.
    emulator.fail_next(500, count=50, method="GET", path=r"/jobs/[^/]+/results.*")
    emulator.fail_next(500, count=50, method="GET", path=r"/jobs/[^/]+/cost")
    backend = aria(emulator, max_retries=1)
    manager = BackendManager({"aria": backend}, accounting=accounting, fallback=None)
    budget = Budget(usd=100.0, name="reached-unknown-bill")
    with pytest.raises(TransientBackendError):
        await manager.run(BELL, shots=100, backend="aria", budget=budget)
    assert len(emulator.jobs) == 1
    assert await ledger(accounting) == [("reservation", pytest.approx(BELL_COST))]
    (job,) = await accounting.jobs()
    assert job.status == "failed" and job.error is not None
    assert "reservation is kept" in job.error
    await manager.aclose()


async def test_a_submission_that_times_out_is_unknown_and_its_late_job_cancelled(
    emulator: IonQEmulator, driver: str, accounting: SqlAccounting
) -> None:
    # The POST outlives the request timeout: IonQ may still create the job.
    emulator.delay_next(1.5, method="POST", path="/jobs")
    backend = aria(emulator, driver, request_timeout_s=0.3)
    manager = BackendManager({"aria": backend}, accounting=accounting, fallback=None)
    budget = Budget(usd=100.0, name="submission-timeout")
    with pytest.raises(SubmissionUnknownError, match=r"no answer within 0\.3 s"):
        await manager.run(BELL, shots=100, backend="aria", budget=budget)
    for _ in range(4000):  # the job's id arrives late, and it is cancelled then
        if emulator.cancelled_ids():
            break
        await asyncio.sleep(0.005)
    assert emulator.cancelled_ids() == list(emulator.jobs) == list(backend.provider_job_ids)
    assert len(emulator.calls("POST", "/jobs")) == 1
    assert await ledger(accounting) == [("reservation", pytest.approx(BELL_COST))]
    (job,) = await accounting.jobs()
    assert job.status == "unknown"
    await manager.aclose()


class _AcceptOnFirstRetry(logging.Handler):
    """Lets the emulator accept connections again as soon as the first retry is logged,
    so the refused attempt and the one that succeeds follow from events, not timing."""

    def __init__(self, emulator: IonQEmulator) -> None:
        super().__init__(logging.WARNING)
        self.emulator = emulator
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.messages.append(record.getMessage())
        if len(self.messages) == 1:
            self.emulator.accept_connections()


@pytest.mark.parametrize("fault", ["429", "503", "refused"])
async def test_a_submission_ionq_cannot_have_created_is_resubmitted_once(
    emulator: IonQEmulator, driver: str, accounting: SqlAccounting, fault: str
) -> None:
    backend = aria(emulator, driver)
    manager = BackendManager({"aria": backend}, accounting=accounting, fallback=None)
    await backend.fetch_cost_estimate(BELL, 100)  # sets the client up while IonQ is there
    emulator.clear_log()
    handler = _AcceptOnFirstRetry(emulator)
    retry_log = logging.getLogger("backends.retry")
    retry_log.addHandler(handler)
    try:
        if fault == "refused":
            emulator.refuse_connections()
        else:
            emulator.fail_next(int(fault), method="POST", path="/jobs")
        budget = Budget(usd=100.0, name=f"resubmitted-{fault}")
        result = await manager.run(BELL, shots=100, backend="aria", budget=budget)
    finally:
        retry_log.removeHandler(handler)
    assert result.counts is not None and sum(result.counts[0].values()) == 100
    # A refused connection never reaches the emulator's log; the answered ones do.
    statuses = [r.status for r in emulator.calls("POST", "/jobs")]
    assert statuses == ([201] if fault == "refused" else [int(fault), 201])
    (job_id,) = result.metadata["provider_job_ids"]
    assert list(emulator.jobs) == [job_id]
    (message,) = handler.messages
    assert message.startswith(f"{backend.name} submit: attempt 1 of 5 failed")
    # Reserved, then settled exactly once at what IonQ billed.
    billed = emulator.jobs[job_id].cost
    assert billed == pytest.approx(BELL_COST)
    assert await ledger(accounting) == [
        ("reservation", pytest.approx(BELL_COST)),
        ("release", pytest.approx(-BELL_COST)),
        ("charge", pytest.approx(billed)),
    ]
    assert await accounting.open_reservations(budget) == 0
    await manager.aclose()


async def test_retries_do_not_stack_through_the_manager(
    emulator: IonQEmulator, driver: str
) -> None:
    # IonQ's backend retries its own calls: the manager must not retry it again.
    emulator.fail_next(503, 1000, method="GET", path="/jobs/[^/]+")
    backend = IonQBackend(
        "simulator",
        driver,  # type: ignore[arg-type]
        api_key=API_KEY,
        api_url=emulator.url,
        poll_interval_s=0.005,
        retry_backoff_s=0.001,
        max_retries=2,
    )
    manager = BackendManager({"ionq": backend, "simulator": SimulatorBackend()})
    with pytest.raises(TransientBackendError, match="503") as caught:
        await manager.run(BELL, shots=10, backend="ionq")
    assert not isinstance(caught.value, BackendUnavailableError)  # hence no fallback
    assert len(emulator.calls("GET", "/jobs/[^/]+")) == 2 + 1  # max_retries + 1, in all
    assert len(emulator.calls("POST", "/jobs")) == 1
    (job_id,) = backend.provider_job_ids
    assert emulator.cancelled_ids() == [job_id]  # the job it could not follow is cancelled
    await manager.aclose()


async def test_200_concurrent_qpu_jobs_against_a_budget_for_50(
    emulator: IonQEmulator, tmp_path: Path
) -> None:
    registry = Registry(f"sqlite+aiosqlite:///{tmp_path / 'ledger.sqlite'}")
    await upgrade(registry)
    accounting = SqlAccounting(registry)
    backend = aria(emulator)
    manager = BackendManager({"aria": backend}, accounting=accounting, fallback=None)
    circuit = Circuit(2).h(0).cx(0, 1).measure_all()
    cost = backend.estimate_run_cost(circuit, 100)
    # Hand-computed: the qiskit driver sends h and cx as they are: 1 one-qubit, 1 two-qubit.
    assert math.isclose(cost, 12.4166 + 0.000220 * 1 * 100 + 0.000975 * 1 * 100)
    budget = Budget(usd=50 * cost + cost / 2, name="aria-50")
    outcomes = await asyncio.gather(
        *(manager.run(circuit, shots=100, backend="aria", budget=budget) for _ in range(200)),
        return_exceptions=True,
    )
    ran = [o for o in outcomes if isinstance(o, RunResult)]
    refused = [o for o in outcomes if isinstance(o, BudgetExceededError)]
    assert (len(ran), len(refused)) == (50, 150)
    # Exactly the affordable jobs reached IonQ, and IonQ's bill equals the ledger's charges.
    assert len(emulator.calls("POST", "/jobs")) == 50
    billed = sum(job.cost for job in emulator.jobs.values())
    assert math.isclose(billed, await accounting.spent(budget))
    assert billed <= budget.usd
    assert await accounting.open_reservations(budget) == 0
    await manager.aclose()
    await registry.aclose()


async def test_a_dead_ionq_backend_falls_back_to_the_simulator(emulator: IonQEmulator) -> None:
    backend = IonQBackend(
        "simulator",
        "cirq",
        api_key=API_KEY,
        api_url=emulator.url,
        poll_interval_s=0.005,
        retry_backoff_s=0.001,
        max_retries=1,
        request_timeout_s=5.0,
    )
    emulator.stop()  # the service is down: connections are refused
    manager = BackendManager({"ionq": backend, "simulator": SimulatorBackend()})
    result = await manager.run(Circuit(1).x(0).measure_all(), shots=20, backend="ionq", seed=1)
    assert result.metadata["fallback_from"] == "ionq"
    assert result.backend == "simulator" and result.counts == [{"1": 20}]
    emulator.start()  # so the fixture can stop it


async def test_no_api_key_in_the_registry_or_logs(
    emulator: IonQEmulator, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    import logging

    from sqlalchemy import text

    caplog.set_level(logging.DEBUG)
    db_file = tmp_path / "keys.sqlite"
    registry = Registry(f"sqlite+aiosqlite:///{db_file}")
    await upgrade(registry)
    manager = BackendManager({"aria": aria(emulator)}, accounting=SqlAccounting(registry))
    budget = Budget(usd=1000.0, name="key-check")
    await manager.run(
        Circuit(1).h(0).measure_all(),
        shots=10,
        backend="aria",
        budget=budget,
        run_id="secret-check",
    )
    emulator.fail_jobs("device error")
    with pytest.raises(Exception):  # noqa: B017,PT011 - any failure; the point is what is kept
        await manager.run(Circuit(1).x(0).measure_all(), shots=10, backend="aria", budget=budget)
    dump = []
    async with registry.engine.connect() as conn:
        for table in ("jobs", "budget_ledger", "budgets", "runs"):
            rows = (await conn.execute(text(f"SELECT * FROM {table}"))).all()
            dump.extend(str(tuple(r)) for r in rows)
    assert any("completed" in row for row in dump) and any("failed" in row for row in dump)
    assert API_KEY not in "\n".join(dump)
    for path in tmp_path.glob("keys.sqlite*"):  # the database and its WAL
        assert API_KEY.encode() not in path.read_bytes()
    assert API_KEY not in caplog.text
    assert API_KEY not in repr(manager) + repr(manager.get("aria"))
    await manager.aclose()
    await registry.aclose()


async def test_a_run_cancelled_mid_submission_keeps_its_money_for_the_job_ionq_created(
    emulator: IonQEmulator, driver: str, accounting: SqlAccounting
) -> None:
    # The task is cancelled while POST /jobs is in flight, and the cancel IonQ is then
    # sent fails: IonQ runs and bills the job. The reservation must not be released.
    backend = aria(emulator, driver)
    await backend.fetch_cost_estimate(BELL, 100)  # the client is set up: the POST comes next
    emulator.delay_next(1.0, method="POST", path="/jobs")
    emulator.fail_next(500, count=100, method="PUT", path=r"/jobs/[^/]+/status/cancel")
    manager = BackendManager({"aria": backend}, accounting=accounting)
    budget = Budget(usd=100.0, name="cancel-mid-post")
    task = asyncio.ensure_future(manager.run(BELL, shots=100, backend="aria", budget=budget))
    for _ in range(1000):  # until the POST has reached IonQ (it takes the delay), <= 10 s
        if emulator.faults_waiting("POST") == 0:
            break
        await asyncio.sleep(0.01)
    await asyncio.sleep(0.1)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    (job_id,) = emulator.jobs
    billed = emulator.jobs[job_id].cost
    assert len(emulator.calls("POST", "/jobs")) == 1
    # Charged what IonQ bills, or still reserved for a sweep: never released for nothing.
    assert await accounting.exposure(budget) == pytest.approx(billed)
    (job,) = await accounting.jobs()
    assert job.provider_job_ids == [job_id]
    await manager.aclose()


async def test_a_reservation_a_sweep_reclaimed_is_never_sent(
    emulator: IonQEmulator, tmp_path: Path
) -> None:
    # The owner's lease has lapsed (a blocked event loop, say) while its job waited for
    # the backend: a sweep releases the reservation, and the job must then not be sent.
    registry = Registry(f"sqlite+aiosqlite:///{tmp_path / 'lapsed.sqlite'}")
    await upgrade(registry)
    accounting = SqlAccounting(registry, owner_id="lapsed-owner")  # no live lease row
    emulator.slow_jobs(queue_s=1.0)
    manager = BackendManager({"aria": aria(emulator)}, accounting=accounting, fallback=None)
    manager.register("aria-1", aria(emulator), concurrency=1)
    budget = Budget(usd=100.0, name="lapsed")
    try:
        first = asyncio.ensure_future(manager.run(BELL, shots=100, backend="aria-1", budget=budget))
        for _ in range(1000):  # until the first is sent: it holds the backend's only slot
            if emulator.calls("POST", "/jobs"):
                break
            await asyncio.sleep(0.01)
        second = asyncio.ensure_future(
            manager.run(BELL, shots=100, backend="aria-1", budget=budget)
        )
        for _ in range(1000):  # reserved, recorded queued, waiting for the slot
            if await accounting.open_reservations(budget) == 2:
                break
            await asyncio.sleep(0.01)
        await asyncio.sleep(0.05)
        summary = await sweep(registry, backends=manager)
        assert summary.released == 1 and summary.pending == 1  # queued one; sent one kept
        with pytest.raises(ReservationLostError, match="nothing was sent"):
            await second
        await first
        assert len(emulator.calls("POST", "/jobs")) == 1
        assert await accounting.exposure(budget) == pytest.approx(BELL_COST)
    finally:
        await manager.aclose()
        await registry.aclose()


async def test_a_live_owners_given_up_reservation_is_settled_by_a_sweep(
    emulator: IonQEmulator, tmp_path: Path
) -> None:
    registry = Registry(f"sqlite+aiosqlite:///{tmp_path / 'live.sqlite'}")
    await upgrade(registry)
    lease = Lease(registry, ttl_s=60)
    await lease.start()
    accounting = SqlAccounting(registry, owner_id=lease.id)
    emulator.fail_next(500, count=50, method="GET", path=r"/jobs/[^/]+/results.*")
    emulator.fail_next(500, count=50, method="GET", path=r"/jobs/[^/]+/cost")
    manager = BackendManager({"aria": aria(emulator, max_retries=1)}, accounting=accounting)
    budget = Budget(usd=100.0, name="given-up")
    try:
        with pytest.raises(TransientBackendError):
            await manager.run(BELL, shots=100, backend="aria", budget=budget, seed=1)
        assert await accounting.open_reservations(budget) == 1  # kept: IonQ may bill it
        emulator.clear_faults()
        # The owner is alive, but it has given the job up: any sweep settles it.
        summary = await sweep(registry, backends=manager)
        (job_id,) = emulator.jobs
        assert (summary.charged, summary.released) == (1, 0)
        assert summary.charged_usd == pytest.approx(emulator.jobs[job_id].cost)
        assert await accounting.open_reservations(budget) == 0
    finally:
        await manager.aclose()
        await lease.aclose()
        await registry.aclose()
