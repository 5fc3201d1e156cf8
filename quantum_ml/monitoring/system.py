"""System metrics in the background, and a guard that keeps a run clear of the OOM killer.

:class:`SystemMetricsMonitor` samples CPU, memory and the process's RSS (and every GPU
through NVML, when ``pynvml`` and a driver are there) every ``interval_s`` seconds while
a run trains, with psutil, and logs them as ``system/...`` metrics at the run's current
step, named as MLflow names its system metrics (``system/cpu_utilization_percentage``,
``system/system_memory_usage_megabytes``...; ``system/process_rss_megabytes`` is ours).

A :class:`ResourceGuard` given to it looks at every sample: when the memory still
available falls below ``min_available_fraction`` of the total it raises the
``memory_headroom`` alert and lowers the simulators' working-set bound
(:meth:`SimulatorBackend.limit_memory`), so later batches run in fewer, smaller chunks;
the alert resolves once the headroom is back.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import psutil

from ..errors import MonitoringError
from ..training.callbacks import Callback, TrainingContext
from .alerts import publish

__all__ = ["ResourceGuard", "SystemMetricsMonitor", "sample_system_metrics"]

logger = logging.getLogger(__name__)

_MB = 1024.0 * 1024.0


def _gpu_metrics() -> dict[str, float]:
    """Per-GPU utilization and memory through NVML; nothing where there is no GPU."""
    try:
        import pynvml
    except ImportError:
        return {}
    try:
        pynvml.nvmlInit()
    except Exception:  # no driver, no device: NVML raises its own NVMLError kinds
        return {}
    out: dict[str, float] = {}
    try:
        for i in range(pynvml.nvmlDeviceGetCount()):
            handle = pynvml.nvmlDeviceGetHandleByIndex(i)
            util = pynvml.nvmlDeviceGetUtilizationRates(handle)
            memory = pynvml.nvmlDeviceGetMemoryInfo(handle)
            out[f"system/gpu_{i}_utilization_percentage"] = float(util.gpu)
            out[f"system/gpu_{i}_memory_usage_megabytes"] = float(memory.used) / _MB
            out[f"system/gpu_{i}_memory_usage_percentage"] = 100.0 * memory.used / memory.total
    except Exception as exc:  # a device that vanished mid-read: skip this sample's GPUs
        logger.debug("NVML read failed: %s", exc)
    finally:
        with contextlib.suppress(Exception):
            pynvml.nvmlShutdown()
    return out


def sample_system_metrics(*, gpu: bool = True) -> dict[str, float]:
    """One sample: CPU (since the previous call), system memory, this process's RSS."""
    memory = psutil.virtual_memory()
    values = {
        "system/cpu_utilization_percentage": float(psutil.cpu_percent(interval=None)),
        "system/system_memory_usage_megabytes": float(memory.used) / _MB,
        "system/system_memory_usage_percentage": float(memory.percent),
        "system/system_memory_available_megabytes": float(memory.available) / _MB,
        "system/process_rss_megabytes": float(psutil.Process(os.getpid()).memory_info().rss) / _MB,
    }
    if gpu:
        values.update(_gpu_metrics())
    return values


@dataclass(slots=True)
class ResourceGuard:
    """Alert and shrink the simulators' chunks when memory headroom runs low.

    ``min_available_fraction``: the share of total memory that must stay available.
    Each low sample lowers every simulator's bound to ``shrink_factor`` of the smaller of
    its bound and what the system has available, but never below ``floor_bytes``.
    """

    min_available_fraction: float = 0.10
    shrink_factor: float = 0.5
    floor_bytes: int = 64 << 20
    #: How many times the bound was lowered (for the run's log and tests).
    shrinks: int = field(default=0, init=False)
    _low: bool = field(default=False, init=False)

    def __post_init__(self) -> None:
        if not 0 < self.min_available_fraction < 1:
            raise MonitoringError(
                "min_available_fraction is a share of memory in (0, 1), got "
                f"{self.min_available_fraction!r}"
            )
        if not 0 < self.shrink_factor < 1:
            raise MonitoringError(f"shrink_factor must be in (0, 1), got {self.shrink_factor!r}")
        if self.floor_bytes <= 0:
            raise MonitoringError(f"floor_bytes must be positive, got {self.floor_bytes!r}")

    async def check(self, ctx: TrainingContext, step: int) -> bool:
        """Whether headroom is low now; acts on it (alert, shrink) or resolves the alert."""
        memory = psutil.virtual_memory()
        fraction = float(memory.available) / float(memory.total)
        low = fraction < self.min_available_fraction
        db = ctx.db
        if low:
            # Each low sample lowers the bound again, below both what it was and what is
            # available now, until the floor.
            bounds = [
                sim.limit_memory(
                    max(
                        self.floor_bytes,
                        int(min(sim.max_memory_bytes, memory.available) * self.shrink_factor),
                    )
                )
                for sim in _simulators(ctx)
            ]
            self.shrinks += 1
            if db is not None:
                await db.alerts.fire(
                    ctx.run_id,
                    "memory_headroom",
                    f"only {fraction:.1%} of memory is available (guard at "
                    f"{self.min_available_fraction:.0%}); simulator working sets lowered to "
                    + (", ".join(f"{b / _MB:.0f} MiB" for b in bounds) or "- (no simulator)"),
                    severity="warning",
                    metric_key="system/system_memory_available_megabytes",
                    value=float(memory.available) / _MB,
                    threshold=self.min_available_fraction * float(memory.total) / _MB,
                    step=step,
                )
        elif self._low and db is not None:
            await db.alerts.resolve(ctx.run_id, "memory_headroom", step=step)
        self._low = low
        return low


def _simulators(ctx: TrainingContext) -> list[Any]:
    """The built-in simulators a run may use: its backend's and the manager's."""
    from backends.simulator import SimulatorBackend

    found: list[Any] = []
    backend = ctx.backend
    for candidate in (backend, getattr(backend, "inner", None)):
        if isinstance(candidate, SimulatorBackend) and candidate not in found:
            found.append(candidate)
    manager = getattr(ctx.db, "backend_manager", None) if ctx.db is not None else None
    if manager is None:
        return found
    for name in manager.names():
        with contextlib.suppress(Exception):  # a backend that cannot load is not a simulator
            candidate = manager.get(name)
            if isinstance(candidate, SimulatorBackend) and candidate not in found:
                found.append(candidate)
    return found


class SystemMetricsMonitor(Callback):
    """Samples system metrics every ``interval_s`` seconds in the background of a run.

    The first sample is taken when training begins and the last when it ends, so even a
    short run has two. ``guard`` (a :class:`ResourceGuard`) checks each sample.
    """

    def __init__(
        self, interval_s: float = 5.0, *, guard: ResourceGuard | None = None, gpu: bool = True
    ) -> None:
        if isinstance(interval_s, bool) or not isinstance(interval_s, int | float):
            raise MonitoringError(f"interval_s must be a number of seconds, got {interval_s!r}")
        if not interval_s > 0:
            raise MonitoringError(f"interval_s must be > 0 seconds, got {interval_s!r}")
        self.interval_s = float(interval_s)
        self.guard = guard
        self.gpu = gpu
        self.samples = 0
        self._task: asyncio.Task[None] | None = None

    async def on_train_begin(self, ctx: TrainingContext) -> None:
        psutil.cpu_percent(interval=None)  # primes the CPU counter: the next call measures
        await self._sample(ctx)
        self._task = asyncio.create_task(self._run(ctx), name=f"qdb-system-metrics-{ctx.run_id}")

    async def _run(self, ctx: TrainingContext) -> None:
        while True:
            await asyncio.sleep(self.interval_s)
            try:
                await self._sample(ctx)
            except Exception as exc:  # a monitor never takes a run down: log, keep sampling
                logger.warning("system metrics of run %r not recorded: %s", ctx.run_id, exc)

    async def _sample(self, ctx: TrainingContext) -> None:
        values = await asyncio.to_thread(sample_system_metrics, gpu=self.gpu)
        step = int(getattr(ctx.state, "step", 0))
        if ctx.db is not None:
            await ctx.db.metrics.log(ctx.run_id, values, step, timestamp=time.time())
        publish(ctx, values)
        self.samples += 1
        if self.guard is not None:
            await self.guard.check(ctx, step)

    async def _stop(self, ctx: TrainingContext, final_sample: bool) -> None:
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        if final_sample:
            await self._sample(ctx)

    async def on_train_end(self, ctx: TrainingContext) -> None:
        await self._stop(ctx, final_sample=True)

    async def on_exception(self, ctx: TrainingContext, exc: BaseException) -> None:
        await self._stop(ctx, final_sample=False)

    def state_dict(self) -> dict[str, Any]:
        return {}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        return None
