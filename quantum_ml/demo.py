"""The ``qdb tour`` job: a tour of the built-in simulator on a variational circuit."""

from __future__ import annotations

import math
import time

import numpy as np

from backends import Circuit, SimulatorBackend
from backends.templates import hardware_efficient_circuit, z_observables

__all__ = ["run_demo"]


async def run_demo(num_qubits: int, layers: int, seed: int) -> int:
    """Batched expectations, one parameter-shift gradient checked by finite differences, shots."""
    rng = np.random.default_rng(seed)
    circuit = hardware_efficient_circuit(num_qubits, layers)
    n_inputs = num_qubits
    n_weights = circuit.num_parameters - n_inputs
    weights = rng.uniform(0, 2 * math.pi, n_weights)
    data = rng.uniform(0, 1, (256, n_inputs))
    labels = z_observables(num_qubits)
    print(f"circuit: {circuit!r}")

    async with SimulatorBackend(seed=seed) as sim:
        start = time.perf_counter()
        values = np.hstack([data, np.tile(weights, (len(data), 1))])
        result = await sim.run(circuit, values, observables=labels)
        assert result.expectations is not None
        print(
            f"expectations <Z_i> for {len(data)} inputs in {time.perf_counter() - start:.3f} s; "
            f"first input: {np.array2string(result.expectations[0], precision=4)}"
        )

        # One parameter-shift gradient of <Z_0> for the first input: 2P + 1 bindings, one call.
        base = values[0]
        shifted = [base]
        for k in range(n_weights):
            for sign in (+1, -1):
                row = base.copy()
                row[n_inputs + k] += sign * math.pi / 2
                shifted.append(row)
        start = time.perf_counter()
        grad_run = await sim.run(circuit, np.array(shifted), observables=labels[0])
        assert grad_run.expectations is not None
        e = grad_run.expectations[1:, 0]
        gradient = (e[0::2] - e[1::2]) / 2
        elapsed = time.perf_counter() - start
        h = 1e-6
        fd_rows = []
        for k in range(n_weights):
            for sign in (+1, -1):
                row = base.copy()
                row[n_inputs + k] += sign * h
                fd_rows.append(row)
        fd_run = await sim.run(circuit, np.array(fd_rows), observables=labels[0])
        assert fd_run.expectations is not None
        fd = (fd_run.expectations[0::2, 0] - fd_run.expectations[1::2, 0]) / (2 * h)
        error = np.max(np.abs(gradient - fd))
        print(
            f"parameter-shift gradient over {n_weights} weights ({len(shifted)} bindings) in "
            f"{elapsed:.3f} s; max |shift - finite difference| = {error:.2e}"
        )

        ghz = Circuit(num_qubits).h(0)
        for q in range(num_qubits - 1):
            ghz.cx(q, q + 1)
        ghz.measure_all()
        counts = await sim.run(ghz, shots=1000, seed=seed)
        assert counts.counts is not None
        print(f"GHZ state, 1000 shots: {counts.counts[0]}")
    return 0
