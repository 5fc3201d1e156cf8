"""Measure how long an awaited call holds the event loop (for "does not block" tests)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable
from typing import TypeVar

T = TypeVar("T")


async def longest_stall(awaitable: Awaitable[T]) -> tuple[T, float, float]:
    """Await ``awaitable`` while a 1 ms ticker runs; return (result, longest gap, duration).

    A call that blocks the loop shows one gap about as long as the call itself; one that
    leaves the loop free shows only short gaps.
    """
    gaps: list[float] = [0.0]
    done = asyncio.Event()

    async def ticker() -> None:
        last = time.perf_counter()
        while not done.is_set():
            await asyncio.sleep(0.001)
            now = time.perf_counter()
            gaps.append(now - last)
            last = now

    task = asyncio.create_task(ticker())
    started = time.perf_counter()
    try:
        result = await awaitable
    finally:
        duration = time.perf_counter() - started
        done.set()
        await task
    return result, max(gaps), duration
