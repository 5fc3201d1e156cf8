"""The quantum metrics monitor in real runs, its numbers against qiskit.quantum_info."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
from qiskit.quantum_info import Statevector, entropy, partial_trace, state_fidelity

from backends.simulator import SimulatorBackend
from quantum_db import QuantumDatabase
from quantum_ml.errors import MonitoringError
from quantum_ml.monitoring.quantum import QuantumMetricsMonitor
from quantum_ml.trainer import QuantumTrainer, TrainingConfig
from quantum_ml.training.callbacks import LambdaCallback

from .test_trainer import make_model, store_blobs, url


def _qiskit_state(model: Any, weights: np.ndarray[Any, Any]) -> Statevector:
    """The model's circuit on the zero probe, bound by Qiskit, simulated by Qiskit."""
    qc = model.circuit.to_qiskit()
    by_name = {p.name: p for p in qc.parameters}
    values = {}
    w = iter(weights)
    for p in model.circuit.parameters:
        values[by_name[p.name]] = next(w) if p.kind == "weight" else 0.0
    return Statevector(qc.assign_parameters(values))


async def test_logged_metrics_match_qiskit(tmp_path: Path) -> None:
    every = 3
    seen: dict[int, dict[str, Any]] = {}

    def record(ctx: Any, step: int, logs: Any) -> None:
        seen[step] = {
            "weights": ctx.task.model.weights.copy(),
            "gradient": ctx.task.last_gradient.copy(),
        }

    monitor = QuantumMetricsMonitor(every=every)
    async with QuantumDatabase(url(tmp_path)).connect() as db:
        model = make_model(await store_blobs(db), layers=3)
        config = TrainingConfig(learning_rate=0.1, epochs=2, checkpoint_every=100, seed=1)
        trainer = QuantumTrainer(
            config, db, SimulatorBackend(), callbacks=[monitor, LambdaCallback(on_step_end=record)]
        )
        train = db.create_ml_data_loader("blobs", batch_size=10, seed=1, split="train")
        await trainer.fit(model, train, run_id="q")
        keys = set(await db.metrics.keys("q"))
        stored = {
            k: await db.metrics.history("q", k)
            for k in keys
            if k.startswith(("entanglement/", "fidelity/", "grad/", "circuit/"))
        }
    evaluated = [s for s in sorted(seen) if s % every == 0]
    assert evaluated and monitor.evaluations == len(evaluated)
    # Entanglement: von Neumann entropies of Qiskit's partial traces, at every evaluation.
    n = model.n_qubits
    previous = None
    for i, step in enumerate(evaluated):
        psi = _qiskit_state(model, seen[step]["weights"])
        for q in range(n):
            reduced = partial_trace(psi, [k for k in range(n) if k != q])
            got = stored[f"entanglement/qubit_{q}"]
            assert got.steps[i] == step
            assert got.values[i] == pytest.approx(entropy(reduced, base=2), abs=1e-9)
        half = partial_trace(psi, list(range(n // 2, n)))
        assert stored["entanglement/half_chain"].values[i] == pytest.approx(
            entropy(half, base=2), abs=1e-9
        )
        if previous is not None:
            fid = stored["fidelity/previous"]
            assert fid.steps[i - 1] == step
            assert fid.values[i - 1] == pytest.approx(state_fidelity(psi, previous), abs=1e-9)
        previous = psi
    # Gradient statistics: variance across the window's draws, averaged over the group.
    for step in evaluated:
        window = np.stack([seen[s]["gradient"] for s in range(max(1, step - every + 1), step + 1)])
        if len(window) < 2:
            continue
        k = list(stored["grad/all/variance"].steps).index(step)
        assert stored["grad/all/variance"].values[k] == pytest.approx(
            float(np.mean(np.var(window, axis=0, ddof=1))), rel=1e-9
        )
        layer0 = window[:, : model.num_weights // model.layers]
        assert stored["grad/layer_0/variance"].values[k] == pytest.approx(
            float(np.mean(np.var(layer0, axis=0, ddof=1))), rel=1e-9
        )
    assert "grad/plateau_slope" in stored  # three layers: the depth fit is there
    # Circuit metrics against Qiskit's own counts.
    qc = model.circuit.to_qiskit()
    two = sum(1 for inst in qc.data if inst.operation.num_qubits == 2)
    one = sum(1 for inst in qc.data if inst.operation.num_qubits == 1)
    assert stored["circuit/depth"].values[0] == qc.depth()
    assert stored["circuit/gates_2q"].values[0] == two
    assert stored["circuit/gates_1q"].values[0] == one
    assert stored["circuit/transpiled_gates_2q"].values[0] == two  # the simulator runs it as is


async def test_the_monitor_changes_nothing_of_the_training(tmp_path: Path) -> None:
    results = []
    for name, callbacks in (("plain", []), ("watched", [QuantumMetricsMonitor(every=1)])):
        async with QuantumDatabase(url(tmp_path, f"{name}.sqlite")).connect() as db:
            model = make_model(await store_blobs(db))
            config = TrainingConfig(learning_rate=0.1, epochs=2, checkpoint_every=100, seed=1)
            trainer = QuantumTrainer(config, db, SimulatorBackend(), callbacks=callbacks)
            train = db.create_ml_data_loader("blobs", batch_size=10, seed=1, split="train")
            await trainer.fit(model, train, run_id=name)
            results.append(model.weights.copy())
    assert np.array_equal(results[0], results[1])


async def test_reference_fidelity_and_shot_noise_snr(tmp_path: Path) -> None:
    reference = np.zeros(4, dtype=complex)
    reference[0] = 1.0
    monitor = QuantumMetricsMonitor(every=2, reference_state=reference)
    async with QuantumDatabase(url(tmp_path)).connect() as db:
        model = make_model(await store_blobs(db))
        config = TrainingConfig(
            learning_rate=0.1, epochs=1, checkpoint_every=100, seed=1, shots=200
        )
        weights: dict[int, np.ndarray[Any, Any]] = {}
        trainer = QuantumTrainer(
            config,
            db,
            SimulatorBackend(seed=3),
            callbacks=[
                monitor,
                LambdaCallback(
                    on_step_end=lambda ctx, step, logs: weights.__setitem__(
                        step, ctx.task.model.weights.copy()
                    )
                ),
            ],
        )
        train = db.create_ml_data_loader("blobs", batch_size=10, seed=1, split="train")
        await trainer.fit(model, train, run_id="shots")
        fid = await db.metrics.history("shots", "fidelity/reference")
        snr = await db.metrics.history("shots", "snr/expectation_mean")
    assert len(fid) and len(snr) == len(fid)
    for step, value in zip(fid.steps, fid.values, strict=True):
        psi = _qiskit_state(model, weights[int(step)])
        assert value == pytest.approx(abs(psi.data[0]) ** 2, abs=1e-9)
    step = int(snr.steps[0])
    psi = _qiskit_state(model, weights[step])
    z = []
    for q in range(model.n_qubits):
        label = ["I"] * model.n_qubits
        label[model.n_qubits - 1 - q] = "Z"
        from qiskit.quantum_info import SparsePauliOp

        z.append(psi.expectation_value(SparsePauliOp("".join(label))).real)
    closed = [abs(e) / np.sqrt((1 - e * e) / 200) for e in z if abs(e) < 1]
    assert snr.values[0] == pytest.approx(float(np.mean(closed)), rel=1e-6)


def test_bad_settings_are_refused() -> None:
    with pytest.raises(MonitoringError, match=r"every .* must be >= 1"):
        QuantumMetricsMonitor(every=0)


async def test_a_reference_state_of_the_wrong_width_is_refused(tmp_path: Path) -> None:
    monitor = QuantumMetricsMonitor(every=2, reference_state=np.ones(8) / np.sqrt(8))
    async with QuantumDatabase(url(tmp_path)).connect() as db:
        model = make_model(await store_blobs(db))  # 2 qubits: 4 amplitudes, not 8
        config = TrainingConfig(learning_rate=0.1, epochs=1, seed=1)
        trainer = QuantumTrainer(config, db, SimulatorBackend(), callbacks=[monitor])
        train = db.create_ml_data_loader("blobs", batch_size=10, seed=1, split="train")
        with pytest.raises(MonitoringError, match="reference_state has shape"):
            await trainer.fit(model, train, run_id="bad-ref")
        assert await db.metrics.keys("bad-ref") == []  # nothing measured, nothing stored
