"""Vector-Jacobian products: the simulator's one backward pass per binding against the
contracted Jacobian, finite differences and Qiskit; capability discovery on the backend
contract; the engine, the manager's job rows and the trainer's VJP path."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
from qiskit.quantum_info import SparsePauliOp, Statevector

from backends import BackendManager
from backends.aer import QiskitBackend
from backends.errors import BackendError
from backends.observables import Observable
from backends.simulator import SimulatorBackend
from backends.templates import hardware_efficient_circuit
from quantum_db import QuantumDatabase
from quantum_ml.errors import GradientError
from quantum_ml.gradients import QuantumGradientComputer
from quantum_ml.models import QuantumModel
from quantum_ml.trainer import QuantumTrainer, TrainingConfig
from quantum_ml.training.tasks import QuantumModelTask

from .randomcircuits import random_circuit, to_qiskit_reference


def _observables(n: int) -> list[Any]:
    """Z on qubit 0, X X, a Y Z product and a weighted sum: more than Z strings."""
    return [
        "I" * (n - 1) + "Z",
        "XX" + "I" * (n - 2),
        "I" * (n - 3) + "YIZ",
        Observable([("Z" * n, 0.5), ("X" + "I" * (n - 1), -0.25)]),
    ]


def _qiskit_expectations(circuit: Any, row: np.ndarray[Any, Any], n: int) -> list[float]:
    psi = Statevector(to_qiskit_reference(circuit, list(row), measurements=False))
    ops = [
        SparsePauliOp("I" * (n - 1) + "Z"),
        SparsePauliOp("XX" + "I" * (n - 2)),
        SparsePauliOp("I" * (n - 3) + "YIZ"),
        SparsePauliOp(["Z" * n, "X" + "I" * (n - 1)], [0.5, -0.25]),
    ]
    return [float(psi.expectation_value(op).real) for op in ops]


@pytest.mark.parametrize("n", [3, 8, 11])  # the dense path, and the adjoint walk twice
async def test_vjp_equals_the_contracted_jacobian_and_qiskit(n: int) -> None:
    rng = np.random.default_rng(n)
    circuit = random_circuit(rng, n, 6 * n, num_params=3 * n)
    values = rng.uniform(-np.pi, np.pi, size=(5, circuit.num_parameters))
    obs = _observables(n)
    cot = rng.normal(size=(5, len(obs)))
    async with SimulatorBackend() as sim:
        exp, jac = await sim.adjoint_jacobian(circuit, values, obs)
        exp_v, vjp = await sim.compute_vjp(circuit, values, obs, cot)
        # A subset of parameters: the others are zero and cost nothing.
        wrt = list(range(0, circuit.num_parameters, 2))
        _, part = await sim.compute_vjp(circuit, values, obs, cot, wrt=wrt)
        # Finite differences of the scalar sum_k c_k E_k, by the simulator's plain run.
        h = 1e-6
        fd = np.zeros_like(vjp)
        for p in range(circuit.num_parameters):
            up, down = values.copy(), values.copy()
            up[:, p] += h
            down[:, p] -= h
            e_up = (await sim.run(circuit, up, observables=obs)).expectations
            e_down = (await sim.run(circuit, down, observables=obs)).expectations
            assert e_up is not None and e_down is not None
            fd[:, p] = np.einsum("bk,bk->b", cot, e_up - e_down) / (2 * h)
    assert np.allclose(exp_v, exp, atol=1e-12)
    assert np.allclose(vjp, np.einsum("bk,bkp->bp", cot, jac), atol=1e-12)
    assert np.allclose(vjp, fd, atol=1e-6)
    others = [p for p in range(circuit.num_parameters) if p not in wrt]
    assert np.allclose(part[:, wrt], vjp[:, wrt], atol=1e-12) and not part[:, others].any()
    for b in (0, 4):
        assert exp_v[b] == pytest.approx(_qiskit_expectations(circuit, values[b], n), abs=1e-10)


async def test_single_precision_vjp() -> None:
    rng = np.random.default_rng(3)
    circuit = hardware_efficient_circuit(7, 2)
    values = rng.uniform(-np.pi, np.pi, size=(3, circuit.num_parameters))
    cot = rng.normal(size=(3, 7))
    obs = [("I" * (6 - q)) + "Z" + "I" * q for q in range(7)]
    async with SimulatorBackend() as double, SimulatorBackend(precision="single") as single:
        _, a = await double.compute_vjp(circuit, values, obs, cot)
        _, b = await single.compute_vjp(circuit, values, obs, cot)
    assert np.allclose(a, b, atol=1e-4)


async def test_capabilities_and_bad_inputs() -> None:
    circuit = hardware_efficient_circuit(6, 1)
    values = np.zeros((2, circuit.num_parameters))
    obs = ["ZIIIII", "IIIIIZ"]
    async with SimulatorBackend() as sim, QiskitBackend() as aer:
        assert sim.supports_derivatives("vjp") and sim.supports_derivatives("adjoint")
        assert not sim.supports_derivatives("vjp", shots=100)
        assert sim.supports_derivatives("parameter-shift", shots=100)
        assert not aer.supports_derivatives("vjp") and not aer.supports_derivatives("adjoint")
        assert aer.supports_derivatives("parameter-shift", shots=100)
        with pytest.raises(BackendError, match="offers no vector-Jacobian product"):
            await aer.compute_vjp(circuit, values, obs, np.ones((2, 2)))
        with pytest.raises(BackendError, match=r"shape \[bindings, observables\] = \[2, 2\]"):
            await sim.compute_vjp(circuit, values, obs, np.ones((2, 3)))
        with pytest.raises(BackendError, match="finite"):
            await sim.compute_vjp(circuit, values, obs, np.array([[1.0, np.nan], [0, 0]]))
        with pytest.raises(BackendError, match="at least one observable"):
            await sim.compute_vjp(circuit, values, [], np.ones((2, 0)))
        with pytest.raises(BackendError, match="wrt must list parameter indices"):
            await sim.compute_vjp(circuit, values, obs, np.ones((2, 2)), wrt=[999])


async def test_the_engine_uses_the_vjp_or_contracts_the_jacobian() -> None:
    rng = np.random.default_rng(9)
    circuit = hardware_efficient_circuit(7, 2)
    values = rng.uniform(-np.pi, np.pi, size=(3, circuit.num_parameters))
    obs = [("I" * (6 - q)) + "Z" + "I" * q for q in range(7)]
    cot = rng.normal(size=(3, 7))
    cot[:, 2] = 0.0  # a column the loss does not weigh
    async with SimulatorBackend() as sim:
        exact_e, exact = await QuantumGradientComputer("adjoint").value_and_vjp(
            sim, circuit, values, obs, cot
        )
        shift_e, shifted = await QuantumGradientComputer("parameter-shift").value_and_vjp(
            sim, circuit, values, obs, cot
        )
        _, jac = await sim.adjoint_jacobian(circuit, values, obs)
        with pytest.raises(GradientError, match="cotangents must be finite numbers of shape"):
            await QuantumGradientComputer("adjoint").value_and_vjp(
                sim, circuit, values, obs, cot[:, :3]
            )
    assert np.allclose(exact, np.einsum("bk,bkp->bp", cot, jac), atol=1e-12)
    assert np.allclose(shifted, exact, atol=1e-10)
    # Parameter shift measures only the weighed observables: the unweighed column is NaN.
    assert np.isnan(shift_e[:, 2]).all() and np.allclose(
        np.delete(shift_e, 2, axis=1), np.delete(exact_e, 2, axis=1), atol=1e-12
    )


async def test_the_manager_records_a_vjp_as_a_job(tmp_path: Path) -> None:
    circuit = hardware_efficient_circuit(6, 1)
    values = np.random.default_rng(1).uniform(size=(4, circuit.num_parameters))
    cot = np.ones((4, 2))
    async with QuantumDatabase(f"sqlite:///{tmp_path / 'q.sqlite'}").connect() as db:
        manager: BackendManager = db.backend_manager
        await db.runs.create("v")
        exp, vjp = await manager.vjp(
            circuit, values, ["ZIIIII", "IIIIIZ"], cot, backend="simulator", run_id="v"
        )
        await manager.flush_jobs()
        jobs = await db.accounting.jobs(run_id="v")
    assert vjp.shape == (4, circuit.num_parameters) and exp.shape == (4, 2)
    assert [(j.backend, j.status, j.batch_size, j.actual_cost) for j in jobs] == [
        ("simulator", "completed", 4, 0.0)
    ]


async def test_the_trainer_takes_the_vjp_path_on_wide_circuits(tmp_path: Path) -> None:
    """An 8-qubit model: the step's gradient by forward + VJP equals the Jacobian path's."""
    rng = np.random.default_rng(0)
    X = rng.uniform(-1, 1, size=(6, 8))
    y = np.arange(6) % 2
    model = QuantumModel(8, 2, task="classification", n_outputs=2, seed=4)
    async with SimulatorBackend() as sim:
        config = TrainingConfig(learning_rate=0.1, epochs=1, seed=1)
        task = QuantumModelTask(model, config, sim, "adjoint")
        assert task._uses_vjp()
        via_vjp = await task.compute(X, y, 0)
        g_vjp = task.last_gradient.copy()
        task._uses_vjp = lambda: False  # type: ignore[method-assign]
        via_jac = await task.compute(X, y, 0)
        g_jac = task.last_gradient.copy()
    assert via_vjp.loss == pytest.approx(via_jac.loss, abs=1e-12)
    assert np.allclose(g_vjp, g_jac, atol=1e-12)
    # Through the trainer (BackendManager, job rows): it trains.
    async with QuantumDatabase(f"sqlite:///{tmp_path / 't.sqlite'}").connect() as db:
        await db.store_training_data("wide", np.tile(X, (4, 1)), np.tile(y, 4))
        loader = db.create_ml_data_loader("wide", batch_size=6, seed=0, split="train")
        wide = QuantumModel(8, 2, task="classification", n_outputs=2, seed=4)
        history = await QuantumTrainer(TrainingConfig(learning_rate=0.1, epochs=2, seed=1), db).fit(
            wide, loader, run_id="wide"
        )
        jobs = await db.accounting.jobs(run_id="wide")
    assert history.steps > 0 and np.isfinite(history.train_loss).all()
    assert len(jobs) == 2 * history.steps  # a forward run and a VJP per step


def test_the_torch_layer_backward_is_one_vjp_on_wide_circuits() -> None:
    import torch

    from quantum_ml.torch_layer import TorchQuantumLayer

    circuit = hardware_efficient_circuit(7, 2)  # 7 inputs, then the weights
    obs = [("I" * (6 - q)) + "Z" + "I" * q for q in range(7)]
    layer = TorchQuantumLayer(circuit, SimulatorBackend(), obs, weights=3)
    assert layer._uses_vjp()
    x = torch.tensor(np.random.default_rng(2).uniform(-1, 1, (4, 7)), requires_grad=True)
    g = torch.tensor(np.random.default_rng(3).normal(size=(4, 7)))
    (layer(x) * g).sum().backward()
    gx, gw = x.grad.clone(), layer.weights.grad.clone()
    x.grad, layer.weights.grad = None, None
    layer._uses_vjp = lambda: False  # type: ignore[method-assign]
    (layer(x) * g).sum().backward()
    assert torch.allclose(gx, x.grad, atol=1e-12)
    assert torch.allclose(gw, layer.weights.grad, atol=1e-12)
    layer.close()


async def test_a_small_exact_run_on_the_loop_equals_the_threaded_one(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Small exact runs skip the thread hand-off; the numbers are the same, bit for bit."""
    from backends.simulator import backend as sim_module

    circuit = hardware_efficient_circuit(4, 2)
    values = np.random.default_rng(5).uniform(-np.pi, np.pi, size=(32, circuit.num_parameters))
    obs = ["ZIII", "IIXZ", "YYII"]
    async with SimulatorBackend() as sim:
        inline = (await sim.run(circuit, values, observables=obs)).expectations
        monkeypatch.setattr(sim_module, "_INLINE_RUN_BYTES", 0)
        threaded = (await sim.run(circuit, values, observables=obs)).expectations
    assert inline is not None and threaded is not None
    assert np.array_equal(inline, threaded)
    reference = [
        Statevector(to_qiskit_reference(circuit, list(values[3]), measurements=False))
        .expectation_value(SparsePauliOp(label))
        .real
        for label in obs
    ]
    assert inline[3] == pytest.approx(reference, abs=1e-12)
