"""The ``qdb`` command line, run as a user runs it."""

from __future__ import annotations

import re
import time
from pathlib import Path

import numpy as np
import pytest

from quantum_db import QuantumDatabase
from quantum_db.registry.schema import LeaseRow

from .clitools import qdb


def test_init_then_datasets(tmp_path: Path) -> None:
    out = qdb("init", cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    assert re.search(r"quantum_db\.sqlite: schema at revision \w+", out.stdout)
    assert qdb("datasets", cwd=tmp_path).stdout.strip() == "no datasets stored"
    health = qdb("health", cwd=tmp_path)
    assert health.returncode == 0, health.stderr
    assert re.search(r"quantum_db\.sqlite: schema at revision \w+ \(up to date\)", health.stdout)


def test_read_commands_create_nothing(tmp_path: Path) -> None:
    for command in ("datasets", "health", "runs"):
        out = qdb(command, cwd=tmp_path)
        assert out.returncode == 2
        assert out.stderr == (
            f"qdb {command}: no database at {tmp_path / 'quantum_db.sqlite'}; run `qdb init` "
            "(or `qdb init --url URL`) to create it\n"
        )
    assert list(tmp_path.iterdir()) == []


async def test_datasets_lists_what_is_stored(tmp_path: Path) -> None:
    url = f"sqlite+aiosqlite:///{tmp_path / 'q.sqlite'}"
    async with QuantumDatabase(url).connect() as db:
        await db.store_training_data("iris-like", np.zeros((30, 4)), np.arange(30) % 3)
    out = qdb("datasets", "--url", url, cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    assert re.search(r"iris-like\s+1\s+30\s+4\s+class", out.stdout)


async def test_runs_lists_runs_after_marking_the_dead_ones_interrupted(
    tmp_path: Path, database_url: str
) -> None:
    url = database_url
    async with QuantumDatabase(url).connect() as db:
        async with db.registry.session() as session:
            session.add(LeaseRow(id="d" * 32, host="h", pid=1, expires_at=time.time() - 5))
        await db.runs.create("done", backend="simulator")
        await db.metrics.log("done", {"loss": 0.1}, step=40)
        await db.runs.finish("done", "finished")
        await db.runs.create("broke", backend="ionq-aria")
        await db.runs.finish("broke", "failed", "RuntimeError: " + "very long error " * 20)
        await db.runs.create("orphan", owner_id="d" * 32)
        await db.checkpoints.save("orphan", 12, {"x": 1})

    out = qdb("runs", "--url", url, cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    lines = out.stdout.splitlines()
    assert re.match(r"run\s+status\s+reason\s+backend\s+last step\s+created$", lines[0])
    assert [line.split()[:2] for line in lines[1:]] == [
        ["done", "finished"],
        ["broke", "failed"],
        ["orphan", "interrupted"],
    ]
    date = r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d"
    assert re.match(rf"done\s+finished\s+-\s+simulator\s+40\s+{date}$", lines[1])
    # The reason is cut to fit one line.
    assert re.match(
        rf"broke\s+failed\s+RuntimeError: very long error very long error\.\.\.\s+ionq-aria\s+-\s+"
        rf"{date}$",
        lines[2],
    )
    assert re.match(r"orphan\s+interrupted\s+the process training it .*\.\.\.\s+-\s+12\s", lines[3])
    async with QuantumDatabase(url, create=False).connect() as db:
        orphan = await db.runs.get("orphan")
    assert orphan.status == "interrupted" and "d" * 32 in (orphan.reason or "")

    failed = qdb("runs", "--url", url, "--status", "failed", cwd=tmp_path)
    assert failed.returncode == 0, failed.stderr
    assert [line.split()[0] for line in failed.stdout.splitlines()[1:]] == ["broke"]
    none = qdb("runs", "--url", url, "--status", "running", cwd=tmp_path)
    assert (none.returncode, none.stdout) == (0, "no running runs\n")


async def test_runs_bad_status_is_one_line_and_changes_nothing(tmp_path: Path) -> None:
    url = f"sqlite+aiosqlite:///{tmp_path / 'q.sqlite'}"
    async with QuantumDatabase(url).connect() as db:
        async with db.registry.session() as session:
            session.add(LeaseRow(id="e" * 32, host="h", pid=1, expires_at=time.time() - 5))
        await db.runs.create("orphan", owner_id="e" * 32)
    bad = qdb("runs", "--url", url, "--status", "completed", cwd=tmp_path)
    assert bad.returncode == 2 and bad.stdout == ""
    assert bad.stderr == (
        "qdb runs: --status must be one of running, finished, stopped, failed, interrupted, "
        "got 'completed'\n"
    )
    async with QuantumDatabase(url, create=False).connect() as db:
        assert (await db.runs.get("orphan")).status == "running"  # nothing was detected
    empty = tmp_path / "empty"
    empty.mkdir()
    assert qdb("init", cwd=empty).returncode == 0
    out = qdb("runs", cwd=empty)
    assert (out.returncode, out.stdout, out.stderr) == (0, "no runs stored\n", "")


def test_bad_url_is_a_clear_error(tmp_path: Path) -> None:
    out = qdb("init", "--url", "mysql://nobody@nowhere/db", cwd=tmp_path)
    assert out.returncode == 2
    assert out.stderr.startswith("qdb init: unsupported database 'mysql'")
    assert len(out.stderr.splitlines()) == 1
    assert list(tmp_path.iterdir()) == []


def test_backends_lists_capabilities_and_prices(tmp_path: Path) -> None:
    out = qdb("backends", cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    assert re.search(
        r"^ionq-aria\s+25\s+shots\s+needs IONQ_API_KEY\s+\$12\.4166/job", out.stdout, flags=re.M
    )
    assert re.search(r"^ionq-forte\s+36", out.stdout, flags=re.M)
    assert re.search(r"^ionq-simulator\s+29\s+exact\+shots", out.stdout, flags=re.M)
    assert re.search(r"^simulator\s+\d+\s+exact\+shots\s+ready", out.stdout, flags=re.M)
    keyed = qdb("backends", cwd=tmp_path, env={"IONQ_API_KEY": "not-a-real-key-123"})
    assert "ready (IONQ_API_KEY set)" in keyed.stdout
    assert "not-a-real-key-123" not in keyed.stdout + keyed.stderr


def test_estimate_matches_the_formula(tmp_path: Path) -> None:
    out = qdb(
        "estimate",
        "--qubits",
        "4",
        "--layers",
        "2",
        "--shots",
        "100",
        "--epochs",
        "2",
        "--samples",
        "10",
        "--batch-size",
        "5",
        cwd=tmp_path,
    )
    assert out.returncode == 0, out.stderr
    # 4 qubits, 2 layers: 4 encoding + 24 rotations = 28 one-qubit gates, 2 x 3 CNOTs.
    per_job = 12.4166 + 0.000220 * 28 * 100 + 0.000975 * 6 * 100
    jobs = 2 * 10 * (2 * 24 + 1)
    line = next(x for x in out.stdout.splitlines() if x.startswith("ionq-aria "))
    assert f"{jobs:,} jobs of 100 shots at ${per_job:,.4f} each: ${jobs * per_job:,.2f}" in line
    mitigated = qdb("estimate", "--shots", "1000", cwd=tmp_path)
    line = next(x for x in mitigated.stdout.splitlines() if x.startswith("ionq-aria "))
    per_job = 97.50 + 0.000220 * 28 * 1000 + 0.000975 * 6 * 1000
    assert f"${per_job:,.4f} each" in line
    bad = qdb("estimate", "--epochs", "0", cwd=tmp_path)
    assert bad.returncode == 2 and "--epochs must be positive" in bad.stderr


def test_estimate_prices_a_qgan_per_job_and_per_generated_sample(tmp_path: Path) -> None:
    out = qdb(
        "estimate", "--qgan", "--qubits", "3", "--layers", "1", "--shots", "100",
        "--epochs", "2", "--steps", "3", cwd=tmp_path,
    )  # fmt: skip
    assert out.returncode == 0, out.stderr
    # Per step one distribution and 2 x 6 shifted ones (6 weights), one job each; every
    # shot is a generated sample.
    jobs = 2 * 3 * (2 * 6 + 1)
    line = next(x for x in out.stdout.splitlines() if x.startswith("ionq-aria "))
    found = re.search(r"([\d,]+) jobs of 100 shots at \$([\d.,]+) each: \$([\d.,]+); "
                      r"\$([\d.]+) per generated sample", line)  # fmt: skip
    assert found is not None, line
    count, per_job, total, per_sample = (float(g.replace(",", "")) for g in found.groups())
    assert count == jobs
    assert total == pytest.approx(jobs * per_job, abs=0.01)
    assert per_sample == pytest.approx(per_job / 100, abs=1e-6)
    assert "free" in next(x for x in out.stdout.splitlines() if x.startswith("simulator "))
    bad = qdb("estimate", "--qgan", "--exact", cwd=tmp_path)
    assert bad.returncode == 2 and "--qgan prices measured distributions" in bad.stderr


def test_demo_qgan_trains_and_registers_a_generator(tmp_path: Path) -> None:
    url = f"sqlite+aiosqlite:///{tmp_path / 'demo.sqlite'}"
    out = qdb("demo", "qgan", "--url", url, cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    found = re.search(r"relative entropy (\S+) -> (\S+); mode coverage (\S+)", out.stdout)
    assert found is not None, out.stdout
    first, last, coverage = (float(found.group(i).rstrip(";")) for i in (1, 2, 3))
    assert last < first and 0.0 <= coverage <= 1.0

    async def check() -> None:
        async with QuantumDatabase(url).connect() as db:
            version = await db.models.get("lognormal-qgan")
            assert version.encoding is not None and version.encoding["bits"] == [3]
            assert (
                version.metrics["relative_entropy"] == last
                or abs(version.metrics["relative_entropy"] - last) < 5e-5
            )

    import asyncio

    asyncio.run(check())
