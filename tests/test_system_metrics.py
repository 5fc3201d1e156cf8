"""System metrics sampled in the background of a real run, and the resource guard."""

from __future__ import annotations

import asyncio
import math
import sys
from pathlib import Path
from typing import Any

import numpy as np
import psutil
import pytest

from backends.circuit import Circuit
from backends.parameters import Parameter
from backends.simulator import SimulatorBackend
from quantum_db import QuantumDatabase
from quantum_ml.errors import MonitoringError
from quantum_ml.monitoring.system import ResourceGuard, SystemMetricsMonitor, sample_system_metrics
from quantum_ml.trainer import QuantumTrainer, TrainingConfig
from quantum_ml.training.callbacks import LambdaCallback

from .test_trainer import make_model, store_blobs, url

MLFLOW_NAMES = (
    "system/cpu_utilization_percentage",
    "system/system_memory_usage_megabytes",
    "system/system_memory_usage_percentage",
    "system/process_rss_megabytes",
)


def test_a_sample_agrees_with_psutil() -> None:
    sample = sample_system_metrics(gpu=False)
    assert set(MLFLOW_NAMES) <= set(sample)
    memory = psutil.virtual_memory()
    assert sample["system/system_memory_usage_percentage"] == pytest.approx(memory.percent, abs=5)
    rss = psutil.Process().memory_info().rss / 2**20
    assert sample["system/process_rss_megabytes"] == pytest.approx(rss, rel=0.2)
    assert 0.0 <= sample["system/cpu_utilization_percentage"] <= 100.0 * (psutil.cpu_count() or 1)
    assert not any(k.startswith("system/gpu_") for k in sample)  # gpu=False: NVML not asked


async def _train(db: QuantumDatabase, callbacks: list[Any], run_id: str) -> None:
    model = make_model(await store_blobs(db))
    config = TrainingConfig(learning_rate=0.1, epochs=2, checkpoint_every=10, seed=1)
    trainer = QuantumTrainer(config, db, SimulatorBackend(), callbacks=callbacks)
    train = db.create_ml_data_loader("blobs", batch_size=10, seed=1, split="train")
    await trainer.fit(model, train, run_id=run_id)


async def test_system_metrics_are_stored_for_a_run(tmp_path: Path) -> None:
    async def slow_step(ctx: Any, step: int, logs: Any) -> None:
        await asyncio.sleep(0.03)  # long enough for the 0.05 s sampler to run between steps

    monitor = SystemMetricsMonitor(0.05, gpu=False)
    async with QuantumDatabase(url(tmp_path)).connect() as db:
        await _train(db, [LambdaCallback(on_step_end=slow_step), monitor], "sys")
        keys = await db.metrics.keys("sys")
        histories = {k: await db.metrics.history("sys", k) for k in MLFLOW_NAMES}
        last_step = (await db.runs.last_steps(["sys"]))["sys"]
    assert set(MLFLOW_NAMES) <= set(keys)
    counts = {len(h) for h in histories.values()}
    assert len(counts) == 1  # every sample has every metric
    samples = counts.pop()
    assert samples == monitor.samples >= 4  # begin, background ones, end
    steps = histories["system/process_rss_megabytes"].steps
    assert steps[0] == 0 and steps[-1] == last_step and np.all(np.diff(steps) >= 0)
    stamps = histories["system/process_rss_megabytes"].timestamps
    assert np.all(np.diff(stamps) > 0)
    assert all(math.isfinite(v) for h in histories.values() for v in h.values)
    assert monitor._task is None  # the sampler stopped with the run


async def test_the_sampler_stops_when_the_run_fails(tmp_path: Path) -> None:
    def crash(ctx: Any, step: int, logs: Any) -> None:
        if step == 2:
            raise RuntimeError("boom")

    monitor = SystemMetricsMonitor(0.05, gpu=False)
    async with QuantumDatabase(url(tmp_path)).connect() as db:
        with pytest.raises(RuntimeError, match="boom"):
            await _train(db, [monitor, LambdaCallback(on_step_end=crash)], "fails")
        assert monitor._task is None
        before = monitor.samples
        await asyncio.sleep(0.2)
        assert monitor.samples == before  # nothing sampled after the failure


async def test_the_guard_alerts_and_shrinks_the_simulator(tmp_path: Path) -> None:
    sim = SimulatorBackend()
    budget_before = sim.max_memory_bytes
    # Headroom is "low" whenever less than 99.99% of memory is free: always, here.
    guard = ResourceGuard(min_available_fraction=0.9999, floor_bytes=32 << 20)
    monitor = SystemMetricsMonitor(10.0, guard=guard, gpu=False)
    async with QuantumDatabase(url(tmp_path)).connect() as db:
        model = make_model(await store_blobs(db))
        config = TrainingConfig(learning_rate=0.1, epochs=1, checkpoint_every=10, seed=1)
        trainer = QuantumTrainer(config, db, sim, callbacks=[monitor])
        train = db.create_ml_data_loader("blobs", batch_size=10, seed=1, split="train")
        await trainer.fit(model, train, run_id="guarded")
        alerts = await db.alerts.list("guarded")
    available = psutil.virtual_memory().available
    assert guard.shrinks == 2  # the first and the last sample
    assert [(a.rule, a.count, a.open) for a in alerts] == [("memory_headroom", 2, True)]
    assert sim.max_memory_bytes < budget_before
    assert sim.max_memory_bytes <= max(32 << 20, available)
    assert "simulator working sets lowered to" in alerts[0].message


async def test_a_shrunk_simulator_gives_the_same_results() -> None:
    from qiskit.quantum_info import SparsePauliOp, Statevector

    rng = np.random.default_rng(5)
    circuit = Circuit(6)
    for q in range(6):
        circuit.ry(Parameter(f"a{q}"), q)
    for q in range(5):
        circuit.cx(q, q + 1)
    for q in range(6):
        circuit.rx(Parameter(f"b{q}"), q)
    values = rng.uniform(-np.pi, np.pi, size=(300, circuit.num_parameters))
    roomy = SimulatorBackend()
    tight = SimulatorBackend()
    assert tight.limit_memory(4096) == 4096  # 8 rows of 6 qubits per chunk, one chunk at once
    assert tight.limit_memory(1 << 40) == 4096  # never raised
    a = (await roomy.run(circuit, values, observables="ZIIIIZ")).expectations
    b = (await tight.run(circuit, values, observables="ZIIIIZ")).expectations
    assert np.array_equal(a, b)
    qc = circuit.to_qiskit()
    op = SparsePauliOp("ZIIIIZ")
    for row in (0, 151, 299):
        bound = qc.assign_parameters(dict(zip(qc.parameters, values[row], strict=True)))
        expected = Statevector(bound).expectation_value(op).real
        assert a[row, 0] == pytest.approx(expected, abs=1e-10)
    await roomy.aclose()
    await tight.aclose()


def test_bad_settings_are_refused() -> None:
    with pytest.raises(MonitoringError, match="interval_s must be > 0"):
        SystemMetricsMonitor(0)
    with pytest.raises(MonitoringError, match="a number of seconds"):
        SystemMetricsMonitor("5")  # type: ignore[arg-type]
    with pytest.raises(MonitoringError, match="min_available_fraction"):
        ResourceGuard(min_available_fraction=1.5)
    with pytest.raises(MonitoringError, match="shrink_factor"):
        ResourceGuard(shrink_factor=1.0)
    from backends.errors import BackendError

    with pytest.raises(BackendError, match="max_bytes must be a positive integer"):
        SimulatorBackend().limit_memory(0)


def test_gpu_metrics_through_nvml_names_and_units(monkeypatch: pytest.MonkeyPatch) -> None:
    """No GPU here: a stand-in for the pynvml module (NVML's own calls and field names)
    checks what the sampler makes of them; the real library is read on GPU machines."""
    import types

    from quantum_ml.monitoring import system

    calls: list[str] = []

    class Memory:
        used = 3 * 2**30
        total = 12 * 2**30

    class Util:
        gpu = 37

    fake = types.SimpleNamespace(
        nvmlInit=lambda: calls.append("init"),
        nvmlShutdown=lambda: calls.append("shutdown"),
        nvmlDeviceGetCount=lambda: 2,
        nvmlDeviceGetHandleByIndex=lambda i: i,
        nvmlDeviceGetUtilizationRates=lambda h: Util,
        nvmlDeviceGetMemoryInfo=lambda h: Memory,
    )
    monkeypatch.setitem(sys.modules, "pynvml", fake)
    values = system._gpu_metrics()
    assert calls == ["init", "shutdown"]
    for i in (0, 1):
        assert values[f"system/gpu_{i}_utilization_percentage"] == 37.0
        assert values[f"system/gpu_{i}_memory_usage_megabytes"] == 3 * 1024.0
        assert values[f"system/gpu_{i}_memory_usage_percentage"] == 25.0

    def no_driver() -> None:
        raise RuntimeError("NVML Shared Library Not Found")

    monkeypatch.setitem(sys.modules, "pynvml", types.SimpleNamespace(nvmlInit=no_driver))
    assert system._gpu_metrics() == {}  # no driver: no GPU metrics, no error
    monkeypatch.setitem(sys.modules, "pynvml", None)  # not installed
    assert system._gpu_metrics() == {}
