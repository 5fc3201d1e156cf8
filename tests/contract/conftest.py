"""The backends every contract test runs against.

Each module ``tests/contract/factories_*.py`` contributes ``FACTORIES``: a name mapped to a
``(make, exact_tolerance)`` pair, where ``make(request)`` builds a fresh backend (and may
ask ``request.getfixturevalue`` for what it needs, e.g. a running emulator). An exact
tolerance of ``None`` marks a backend without an exact mode.
"""

from __future__ import annotations

import importlib
import pkgutil
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import pytest

from backends import Backend, SimulatorBackend

Factory = Callable[[pytest.FixtureRequest], Backend]

FACTORIES: dict[str, tuple[Factory, float | None]] = {
    "simulator": (lambda request: SimulatorBackend(seed=11), 1e-12),
    "simulator-single": (lambda request: SimulatorBackend(precision="single", seed=11), 1e-5),
}

for module in pkgutil.iter_modules([str(Path(__file__).parent)]):
    if module.name.startswith("factories_"):
        FACTORIES.update(importlib.import_module(f"{__package__}.{module.name}").FACTORIES)


@pytest.fixture(params=sorted(FACTORIES))
async def backend(request: pytest.FixtureRequest) -> AsyncIterator[Backend]:
    make, _ = FACTORIES[request.param]
    async with make(request) as b:
        yield b


@pytest.fixture
def exact_tol(request: pytest.FixtureRequest, backend: Backend) -> float:
    tol = FACTORIES[request.node.callspec.params["backend"]][1]
    if tol is None:
        pytest.skip(f"{backend.name} has no exact mode")
    return tol
