"""The real ``qdb`` command line in a fresh process, as a user runs it, for the CLI tests."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def qdb(
    *args: str, cwd: Path, env: dict[str, str] | None = None, timeout: float = 600
) -> subprocess.CompletedProcess[str]:
    """``qdb ARGS`` in ``cwd``, with none of the caller's QDB_/IONQ_/PINECONE_ settings."""
    clean = {
        k: v for k, v in os.environ.items() if not k.startswith(("QDB_", "IONQ_", "PINECONE_"))
    }
    return subprocess.run(
        [sys.executable, "-m", "quantum_ml.cli", *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        env={**clean, "PYTHONPATH": str(ROOT), **(env or {})},
        timeout=timeout,
        check=False,
    )


def kill_at_step(command: list[str], step: int, *, cwd: Path) -> int:
    """Run ``command`` (a training script printing ``step N ...`` lines), SIGKILL it once
    it has printed step ``step`` or later, and return the last step it printed."""
    import signal

    proc = subprocess.Popen(
        command, cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True
    )
    assert proc.stdout is not None
    seen = 0
    for line in proc.stdout:
        if line.startswith("step "):
            seen = int(line.split()[1])
            if seen >= step:
                os.kill(proc.pid, signal.SIGKILL)
                break
    proc.stdout.close()
    assert proc.wait(timeout=60) == -signal.SIGKILL, "the run ended before it was killed"
    return seen


def copy_sqlite(source: Path, folder: Path) -> str:
    """A copy of the SQLite database ``source`` (its WAL files too) in ``folder``: its URL."""
    import shutil

    for sidecar in source.parent.glob(source.name + "*"):
        shutil.copy(sidecar, folder / sidecar.name)
    return f"sqlite:///{folder / source.name}"
