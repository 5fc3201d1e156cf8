"""The one retry policy: its backoff, its log lines, and the one layer that retries.

The policy itself is driven through :func:`backends.retry.retry_sync` with a recording
``sleep`` (no clock involved); the manager's layer through real simulator runs whose
first attempts fail the way a provider would.
"""

from __future__ import annotations

import logging
import re

import pytest

from backends import (
    BackendError,
    BackendManager,
    BackendUnavailableError,
    Budget,
    Circuit,
    InMemoryAccounting,
    RetryPolicy,
    RunRequest,
    RunResult,
    SimulatorBackend,
    TransientBackendError,
)
from backends import retry as retry_module
from backends.cost import IONQ_ARIA
from backends.errors import RemoteCallError, SubmissionUnknownError
from backends.retry import retry_async, retry_sync

BELL = Circuit(2).h(0).cx(0, 1).measure_all()
_LINE = re.compile(
    r"(?P<service>\S+) (?P<operation>\S+): attempt (?P<n>\d+) of (?P<of>\d+) failed "
    r"\((?P<error>\w+): .*\); retrying in (?P<delay>[\d.e-]+) s"
)


def retry_lines(caplog: pytest.LogCaptureFixture) -> list[tuple[str, str, int, int, float]]:
    """(service, operation, attempt, attempts, delay) of every retry logged."""
    out = []
    for record in caplog.records:
        if record.name == "backends.retry":
            match = _LINE.fullmatch(record.getMessage())
            assert match is not None, record.getMessage()
            out.append(
                (
                    match["service"],
                    match["operation"],
                    int(match["n"]),
                    int(match["of"]),
                    float(match["delay"]),
                )
            )
    return out


class Failing:
    """A call that raises ``errors`` in turn, then returns how many calls it took."""

    def __init__(self, *errors: BaseException) -> None:
        self.errors = list(errors)
        self.calls = 0

    def __call__(self) -> int:
        self.calls += 1
        if self.errors:
            raise self.errors.pop(0)
        return self.calls

    async def call_async(self) -> int:
        return self()


def transient(exc: BaseException) -> bool:
    return isinstance(exc, TransientBackendError)


# ---------------------------------------------------------------- the policy


def test_delays_double_up_to_the_cap_and_honour_retry_after() -> None:
    policy = RetryPolicy(attempts=6, base_delay_s=0.5, max_delay_s=3.0)
    assert [policy.delay(k) for k in range(1, 6)] == [0.5, 1.0, 2.0, 3.0, 3.0]
    assert policy.delay(1, retry_after=2.5) == 2.5  # the server asks for longer
    assert policy.delay(3, retry_after=0.1) == 2.0  # never shorter than the backoff
    assert policy.delay(1, retry_after=60.0) == 3.0  # nor longer than the cap
    assert policy.delay(1, retry_after=float("nan")) == 0.5


@pytest.mark.parametrize(
    "options",
    [
        {"attempts": 0},
        {"attempts": 2.5},
        {"attempts": True},
        {"base_delay_s": -1.0},
        {"max_delay_s": float("inf")},
        {"base_delay_s": "1"},
        {"base_delay_s": 2.0, "max_delay_s": 1.0},
    ],
)
def test_a_bad_policy_is_refused(options: dict[str, object]) -> None:
    with pytest.raises(BackendError):
        RetryPolicy(**options)  # type: ignore[arg-type]


def test_the_package_exports_the_one_policy() -> None:
    import backends.manager

    assert RetryPolicy is retry_module.RetryPolicy is backends.manager.RetryPolicy


def test_each_failed_attempt_is_logged_and_waited_for(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, logger="backends.retry")
    slept: list[float] = []
    call = Failing(
        RemoteCallError("429", status=429, retry_after=1.5), TransientBackendError("503")
    )
    policy = RetryPolicy(attempts=4, base_delay_s=0.25, max_delay_s=2.0)
    result = retry_sync(
        call,
        policy=policy,
        service="ionq-aria",
        operation="status",
        retryable=transient,
        sleep=slept.append,
    )
    assert (result, call.calls) == (3, 3)
    assert slept == [1.5, 0.5]  # Retry-After, then the backoff of attempt 2
    assert retry_lines(caplog) == [
        ("ionq-aria", "status", 1, 4, 1.5),
        ("ionq-aria", "status", 2, 4, 0.5),
    ]


def test_the_last_error_propagates_once_the_attempts_are_spent() -> None:
    slept: list[float] = []
    errors = [TransientBackendError(f"503 #{k}") for k in range(5)]
    call = Failing(*errors)
    with pytest.raises(TransientBackendError, match="503 #2"):
        retry_sync(
            call,
            policy=RetryPolicy(attempts=3, base_delay_s=0.0, max_delay_s=0.0),
            service="s",
            operation="o",
            retryable=transient,
            sleep=slept.append,
        )
    assert call.calls == 3 and slept == [0.0, 0.0]


async def test_an_error_that_is_not_retryable_propagates_at_once(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.WARNING, logger="backends.retry")
    call = Failing(SubmissionUnknownError("may have created the job"))
    with pytest.raises(SubmissionUnknownError):
        await retry_async(
            call.call_async,
            policy=RetryPolicy(attempts=5, base_delay_s=0.0, max_delay_s=0.0),
            service="ionq-aria",
            operation="submit",
            retryable=lambda exc: isinstance(exc, RemoteCallError),
        )
    assert call.calls == 1 and retry_lines(caplog) == []


# ---------------------------------------------------------------- one layer: the manager


class FlakySimulator(SimulatorBackend):
    """The built-in simulator, priced like an IonQ QPU, whose first runs raise ``errors``.

    ``own_retries`` says whether it claims to retry its own calls, as IonQ's backend does.
    """

    def __init__(self, *errors: BaseException, own_retries: bool = False) -> None:
        super().__init__(seed=1)
        self.name = "flaky"
        self.errors = list(errors)
        self.own_retries = own_retries
        self.attempts = 0

    def supports_own_retries(self) -> bool:
        return self.own_retries

    def estimate_cost(self, circuit: Circuit, shots: int | None) -> float:
        return IONQ_ARIA.circuit_cost(circuit, shots or 1, error_mitigation=False)

    async def _execute(self, request: RunRequest) -> RunResult:
        self.attempts += 1
        if self.errors:
            raise self.errors.pop(0)
        return await super()._execute(request)


def quick(attempts: int) -> RetryPolicy:
    return RetryPolicy(attempts=attempts, base_delay_s=0.0, max_delay_s=0.0)


async def test_the_manager_retries_a_backend_that_does_not_and_logs_it(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.WARNING, logger="backends.retry")
    flaky = FlakySimulator(TransientBackendError("429"), TransientBackendError("503"))
    accounting = InMemoryAccounting()
    manager = BackendManager({"flaky": flaky}, accounting=accounting, retry=quick(3))
    result = await manager.run(BELL, shots=50, backend="flaky", budget=Budget(usd=100.0))
    assert result.backend == "flaky" and flaky.attempts == 3
    assert retry_lines(caplog) == [("flaky", "run", 1, 3, 0.0), ("flaky", "run", 2, 3, 0.0)]
    assert accounting.open_reservations() == 0


async def test_the_manager_does_not_retry_a_backend_that_retries_itself(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.WARNING, logger="backends.retry")
    flaky = FlakySimulator(TransientBackendError("503 after 5 attempts"), own_retries=True)
    manager = BackendManager({"flaky": flaky}, fallback=None, retry=quick(4))
    with pytest.raises(TransientBackendError, match="after 5 attempts") as caught:
        await manager.run(BELL, shots=50, backend="flaky")
    assert not isinstance(caught.value, BackendUnavailableError)
    assert flaky.attempts == 1 and retry_lines(caplog) == []


@pytest.mark.parametrize("own_retries", [False, True])
async def test_an_unknown_submission_is_never_retried_nor_sent_elsewhere(
    own_retries: bool,
) -> None:
    flaky = FlakySimulator(SubmissionUnknownError("may have created it"), own_retries=own_retries)
    fallback = FlakySimulator()
    accounting = InMemoryAccounting()
    manager = BackendManager(
        {"flaky": flaky, "simulator": fallback}, accounting=accounting, retry=quick(4)
    )
    budget = Budget(usd=100.0, name="unknown")
    with pytest.raises(SubmissionUnknownError):
        await manager.run(BELL, shots=50, backend="flaky", budget=budget)
    assert (flaky.attempts, fallback.attempts) == (1, 0)
    # The reservation is kept for the sweeper: the provider may bill the job.
    assert accounting.open_reservations() == 1
    assert await accounting.exposure(budget) == pytest.approx(flaky.estimate_cost(BELL, 50))
    (job,) = accounting.jobs.values()
    assert job.status == "unknown" and job.error is not None
    assert job.error.startswith("SubmissionUnknownError: may have created it")


async def test_a_backend_down_after_the_managers_retries_falls_back() -> None:
    dead = FlakySimulator(*(TransientBackendError("503") for _ in range(3)))
    manager = BackendManager({"flaky": dead, "simulator": SimulatorBackend()}, retry=quick(3))
    result = await manager.run(BELL, shots=20, backend="flaky", seed=1)
    assert dead.attempts == 3
    assert result.backend == "simulator" and result.metadata["fallback_from"] == "flaky"
