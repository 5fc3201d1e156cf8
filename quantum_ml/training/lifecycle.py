"""A run's life in the registry, shared by every loop that trains (trainer, QGAN).

A fresh run is created ``running`` (a run killed before its first checkpoint is taken
over and its metric rows dropped); a resumed one is found interrupted if its process died,
has the metric rows written after its checkpoint dropped (they are written again), and is
started again. It ends ``finished``, ``stopped`` (with the reason), ``interrupted``
(SIGINT/SIGTERM, a cancelled task) or ``failed`` (with the error). SIGINT and SIGTERM are
turned into a stop request at the next step boundary by :class:`SignalWatch`.
"""

from __future__ import annotations

import asyncio
import logging
import signal
import threading
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any

from quantum_db.errors import RunExistsError

if TYPE_CHECKING:
    from quantum_db.database import QuantumDatabase

__all__ = ["SignalWatch", "begin_run", "end_run", "record_failure"]

logger = logging.getLogger(__name__)


class SignalWatch:
    """Remembers a SIGINT/SIGTERM (``received``) instead of letting it kill the loop."""

    def __init__(self) -> None:
        self.received: int | None = None

    @property
    def name(self) -> str:
        return signal.Signals(self.received).name if self.received is not None else ""

    def _request_stop(self, signum: int) -> None:
        self.received = signum

    def install(self) -> Callable[[], None]:
        """Install the handlers; returns the undo.

        Only possible in the main thread on an event loop that supports signal handlers
        (not on Windows); elsewhere nothing is installed and signals act as before.
        """
        self.received = None
        if threading.current_thread() is not threading.main_thread():
            return lambda: None
        loop = asyncio.get_running_loop()
        installed: list[tuple[signal.Signals, Any]] = []
        for sig in (signal.SIGINT, signal.SIGTERM):
            try:
                previous = signal.getsignal(sig)
                loop.add_signal_handler(sig, self._request_stop, int(sig))
            except (NotImplementedError, RuntimeError, ValueError, OSError):
                continue
            installed.append((sig, previous))

        def restore() -> None:
            for sig, previous in installed:
                try:
                    loop.remove_signal_handler(sig)
                    if previous is not None:
                        signal.signal(sig, previous)
                except (RuntimeError, ValueError, OSError):  # pragma: no cover - loop closed
                    pass
            installed.clear()

        return restore


async def begin_run(
    db: QuantumDatabase,
    run_id: str,
    *,
    resume_step: int | None,
    config: Mapping[str, Any],
    backend: str,
    seed: int,
) -> None:
    """Record the run ``running``: resumed after ``resume_step`` (its checkpoint's step),
    or fresh when ``resume_step`` is ``None``."""
    if resume_step is not None:
        # A run left `running` by a dead process is recorded interrupted before resuming.
        await db.runs.detect_interrupted(run_id)
        # Rows written after the checkpoint are written again: replace, never duplicate.
        await db.metrics.truncate_after(run_id, resume_step)
        await db.runs.start(run_id, db.owner_id)
        return
    try:
        await db.runs.create(
            run_id, config=dict(config), backend=backend, seed=seed, owner_id=db.owner_id
        )
    except RunExistsError:  # started, then killed before its first checkpoint
        await db.runs.detect_interrupted(run_id)
        await db.metrics.truncate_after(run_id, 0)
        await db.runs.start(run_id, db.owner_id)


async def end_run(
    db: QuantumDatabase, run_id: str, reason: str | None, message: str | None
) -> None:
    """Flush what the run wrote and record how it ended (``reason`` ``None``: finished)."""
    await db.metrics.flush()
    await db.backend_manager.flush_jobs()
    if reason is None:
        await db.runs.finish(run_id, "finished")
    elif reason == "interrupted":
        await db.runs.finish(run_id, "interrupted", message or reason)
    else:
        await db.runs.finish(run_id, "stopped", f"{reason}: {message or reason}")


async def record_failure(db: QuantumDatabase, run_id: str, exc: BaseException) -> None:
    """Record why the run ended with an error (a cancelled run is interrupted)."""
    try:
        await asyncio.shield(db.metrics.flush())
    except Exception as flush_error:  # the original error is what matters
        logger.warning("could not flush the metrics of run %r: %s", run_id, flush_error)
    status = (
        "interrupted" if isinstance(exc, asyncio.CancelledError | KeyboardInterrupt) else "failed"
    )
    reason = f"{type(exc).__name__}: {exc}" if status == "failed" else "cancelled"
    try:
        await asyncio.shield(db.runs.finish(run_id, status, reason))
    except Exception as record_error:
        logger.warning("could not record the end of run %r: %s", run_id, record_error)
