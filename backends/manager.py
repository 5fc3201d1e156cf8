"""The BackendManager: the backends a QuantumDatabase can run on, and choosing among them."""

from __future__ import annotations

from collections.abc import Mapping

from .base import Backend
from .errors import BackendError, CapacityError
from .simulator import SimulatorBackend

__all__ = ["BackendManager", "UnknownBackendError"]


class UnknownBackendError(BackendError, LookupError):
    """No backend registered under that name."""


class BackendManager:
    """Named backends, each opened once and closed with the manager.

    ``select`` returns the first registered backend (in registration order) that can run
    ``n_qubits`` in the requested mode; capability filtering by cost and latency under a
    budget builds on this.
    """

    def __init__(self, backends: Mapping[str, Backend] | None = None) -> None:
        self._backends: dict[str, Backend] = {}
        for name, backend in (backends or {"simulator": SimulatorBackend()}).items():
            self.register(name, backend)

    def register(self, name: str, backend: Backend) -> None:
        if not isinstance(backend, Backend):
            raise BackendError(
                f"{name!r}: expected a backends.Backend, got {type(backend).__name__}"
            )
        if name in self._backends:
            raise BackendError(f"a backend named {name!r} is already registered")
        self._backends[name] = backend

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(self._backends)

    def get(self, name: str) -> Backend:
        try:
            return self._backends[name]
        except KeyError:
            raise UnknownBackendError(
                f"no backend named {name!r}; registered: {', '.join(self._backends) or 'none'}"
            ) from None

    def select(self, n_qubits: int, *, shots: int | None = None) -> Backend:
        """The first backend wide enough for ``n_qubits`` that offers the mode asked for."""
        refused: list[str] = []
        for name, backend in self._backends.items():
            caps = backend.capabilities
            if caps.max_qubits < n_qubits:
                refused.append(f"{name}: {caps.max_qubits} qubits")
            elif shots is None and not caps.supports_exact:
                refused.append(f"{name}: no exact mode")
            elif shots is not None and not caps.supports_shots:
                refused.append(f"{name}: no shots")
            else:
                return backend
        raise CapacityError(f"no backend can run {n_qubits} qubits ({'; '.join(refused)})")

    async def aclose(self) -> None:
        for backend in self._backends.values():
            await backend.aclose()

    def __repr__(self) -> str:
        return f"BackendManager({', '.join(self._backends)})"
