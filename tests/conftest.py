"""Test-wide fixtures: offline by construction, deterministic by default."""

from __future__ import annotations

import ipaddress
import socket
import zlib
from typing import Any

import numpy as np
import pytest

_real_connect = socket.socket.connect
_real_connect_ex = socket.socket.connect_ex


def _is_local(address: Any) -> bool:
    if isinstance(address, str | bytes):  # AF_UNIX paths
        return True
    host = address[0]
    if host in ("localhost", ""):
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _guarded(real: Any) -> Any:
    def connect(self: socket.socket, address: Any) -> Any:
        if not _is_local(address):
            raise OSError(f"tests are offline: refused a connection to {address!r}")
        return real(self, address)

    return connect


@pytest.fixture(autouse=True)
def _offline(monkeypatch: pytest.MonkeyPatch) -> None:
    """No test reaches beyond loopback; emulators of cloud services bind 127.0.0.1."""
    monkeypatch.setattr(socket.socket, "connect", _guarded(_real_connect))
    monkeypatch.setattr(socket.socket, "connect_ex", _guarded(_real_connect_ex))


@pytest.fixture
def rng(request: pytest.FixtureRequest) -> np.random.Generator:
    """A generator seeded from the test's name: stable across runs and test orders."""
    return np.random.default_rng(zlib.crc32(request.node.nodeid.encode()))
