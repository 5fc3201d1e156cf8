"""The backends every contract test runs against.

Each entry builds a fresh backend; later backends (Qiskit Aer, IonQ through its two
drivers against the loopback emulator) add themselves to ``BACKEND_FACTORIES``.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable

import pytest

from backends import Backend, SimulatorBackend

BACKEND_FACTORIES: dict[str, Callable[[], Backend]] = {
    "simulator": lambda: SimulatorBackend(seed=11),
    "simulator-single": lambda: SimulatorBackend(precision="single", seed=11),
}

#: Absolute tolerance of exact expectations per backend (single precision is looser).
EXACT_TOLERANCE: dict[str, float] = {"simulator": 1e-12, "simulator-single": 1e-5}


@pytest.fixture(params=sorted(BACKEND_FACTORIES))
async def backend(request: pytest.FixtureRequest) -> AsyncIterator[Backend]:
    async with BACKEND_FACTORIES[request.param]() as b:
        yield b


@pytest.fixture
def exact_tol(request: pytest.FixtureRequest, backend: Backend) -> float:
    return EXACT_TOLERANCE[request.node.callspec.params["backend"]]
