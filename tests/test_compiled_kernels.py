"""The compiled kernels (numba) against the pure-NumPy reference on random circuits.

Every exact entry point is run twice on the same random circuits and bindings, once with
``use_kernels("numpy")`` (the reference implementation) and once with the compiled
kernels, and the answers must agree to 1e-12: ``run`` (the tape on narrow circuits of
one-qubit gates and permutations, the plan elsewhere), ``compute_vjp`` and
``adjoint_jacobian``, and the statevectors ``evolve`` produces. The tape's shared
prefixes are checked on the rows of a parameter-shift batch, and the switch itself.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from typing import Any

import numpy as np
import pytest

from backends.errors import BackendError
from backends.gates import GATES
from backends.observables import Observable
from backends.simulator import SimulatorBackend
from backends.simulator.kernels import compiled_enabled, use_kernels, warm
from backends.simulator.plan import compile_plan
from backends.simulator.statevector import evolve
from backends.simulator.tape import compile_tape
from backends.templates import hardware_efficient_circuit, z_observables

from .looptools import longest_stall
from .randomcircuits import random_circuit

#: Gates a tape can run: every one-qubit gate and the constant two-qubit permutations.
TAPE_GATES = [name for name, spec in GATES.items() if spec.num_qubits == 1 or spec.num_params == 0]
TOLERANCE = 1e-12


def _observables(n: int) -> list[Any]:
    return [
        "I" * (n - 1) + "Z",
        "X" * n,
        "Y" + "I" * (n - 2) + "Z",
        Observable([("Z" * n, 0.5), ("X" + "Y" * (n - 1), -0.25)]),
    ]


def _case(seed: int, n: int, gates: list[str] | None) -> tuple[Any, np.ndarray]:
    rng = np.random.default_rng(seed)
    circuit = random_circuit(rng, n, 8 * n + 24, num_params=3 * n, gate_names=gates)
    values = rng.uniform(-np.pi, np.pi, (7, circuit.num_parameters))
    values[3] = values[2]  # a repeated binding
    values[5] = values[4]
    values[5, -1] += 0.5  # and one that differs late
    return circuit, values


async def _exact_answers(circuit: Any, values: np.ndarray) -> dict[str, np.ndarray]:
    n = circuit.num_qubits
    obs = _observables(n)
    cot = np.random.default_rng(1).normal(size=(values.shape[0], len(obs)))
    async with SimulatorBackend() as sim:
        run = await sim.run(circuit, values, observables=obs)
        _, vjp = await sim.compute_vjp(circuit, values, obs, cot)
        _, jac = await sim.adjoint_jacobian(circuit, values, obs)
    states, owner = evolve(compile_plan(circuit), values)
    assert run.expectations is not None
    return {"run": run.expectations, "vjp": vjp, "jacobian": jac, "states": states[owner]}


@pytest.mark.parametrize("gates", [None, TAPE_GATES], ids=["all-gates", "tape-gates"])
@pytest.mark.parametrize("n", [2, 6, 7, 12])
async def test_compiled_kernels_equal_the_numpy_reference(n: int, gates: list[str] | None) -> None:
    circuit, values = _case(100 + n, n, gates)
    with use_kernels("numpy"):
        reference = await _exact_answers(circuit, values)
    assert compiled_enabled(np.complex128)
    compiled = await _exact_answers(circuit, values)
    for key, expected in reference.items():
        np.testing.assert_allclose(compiled[key], expected, atol=TOLERANCE, rtol=0, err_msg=key)
    # The tape takes exactly the circuits without multi-qubit parameterized gates.
    tape = compile_tape(compile_plan(circuit, compiled=True))
    two_qubit_angles = any(len(i.qubits) > 1 and i.is_parameterized for i in circuit.instructions)
    assert (tape is None) == two_qubit_angles


async def test_the_tape_shares_prefixes_of_a_parameter_shift_batch() -> None:
    """Shifted copies of a binding restart from the state before their shift: the same
    expectations as evolving every row from the start (the NumPy reference)."""
    from quantum_ml.gradients import QuantumGradientComputer

    circuit = hardware_efficient_circuit(8, 3)
    rng = np.random.default_rng(7)
    values = rng.uniform(0, 2 * np.pi, (4, circuit.num_parameters))
    obs = z_observables(8)
    cot = np.full((4, 8), 0.25)
    shift = QuantumGradientComputer("parameter-shift")
    async with SimulatorBackend() as sim:
        with use_kernels("numpy"):
            e_ref, g_ref = await shift.value_and_vjp(sim, circuit, values, obs, cot)
        e, g = await shift.value_and_vjp(sim, circuit, values, obs, cot)
        _, exact = await sim.compute_vjp(circuit, values, obs, cot)
    np.testing.assert_allclose(e, e_ref, atol=TOLERANCE, rtol=0)
    np.testing.assert_allclose(g, g_ref, atol=TOLERANCE, rtol=0)
    np.testing.assert_allclose(g, exact, atol=1e-10, rtol=0)


async def test_a_long_tape_run_leaves_the_event_loop_free() -> None:
    # Compiled first, in a thread: numba's compiler holds the GIL, which a cold first call
    # would show as a stall of the loop (a one-off per machine, not the run's).
    await asyncio.to_thread(warm)
    circuit = hardware_efficient_circuit(12, 3)
    values = np.random.default_rng(0).uniform(0, 1, (3000, circuit.num_parameters))
    async with SimulatorBackend() as sim:
        assert sim._tape(circuit, sim._plan(circuit)[0]) is not None
        _, stall, duration = await longest_stall(
            sim.run(circuit, values, observables=z_observables(12))
        )
    assert stall < max(0.25, duration / 2), (stall, duration)


def test_the_switch_refuses_unknown_kernels_and_reads_the_environment() -> None:
    with pytest.raises(BackendError, match="'numba' or 'numpy'"), use_kernels("fortran"):  # type: ignore[arg-type]
        pass
    assert compiled_enabled(np.complex128) and not compiled_enabled(np.complex64)
    with use_kernels("numpy"):
        assert not compiled_enabled(np.complex128)
    assert compiled_enabled(np.complex128)
    code = (
        "import numpy as np; from backends.simulator.kernels import compiled_enabled; "
        "print(compiled_enabled(np.complex128))"
    )
    env = {**os.environ, "QDB_KERNELS": "numpy"}
    out = subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True
    )
    assert out.stdout.strip() == "False"
