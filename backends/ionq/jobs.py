"""Running IonQ jobs through a driver: submit, poll, fetch, cancel; bounded in time and retries."""

from __future__ import annotations

import asyncio
import collections
import logging
import math
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, TypeVar

from ..accounting import report_provider_job, report_submission
from ..circuit import Circuit
from ..errors import (
    BackendError,
    BackendUnavailableError,
    JobFailedError,
    JobTimeoutError,
    SubmissionUnknownError,
)
from ..retry import RetryPolicy, retry_async
from .driver import Driver, JobSpec, JobState, RemoteCallError
from .results import Distribution, parse_distribution

__all__ = ["JobPolicy", "JobRunner"]

logger = logging.getLogger(__name__)

T = TypeVar("T")

#: Statuses after which a job changes no more.
_ENDED = frozenset({"completed", "failed", "canceled", "cancelled", "deleted"})


@dataclass(frozen=True, slots=True)
class JobPolicy:
    """How long to wait, how often to poll, how often to retry, how many jobs at once."""

    job_timeout_s: float = 3600.0
    poll_interval_s: float = 1.0
    max_poll_interval_s: float = 30.0
    request_timeout_s: float = 60.0
    max_concurrent_jobs: int = 8
    max_retries: int = 4
    retry_backoff_s: float = 0.5

    def __post_init__(self) -> None:
        for name in (
            "job_timeout_s",
            "poll_interval_s",
            "max_poll_interval_s",
            "request_timeout_s",
        ):
            value = getattr(self, name)
            if (
                isinstance(value, bool)
                or not isinstance(value, int | float)
                or not (math.isfinite(value) and value > 0)
            ):
                raise BackendError(f"{name} must be a positive number of seconds, got {value!r}")
        if self.max_concurrent_jobs < 1 or self.max_retries < 0 or self.retry_backoff_s < 0:
            raise BackendError(
                "max_concurrent_jobs must be >= 1, max_retries and retry_backoff_s >= 0"
            )
        _ = self.retry  # built here, so that a bad retry setting fails at construction

    @property
    def retry(self) -> RetryPolicy:
        """The one retry policy of every remote call: ``max_retries`` repeats, doubling
        from ``retry_backoff_s``, never waiting longer than ``max_poll_interval_s``."""
        return RetryPolicy(
            attempts=self.max_retries + 1,
            base_delay_s=min(self.retry_backoff_s, self.max_poll_interval_s),
            max_delay_s=self.max_poll_interval_s,
        )


class JobRunner:
    """Runs jobs through a :class:`~backends.ionq.driver.Driver` in a private thread pool.

    Every blocking client call runs under ``request_timeout_s`` and under the policy's
    :func:`~backends.retry.retry_async`: calls that may be repeated (status, results,
    cancel, estimate) on any :class:`RemoteCallError`; a job submission only when IonQ
    cannot have created the job (a 429, a 503, no connection), since a repeated
    ``POST /jobs`` would run, and bill, it twice. Any other failed submission raises
    :class:`SubmissionUnknownError`. A job is cancelled at IonQ when it times out or
    when the task awaiting it is cancelled, even mid-submission.

    At most ``max_concurrent_jobs`` jobs are in flight (submitted and not yet seen
    ended). A job's request is built before it takes one of those slots, and its
    results are read after it gives the slot back, so a freed slot goes straight to
    the next submission.
    """

    def __init__(self, name: str, policy: JobPolicy) -> None:
        self.name = name
        self.policy = policy
        self._retry = policy.retry
        self._executor: ThreadPoolExecutor | None = None
        self._gates: dict[
            asyncio.AbstractEventLoop, tuple[asyncio.Semaphore, asyncio.Semaphore]
        ] = {}
        self._job_ids: collections.deque[str] = collections.deque(maxlen=100_000)

    @property
    def job_ids(self) -> tuple[str, ...]:
        """Every job id created through this runner, oldest first."""
        return tuple(self._job_ids)

    async def run(
        self, driver: Driver, jobs: Sequence[tuple[Circuit, JobSpec]], ids: list[str]
    ) -> list[Distribution]:
        """Run ``jobs`` concurrently; each id is appended to ``ids`` as soon as it is known."""
        return await self.resume(driver, [(circuit, spec, None) for circuit, spec in jobs], ids)

    async def resume(
        self,
        driver: Driver,
        jobs: Sequence[tuple[Circuit, JobSpec, str | None]],
        ids: list[str],
    ) -> list[Distribution]:
        """Like :meth:`run`, where a job given with an IonQ job id is not submitted: that
        job (created earlier) is waited for and read. New ids are appended to ``ids``."""
        gate, downloads = self._gates_of_loop()
        out: list[Distribution | None] = [None] * len(jobs)

        # Requests are built before their job takes a slot, one at a time and in order,
        # at most a slot's worth ahead: the first jobs are sent as each is built, and a
        # slot that frees goes straight to the next one's POST.
        ahead = asyncio.Semaphore(self.policy.max_concurrent_jobs)
        building = asyncio.Lock()

        async def one(index: int, circuit: Circuit, spec: JobSpec, job_id: str | None) -> None:
            request: object = None
            if job_id is None:
                async with ahead:
                    async with building:
                        request = await self.in_thread(driver.prepare, circuit, spec)
                    await gate.acquire()
            else:
                await gate.acquire()
            try:
                if job_id is None:
                    job_id = await self._submit(driver, request, spec, ids)
                state = await self._finished(driver, job_id)
            finally:
                gate.release()
            # Completed at IonQ, the job holds no slot there: the next one is submitted
            # while its results download (under a limit of their own).
            async with downloads:
                data = await self.call(
                    driver.probabilities, state, idempotent=True, operation="results"
                )
            out[index] = parse_distribution(data, circuit.num_qubits, job_id)

        # A failing job cancels its siblings, and each cancels its remote job.
        try:
            async with asyncio.TaskGroup() as group:
                for index, (circuit, spec, job_id) in enumerate(jobs):
                    group.create_task(one(index, circuit, spec, job_id))
        except BaseExceptionGroup as failed:
            # Callers catch the package's errors, not groups: raise the first failure.
            first = _first_error(failed)
            raise first from first.__cause__
        return [d for d in out if d is not None]

    async def _finished(self, driver: Driver, job_id: str) -> JobState:
        """Wait for a created job to complete; cancel it if the wait is abandoned."""
        try:
            return await self._wait(driver, job_id)
        except JobFailedError as exc:
            if isinstance(exc, JobTimeoutError):
                await asyncio.shield(self._cancel(driver, job_id))
            raise  # otherwise the job has ended (or is unknown): nothing to cancel
        except BaseException:
            # Shielded: a cancelled task still gets its remote job cancelled.
            await asyncio.shield(self._cancel(driver, job_id))
            raise

    async def _submit(self, driver: Driver, request: object, spec: JobSpec, ids: list[str]) -> str:
        def record(job_id: str) -> str:
            ids.append(job_id)
            self._job_ids.append(job_id)
            report_provider_job(job_id)  # into the job's record now, before it ends
            logger.debug("IonQ job %s created on %s (%s)", job_id, spec.target, spec.name)
            return job_id

        timeout = self.policy.request_timeout_s

        async def once() -> str:
            call = self.in_thread(driver.submit, request)
            report_submission(call)  # a job may exist from now on, before its id is known
            try:
                # asyncio.timeout, not wait_for: Python 3.11's wait_for can swallow a
                # cancellation that arrives as the call completes.
                async with asyncio.timeout(timeout):
                    job_id = await asyncio.shield(call)
                return record(job_id)
            except asyncio.CancelledError:
                # The POST may still create the job: cancel it as soon as its id arrives.
                call.add_done_callback(lambda f: self._cancel_late(driver, f, record))
                raise
            except TimeoutError as exc:
                call.add_done_callback(lambda f: self._cancel_late(driver, f, record))
                raise SubmissionUnknownError(
                    _unknown(self.name, f"no answer within {timeout:g} s", late_cancel=True)
                ) from exc

        try:
            return await retry_async(
                once,
                policy=self._retry,
                service=self.name,
                operation="submit",
                retryable=_never_created,
            )
        except RemoteCallError as exc:
            if _never_created(exc):  # every attempt was refused before IonQ acted
                final = _final(self.name, exc)
                if final is exc:
                    raise
                raise final from exc
            raise SubmissionUnknownError(_unknown(self.name, str(exc), late_cancel=False)) from exc

    def _cancel_late(
        self, driver: Driver, call: asyncio.Future[str], record: Callable[[str], str]
    ) -> None:
        if call.cancelled() or call.exception() is not None:
            return
        job_id = record(call.result())
        try:
            self.in_thread(driver.cancel, job_id).add_done_callback(_ignore)
        except RuntimeError:  # the loop or the pool is gone
            logger.warning("could not cancel IonQ job %s: the backend is shutting down", job_id)

    async def _wait(self, driver: Driver, job_id: str) -> JobState:
        policy = self.policy
        loop = asyncio.get_running_loop()
        deadline = loop.time() + policy.job_timeout_s
        interval = policy.poll_interval_s
        while True:
            state = await self.call(driver.status, job_id, idempotent=True, operation="status")
            if state.status == "completed":
                return state
            if state.status == "failed":
                raise JobFailedError(f"IonQ job {job_id} failed: {state.failure or 'no message'}")
            if state.status in _ENDED:
                raise JobFailedError(f"IonQ job {job_id} ended {state.status} before finishing")
            left = deadline - loop.time()
            if left <= 0:
                raise JobTimeoutError(
                    f"IonQ job {job_id} had no result within {policy.job_timeout_s:g} s "
                    f"(last status {state.status!r}); it was cancelled"
                )
            await asyncio.sleep(min(interval, left))
            interval = min(interval * 1.5, policy.max_poll_interval_s)

    async def _cancel(self, driver: Driver, job_id: str) -> None:
        try:
            await self.call(driver.cancel, job_id, idempotent=True, operation="cancel")
            logger.info("cancelled IonQ job %s", job_id)
        except Exception as exc:  # best effort: the original error is what matters
            logger.warning("could not cancel IonQ job %s: %s", job_id, exc)

    async def call(
        self, fn: Callable[..., T], *args: Any, idempotent: bool, operation: str | None = None
    ) -> T:
        """``fn(*args)`` in the pool under ``request_timeout_s``, retried if ``idempotent``.

        ``operation`` names the call in the retry log (default: the function's name).
        Once the attempts are spent the last error propagates, as
        :class:`BackendUnavailableError` when IonQ could not be reached at all.
        """
        timeout = self.policy.request_timeout_s

        async def once() -> T:
            try:
                async with asyncio.timeout(timeout):  # not wait_for: see _submit
                    return await self.in_thread(fn, *args)
            except TimeoutError as exc:
                raise RemoteCallError(
                    f"{self.name}: no answer within {timeout:g} s", sent=True
                ) from exc

        try:
            return await retry_async(
                once,
                policy=self._retry if idempotent else _ONCE,
                service=self.name,
                operation=operation or str(getattr(fn, "__name__", "call")),
                retryable=lambda exc: isinstance(exc, RemoteCallError),
            )
        except RemoteCallError as exc:
            final = _final(self.name, exc)
            if final is exc:
                raise
            raise final from exc

    def in_thread(self, fn: Callable[..., T], *args: Any) -> asyncio.Future[T]:
        """``fn(*args)`` on the runner's pool (the clients block)."""
        if self._executor is None:
            # A thread for each job in flight and each download, and two for the rest.
            self._executor = ThreadPoolExecutor(
                2 * self.policy.max_concurrent_jobs + 2, thread_name_prefix="qdb-ionq"
            )
        return asyncio.get_running_loop().run_in_executor(self._executor, fn, *args)

    def _gates_of_loop(self) -> tuple[asyncio.Semaphore, asyncio.Semaphore]:
        """The limits on jobs in flight at IonQ and on result downloads at once."""
        loop = asyncio.get_running_loop()
        gates = self._gates.get(loop)
        if gates is None:  # a semaphore belongs to one event loop
            limit = self.policy.max_concurrent_jobs
            gates = (asyncio.Semaphore(limit), asyncio.Semaphore(limit))
            self._gates = {loop: gates}
        return gates

    def close(self) -> None:
        executor, self._executor = self._executor, None
        if executor is not None:
            # Threads still blocked in a client call finish on their own; do not wait.
            executor.shutdown(wait=False, cancel_futures=True)


#: A call that must not be repeated gets one attempt.
_ONCE = RetryPolicy(attempts=1, base_delay_s=0.0, max_delay_s=0.0)


def _never_created(exc: BaseException) -> bool:
    """Whether a failed ``POST /jobs`` cannot have created the job, so it may be repeated.

    A 429 and a 503 are answered before the request reaches IonQ's job service; a
    connection that was never made sent nothing. Anything else (a 500, a timeout, a
    dropped connection) may come after the job was created.
    """
    return isinstance(exc, RemoteCallError) and (exc.status in (429, 503) or exc.sent is False)


def _unknown(name: str, what: str, *, late_cancel: bool) -> str:
    cancel = " (it is cancelled if its id still arrives)" if late_cancel else ""
    return (
        f"{name}: a job submission failed ({what}), but IonQ may have created the job{cancel}; "
        "it was not resubmitted, since a second submission could run and bill it twice; "
        "its budget reservation is kept until the job is found at IonQ or expires"
    )


def _final(name: str, error: RemoteCallError) -> BackendError:
    """What a call that will not be retried raises: unreachable, or merely transient."""
    if error.status is None and error.sent is False:
        return BackendUnavailableError(f"{name}: IonQ could not be reached: {error}")
    return error


def _first_error(group: BaseExceptionGroup[BaseException]) -> BaseException:
    # A job that may exist at IonQ outweighs any sibling's failure: its reservation
    # must be kept, so that error is the one the caller sees.
    unknown, _ = group.split(SubmissionUnknownError)
    error: BaseException = unknown if unknown is not None else group
    while isinstance(error, BaseExceptionGroup):
        error = error.exceptions[0]
    return error


def _ignore(future: asyncio.Future[Any]) -> None:
    if not future.cancelled():
        future.exception()  # retrieved, so asyncio does not log it as never retrieved
