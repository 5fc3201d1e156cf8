"""The ``qdb`` command line, run as a user runs it."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np

from quantum_db import QuantumDatabase

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
    for command in ("datasets", "health"):
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
