"""A loopback emulator of IonQ's v0.4 REST API that runs submitted circuits on the simulator.

It speaks the JSON the official clients (qiskit-ionq, cirq-ionq) send and parse:

* ``POST /jobs`` - ``type`` ``ionq.circuit.v1`` (``input.circuit``) or
  ``ionq.multi-circuit.v1`` (``input.circuits[].circuit``, one child job per circuit),
  ``input.gateset`` ``"qis"``, ``input.qubits``, ``shots`` (an int from qiskit-ionq, a
  string from cirq-ionq), ``backend``, ``noise.model`` / ``noise.seed``,
  ``settings.error_mitigation.debiasing``, ``name``, ``metadata`` (string values);
* ``GET /jobs/{id}`` - the job object (``status``, ``failure.{code,message}``,
  ``stats.{qubits,circuits,gate_counts}``, ``results.probabilities.url``,
  ``child_job_ids``, ...);
* ``GET /jobs/{id}/results/probabilities`` (and ``.../aggregated``, which cirq-ionq asks
  for in batch mode) - ``{"<decimal outcome>": probability}``, qubit 0 the least
  significant bit; a multi-circuit parent answers ``{child_id: {...}}``;
* ``PUT /jobs/{id}/status/cancel``, ``DELETE /jobs/{id}``, ``GET /jobs/{id}/cost``;
* ``GET /jobs/estimate`` (qiskit-ionq's ``estimate_job``), ``GET /backends``,
  ``GET /backends/{name}`` (what qiskit-ionq reads ``qubits`` from, unauthenticated, as
  in IonQ's spec), ``GET /backends/{name}/characterizations``, ``GET /whoami``.

Circuits are translated gate by gate into a :class:`backends.Circuit` (written
independently of ``backends.ionq``, so it is a reference for it) and run with the
simulator's pure functions. The ideal simulator answers exact probabilities; a noise
model, or a QPU target, answers the frequencies of ``shots`` seeded samples (a noise
model also mixes in depolarizing noise scaled by the gate counts). QPU jobs are billed
at IonQ's published formula.

Faults: ``fail_next`` (HTTP status with an optional ``Retry-After``, answered before the
request is acted on or, with ``after_serving=True``, after it was: a job created and then
a 500), ``disconnect_next``, ``refuse_connections`` / ``accept_connections`` (the port
held but not listening: connections are refused and nothing is sent), ``fail_jobs``
(jobs that end ``failed`` with a message), ``slow_jobs`` (time spent ``submitted`` then
``started``), ``hang_jobs`` (jobs that never finish, until ``release_jobs`` lets them).
Every request is logged (method, API path, query, the status the client saw, parsed
body) so tests can assert what was sent.
"""

from __future__ import annotations

import datetime
import json
import math
import re
import socket
import threading
import time
import uuid
from dataclasses import dataclass, field
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType
from typing import Any, Self
from urllib.parse import parse_qsl, urlsplit

import numpy as np

from backends import Circuit
from backends.simulator.plan import compile_plan
from backends.simulator.statevector import evolve, probabilities

__all__ = ["API_VERSION", "BACKENDS", "EmulatedJob", "IonQEmulator", "LoggedRequest", "bill"]

API_VERSION = "v0.4"

#: The backends the emulator knows, with their qubit counts.
BACKENDS: dict[str, int] = {
    "simulator": 29,
    "qpu.aria-1": 25,
    "qpu.aria-2": 25,
    "qpu.forte-1": 36,
    "qpu.forte-enterprise-1": 36,
}

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
#: Depolarizing error per (one-qubit, two-qubit) gate of each noise model.
_NOISE_RATES = {"aria": (0.0005, 0.006), "forte": (0.0002, 0.004), "harmony": (0.001, 0.02)}

# IonQ's published QPU pricing (USD), written out here independently of backends.cost.
PRICE_1Q = 0.000220
PRICE_2Q = 0.000975
MINIMUM = 12.4166
MINIMUM_WITH_MITIGATION = 97.50
MITIGATION_DEFAULT_MIN_SHOTS = 500

MAX_SHOTS = 1_000_000
_JOB_NAME = re.compile(r"[A-Za-z0-9 _-]*")


def bill(backend: str, one_qubit: int, two_qubit: int, shots: int, mitigation: bool) -> float:
    """What a job costs at IonQ's published rates (simulators are free)."""
    if not backend.startswith("qpu."):
        return 0.0
    minimum = MINIMUM_WITH_MITIGATION if mitigation else MINIMUM
    return minimum + PRICE_1Q * one_qubit * shots + PRICE_2Q * two_qubit * shots


@dataclass(frozen=True)
class LoggedRequest:
    """One request as the emulator saw it (the API key is never kept)."""

    method: str
    #: The path below the API root, e.g. ``/jobs/{id}/status/cancel``.
    path: str
    query: dict[str, str]
    status: int
    #: The parsed JSON body, or None.
    body: Any


@dataclass
class EmulatedJob:
    """A job and its lifecycle; ``status`` is derived from the clock when read."""

    id: str
    request: dict[str, Any]
    backend: str
    shots: int
    noise_model: str | None
    noise_seed: int | None
    circuits: list[Circuit]
    ionq_gates: list[list[dict[str, Any]]]
    qubits: int
    created: float
    queue_s: float
    run_s: float
    mitigation: bool
    cost: float
    failure: tuple[str, str] | None = None
    canceled: bool = False
    parent: str | None = None
    children: list[str] = field(default_factory=list)
    results: list[dict[str, float]] | None = None

    def status(self, now: float) -> str:
        if self.canceled:
            return "canceled"
        elapsed = now - self.created
        if elapsed < self.queue_s:
            return "submitted"
        if elapsed < self.queue_s + self.run_s:
            return "started"
        return "failed" if self.failure is not None else "completed"

    def gate_counts(self) -> tuple[int, int]:
        return _count(self.ionq_gates)


@dataclass
class _Fault:
    status: int | None  # None: drop the connection without answering (or delay, below)
    remaining: int
    method: str | None
    path: re.Pattern[str] | None
    retry_after: float | None
    #: Seconds to wait before serving the request normally (status is then ignored).
    delay: float | None = None
    #: Serve the request (create the job, ...), then answer ``status`` instead.
    after_serving: bool = False


class _ApiError(Exception):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message

    def body(self) -> dict[str, Any]:
        # IonQ's error shape: {"statusCode", "error", "message"}.
        try:
            phrase = HTTPStatus(self.status).phrase
        except ValueError:
            phrase = "Error"
        return {"statusCode": self.status, "error": phrase, "message": self.message}


class IonQEmulator:
    """IonQ's v0.4 API on 127.0.0.1 (an ephemeral port), served from a background thread."""

    def __init__(self, api_key: str = "emulator-key", *, seed: int = 0) -> None:
        self.api_key = api_key
        self.queue_s = 0.0
        self.run_s = 0.0
        self._seed = seed
        self._counter = 0
        self._lock = threading.Lock()
        self._jobs: dict[str, EmulatedJob] = {}
        self._log: list[LoggedRequest] = []
        self._faults: list[_Fault] = []
        self._job_failures: list[tuple[str, str]] = []
        self._hangs = 0
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None
        self._port = 0
        self._holder: socket.socket | None = None

    # -- lifecycle -----------------------------------------------------------------------

    def start(self, port: int = 0) -> Self:
        """Serve on ``port`` (default: an ephemeral one)."""
        handler = type("Handler", (_Handler,), {"emulator": self})
        server = _Server(("127.0.0.1", port), handler)
        self._port = server.server_address[1]
        # Join request threads on close, so that a stopped emulator leaves none behind.
        server.daemon_threads = False
        server.block_on_close = True
        self._server = server
        self._thread = threading.Thread(
            target=server.serve_forever,
            kwargs={"poll_interval": 0.02},
            name="ionq-emulator",
            daemon=True,
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._holder is not None:
            self._holder.close()
            self._holder = None
        if self._server is None or self._thread is None:
            return
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=10)
        self._server = None

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    @property
    def origin(self) -> str:
        assert self._server is not None, "start the emulator first"
        host, port = self._server.server_address[:2]
        return f"http://{host!s}:{port}"

    @property
    def url(self) -> str:
        """The API root the clients are given, ``http://127.0.0.1:PORT/v0.4``."""
        return f"{self.origin}/{API_VERSION}"

    # -- faults --------------------------------------------------------------------------

    def fail_next(
        self,
        status: int = 503,
        count: int = 1,
        *,
        method: str | None = None,
        path: str | None = None,
        retry_after: float | None = None,
        after_serving: bool = False,
    ) -> None:
        """Answer the next ``count`` matching requests with ``status``.

        ``path`` is a regular expression matched against the whole API path
        (``/jobs``, ``/jobs/[^/]+``, ...); ``method`` narrows it further. The request is
        not acted on (a gateway's 429 or 503), unless ``after_serving``: then it is served
        first (a ``POST /jobs`` creates its job) and the answer replaced by ``status``.
        """
        pattern = re.compile(path) if path is not None else None
        with self._lock:
            self._faults.append(
                _Fault(status, count, method, pattern, retry_after, after_serving=after_serving)
            )

    def disconnect_next(
        self, count: int = 1, *, method: str | None = None, path: str | None = None
    ) -> None:
        """Close the connection of the next ``count`` matching requests without answering."""
        pattern = re.compile(path) if path is not None else None
        with self._lock:
            self._faults.append(_Fault(None, count, method, pattern, None))

    def refuse_connections(self) -> None:
        """Stop serving but hold the port, unlistened: connections are refused, so nothing
        is sent, until :meth:`accept_connections` serves on the same port again."""
        port = self._port
        self.stop()
        holder = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        holder.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        holder.bind(("127.0.0.1", port))  # bound, never listening: SYNs are answered RST
        self._holder = holder

    def accept_connections(self) -> None:
        """Serve again on the port :meth:`refuse_connections` held (no-op if serving)."""
        if self._holder is None:
            return
        self._holder.close()
        self._holder = None
        self.start(self._port)

    def faults_waiting(self, method: str | None = None) -> int:
        """How many injected faults (delays included) no request has taken yet."""
        with self._lock:
            return sum(1 for f in self._faults if method is None or f.method == method)

    def delay_next(
        self, seconds: float, count: int = 1, *, method: str | None = None, path: str | None = None
    ) -> None:
        """Hold the next ``count`` matching requests ``seconds`` before serving them."""
        pattern = re.compile(path) if path is not None else None
        with self._lock:
            self._faults.append(_Fault(None, count, method, pattern, None, delay=seconds))

    def fail_jobs(self, message: str, *, code: str = "SimulationError", count: int = 1) -> None:
        """The next ``count`` jobs created end ``failed`` with ``failure.message``."""
        with self._lock:
            self._job_failures.extend([(code, message)] * count)

    def slow_jobs(self, queue_s: float, run_s: float = 0.0) -> None:
        """Jobs created from now on stay ``submitted`` ``queue_s``, then ``started`` ``run_s``."""
        self.queue_s = queue_s
        self.run_s = run_s

    def hang_jobs(self, count: int = 1) -> None:
        """The next ``count`` jobs created never leave ``submitted`` (until released)."""
        with self._lock:
            self._hangs += count

    def release_jobs(self, *job_ids: str) -> None:
        """Jobs still ``submitted`` (hung or slowed; all of them, or those named) start
        now: they are ``started`` for their ``run_s``, then end."""
        now = time.monotonic()
        with self._lock:
            for job in self._jobs.values():
                named = not job_ids or job.id in job_ids or job.parent in job_ids
                if named and now - job.created < job.queue_s:
                    job.queue_s = now - job.created

    def clear_faults(self) -> None:
        with self._lock:
            self._faults.clear()
            self._job_failures.clear()
            self._hangs = 0
        self.queue_s = self.run_s = 0.0

    # -- what happened -------------------------------------------------------------------

    @property
    def requests(self) -> list[LoggedRequest]:
        with self._lock:
            return list(self._log)

    def calls(self, method: str | None = None, path: str | None = None) -> list[LoggedRequest]:
        """Logged requests with this method and a path matching the regular expression."""
        pattern = re.compile(path) if path is not None else None
        return [
            r
            for r in self.requests
            if (method is None or r.method == method)
            and (pattern is None or pattern.fullmatch(r.path))
        ]

    def cancelled_ids(self) -> list[str]:
        """Job ids a ``PUT /jobs/{id}/status/cancel`` was sent for, in order."""
        return [r.path.split("/")[2] for r in self.calls("PUT", r"/jobs/[^/]+/status/cancel")]

    def clear_log(self) -> None:
        with self._lock:
            self._log.clear()

    @property
    def jobs(self) -> dict[str, EmulatedJob]:
        with self._lock:
            return dict(self._jobs)

    def _take_fault(self, method: str, path: str) -> _Fault | None:
        with self._lock:
            for fault in self._faults:
                if (
                    fault.remaining > 0
                    and (fault.method is None or fault.method == method)
                    and (fault.path is None or fault.path.fullmatch(path))
                ):
                    fault.remaining -= 1
                    self._faults = [f for f in self._faults if f.remaining > 0]
                    return fault
        return None

    def _record(self, entry: LoggedRequest) -> None:
        with self._lock:
            self._log.append(entry)

    # -- jobs ----------------------------------------------------------------------------

    def create_job(self, body: dict[str, Any]) -> dict[str, Any]:
        kind = body.get("type", "ionq.circuit.v1")
        if kind not in ("ionq.circuit.v1", "ionq.multi-circuit.v1"):
            raise _ApiError(400, f"unsupported job type {kind!r}")
        backend = body.get("backend") or body.get("target")
        if backend not in BACKENDS:
            raise _ApiError(400, f"unknown backend {backend!r}; available: {sorted(BACKENDS)}")
        shots = _shots(body.get("shots", 100))
        name = body.get("name")
        if name is not None and (not isinstance(name, str) or not _JOB_NAME.fullmatch(name)):
            raise _ApiError(
                400,
                "job names may only hold letters, numbers, spaces, hyphens and underscores",
            )
        metadata = body.get("metadata") or {}
        if not isinstance(metadata, dict) or not all(isinstance(v, str) for v in metadata.values()):
            raise _ApiError(400, "metadata values must be strings")
        noise = body.get("noise") or {}
        model = noise.get("model") if isinstance(noise, dict) else None
        if model is not None and model not in NOISE_MODELS:
            raise _ApiError(400, f"unknown noise model {model!r}")
        if model not in (None, "ideal") and backend != "simulator":
            raise _ApiError(400, "noise models apply to the simulator only")
        debiasing = ((body.get("settings") or {}).get("error_mitigation") or {}).get("debiasing")
        if debiasing and shots < MITIGATION_DEFAULT_MIN_SHOTS:
            raise _ApiError(400, "To turn on debiasing, you must request at least 500 shots")
        mitigation = (
            bool(debiasing)
            if debiasing is not None
            else backend.startswith("qpu.") and shots >= MITIGATION_DEFAULT_MIN_SHOTS
        )
        inputs = body.get("input")
        if not isinstance(inputs, dict):
            raise _ApiError(400, "the job needs an input object")
        if inputs.get("gateset", "qis") != "qis":
            raise _ApiError(400, "the emulator runs QIS circuits only (gateset 'qis')")
        if kind == "ionq.circuit.v1":
            specs = [(inputs.get("circuit"), inputs.get("qubits"))]
        else:
            circuits = inputs.get("circuits")
            if not isinstance(circuits, list) or not circuits:
                raise _ApiError(400, "a multi-circuit job needs input.circuits")
            specs = [(c.get("circuit"), c.get("qubits", inputs.get("qubits"))) for c in circuits]
        translated = [_translate(gates, qubits, BACKENDS[backend]) for gates, qubits in specs]
        noise_seed = noise.get("seed") if isinstance(noise, dict) else None
        with self._lock:
            failure = self._job_failures.pop(0) if self._job_failures else None
            hang = self._hangs > 0
            self._hangs -= int(hang)

        def job(circuits: list[tuple[Circuit, list[dict[str, Any]]]]) -> EmulatedJob:
            one, two = _count(gates for _, gates in circuits)
            return EmulatedJob(
                id=str(uuid.uuid4()),
                request=body,
                backend=backend,
                shots=shots,
                noise_model=model,
                noise_seed=noise_seed if isinstance(noise_seed, int) else None,
                circuits=[c for c, _ in circuits],
                ionq_gates=[gates for _, gates in circuits],
                qubits=max(c.num_qubits for c, _ in circuits),
                created=time.monotonic(),
                queue_s=math.inf if hang else self.queue_s,
                run_s=self.run_s,
                mitigation=mitigation,
                cost=bill(backend, one, two, shots, mitigation),
                failure=failure,
            )

        parent = job(translated)
        with self._lock:
            self._jobs[parent.id] = parent
            if kind == "ionq.multi-circuit.v1":
                for item in translated:
                    child = job([item])
                    child.parent = parent.id
                    child.queue_s, child.run_s, child.created = (
                        parent.queue_s,
                        parent.run_s,
                        parent.created,
                    )
                    child.failure = failure
                    parent.children.append(child.id)
                    self._jobs[child.id] = child
        return {"id": parent.id, "status": "submitted", "session_id": None}

    def _job(self, job_id: str) -> EmulatedJob:
        with self._lock:
            job = self._jobs.get(job_id)
        if job is None:
            raise _ApiError(404, f"job {job_id} not found")
        return job

    def describe_job(self, job_id: str) -> dict[str, Any]:
        job = self._job(job_id)
        status = job.status(time.monotonic())
        one, two = job.gate_counts()
        path = f"/{API_VERSION}/jobs/{job.id}/results"
        out: dict[str, Any] = {
            "id": job.id,
            "status": status,
            "type": job.request.get("type", "ionq.circuit.v1"),
            "backend": job.backend,
            "dry_run": bool(job.request.get("dry_run", False)),
            "submitter_id": "emulator",
            "project_id": None,
            "parent_job_id": job.parent,
            "child_job_ids": list(job.children) or None,
            "session_id": None,
            "metadata": job.request.get("metadata"),
            "name": job.request.get("name"),
            "submitted_at": _iso(job.created),
            "started_at": _iso(job.created + job.queue_s)
            if status in ("started", "completed", "failed")
            else None,
            "completed_at": _iso(job.created + job.queue_s + job.run_s)
            if status in ("completed", "failed")
            else None,
            "predicted_wait_time_ms": None,
            "predicted_execution_duration_ms": None,
            "execution_duration_ms": int(job.run_s * 1000) if status == "completed" else None,
            "shots": job.shots,
            "failure": {"code": job.failure[0], "message": job.failure[1]}
            if status == "failed" and job.failure is not None
            else None,
            "cost_model": "quantum_compute_time",
            "output": {},
            "settings": job.request.get("settings") or {},
            "stats": {
                "qubits": job.qubits,
                "circuits": len(job.circuits),
                "gate_counts": {"1q": one, "2q": two},
            },
            "results": {"probabilities": {"url": f"{path}/probabilities"}}
            if status == "completed"
            else None,
        }
        if job.backend == "simulator":
            out["noise"] = {"model": job.noise_model or "ideal", "seed": job.noise_seed}
        return out

    def job_probabilities(self, job_id: str) -> dict[str, Any]:
        job = self._job(job_id)
        if job.status(time.monotonic()) != "completed":
            raise _ApiError(404, f"job {job_id} has no results (it is not completed)")
        if job.children:
            return {child: self.job_probabilities(child) for child in job.children}
        with self._lock:
            if job.results is None:
                job.results = [self._run(job, i) for i in range(len(job.circuits))]
            return dict(job.results[0])

    def _run(self, job: EmulatedJob, index: int) -> dict[str, float]:
        circuit = job.circuits[index]
        plan = compile_plan(circuit)
        states, owner = evolve(plan, np.zeros((1, 0)))
        p = probabilities(states)[owner[0]]
        p = np.clip(p, 0.0, None)
        p /= p.sum()
        model = job.noise_model or "ideal"
        if job.backend == "simulator" and model == "ideal":
            return {str(int(k)): float(p[k]) for k in np.flatnonzero(p)}
        if model != "ideal":
            family = next((f for f in _NOISE_RATES if model.startswith(f)), "aria")
            e1, e2 = _NOISE_RATES[family]
            one, two = _count([job.ionq_gates[index]])
            fidelity = (1 - e1) ** one * (1 - e2) ** two
            p = fidelity * p + (1 - fidelity) / p.size
        # A job with a noise seed samples reproducibly, as IonQ's simulator does.
        self._counter += 1
        seed = [self._seed, index] + (
            [1, job.noise_seed] if job.noise_seed is not None else [0, self._counter]
        )
        counts = np.random.default_rng(seed).multinomial(job.shots, p)
        return {str(int(k)): float(counts[k] / job.shots) for k in np.flatnonzero(counts)}

    def cancel_job(self, job_id: str) -> dict[str, Any]:
        job = self._job(job_id)
        with self._lock:
            # IonQ's v0.4 cancels anything but a failed job, a completed one included.
            if job.failure is None or job.status(time.monotonic()) != "failed":
                job.canceled = True
                for child in job.children:
                    self._jobs[child].canceled = True
        return {"id": job.id, "status": "canceled"}

    def delete_job(self, job_id: str) -> dict[str, Any]:
        self._job(job_id)
        with self._lock:
            del self._jobs[job_id]
        return {"id": job_id, "status": "deleted"}

    def job_cost(self, job_id: str) -> dict[str, Any]:
        job = self._job(job_id)
        value = {"value": job.cost, "unit": "usd"}
        done = job.status(time.monotonic()) == "completed"
        return {"dry_run": False, "estimated_cost": value, **({"cost": value} if done else {})}

    def estimate(self, query: dict[str, str]) -> dict[str, Any]:
        backend = query.get("backend", "")
        if backend not in BACKENDS:
            raise _ApiError(400, f"unknown backend {backend!r}")
        try:
            one = int(query.get("1q_gates", 0))
            two = int(query.get("2q_gates", 0))
            qubits = int(query.get("qubits", 25))
            shots = int(query.get("shots", 1000))
        except ValueError as exc:
            raise _ApiError(400, f"bad estimate parameter: {exc}") from None
        mitigation = query.get("error_mitigation", "false").lower() == "true"
        qpu = backend.startswith("qpu.")
        minimum = (MINIMUM_WITH_MITIGATION if mitigation else MINIMUM) if qpu else 0.0
        return {
            "input_values": {
                "backend": backend,
                "type": query.get("type", "ionq.circuit.v1"),
                "qubits": qubits,
                "shots": shots,
                "1q_gates": one,
                "2q_gates": two,
                "error_mitigation": mitigation,
            },
            "estimated_at": _iso(time.monotonic()),
            "cost_unit": "usd",
            "rate_information": {
                "job_cost_minimum": minimum,
                "cost_1q_gate": PRICE_1Q if qpu else 0.0,
                "cost_2q_gate": PRICE_2Q if qpu else 0.0,
                "organization": "emulator",
            },
            "estimated_cost": bill(backend, one, two, shots, mitigation),
            "estimated_execution_time": 0.0,
            "current_predicted_queue_time": 0.0,
        }

    @staticmethod
    def describe_backend(name: str) -> dict[str, Any]:
        if name not in BACKENDS:
            raise _ApiError(404, f"backend {name} not found")
        return {
            "backend": name,
            "status": "available",
            "qubits": BACKENDS[name],
            "average_queue_time": 0,
            "last_updated": _iso(time.monotonic()),
            "degraded": False,
        }


# -- translation --------------------------------------------------------------------------

_FIXED = {
    "h": "h",
    "x": "x",
    "not": "x",
    "y": "y",
    "z": "z",
    "s": "s",
    "si": "sdg",
    "t": "t",
    "ti": "tdg",
    "v": "sx",
}
_PAULI_ROTATION = {"x": "rx", "y": "ry", "z": "rz", "rx": "rx", "ry": "ry", "rz": "rz"}
_PAIR_ROTATION = {"xx": "rxx", "yy": "ryy", "zz": "rzz"}
_CONTROLLED_PHASE = {"s": math.pi / 2, "si": -math.pi / 2, "t": math.pi / 4, "ti": -math.pi / 4}


def _targets(gate: dict[str, Any]) -> list[int]:
    if "targets" in gate:
        return [_index(q) for q in gate["targets"]]
    return [_index(gate["target"])] if "target" in gate else []


def _controls(gate: dict[str, Any]) -> list[int]:
    if "controls" in gate:
        return [_index(q) for q in gate["controls"]]
    return [_index(gate["control"])] if "control" in gate else []


def _index(value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int | float) or int(value) != value:
        raise _ApiError(400, f"qubit indices must be integers, got {value!r}")
    return int(value)


def _count(gate_lists: Any) -> tuple[int, int]:
    one = two = 0
    for gates in gate_lists:
        for gate in gates:
            if len(_targets(gate)) + len(_controls(gate)) == 1:
                one += 1
            else:
                two += 1
    return one, two


def _shots(value: Any) -> int:
    try:
        shots = int(value)  # cirq-ionq sends shots as a string
    except (TypeError, ValueError):
        raise _ApiError(400, f"shots must be an integer, got {value!r}") from None
    if not 1 <= shots <= MAX_SHOTS:
        raise _ApiError(400, f"shots must be between 1 and {MAX_SHOTS}, got {shots}")
    return shots


def _translate(gates: Any, qubits: Any, max_qubits: int) -> tuple[Circuit, list[dict[str, Any]]]:
    """An IonQ QIS gate list as a constant :class:`backends.Circuit`."""
    if not isinstance(gates, list):
        raise _ApiError(400, "input.circuit must be a list of gates")
    width = 0
    for gate in gates:
        if not isinstance(gate, dict) or not isinstance(gate.get("gate"), str):
            raise _ApiError(400, f"bad gate {gate!r}")
        width = max(width, *(q + 1 for q in _targets(gate) + _controls(gate)), 1)
    n = int(qubits) if qubits is not None else max(width, 1)
    if n < width or n < 1:
        raise _ApiError(400, f"the circuit uses {width} qubits but declares {n}")
    if n > max_qubits:
        raise _ApiError(400, f"NotEnoughQubits: {n} qubits requested, {max_qubits} available")
    circuit = Circuit(n, name="ionq")
    for gate in gates:
        _append(circuit, gate)
    return circuit, gates


def _append(c: Circuit, gate: dict[str, Any]) -> None:
    name = gate["gate"].lower()
    targets, controls = _targets(gate), _controls(gate)
    rotation = gate.get("rotation")
    if rotation is not None and (
        isinstance(rotation, bool) or not isinstance(rotation, int | float)
    ):
        raise _ApiError(400, f"rotation must be a number (radians), got {rotation!r}")
    if name == "cnot":
        name = "x"
    if len(controls) > 1 or (controls and len(targets) != 1):
        raise _ApiError(400, f"UnsupportedGate: the emulator supports one control, got {gate}")
    if name in _PAIR_ROTATION or name == "swap":
        if len(targets) != 2 or controls:
            raise _ApiError(400, f"{name} needs exactly two targets and no controls: {gate}")
        if name == "swap":
            c.swap(*targets)
        else:
            c.append(_PAIR_ROTATION[name], targets, [_need(rotation, gate)])
        return
    if len(targets) != 1:
        raise _ApiError(400, f"{name} acts on one target: {gate}")
    (t,) = targets
    rotated = rotation is not None and name in _PAULI_ROTATION
    if name in ("rx", "ry", "rz") and rotation is None:
        raise _ApiError(400, f"{name} needs a rotation: {gate}")
    if not controls:
        if rotated:
            c.append(_PAULI_ROTATION[name], [t], [float(rotation)])  # type: ignore[arg-type]
        elif name == "vi":
            c.rx(-math.pi / 2, t)  # SX^dagger up to a global phase
        elif name in _FIXED:
            c.append(_FIXED[name], [t])
        else:
            raise _ApiError(400, f"UnsupportedGate: {name!r}")
        return
    (k,) = controls
    if rotated:
        c.append("c" + _PAULI_ROTATION[name], [k, t], [float(rotation)])  # type: ignore[arg-type]
    elif name in ("x", "not", "y", "z"):
        c.append({"x": "cx", "not": "cx", "y": "cy", "z": "cz"}[name], [k, t])
    elif name in _CONTROLLED_PHASE:
        _controlled_phase(c, _CONTROLLED_PHASE[name], k, t)
    elif name in ("v", "vi"):
        # SX = H S H exactly, so a controlled SX is H . CS . H on the target.
        c.h(t)
        _controlled_phase(c, math.pi / 2 if name == "v" else -math.pi / 2, k, t)
        c.h(t)
    elif name == "h":
        c.s(t).h(t).t(t).cx(k, t).tdg(t).h(t).sdg(t)
    else:
        raise _ApiError(400, f"UnsupportedGate: controlled {name!r}")


def _controlled_phase(c: Circuit, lam: float, control: int, target: int) -> None:
    c.p(lam / 2, control).cx(control, target).p(-lam / 2, target).cx(control, target)
    c.p(lam / 2, target)


def _need(rotation: Any, gate: dict[str, Any]) -> float:
    if rotation is None:
        raise _ApiError(400, f"{gate['gate']} needs a rotation: {gate}")
    return float(rotation)


def _iso(monotonic: float) -> str:
    wall = time.time() - (time.monotonic() - monotonic) if math.isfinite(monotonic) else 0.0
    return datetime.datetime.fromtimestamp(wall, datetime.UTC).isoformat().replace("+00:00", "Z")


# -- HTTP ---------------------------------------------------------------------------------


class _Server(ThreadingHTTPServer):
    # Batches of jobs poll concurrently; the default backlog of 5 could refuse some.
    request_queue_size = 128


class _Handler(BaseHTTPRequestHandler):
    emulator: IonQEmulator
    # One request per connection (HTTP/1.0): no keep-alive thread outlives a response.
    protocol_version = "HTTP/1.0"
    timeout = 10

    def log_message(self, format: str, *args: Any) -> None:
        """Quiet: the emulator keeps its own log."""

    def do_GET(self) -> None:
        self._serve("GET")

    def do_POST(self) -> None:
        self._serve("POST")

    def do_PUT(self) -> None:
        self._serve("PUT")

    def do_DELETE(self) -> None:
        self._serve("DELETE")

    def _serve(self, method: str) -> None:
        url = urlsplit(self.path)
        prefix = f"/{API_VERSION}"
        path = url.path[len(prefix) :] if url.path.startswith(prefix + "/") else url.path
        versioned = url.path.startswith(prefix + "/")
        query = dict(parse_qsl(url.query, keep_blank_values=True))
        length = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(length) if length else b""
        try:
            body: Any = json.loads(raw) if raw else None
        except json.JSONDecodeError:
            body = None
        emulator = self.emulator

        fault = emulator._take_fault(method, path)
        if fault is not None and fault.delay is not None:
            time.sleep(fault.delay)
            fault = None
        if fault is not None and fault.status is None:
            emulator._record(LoggedRequest(method, path, query, 0, body))
            self.close_connection = True
            return  # nothing is written: the client sees the connection drop
        try:
            if fault is not None and not fault.after_serving:
                assert fault.status is not None
                raise _ApiError(fault.status, f"injected fault {fault.status}")
            if not versioned:
                raise _ApiError(404, f"No route for {method} {url.path}")
            # IonQ's spec leaves the backends endpoints unauthenticated (qiskit-ionq reads
            # qubit counts from them without a key); everything else needs one.
            if not path.startswith("/backends") and not self._authorized():
                raise _ApiError(401, "Invalid API key")
            if method in ("POST", "PUT") and raw and body is None:
                raise _ApiError(400, "The request body is not valid JSON")
            status, payload = 200, self._route(method, path, query, body)
            if method == "POST" and path == "/jobs":
                status = 201
            if fault is not None and fault.after_serving:
                assert fault.status is not None
                raise _ApiError(fault.status, f"injected fault {fault.status} after serving")
        except _ApiError as exc:
            status, payload = exc.status, exc.body()
        emulator._record(LoggedRequest(method, path, query, status, body))
        data = json.dumps(payload).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        if fault is not None and fault.retry_after is not None:
            self.send_header("Retry-After", f"{fault.retry_after:g}")
        self.end_headers()
        self.wfile.write(data)

    def _authorized(self) -> bool:
        header = self.headers.get("Authorization") or ""
        scheme, _, key = header.partition(" ")
        return scheme.lower() in ("apikey", "bearer") and key == self.emulator.api_key

    def _route(self, method: str, path: str, query: dict[str, str], body: Any) -> Any:
        emulator = self.emulator
        parts = path.strip("/").split("/")
        if method == "POST" and parts == ["jobs"]:
            if not isinstance(body, dict):
                raise _ApiError(400, "The request body must be a JSON object")
            return emulator.create_job(body)
        if method == "GET" and parts == ["jobs", "estimate"]:
            return emulator.estimate(query)
        if method == "GET" and parts == ["whoami"]:
            return {"key_id": "emulator", "key_name": "emulator key"}
        if method == "GET" and parts == ["backends"]:
            return [emulator.describe_backend(name) for name in BACKENDS]
        if method == "GET" and len(parts) == 2 and parts[0] == "backends":
            return emulator.describe_backend(parts[1])
        if method == "GET" and len(parts) == 3 and parts[::2] == ["backends", "characterizations"]:
            emulator.describe_backend(parts[1])
            return {"characterizations": []}
        if len(parts) >= 2 and parts[0] == "jobs":
            job_id, rest = parts[1], parts[2:]
            if method == "GET" and not rest:
                return emulator.describe_job(job_id)
            if method == "DELETE" and not rest:
                return emulator.delete_job(job_id)
            if method == "GET" and rest in (
                ["results", "probabilities"],
                ["results", "probabilities", "aggregated"],
            ):
                return emulator.job_probabilities(job_id)
            if method == "GET" and rest == ["cost"]:
                return emulator.job_cost(job_id)
            if method == "PUT" and rest == ["status", "cancel"]:
                return emulator.cancel_job(job_id)
        raise _ApiError(404, f"No route for {method} {path}")
