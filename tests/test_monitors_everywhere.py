"""Every monitor on the other trainers: a QuantumGAN's Born machine and a torch hybrid."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from qiskit.quantum_info import Statevector, entropy, partial_trace

from quantum_db import QuantumDatabase
from quantum_ml.hybrid import hybrid_classifier
from quantum_ml.monitoring import standard_monitors
from quantum_ml.qgan import (
    GANConfig,
    QuantumGAN,
    QuantumGenerator,
    TargetDistribution,
    mlp_discriminator,
    ry_cz_ansatz,
)
from quantum_ml.trainer import QuantumTrainer, TrainingConfig

from .test_qgan import lognormal_target
from .test_trainer import blobs, url


def _entropies(circuit: Any, values: np.ndarray[Any, Any]) -> list[float]:
    qc = circuit.to_qiskit()
    by_name = {p.name: p for p in qc.parameters}
    bound = qc.assign_parameters(
        {by_name[p.name]: v for p, v in zip(circuit.parameters, values, strict=True)}
    )
    psi = Statevector(bound)
    n = circuit.num_qubits
    return [entropy(partial_trace(psi, [k for k in range(n) if k != q]), base=2) for q in range(n)]


async def test_a_qgan_run_with_every_monitor(tmp_path: Path) -> None:
    gen = QuantumGenerator(
        ry_cz_ansatz(3, reps=2),
        bounds=[(0, 7)],
        bits=[3],
        initial_state="uniform",
        weights=np.random.default_rng(1).random(9) * 0.02,
    )
    torch.manual_seed(0)
    config = GANConfig(epochs=20, checkpoint_every=10, seed=1)
    monitors = standard_monitors(quantum_every=20, system_interval_s=60.0)
    async with QuantumDatabase(url(tmp_path)).connect() as db:
        gan = QuantumGAN(gen, mlp_discriminator(1), config, db, callbacks=monitors)
        await gan.fit(TargetDistribution(lognormal_target()), run_id="gan")
        keys = set(await db.metrics.keys("gan"))
        half = await db.metrics.history("gan", "entanglement/qubit_0")
        depth = await db.metrics.history("gan", "circuit/depth")
        status = (await db.runs.get("gan")).status
    assert status == "finished"
    assert {"system/process_rss_megabytes", "circuit/gates_2q", "entanglement/half_chain"} <= keys
    assert int(half.steps[-1]) == 20  # the last step: the generator's final weights
    expected = _entropies(gen.circuit, gen.weights)[0]
    assert half.values[-1] == pytest.approx(expected, abs=1e-9)
    assert depth.values[0] == gen.circuit.to_qiskit().depth()


async def test_a_torch_hybrid_with_every_monitor(tmp_path: Path) -> None:
    X, y = blobs()
    net = hybrid_classifier(2, n_qubits=2, layers=2, seed=3)
    layer = net[1]
    config = TrainingConfig(optimizer="adam", learning_rate=0.05, epochs=1, seed=1)
    monitors = standard_monitors(quantum_every=3, system_interval_s=60.0)
    async with QuantumDatabase(url(tmp_path)).connect() as db:
        await db.store_training_data("blobs", X, y, splits={"train": 0.75, "validation": 0.25})
        train = db.create_ml_data_loader("blobs", batch_size=10, seed=1, split="train")
        await QuantumTrainer(config, db, callbacks=monitors).fit(net, train, run_id="hy")
        ent = await db.metrics.history("hy", "entanglement/qubit_1")
        variance = await db.metrics.history("hy", "grad/all/variance")
        keys = set(await db.metrics.keys("hy"))
    assert len(ent) >= 1 and len(variance) >= 1
    assert any(k.startswith("grad/param_") for k in keys)  # groups by the module's parameters
    assert all(0.0 <= v <= 1.0 + 1e-12 for v in ent.values)
    assert len(train) % 3 == 0 and int(ent.steps[-1]) == len(train)  # the last step measured
    weights = layer.weights.detach().numpy().astype(np.float64)
    values = np.zeros(layer.circuit.num_parameters)
    kinds = [p.kind for p in layer.circuit.parameters]
    values[[i for i, k in enumerate(kinds) if k == "weight"]] = weights
    assert ent.values[-1] == pytest.approx(_entropies(layer.circuit, values)[1], abs=1e-7)
