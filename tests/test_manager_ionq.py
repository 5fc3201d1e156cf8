"""The BackendManager with the real IonQ clients against the loopback IonQ emulator."""

from __future__ import annotations

import asyncio
import math
from pathlib import Path

import pytest

from backends import (
    BackendManager,
    Budget,
    BudgetExceededError,
    Circuit,
    RunResult,
    SimulatorBackend,
)
from backends.ionq import IonQBackend
from quantum_db.accounting import SqlAccounting
from quantum_db.registry import Registry, upgrade

from .ionq_emulator import IonQEmulator

API_KEY = "manager-test-key"


def aria(emulator: IonQEmulator, **options: object) -> IonQBackend:
    return IonQBackend(
        "qpu.aria-1",
        "qiskit",
        api_key=API_KEY,
        api_url=emulator.url,
        poll_interval_s=0.005,
        max_poll_interval_s=0.02,
        retry_backoff_s=0.01,
        job_timeout_s=60.0,
        request_timeout_s=30.0,
        seed=3,
        error_mitigation=False,
        **options,  # type: ignore[arg-type]
    )


@pytest.fixture
def emulator() -> object:
    emu = IonQEmulator(API_KEY).start()
    yield emu
    emu.stop()


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
