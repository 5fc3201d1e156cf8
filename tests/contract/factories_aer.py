"""Qiskit Aer in the backend contract suite.

Only the noiseless simulator is registered: the suite checks closed forms of ideal
circuits (e.g. exact counts), which a noise model rightly breaks; the noisy variant is
tested against closed-form noise in ``tests/test_aer.py``.
"""

from __future__ import annotations

from collections.abc import Callable

import pytest

from backends import Backend


def _aer(request: pytest.FixtureRequest) -> Backend:
    pytest.importorskip("qiskit_aer")
    from backends.aer import QiskitBackend

    return QiskitBackend(seed=11)


FACTORIES: dict[str, tuple[Callable[[pytest.FixtureRequest], Backend], float | None]] = {
    "aer": (_aer, 1e-10),
}
