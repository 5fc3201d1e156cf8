"""What each IonQ target offers: width, shot limit, price model, typical queue and fidelity."""

from __future__ import annotations

import re
from dataclasses import dataclass
from urllib.parse import urlsplit

from ..cost import FREE, IONQ_ARIA, IONQ_FORTE, PriceModel
from ..errors import BackendError

__all__ = [
    "BACKEND_NAMES",
    "DEFAULT_API_URL",
    "NOISE_MODELS",
    "TARGETS",
    "IonQTarget",
    "normalize_api_url",
]

DEFAULT_API_URL = "https://api.ionq.co/v0.4"

#: The noise models IonQ's simulator accepts (``noise.model`` of a job).
NOISE_MODELS = frozenset(
    {
        "ideal",
        "harmony",
        "harmony-1",
        "harmony-2",
        "aria-1",
        "aria-2",
        "forte-1",
        "forte-enterprise-1",
    }
)


@dataclass(frozen=True, slots=True)
class IonQTarget:
    """One IonQ backend as the API names it (``simulator``, ``qpu.aria-1``, ...)."""

    name: str
    max_qubits: int
    max_shots: int
    price: PriceModel
    #: Rough typical wait before a job runs, in seconds (for ranking, not a promise).
    typical_queue_s: float
    #: Rough median two-qubit gate fidelity (1.0 for the ideal simulator).
    fidelity: float

    @property
    def is_simulator(self) -> bool:
        return self.name == "simulator"


# Widths and shot limits as IonQ publishes them (the API caps shots at 1,000,000; QPU
# jobs at 10,000, as qiskit-ionq does). Queue times and fidelities are rough public
# figures, good enough to rank backends; a deployment can override them per instance.
TARGETS: dict[str, IonQTarget] = {
    t.name: t
    for t in (
        IonQTarget("simulator", 29, 1_000_000, FREE, typical_queue_s=2.0, fidelity=1.0),
        IonQTarget("qpu.aria-1", 25, 10_000, IONQ_ARIA, typical_queue_s=4 * 3600.0, fidelity=0.986),
        IonQTarget(
            "qpu.forte-1", 36, 10_000, IONQ_FORTE, typical_queue_s=8 * 3600.0, fidelity=0.993
        ),
    )
}

#: The name of each target as a backend: the ``name`` of its :class:`IonQBackend`, the name
#: a ``QuantumDatabase`` connection registers it under, the one ``qdb backends`` lists,
#: and so the one ``BackendManager.run(backend=...)`` takes.
BACKEND_NAMES: dict[str, str] = {
    "simulator": "ionq-simulator",
    "qpu.aria-1": "ionq-aria",
    "qpu.forte-1": "ionq-forte",
}

_VERSION = re.compile(r"v\d+\.\d+")


def normalize_api_url(url: str) -> str:
    """``url`` without a trailing slash, ending in an API version (``/v0.4`` if it has none).

    Both clients build paths under a versioned root: qiskit-ionq strips the version it
    finds in result URLs against it, and cirq-ionq always appends one.
    """
    if not isinstance(url, str):
        raise BackendError(f"api_url must be a string, got {type(url).__name__}")
    parts = urlsplit(url.strip())
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise BackendError(f"api_url must be an http(s) URL such as {DEFAULT_API_URL!r}")
    path = parts.path.rstrip("/")
    if not _VERSION.fullmatch(path.rsplit("/", 1)[-1]):
        path += "/v0.4"
    return f"{parts.scheme}://{parts.netloc}{path}"
