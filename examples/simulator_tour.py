"""Run a parameterized circuit on the built-in simulator: expectations and seeded counts.

python examples/simulator_tour.py
"""

from __future__ import annotations

import asyncio
import math

import numpy as np

from backends import Circuit, Observable, Parameter, SimulatorBackend


async def main() -> None:
    theta, x = Parameter("theta"), Parameter("x", kind="input")
    circuit = Circuit(2).ry(math.pi * x, 0).rx(2 * theta + 0.1, 1).cx(0, 1).crz(theta, 1, 0)
    values = np.array([[0.2, 0.5], [0.7, 1.5]])  # [B, P] in circuit.parameters order
    energy = Observable([("ZZ", 0.5), ("XI", -1.0)])
    async with SimulatorBackend(seed=1) as sim:
        exact = await sim.run(circuit, values, observables=["ZI", "XY", energy])
        sampled = await sim.run(circuit.copy().measure_all(), values, shots=1000, seed=1)
    print("parameters:", [p.name for p in circuit.parameters])
    print("expectations [B, 3]:\n", np.round(exact.expectations, 6))
    print("counts:", sampled.counts)


if __name__ == "__main__":
    asyncio.run(main())
