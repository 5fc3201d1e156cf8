"""How much memory a simulator may plan with."""

from __future__ import annotations

import os

__all__ = ["available_memory"]


def available_memory() -> int:
    """Bytes of memory available now (``MemAvailable``), or physical memory as a fallback."""
    try:
        with open("/proc/meminfo", encoding="ascii") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return int(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES"))
