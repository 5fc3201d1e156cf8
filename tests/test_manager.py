"""The BackendManager: choice under capability and cost, budgets that hold under concurrency,
retries, fallback and job records."""

from __future__ import annotations

import asyncio
import math
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from sqlalchemy import select

from backends import (
    BackendError,
    BackendManager,
    BackendUnavailableError,
    Budget,
    BudgetExceededError,
    CapacityError,
    Circuit,
    DegradePolicy,
    InMemoryAccounting,
    JobFailedError,
    NonFiniteParameterError,
    Parameter,
    RetryPolicy,
    RunRequest,
    RunResult,
    SimulatorBackend,
    TransientBackendError,
    UnknownBackendError,
)
from backends.cost import IONQ_ARIA
from quantum_db import QuantumDatabase
from quantum_db.accounting import SqlAccounting
from quantum_db.registry import Registry, upgrade
from quantum_db.registry.schema import JobRow

ROOT = Path(__file__).resolve().parent.parent


class PricedSimulator(SimulatorBackend):
    """The built-in simulator billed at IonQ's QPU prices: a real backend with a real price.

    ``fail_below`` makes bindings whose first value is negative fail as a provider would;
    ``delay`` keeps jobs in flight long enough to cancel them; ``transient`` fails the
    first calls with a retryable error.
    """

    def __init__(
        self,
        *,
        name: str = "priced",
        delay: float = 0.0,
        transient: int = 0,
        queue_s: float = 60.0,
        max_qubits: int | None = None,
    ) -> None:
        super().__init__(seed=1)
        self.name = name
        self.delay = delay
        self.transient = transient
        self.typical_queue_s = queue_s
        if max_qubits is not None:
            from dataclasses import replace

            self._capabilities = replace(self._capabilities, max_qubits=max_qubits)

    def estimate_cost(self, circuit: Circuit, shots: int | None) -> float:
        return IONQ_ARIA.circuit_cost(circuit, shots or 1, error_mitigation=False)

    async def _execute(self, request: RunRequest) -> RunResult:
        if self.transient > 0:
            self.transient -= 1
            raise TransientBackendError("429 Too Many Requests")
        if self.delay:
            await asyncio.sleep(self.delay)
        if request.parameter_values.size and request.parameter_values[0, 0] < 0:
            raise JobFailedError("job failed: the device reported an error")
        return await super()._execute(request)


def bell() -> Circuit:
    return Circuit(2).h(0).cx(0, 1).measure_all()


def rotation() -> Circuit:
    return Circuit(1).ry(Parameter("t"), 0).measure_all()


# ---------------------------------------------------------------- selection
def test_select_ranks_by_cost_then_queue_and_explains() -> None:
    manager = BackendManager(
        {
            "priced": PricedSimulator(),
            "simulator": SimulatorBackend(),
            "small": PricedSimulator(name="small", max_qubits=2),
        }
    )
    selection = manager.explain(4, depth=3, shots=1000)
    assert selection.chosen.name == "simulator"
    assert [c.name for c in selection.ranking] == ["simulator", "priced"]
    assert dict(selection.rejected) == {"small": "offers 2 qubits, 4 needed"}
    assert "rejected small" in selection.explain()
    assert manager.select(4, depth=3, shots=1000) is manager.get("simulator")


def test_select_respects_budget_and_requirements() -> None:
    manager = BackendManager({"priced": PricedSimulator()}, fallback=None)
    cost = manager.explain(2, depth=2, shots=100).chosen.estimated_cost
    # Hand-computed: depth 2 on 2 qubits = 4 one-qubit and 2 two-qubit gates.
    assert math.isclose(cost, 12.4166 + 0.000220 * 4 * 100 + 0.000975 * 2 * 100)
    with pytest.raises(CapacityError, match="exceeds"):
        manager.select(2, depth=2, shots=100, budget=Budget(usd=5))
    with pytest.raises(CapacityError, match="offers"):
        manager.select(40)
    with pytest.raises(UnknownBackendError):
        manager.get("nope")


def test_plugins_load_by_entry_point() -> None:
    manager = BackendManager({})
    backend = manager.load("sim2", plugin="simulator", precision="single")
    assert isinstance(backend, SimulatorBackend) and backend.precision == "single"
    with pytest.raises(UnknownBackendError, match="installed"):
        manager.load("nothing-like-this")


# ---------------------------------------------------------------- budgets
@pytest.fixture
async def accounting(database_url: str) -> Any:
    registry = Registry(database_url)
    await upgrade(registry)
    yield SqlAccounting(registry)
    await registry.aclose()


async def test_200_concurrent_jobs_against_a_budget_for_50(accounting: SqlAccounting) -> None:
    backend = PricedSimulator(delay=0.01)
    manager = BackendManager(
        {"priced": backend}, accounting=accounting, fallback=None, concurrency=16
    )
    circuit = bell()
    cost = backend.estimate_cost(circuit, 100)
    budget = Budget(usd=50 * cost + cost / 2, name="fifty")
    peak = 0.0
    done = asyncio.Event()

    async def watch() -> None:
        nonlocal peak
        while not done.is_set():
            peak = max(peak, await accounting.exposure(budget))
            await asyncio.sleep(0.005)

    watcher = asyncio.create_task(watch())
    outcomes = await asyncio.gather(
        *(
            manager.run(circuit, shots=100, backend="priced", budget=budget, seed=i)
            for i in range(200)
        ),
        return_exceptions=True,
    )
    done.set()
    await watcher
    ran = [o for o in outcomes if isinstance(o, RunResult)]
    refused = [o for o in outcomes if isinstance(o, BudgetExceededError)]
    assert (len(ran), len(refused)) == (50, 150)
    assert peak <= budget.usd + 1e-9
    assert math.isclose(await accounting.spent(budget), 50 * cost)
    assert await accounting.open_reservations(budget) == 0
    jobs = await accounting.jobs()
    assert sum(j.status == "completed" for j in jobs) == 50
    assert all(
        j.queue_latency_s is not None and j.run_latency_s is not None
        for j in jobs
        if j.status == "completed"
    )


async def test_failures_and_cancellations_release_their_reservations(
    accounting: SqlAccounting,
) -> None:
    backend = PricedSimulator(delay=1.0)
    manager = BackendManager({"priced": backend}, accounting=accounting, fallback=None)
    circuit = rotation()
    cost = backend.estimate_cost(circuit, 100)
    budget = Budget(usd=10 * cost, name="ten")
    failing = [
        asyncio.create_task(
            manager.run(circuit, [[-1.0]], shots=100, backend="priced", budget=budget)
        )
        for _ in range(3)
    ]
    good = [
        asyncio.create_task(
            manager.run(circuit, [[0.5]], shots=100, backend="priced", budget=budget)
        )
        for _ in range(4)
    ]
    doomed = [
        asyncio.create_task(
            manager.run(circuit, [[0.5]], shots=100, backend="priced", budget=budget)
        )
        for _ in range(3)
    ]
    for _ in range(400):  # wait until all ten are reserved and in flight
        if await accounting.exposure(budget) >= 10 * cost - 1e-9:
            break
        await asyncio.sleep(0.005)
    assert await accounting.exposure(budget) == pytest.approx(10 * cost)
    for task in doomed:
        task.cancel()
    results = await asyncio.gather(*failing, return_exceptions=True)
    assert all(isinstance(r, JobFailedError) for r in results)
    await asyncio.gather(*good)
    assert all(t.cancelled() for t in doomed)
    assert await accounting.open_reservations(budget) == 0
    assert await accounting.spent(budget) == pytest.approx(4 * cost)
    statuses = sorted(j.status for j in await accounting.jobs())
    assert statuses == ["cancelled"] * 3 + ["completed"] * 4 + ["failed"] * 3


async def test_degrading_to_fewer_shots_or_the_simulator() -> None:
    priced = PricedSimulator()
    circuit = bell()
    budget = Budget(usd=priced.estimate_cost(circuit, 400))
    manager = BackendManager(
        {"priced": priced, "simulator": SimulatorBackend()},
        degrade=DegradePolicy(("fewer_shots",), min_shots=100),
    )
    result = await manager.run(circuit, shots=1000, backend="priced", budget=budget)
    assert result.shots == 400 and result.metadata["degraded"] == "fewer_shots: 400"
    manager = BackendManager(
        {"priced": priced, "simulator": SimulatorBackend()}, degrade=DegradePolicy(("simulator",))
    )
    result = await manager.run(circuit, shots=1000, backend="priced", budget=Budget(usd=1.0))
    assert result.backend == "simulator" and result.metadata["degraded"] == "simulator: simulator"
    strict = BackendManager({"priced": priced})
    with pytest.raises(BudgetExceededError, match="left"):
        await strict.run(circuit, shots=1000, backend="priced", budget=Budget(usd=1.0))


async def test_transient_errors_are_retried_then_fall_back() -> None:
    flaky = PricedSimulator(transient=2)
    manager = BackendManager(
        {"priced": flaky, "simulator": SimulatorBackend()},
        retry=RetryPolicy(attempts=3, base_delay_s=0.001),
    )
    result = await manager.run(bell(), shots=50, backend="priced", seed=1)
    assert result.backend == "priced" and flaky.transient == 0
    dead = PricedSimulator(transient=10)
    manager = BackendManager(
        {"priced": dead, "simulator": SimulatorBackend()},
        retry=RetryPolicy(attempts=3, base_delay_s=0.001),
    )
    result = await manager.run(bell(), shots=50, backend="priced", seed=1)
    assert result.metadata["fallback_from"] == "priced" and result.backend == "simulator"
    alone = BackendManager(
        {"priced": PricedSimulator(transient=10)},
        fallback=None,
        retry=RetryPolicy(attempts=2, base_delay_s=0.001),
    )
    with pytest.raises(BackendUnavailableError, match="2 times"):
        await alone.run(bell(), shots=50, backend="priced")


async def test_bad_input_is_refused_before_any_reservation() -> None:
    accounting = InMemoryAccounting()
    manager = BackendManager({"priced": PricedSimulator()}, accounting=accounting)
    with pytest.raises(NonFiniteParameterError):
        await manager.run(
            rotation(), [[float("nan")]], shots=10, backend="priced", budget=Budget(usd=100)
        )
    assert accounting.open_reservations() == 0 and accounting.jobs == {}


async def test_the_database_records_jobs_and_ledger(database_url: str) -> None:
    async with QuantumDatabase(database_url).connect() as db:
        result = await db.backend_manager.run(bell(), shots=10, seed=3, run_id="r-1")
        assert result.counts is not None
        accounting = db.backend_manager.accounting
        assert isinstance(accounting, SqlAccounting)
        (job,) = await accounting.jobs(run_id="r-1")
        assert (job.backend, job.status, job.shots) == ("simulator", "completed", 10)
        assert job.circuit_hash == bell().content_hash()


WORKER = """
import asyncio, sys
sys.path.insert(0, sys.argv[3])
from backends import BackendManager, Budget, BudgetExceededError
from quantum_db.accounting import SqlAccounting
from quantum_db.registry import Registry
from tests.test_manager import PricedSimulator, bell

async def main(url, limit):
    registry = Registry(url)
    manager = BackendManager({"priced": PricedSimulator()}, accounting=SqlAccounting(registry),
                             fallback=None)
    results = await asyncio.gather(
        *(manager.run(bell(), shots=100, backend="priced", budget=Budget(usd=limit, name="shared"))
          for _ in range(30)), return_exceptions=True)
    print(sum(not isinstance(r, BaseException) for r in results))
    await registry.aclose()
asyncio.run(main(sys.argv[1], float(sys.argv[2])))
"""


async def test_budget_holds_across_processes(tmp_path: Path) -> None:
    url = f"sqlite+aiosqlite:///{tmp_path / 'ledger.sqlite'}"
    registry = Registry(url)
    await upgrade(registry)
    cost = PricedSimulator().estimate_cost(bell(), 100)
    limit = 25 * cost + cost / 3
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", WORKER, url, repr(limit), str(ROOT)],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for _ in range(3)
    ]
    outputs = []
    try:
        for p in procs:
            out, err = p.communicate(timeout=240)
            outputs.append((p.returncode, out, err))
    finally:
        for p in procs:  # never leave a worker behind, even when one failed
            p.kill()
            p.wait()
    assert [code for code, _, _ in outputs] == [0, 0, 0], outputs
    assert sum(int(out.strip()) for _, out, _ in outputs) == 25
    accounting = SqlAccounting(registry)
    budget = Budget(usd=limit, name="shared")
    assert await accounting.spent(budget) == pytest.approx(25 * cost)
    assert await accounting.open_reservations(budget) == 0
    await registry.aclose()


def test_budget_validation() -> None:
    for bad in (-1.0, float("nan"), float("inf")):
        with pytest.raises(BackendError):
            Budget(usd=bad)
    assert np.isclose(Budget(usd=5).usd, 5.0)


async def test_free_local_jobs_are_recorded_in_one_batch_and_never_lost_at_close(
    database_url: str,
) -> None:
    async with QuantumDatabase(database_url).connect() as db:
        manager = db.backend_manager
        for seed in range(5):
            await manager.run(bell(), shots=10, seed=seed, run_id="batch")
        async with db.registry.session() as session:
            held = (await session.scalars(select(JobRow).where(JobRow.run_id == "batch"))).all()
        assert held == []  # nothing to bill or find again: recorded with the next batch
        await manager.flush_jobs()
        async with db.registry.session() as session:
            rows = (await session.scalars(select(JobRow).where(JobRow.run_id == "batch"))).all()
        assert len(rows) == 5 and {r.status for r in rows} == {"completed"}
        await manager.run(bell(), shots=10, seed=9, run_id="at-close")
    async with QuantumDatabase(database_url).connect() as db, db.registry.session() as session:
        (last,) = (await session.scalars(select(JobRow).where(JobRow.run_id == "at-close"))).all()
        assert last.status == "completed" and last.owner_id is not None
