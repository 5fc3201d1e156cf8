"""The one retry policy of quantum-db: which failures are tried again, how often, how late.

Every remote call (IonQ, Pinecone, the registry's lock waits) goes through
:func:`retry_async` or :func:`retry_sync`, built on tenacity, so the rules are the same
everywhere: exponential backoff capped at ``max_delay_s``, a server's ``Retry-After``
honoured, every failed attempt logged with the service, the operation, the attempt
number and the delay. The caller says which errors are safe to repeat; for an operation
that is not idempotent (a paid job submission) that is only an error after which the
provider cannot have acted. An operation is retried in exactly one layer: the one that
makes the remote call.
"""

from __future__ import annotations

import asyncio
import logging
import math
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, TypeVar

import tenacity

from .errors import BackendError

__all__ = ["RetryPolicy", "retry_async", "retry_sync"]

logger = logging.getLogger(__name__)

T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """At most ``attempts`` tries, waiting ``base_delay_s * 2**k`` (at most ``max_delay_s``)."""

    attempts: int = 4
    base_delay_s: float = 0.5
    max_delay_s: float = 8.0

    def __post_init__(self) -> None:
        if isinstance(self.attempts, bool) or not isinstance(self.attempts, int):
            raise BackendError(f"attempts must be an integer >= 1, got {self.attempts!r}")
        if self.attempts < 1:
            raise BackendError(f"attempts must be >= 1, got {self.attempts}")
        for name in ("base_delay_s", "max_delay_s"):
            value = getattr(self, name)
            if (
                isinstance(value, bool)
                or not isinstance(value, int | float)
                or not math.isfinite(value)
                or value < 0
            ):
                raise BackendError(f"{name} must be a finite number >= 0, got {value!r}")
        if self.max_delay_s < self.base_delay_s:
            raise BackendError("max_delay_s must be >= base_delay_s")

    def delay(self, attempt: int, retry_after: float | None = None) -> float:
        """Seconds to wait after failed attempt ``attempt`` (1-based)."""
        delay = min(self.max_delay_s, self.base_delay_s * 2 ** (attempt - 1))
        if retry_after is not None and math.isfinite(retry_after) and retry_after > delay:
            delay = min(float(retry_after), self.max_delay_s)
        return float(delay)


def _retry_after(exc: BaseException | None) -> float | None:
    value = getattr(exc, "retry_after", None)
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return float(value)


def _options(
    policy: RetryPolicy,
    service: str,
    operation: str,
    retryable: Callable[[BaseException], bool],
    level: int,
) -> dict[str, Any]:
    def wait(state: tenacity.RetryCallState) -> float:
        exc = state.outcome.exception() if state.outcome is not None else None
        return policy.delay(state.attempt_number, _retry_after(exc))

    def before_sleep(state: tenacity.RetryCallState) -> None:
        exc = state.outcome.exception() if state.outcome is not None else None
        delay = state.next_action.sleep if state.next_action is not None else 0.0
        logger.log(
            level,
            "%s %s: attempt %d of %d failed (%s: %s); retrying in %.3g s",
            service,
            operation,
            state.attempt_number,
            policy.attempts,
            type(exc).__name__,
            exc,
            delay,
        )

    return {
        "stop": tenacity.stop_after_attempt(policy.attempts),
        "wait": wait,
        "retry": tenacity.retry_if_exception(retryable),
        "before_sleep": before_sleep,
        "reraise": True,
    }


async def retry_async(
    call: Callable[[], Awaitable[T]],
    *,
    policy: RetryPolicy,
    service: str,
    operation: str,
    retryable: Callable[[BaseException], bool],
    level: int = logging.WARNING,
) -> T:
    """``await call()``, tried again under ``policy`` while it raises a ``retryable`` error.

    The last error propagates unchanged once the attempts are spent (or at once, for an
    error that is not retryable); cancellation is never retried. Attempts are logged at
    ``level`` (an expected race, e.g. for a unique key, logs at DEBUG).
    """
    retrying = tenacity.AsyncRetrying(
        sleep=asyncio.sleep, **_options(policy, service, operation, retryable, level)
    )
    async for attempt in retrying:
        with attempt:
            return await call()
    raise AssertionError("unreachable")  # pragma: no cover - reraise=True ends the loop


def retry_sync(
    call: Callable[[], T],
    *,
    policy: RetryPolicy,
    service: str,
    operation: str,
    retryable: Callable[[BaseException], bool],
    sleep: Callable[[float], None],
    level: int = logging.WARNING,
) -> T:
    """The same rules for a blocking call; ``sleep`` says how to wait (e.g. on the loop)."""
    retrying = tenacity.Retrying(
        sleep=sleep, **_options(policy, service, operation, retryable, level)
    )
    return retrying(call)
