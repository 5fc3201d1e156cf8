"""IonQ's simulator through both official clients, against the loopback emulator of its API."""

from __future__ import annotations

import importlib.util
from collections.abc import Callable

import pytest

from backends import Backend
from backends.ionq import IonQBackend

from ..ionq_emulator import IonQEmulator

API_KEY = "contract-test-key"


def start_emulator(request: pytest.FixtureRequest) -> IonQEmulator:
    """A running emulator, stopped when the requesting fixture is torn down."""
    emulator = IonQEmulator(API_KEY).start()
    request.addfinalizer(emulator.stop)
    return emulator


def _factory(driver: str) -> Callable[[pytest.FixtureRequest], Backend]:
    def make(request: pytest.FixtureRequest) -> Backend:
        emulator = start_emulator(request)
        return IonQBackend(
            "simulator",
            driver,  # type: ignore[arg-type]
            api_key=API_KEY,
            api_url=emulator.url,
            poll_interval_s=0.005,
            max_poll_interval_s=0.05,
            retry_backoff_s=0.01,
            job_timeout_s=30.0,
            request_timeout_s=30.0,
            seed=11,
        )

    return make


# The exact tolerance covers cirq-ionq's angle round trip (exponent x pi) and JSON floats.
FACTORIES: dict[str, tuple[Callable[[pytest.FixtureRequest], Backend], float | None]] = {
    f"ionq-{driver}": (_factory(driver), 1e-10)
    for driver, module in (("qiskit", "qiskit_ionq"), ("cirq", "cirq_ionq"))
    if importlib.util.find_spec(module) is not None
}
