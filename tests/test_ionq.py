"""The IonQ backend through both official clients, against the loopback emulator of IonQ's API.

Exact results are checked against the built-in simulator, shot results against exact
probabilities within statistical bounds, prices against IonQ's formula worked out by
hand, and every failure path (429/503 bursts, failed and slow jobs, cancellation, bad
keys, unreachable hosts) against what the emulator's request log shows was sent.
"""

from __future__ import annotations

import asyncio
import logging
import math
import re
import socket
import sys
import threading
import warnings
from collections.abc import Callable, Iterator

import numpy as np
import pytest
from pydantic import SecretStr

from backends import (
    BackendUnavailableError,
    Circuit,
    CredentialsError,
    JobFailedError,
    JobTimeoutError,
    Observable,
    Parameter,
    ShotsError,
    SimulatorBackend,
    TooManyQubitsError,
    TransientBackendError,
)
from backends.errors import SubmissionUnknownError
from backends.ionq import IonQBackend
from backends.ionq.driver import JobSpec, JobState
from backends.ionq.jobs import JobPolicy, JobRunner
from backends.simulator.plan import compile_plan
from backends.simulator.statevector import evolve, probabilities

from .ionq_emulator import IonQEmulator
from .randomcircuits import random_circuit

KEY = "sk-ionq-test-4d9b1f0e7a2c"
DRIVERS = ["qiskit", "cirq"]


@pytest.fixture
def emulator() -> Iterator[IonQEmulator]:
    with IonQEmulator(KEY) as emu:
        yield emu


@pytest.fixture(params=DRIVERS)
def driver(request: pytest.FixtureRequest) -> str:
    return str(request.param)


def make(
    emu: IonQEmulator, driver: str = "qiskit", target: str = "simulator", **options: object
) -> IonQBackend:
    settings: dict[str, object] = {
        "api_key": KEY,
        "api_url": emu.url,
        "poll_interval_s": 0.005,
        "max_poll_interval_s": 0.05,
        "retry_backoff_s": 0.005,
        "job_timeout_s": 20.0,
        "request_timeout_s": 20.0,
        "seed": 7,
    }
    settings.update(options)
    return IonQBackend(target, driver, **settings)  # type: ignore[arg-type]


def bell() -> Circuit:
    return Circuit(2).h(0).cx(0, 1)


def exact_label_probabilities(circuit: Circuit, values: np.ndarray) -> dict[str, float]:
    """P(classical bit string), computed straight from the state vector."""
    states, owner = evolve(compile_plan(circuit), np.asarray(values, dtype=float)[None, :])
    p = probabilities(states)[owner[0]]
    measured = [(m.qubit, m.clbit) for m in circuit.measurements]
    width = 1 + max(c for _, c in measured)
    out: dict[str, float] = {}
    for index in np.flatnonzero(p > 1e-15):
        bits = ["0"] * width
        for qubit, clbit in measured:
            bits[width - 1 - clbit] = "1" if (int(index) >> qubit) & 1 else "0"
        label = "".join(bits)
        out[label] = out.get(label, 0.0) + float(p[index])
    return out


async def wait_until(predicate: Callable[[], bool]) -> None:
    """Poll a condition on the emulator's side (its own thread) for up to 20 s."""
    for _ in range(4000):
        if predicate():
            return
        await asyncio.sleep(0.005)
    raise AssertionError("timed out waiting for the emulator")


# ----------------------------------------------------------------------------- results


async def test_exact_expectations_match_the_builtin_simulator(
    emulator: IonQEmulator, driver: str, rng: np.random.Generator
) -> None:
    async with make(emulator, driver) as ionq, SimulatorBackend() as sim:
        for n in (2, 3):
            circuit = random_circuit(rng, n, 30, num_params=3)  # every gate of the gate set
            values = rng.uniform(-2 * math.pi, 2 * math.pi, size=(2, 3))
            labels = ["".join(rng.choice(list("IXYZ"), size=n)) for _ in range(4)]
            observables = [*labels, Observable([(labels[0], 0.5), ("Y" * n, -1.5)])]
            got = await ionq.run(circuit, values, observables)
            want = await sim.run(circuit, values, observables)
            assert got.expectations is not None and want.expectations is not None
            np.testing.assert_allclose(got.expectations, want.expectations, atol=1e-9)
            assert got.metadata["cost_usd"] == 0.0
            assert len(got.metadata["provider_job_ids"]) == got.metadata["jobs"]


async def test_counts_agree_with_exact_probabilities_within_shot_noise(
    emulator: IonQEmulator, driver: str, rng: np.random.Generator
) -> None:
    circuit = random_circuit(rng, 3, 30, num_params=2, measure=True)
    values = rng.uniform(-2 * math.pi, 2 * math.pi, size=2)
    shots = 4000
    async with make(emulator, driver) as ionq:
        first = await ionq.run(circuit, values, shots=shots, seed=3)
        again = await ionq.run(circuit, values, shots=shots, seed=3)
        other = await ionq.run(circuit, values, shots=shots, seed=4)
    assert first.counts is not None
    assert first.counts == again.counts  # same seed, same counts
    assert first.counts != other.counts
    (counts,) = first.counts
    exact = exact_label_probabilities(circuit, values)
    assert sum(counts.values()) == shots
    assert set(counts) <= set(exact)
    for label, p in exact.items():
        sigma = math.sqrt(p * (1 - p) / shots)
        assert abs(counts.get(label, 0) / shots - p) <= 5 * sigma + 1e-9, label


async def test_shot_expectations_are_within_statistical_bounds(
    emulator: IonQEmulator, driver: str
) -> None:
    theta = Parameter("t")
    circuit = Circuit(2).ry(theta, 0).cx(0, 1)
    thetas = np.array([[0.4], [2.2]])
    shots = 3000
    async with make(emulator, driver) as ionq:
        result = await ionq.run(circuit, thetas, ["ZZ", "ZI", "XX"], shots=shots, seed=5)
    assert result.expectations is not None
    # ZZ and ZI share one Z-basis job per binding; XX needs its own: 2 jobs per binding.
    assert result.metadata["jobs"] == 4
    c = np.cos(thetas[:, 0])
    exact = np.stack([np.ones(2), c, np.sin(thetas[:, 0])], axis=1)
    sigma = np.sqrt(np.clip(1 - exact**2, 0, None) / shots)
    assert np.all(np.abs(result.expectations - exact) <= 5 * sigma + 1e-12)


async def test_bit_order_agrees_with_each_official_clients_own_conversion(
    emulator: IonQEmulator, monkeypatch: pytest.MonkeyPatch
) -> None:
    # qubit 0 -> clbit 2, qubit 1 -> clbit 0, qubit 2 -> clbit 1; qubits 0 and 1 are |1>.
    circuit = Circuit(3).x(0).x(1).measure(0, 2).measure(1, 0).measure(2, 1)
    for driver in DRIVERS:
        async with make(emulator, driver) as ionq:
            result = await ionq.run(circuit, shots=50)
        assert result.counts == [{"101": 50}], driver

    # IonQ keyed the outcome as 3 (qubits 0 and 1 set: qubit q is bit q).
    job = emulator.calls("GET", r"/jobs/[^/]+/results/probabilities")[-1].path.split("/")[2]
    assert emulator.job_probabilities(job) == {"3": 1.0}

    # qiskit-ionq maps the same key through the circuit's measurements to the same string.
    monkeypatch.setenv("IONQ_API_URL", emulator.url)  # qiskit-ionq sizes backends from it
    from qiskit_ionq import IonQProvider

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # its transpiler-level advice
        backend = IonQProvider(token=KEY, url=emulator.url).get_backend("simulator")
        qiskit_job = backend.run(circuit.to_qiskit(), shots=50)
        assert dict(qiskit_job.get_counts()) == {"101": 50}

    # cirq-ionq reverses IonQ's little-endian key into its big-endian per-qubit columns.
    import cirq_ionq

    service = cirq_ionq.Service(remote_host=emulator.url, api_key=KEY, default_target="simulator")
    cirq_result = service.run(circuit.to_cirq(), repetitions=5, seed=1)
    # Column j of "m" is the j-th smallest clbit: clbits (0, 1, 2) = (1, 0, 1).
    assert cirq_result.measurements["m"].tolist() == [[1, 0, 1]] * 5


# ----------------------------------------------------------------------------- cost


def test_qpu_cost_follows_ionqs_formula() -> None:
    # 10 one-qubit gates and 4 two-qubit gates.
    circuit = Circuit(4)
    for q in range(4):
        circuit.h(q)
    for q in range(3):
        circuit.rx(0.1, q).ry(0.2, q)
    circuit.cx(0, 1).cx(1, 2).cx(2, 3).cx(3, 0)
    assert circuit.count_gates() == {1: 10, 2: 4}

    aria = IonQBackend("qpu.aria-1")  # pricing needs no API key
    # 100 shots, below IonQ's 500-shot default for error mitigation:
    # 12.4166 + 0.000220 * 10 * 100 + 0.000975 * 4 * 100 = 12.4166 + 0.22 + 0.39 = 13.0266
    assert aria.estimate_cost(circuit, 100) == pytest.approx(13.0266, abs=1e-9)
    assert aria.estimate_cost(circuit, 100) == pytest.approx(
        12.4166 + 0.000220 * 10 * 100 + 0.000975 * 4 * 100, abs=1e-12
    )
    # 1000 shots: mitigation on by default, so the $97.50 minimum applies:
    # 97.50 + 0.000220 * 10 * 1000 + 0.000975 * 4 * 1000 = 97.50 + 2.2 + 3.9 = 103.6
    assert aria.estimate_cost(circuit, 1000) == pytest.approx(103.6, abs=1e-9)
    # ... unless it is turned off: 12.4166 + 2.2 + 3.9 = 18.5166
    unmitigated = IonQBackend("qpu.aria-1", error_mitigation=False)
    assert unmitigated.estimate_cost(circuit, 1000) == pytest.approx(18.5166, abs=1e-9)
    # ... or forced on below 500 shots: 97.50 + 0.22 + 0.39 = 98.11
    mitigated = IonQBackend("qpu.aria-1", error_mitigation=True)
    assert mitigated.estimate_cost(circuit, 100) == pytest.approx(98.11, abs=1e-9)
    assert IonQBackend("qpu.forte-1").estimate_cost(circuit, 1000) == pytest.approx(103.6)
    assert IonQBackend("simulator").estimate_cost(circuit, 1000) == 0.0


def test_cost_counts_the_gates_each_client_sends() -> None:
    # cirq-ionq cannot serialize CZ, so it goes out as H, CX, H: two more 1q gates.
    circuit = Circuit(2).cz(0, 1)
    # qiskit: 12.4166 + 0.000975 * 1 * 100 = 12.5141
    assert IonQBackend("qpu.aria-1").estimate_cost(circuit, 100) == pytest.approx(12.5141)
    # cirq: 12.4166 + 0.000220 * 2 * 100 + 0.000975 * 1 * 100 = 12.5581
    cirq = IonQBackend("qpu.aria-1", "cirq")
    assert cirq.estimate_cost(circuit, 100) == pytest.approx(12.5581)


def test_run_cost_counts_every_job_a_run_submits() -> None:
    aria = IonQBackend("qpu.aria-1", error_mitigation=False)
    circuit = bell()  # 1 one-qubit, 1 two-qubit gate
    one_job = 12.4166 + 0.000220 * 1 * 200 + 0.000975 * 1 * 200  # 12.6576
    assert aria.estimate_cost(circuit, 200) == pytest.approx(one_job)
    # ZZ and ZI share a Z-basis job; XX adds one with two H rotations; 3 bindings.
    x_job = 12.4166 + 0.000220 * 3 * 200 + 0.000975 * 1 * 200
    assert aria.estimate_run_cost(circuit, 200, ["ZZ", "ZI", "XX"], batch_size=3) == (
        pytest.approx(3 * (one_job + x_job))
    )


async def test_qpu_run_is_billed_at_the_estimate(emulator: IonQEmulator, driver: str) -> None:
    circuit = bell().measure_all()
    async with make(emulator, driver, "qpu.aria-1") as aria:
        result = await aria.run(circuit, shots=200, seed=1)
        provider_estimate = await aria.fetch_cost_estimate(circuit, 200)
    assert result.counts is not None
    (counts,) = result.counts
    assert sum(counts.values()) == 200 and set(counts) <= {"00", "11"}
    (job_id,) = result.metadata["provider_job_ids"]
    expected = 12.4166 + 0.000220 * 1 * 200 + 0.000975 * 1 * 200
    assert result.metadata["cost_usd"] == pytest.approx(expected)
    assert emulator.jobs[job_id].cost == pytest.approx(expected)  # the emulator's own bill
    assert provider_estimate == pytest.approx(expected)
    # qiskit-ionq asks IonQ (GET /jobs/estimate); cirq-ionq has no such call.
    asked = emulator.calls("GET", "/jobs/estimate")
    assert len(asked) == (1 if driver == "qiskit" else 0)
    if asked:
        assert asked[0].query["1q_gates"] == "1" and asked[0].query["2q_gates"] == "1"


# ----------------------------------------------------------------------------- faults


async def test_rate_limited_submissions_are_retried(emulator: IonQEmulator, driver: str) -> None:
    emulator.fail_next(429, 2, method="POST", path="/jobs", retry_after=0.01)
    async with make(emulator, driver) as ionq:
        result = await ionq.run(bell(), shots=20, seed=1)
    assert result.counts is not None
    # The clients' own retries are off; the backend retried, honouring Retry-After.
    assert [r.status for r in emulator.calls("POST", "/jobs")] == [429, 429, 201]


async def test_unavailable_polls_are_retried(emulator: IonQEmulator, driver: str) -> None:
    emulator.fail_next(503, 3, method="GET", path="/jobs/[^/]+")
    async with make(emulator, driver) as ionq:
        result = await ionq.run(bell(), observables=["ZZ"])
    assert result.expectations is not None
    assert result.expectations[0, 0] == pytest.approx(1.0)
    polls = [r.status for r in emulator.calls("GET", "/jobs/[^/]+")]
    assert polls[:4] == [503, 503, 503, 200]


async def test_a_burst_longer_than_the_retries_is_transient(
    emulator: IonQEmulator, driver: str
) -> None:
    emulator.fail_next(503, 10, method="POST", path="/jobs")
    async with make(emulator, driver, max_retries=2) as ionq:
        with pytest.raises(TransientBackendError) as caught:
            await ionq.run(bell(), shots=10)
    assert not isinstance(caught.value, BackendUnavailableError)
    assert "503" in str(caught.value)
    assert [r.status for r in emulator.calls("POST", "/jobs")] == [503, 503, 503]
    assert emulator.jobs == {}


async def test_a_server_error_on_submission_is_not_retried(
    emulator: IonQEmulator, driver: str
) -> None:
    # A 500 may come after the job was created: retrying could run (and bill) it twice.
    emulator.fail_next(500, 1, method="POST", path="/jobs", after_serving=True)
    async with make(emulator, driver) as ionq:
        with pytest.raises(SubmissionUnknownError, match="500") as caught:
            await ionq.run(bell(), shots=10)
    assert not isinstance(caught.value, TransientBackendError)
    assert "not resubmitted" in str(caught.value)
    assert len(emulator.calls("POST", "/jobs")) == 1
    assert len(emulator.jobs) == 1


async def test_a_dropped_submission_is_not_retried(emulator: IonQEmulator, driver: str) -> None:
    # The connection was made and dropped: the POST may have reached IonQ.
    emulator.disconnect_next(method="POST", path="/jobs")
    async with make(emulator, driver) as ionq:
        with pytest.raises(SubmissionUnknownError, match="may have created the job"):
            await ionq.run(bell(), shots=10)
    assert len(emulator.calls("POST", "/jobs")) == 1


async def test_unavailable_submissions_are_retried(emulator: IonQEmulator, driver: str) -> None:
    emulator.fail_next(503, 2, method="POST", path="/jobs")
    async with make(emulator, driver) as ionq:
        result = await ionq.run(bell(), shots=20, seed=1)
    assert result.counts is not None
    assert [r.status for r in emulator.calls("POST", "/jobs")] == [503, 503, 201]
    assert list(emulator.jobs) == result.metadata["provider_job_ids"]


async def test_every_retry_is_logged_with_backend_operation_attempt_and_delay(
    emulator: IonQEmulator, driver: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="backends.retry")
    emulator.fail_next(429, 2, method="POST", path="/jobs", retry_after=0.04)
    emulator.fail_next(503, 1, method="GET", path="/jobs/[^/]+")
    async with make(emulator, driver, max_retries=3) as ionq:
        await ionq.run(bell(), shots=20, seed=1)
    pattern = re.compile(
        r"ionq-simulator (?P<op>\w+): attempt (?P<n>\d) of 4 failed "
        r"\(RemoteCallError: IonQ answered (?P<status>\d+).*\); retrying in (?P<delay>[\d.]+) s"
    )
    seen = []
    for record in caplog.records:
        if record.name == "backends.retry":
            match = pattern.fullmatch(record.getMessage())
            assert match is not None, record.getMessage()
            seen.append((match["op"], int(match["n"]), match["status"], float(match["delay"])))
    # retry_backoff_s=0.005 doubles per attempt; qiskit-ionq passes IonQ's Retry-After
    # (0.04 s) on, cirq-ionq hides it (its client reports only the reason phrase).
    submit_delays = [0.04, 0.04] if driver == "qiskit" else [0.005, 0.01]
    assert seen == [
        ("submit", 1, "429", submit_delays[0]),
        ("submit", 2, "429", submit_delays[1]),
        ("status", 1, "503", 0.005),
    ]


async def test_an_unreachable_api_is_unavailable(driver: str) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # closed again below: nothing listens there
    backend = IonQBackend(
        "simulator",
        driver,  # type: ignore[arg-type]
        api_key=KEY,
        api_url=f"http://127.0.0.1:{port}/v0.4",
        max_retries=1,
        retry_backoff_s=0.001,
        request_timeout_s=10.0,
    )
    async with backend:
        with pytest.raises(BackendUnavailableError, match="could not be reached"):
            await backend.run(bell(), shots=10)


async def test_a_failed_job_raises_with_the_providers_message(
    emulator: IonQEmulator, driver: str
) -> None:
    emulator.fail_jobs("ion chain lost during run", code="QuantumComputerError")
    async with make(emulator, driver) as ionq:
        with pytest.raises(JobFailedError, match="ion chain lost during run") as caught:
            await ionq.run(bell(), shots=10)
    assert not isinstance(caught.value, JobTimeoutError)
    assert "QuantumComputerError" in str(caught.value)


async def test_a_slow_job_times_out_and_is_cancelled(emulator: IonQEmulator, driver: str) -> None:
    emulator.hang_jobs()
    async with make(emulator, driver, job_timeout_s=0.2) as ionq:
        with pytest.raises(JobTimeoutError, match=r"within 0\.2 s"):
            await ionq.run(bell(), shots=10)
        (job_id,) = ionq.provider_job_ids
    assert emulator.cancelled_ids() == [job_id]
    assert emulator.describe_job(job_id)["status"] == "canceled"


async def test_cancelling_the_task_cancels_the_remote_jobs(
    emulator: IonQEmulator, driver: str
) -> None:
    emulator.slow_jobs(queue_s=60.0)
    theta = Parameter("t")
    async with make(emulator, driver) as ionq:
        task = asyncio.create_task(
            ionq.run(Circuit(1).ry(theta, 0), [[0.1], [0.2], [0.3]], shots=10)
        )
        # Every job has been polled, so the backend knows all three ids.
        await wait_until(lambda: len({r.path for r in emulator.calls("GET", "/jobs/[^/]+")}) == 3)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        # The cancels went out before the cancelled task finished.
        created = set(ionq.provider_job_ids)
    sent = [(r.method, r.path, r.status) for r in emulator.requests]
    assert len(created) == 3 and set(emulator.jobs) == created, sent
    assert sorted(emulator.cancelled_ids()) == sorted(created), sent
    assert all(emulator.describe_job(i)["status"] == "canceled" for i in created)


async def test_a_job_created_while_its_task_was_cancelled_is_cancelled(
    emulator: IonQEmulator, driver: str
) -> None:
    emulator.slow_jobs(queue_s=60.0)
    emulator.delay_next(0.3, method="POST", path="/jobs")  # the POST is in flight...
    async with make(emulator, driver) as ionq:
        task = asyncio.create_task(ionq.run(bell(), shots=10))
        await asyncio.sleep(0.1)
        task.cancel()  # ... when the task is cancelled
        with pytest.raises(asyncio.CancelledError):
            await task
        await wait_until(lambda: len(emulator.cancelled_ids()) == 1)
        (job_id,) = ionq.provider_job_ids
    assert emulator.cancelled_ids() == [job_id]


async def test_jobs_in_flight_stay_under_the_concurrency_limit(emulator: IonQEmulator) -> None:
    emulator.slow_jobs(queue_s=0.02)
    theta = Parameter("t")
    async with make(emulator, max_concurrent_jobs=2) as ionq:
        result = await ionq.run(Circuit(1).ry(theta, 0), np.linspace(0, 1, 6)[:, None], "Z")
    assert result.expectations is not None
    np.testing.assert_allclose(result.expectations[:, 0], np.cos(np.linspace(0, 1, 6)))
    # A job is in flight from its POST to the read that found it completed, its last
    # GET /jobs/{id}: its results are read after it has handed its slot on.
    log = emulator.requests
    last_read = {r.path: i for i, r in enumerate(log) if re.fullmatch(r"/jobs/[^/]+", r.path)}
    in_flight = peak = 0
    for i, r in enumerate(log):
        if r.method == "POST" and r.path == "/jobs":
            in_flight += 1
        elif last_read.get(r.path) == i:
            in_flight -= 1
        peak = max(peak, in_flight)
    assert peak == 2


class _OrderDriver:
    """A driver without a network that logs what the runner asks of it, in order.

    Every job is completed at its first status read. The results of the first ``limit``
    jobs are held back until job ``j{limit}`` has been submitted: a runner that kept a
    job's slot while reading its results could never submit it (each wait gives up
    after 20 s, and the test fails).
    """

    name = "order"

    def __init__(self, limit: int) -> None:
        self.log: list[tuple[str, str]] = []
        self.held: list[bool] = []
        self._limit = limit
        self._lock = threading.Lock()
        self._next_sent = threading.Event()

    def _note(self, what: str, job: str) -> None:
        with self._lock:
            self.log.append((what, job))

    def prepare(self, circuit: Circuit, spec: JobSpec) -> str:
        self._note("built", spec.name)
        return spec.name

    def submit(self, request: str) -> str:
        self._note("sent", request)
        if request == f"j{self._limit}":
            self._next_sent.set()
        return request

    def status(self, job_id: str) -> JobState:
        self._note("ended", job_id)
        return JobState(job_id, "completed")

    def probabilities(self, state: JobState) -> object:
        if int(state.id[1:]) < self._limit:
            self.held.append(self._next_sent.wait(timeout=20))
        self._note("read", state.id)
        return {"0": 1.0}

    def cancel(self, job_id: str) -> None:
        self._note("cancelled", job_id)

    def cost(self, job_id: str) -> object:
        return {}

    def estimate(self, *args: object) -> float | None:
        return None


@pytest.mark.parametrize("limit", [1, 3])
async def test_a_completed_job_hands_its_slot_on_before_its_results_are_read(limit: int) -> None:
    driver = _OrderDriver(limit)
    runner = JobRunner("order", JobPolicy(max_concurrent_jobs=limit))
    names = [f"j{i}" for i in range(2 * limit + 1)]
    jobs = [(Circuit(1), JobSpec(target="simulator", shots=1, name=name)) for name in names]
    ids: list[str] = []
    try:
        out = await runner.run(driver, jobs, ids)
    finally:
        runner.close()
    # The first jobs' results were read only once the next job had been sent.
    assert driver.held == [True] * limit
    assert len(out) == len(names) and sorted(ids) == sorted(names)
    log = driver.log
    first_read = min(log.index(("read", f"j{i}")) for i in range(limit))
    assert log.index(("sent", f"j{limit}")) < first_read
    # Requests are built in order, each before its job is sent.
    assert [job for what, job in log if what == "built"] == names
    assert all(log.index(("built", name)) < log.index(("sent", name)) for name in names)
    # Never more than `limit` jobs sent and not yet seen ended.
    in_flight = 0
    for what, _ in log:
        in_flight += {"sent": 1, "ended": -1}.get(what, 0)
        assert 0 <= in_flight <= limit


# ----------------------------------------------------------------------------- credentials


async def test_a_wrong_key_is_a_credentials_error(emulator: IonQEmulator, driver: str) -> None:
    wrong = "sk-wrong-0000-1111"
    async with make(emulator, driver, api_key=wrong) as ionq:
        with pytest.raises(CredentialsError, match="IONQ_API_KEY or QDB_IONQ_API_KEY") as caught:
            await ionq.run(bell(), shots=10)
    assert wrong not in str(caught.value)
    assert [r.status for r in emulator.calls("POST", "/jobs")] == [401]


@pytest.fixture
def no_key_in_env(monkeypatch: pytest.MonkeyPatch) -> pytest.MonkeyPatch:
    for name in ("IONQ_API_KEY", "QDB_IONQ_API_KEY", "QDB_IONQ_API_URL"):
        monkeypatch.delenv(name, raising=False)
    return monkeypatch


async def test_a_missing_key_is_refused_before_anything_is_sent(
    emulator: IonQEmulator, driver: str, no_key_in_env: pytest.MonkeyPatch
) -> None:
    async with make(emulator, driver, api_key=None) as ionq:
        assert ionq.estimate_cost(bell(), 100) == 0.0  # pricing needs no key
        with pytest.raises(CredentialsError) as caught:
            await ionq.run(bell(), shots=10)
    # It names exactly the places that were looked at.
    assert "set IONQ_API_KEY or QDB_IONQ_API_KEY, or pass api_key=" in str(caught.value)
    assert emulator.requests == []


@pytest.mark.parametrize("variable", ["IONQ_API_KEY", "QDB_IONQ_API_KEY"])
async def test_a_standalone_backend_reads_its_key_and_url_from_the_environment(
    emulator: IonQEmulator,
    driver: str,
    variable: str,
    no_key_in_env: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG)
    no_key_in_env.setenv(variable, f"  {KEY}\n")  # as pasted, with a newline
    no_key_in_env.setenv("QDB_IONQ_API_URL", emulator.url)
    ionq = IonQBackend("simulator", driver, poll_interval_s=0.005)  # type: ignore[arg-type]
    assert ionq.api_url == emulator.url
    async with ionq:
        result = await ionq.run(bell(), shots=20, seed=1)
    assert result.counts is not None and sum(result.counts[0].values()) == 20
    assert [r.status for r in emulator.calls("POST", "/jobs")] == [201]  # the key was right
    assert KEY not in repr(ionq) + repr(vars(ionq)) + caplog.text


def test_the_key_passed_wins_over_the_environment(
    emulator: IonQEmulator, no_key_in_env: pytest.MonkeyPatch
) -> None:
    no_key_in_env.setenv("IONQ_API_KEY", "from-the-environment")
    no_key_in_env.setenv("QDB_IONQ_API_URL", "http://127.0.0.1:9/v0.4")
    ionq = IonQBackend("simulator", api_key=KEY, api_url=emulator.url)
    assert ionq._api_key is not None and ionq._api_key.get_secret_value() == KEY
    assert ionq.api_url == emulator.url


@pytest.mark.parametrize("blank", ["", " ", "\t\n  "])
def test_an_empty_key_is_refused_at_construction(
    blank: str, no_key_in_env: pytest.MonkeyPatch
) -> None:
    for key in (blank, SecretStr(blank)):
        with pytest.raises(CredentialsError, match="empty or only whitespace"):
            IonQBackend("simulator", api_key=key)
    no_key_in_env.setenv("IONQ_API_KEY", blank)
    with pytest.raises(CredentialsError, match="QDB_IONQ_API_KEY or IONQ_API_KEY"):
        IonQBackend("simulator")


async def test_the_key_appears_in_no_log_repr_or_error(
    emulator: IonQEmulator, driver: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)  # every logger, urllib3's request lines included
    texts: list[str] = []
    async with make(emulator, driver, api_key=SecretStr(KEY), max_retries=1) as ionq:
        texts += [repr(ionq), str(ionq), repr(vars(ionq))]
        await ionq.run(bell(), observables=["ZZ", "XX"])
        failures: list[BaseException] = []
        emulator.fail_jobs("simulated failure")
        with pytest.raises(JobFailedError) as failed:
            await ionq.run(bell(), shots=10)
        failures.append(failed.value)
        emulator.fail_next(503, 2, method="GET", path="/jobs/[^/]+")
        with pytest.raises(TransientBackendError) as transient:
            await ionq.run(bell(), shots=10)
        failures.append(transient.value)
        for error in failures:
            chained: BaseException | None = error
            while chained is not None:
                texts += [str(chained), repr(chained)]
                chained = chained.__cause__ or chained.__context__
        texts += [repr(vars(ionq))]
    assert caplog.records, "expected debug logs from the clients' HTTP layer"
    texts.append(caplog.text)
    assert all(KEY not in text for text in texts)


# ----------------------------------------------------------------------------- targets


async def test_qpu_targets_are_shot_based_and_refuse_wide_circuits_before_sending(
    emulator: IonQEmulator,
) -> None:
    for target, width in (("qpu.aria-1", 25), ("qpu.forte-1", 36)):
        async with make(emulator, "qiskit", target) as qpu:
            caps = qpu.capabilities
            assert caps.max_qubits == width
            assert not caps.supports_exact and caps.supports_shots
            assert caps.connectivity is None and caps.max_shots == 10_000
            assert qpu.typical_queue_s > 0
            with pytest.raises(TooManyQubitsError):
                await qpu.run(Circuit(width + 1).h(0), shots=100)
            with pytest.raises(ShotsError):
                await qpu.run(bell(), observables=["ZZ"])  # no exact mode
            with pytest.raises(ShotsError):
                await qpu.run(bell(), shots=10_001)
    simulator = make(emulator)
    assert simulator.capabilities.max_qubits == 29 and simulator.capabilities.supports_exact
    with pytest.raises(TooManyQubitsError):
        await simulator.run(Circuit(30).h(0), shots=10)
    assert emulator.requests == []


async def test_error_mitigation_is_sent_and_checked(emulator: IonQEmulator, driver: str) -> None:
    async with make(emulator, driver, "qpu.aria-1", error_mitigation=True) as mitigated:
        with pytest.raises(ShotsError, match="500"):
            await mitigated.run(bell(), shots=100)
    assert emulator.requests == []
    async with make(emulator, driver, "qpu.aria-1", error_mitigation=False) as plain:
        result = await plain.run(bell(), shots=1000)
    (post,) = emulator.calls("POST", "/jobs")
    assert post.body["settings"]["error_mitigation"] == {"debiasing": False}
    assert str(post.body["shots"]) == "1000"  # cirq-ionq sends shots as a string
    assert result.metadata["cost_usd"] == pytest.approx(12.4166 + 0.22 + 0.975)


async def test_a_noise_model_reaches_the_simulator(emulator: IonQEmulator, driver: str) -> None:
    async with make(emulator, driver, noise_model="aria-1") as noisy:
        assert not noisy.capabilities.supports_exact
        with pytest.raises(ShotsError):
            await noisy.run(bell(), observables=["ZZ"])
        first = await noisy.run(bell(), shots=500, seed=2)
        again = await noisy.run(bell(), shots=500, seed=2)
    posts = emulator.calls("POST", "/jobs")
    assert [p.body["noise"]["model"] for p in posts] == ["aria-1", "aria-1"]
    assert first.counts == again.counts  # the noise seed is derived from the run's seed
    assert first.counts is not None
    (counts,) = first.counts
    assert sum(counts.values()) == 500
    assert counts.get("00", 0) + counts.get("11", 0) > 450


def test_bad_configurations_are_refused() -> None:
    from backends import BackendError

    with pytest.raises(BackendError, match="unknown IonQ target"):
        IonQBackend("qpu.harmony")
    with pytest.raises(BackendError, match="noise model"):
        IonQBackend(noise_model="aria-9")
    with pytest.raises(BackendError, match="noise models apply to"):
        IonQBackend("qpu.aria-1", noise_model="aria-1")
    with pytest.raises(BackendError, match="driver"):
        IonQBackend(driver="braket")  # type: ignore[arg-type]
    assert IonQBackend(api_url="http://127.0.0.1:1/").api_url == "http://127.0.0.1:1/v0.4"
    assert IonQBackend(api_url="https://h/proxy/v0.4/").api_url == "https://h/proxy/v0.4"


def test_a_missing_client_names_the_install_command(monkeypatch: pytest.MonkeyPatch) -> None:
    from backends import MissingDependencyError

    for module, driver in (("qiskit_ionq", "qiskit"), ("cirq_ionq", "cirq")):
        with monkeypatch.context() as patch:
            patch.setitem(sys.modules, module, None)  # as if it were not installed
            with pytest.raises(MissingDependencyError, match=r"pip install 'quantum-db\[ionq\]'"):
                IonQBackend(driver=driver)  # type: ignore[arg-type]


def test_the_package_exports_the_backend() -> None:
    import backends.ionq

    assert backends.ionq.__all__ == ["IonQBackend"]


# ----------------------------------------------------------------------------- emulator


def test_the_emulator_runs_multi_circuit_jobs_for_both_clients(
    emulator: IonQEmulator, monkeypatch: pytest.MonkeyPatch
) -> None:
    import cirq_ionq

    service = cirq_ionq.Service(remote_host=emulator.url, api_key=KEY, default_target="simulator")
    results = service.run_batch(
        [Circuit(1).x(0).measure_all().to_cirq(), bell().measure_all().to_cirq()],
        repetitions=20,
        seed=1,
    )
    assert results[0].measurements["m"].tolist() == [[1]] * 20
    assert set(map(tuple, results[1].measurements["m"].tolist())) <= {(0, 0), (1, 1)}
    assert emulator.calls("GET", r"/jobs/[^/]+/results/probabilities/aggregated")

    monkeypatch.setenv("IONQ_API_URL", emulator.url)
    from qiskit_ionq import IonQProvider

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        backend = IonQProvider(token=KEY, url=emulator.url).get_backend("simulator")
        job = backend.run([c.measure_all().to_qiskit() for c in (Circuit(1).x(0), bell())])
        counts = job.get_counts()
    assert counts[0] == {"1": 1024}
    assert set(counts[1]) <= {"00", "11"}
    parents = [j for j in emulator.jobs.values() if j.children]
    assert [len(j.children) for j in parents] == [2, 2]


def test_the_emulator_translates_every_qis_gate_form(emulator: IonQEmulator) -> None:
    """Forms our drivers never send (controlled H/S/T/V, ``vi``, ``not``, ``z`` with a
    rotation, ``cnot`` with control/target) against Qiskit's own gates."""
    import json
    import urllib.request

    from qiskit import QuantumCircuit
    from qiskit.circuit.library import SXdgGate
    from qiskit.quantum_info import Statevector

    qc = QuantumCircuit(3)
    gates: list[dict[str, object]] = []

    def add(gate: dict[str, object], apply: Callable[[QuantumCircuit], object]) -> None:
        gates.append(gate)
        apply(qc)

    for q in range(3):
        add({"gate": "h", "targets": [q]}, lambda c, q=q: c.h(q))
    add({"gate": "rx", "targets": [0], "rotation": 0.3}, lambda c: c.rx(0.3, 0))
    add({"gate": "h", "targets": [1], "controls": [0]}, lambda c: c.ch(0, 1))
    add({"gate": "s", "targets": [2], "controls": [1]}, lambda c: c.cs(1, 2))
    add({"gate": "ti", "targets": [0], "controls": [2]}, lambda c: c.cp(-math.pi / 4, 2, 0))
    add({"gate": "v", "targets": [1], "controls": [2]}, lambda c: c.csx(2, 1))
    add({"gate": "vi", "targets": [0]}, lambda c: c.sxdg(0))
    add(
        {"gate": "vi", "targets": [2], "controls": [0]},
        lambda c: c.append(SXdgGate().control(), [0, 2]),
    )
    add({"gate": "not", "targets": [1]}, lambda c: c.x(1))
    add({"gate": "z", "targets": [2], "rotation": 0.7}, lambda c: c.rz(0.7, 2))
    add({"gate": "cnot", "control": 0, "target": 2}, lambda c: c.cx(0, 2))
    add({"gate": "si", "targets": [1], "controls": [0]}, lambda c: c.cp(-math.pi / 2, 0, 1))
    add(
        {"gate": "ry", "targets": [1], "controls": [2], "rotation": 1.1}, lambda c: c.cry(1.1, 2, 1)
    )
    add({"gate": "t", "targets": [1]}, lambda c: c.t(1))

    def call(method: str, path: str, body: object = None) -> dict[str, object]:
        request = urllib.request.Request(
            emulator.url + path,
            data=None if body is None else json.dumps(body).encode(),
            method=method,
            headers={"Authorization": f"apiKey {KEY}", "Content-Type": "application/json"},
        )
        with urllib.request.urlopen(request, timeout=10) as response:
            result: dict[str, object] = json.loads(response.read())
        return result

    job = call(
        "POST",
        "/jobs",
        {
            "type": "ionq.circuit.v1",
            "backend": "simulator",
            "shots": 100,
            "input": {"gateset": "qis", "qubits": 3, "circuit": gates},
        },
    )
    got = call("GET", f"/jobs/{job['id']}/results/probabilities")
    want = Statevector(qc).probabilities()  # Qiskit's index: qubit 0 least significant
    dense = np.zeros(8)
    for key, value in got.items():
        dense[int(key)] = float(value)  # type: ignore[arg-type]
    np.testing.assert_allclose(dense, want, atol=1e-12)
