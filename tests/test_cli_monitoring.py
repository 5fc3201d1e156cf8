"""Every inspecting command of ``qdb`` on a database the real demo populated, ``--json``
parsed and compared with the registry; the bad inputs each one line and exit 2."""

from __future__ import annotations

import asyncio
import json
import socket
from pathlib import Path
from typing import Any

import pytest

from backends import Budget
from quantum_db import QuantumDatabase
from quantum_ml.cli import main
from quantum_ml.training_demo import MODEL_NAME, DemoResult, run_training_demo

from .clitools import copy_sqlite, qdb


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, DemoResult]:
    """One database trained by the real demo, with an alert and a budget's ledger."""
    path = tmp_path_factory.mktemp("cli") / "demo.sqlite"
    url = f"sqlite:///{path}"
    result = asyncio.run(run_training_demo(url, budget_usd=5.0, verbose=False))

    async def extra() -> None:
        async with QuantumDatabase(url).connect() as db:
            await db.alerts.fire(
                result.run_id, "loss_high", "loss > 0.1", severity="error", value=0.3, step=4
            )
            budget = Budget(usd=2.0, name="lab")
            await db.accounting.reserve(budget, "job-a", 0.25)
            await db.accounting.settle("job-a", 0.2)
            await db.accounting.reserve(budget, "job-b", 0.5)

    asyncio.run(extra())
    return path, result


@pytest.fixture
def url(demo: tuple[Path, DemoResult], tmp_path: Path) -> str:
    return copy_sqlite(demo[0], tmp_path)


def run(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    code = main(list(args))
    out = capsys.readouterr()
    return code, out.out, out.err


def as_json(capsys: pytest.CaptureFixture[str], *args: str) -> Any:
    code, out, err = run(capsys, *args, "--json")
    assert code == 0, err
    return json.loads(out)


def one_line(err: str, command: str, *needles: str) -> None:
    lines = err.splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith(f"{command}: "), err
    for needle in needles:
        assert needle in lines[0], err
    assert "Traceback" not in err


async def _registry(url: str, run_id: str) -> dict[str, Any]:
    async with QuantumDatabase(url, create=False).connect() as db:
        keys = await db.metrics.keys(run_id)
        loss = await db.metrics.history(run_id, "loss")
        jobs = await db.accounting.jobs(run_id=run_id)
        return {"keys": keys, "loss": loss, "jobs": jobs}


def test_every_command_as_json(
    capsys: pytest.CaptureFixture[str], url: str, demo: tuple[Path, DemoResult]
) -> None:
    run_id = demo[1].run_id
    stored = asyncio.run(_registry(url, run_id))
    runs = as_json(capsys, "--url", url, "runs")
    assert [(r["id"], r["status"]) for r in runs] == [(run_id, "finished")]
    assert runs[0]["last_step"] == int(stored["loss"].steps[-1])
    shown = as_json(capsys, "runs", "show", run_id, "--url", url)
    assert shown["jobs"]["total"] == len(stored["jobs"]) and shown["models"] == [f"{MODEL_NAME} v1"]
    assert shown["alerts"] == {"total": 1, "open": 1}
    assert [m["key"] for m in shown["metrics"]] == stored["keys"]
    # The global --url and the command's own are the same setting.
    assert as_json(capsys, "--url", url, "runs", "show", run_id) == shown
    summary = {m["key"]: m for m in as_json(capsys, "metrics", run_id, "--url", url)}
    assert set(summary) == set(stored["keys"])
    assert {"loss", "grad_norm", "entanglement/half_chain", "system/process_rss_megabytes"} <= set(
        summary
    )
    assert summary["loss"]["count"] == len(stored["loss"])
    assert summary["loss"]["min"] == pytest.approx(float(stored["loss"].values.min()))
    series = as_json(capsys, "metrics", run_id, "loss", "--url", url)
    assert [p["step"] for p in series["points"]] == [int(s) for s in stored["loss"].steps]
    assert [p["value"] for p in series["points"]] == [float(v) for v in stored["loss"].values]
    jobs = as_json(capsys, "jobs", run_id, "--url", url)
    assert [j["id"] for j in jobs] == [j.id for j in stored["jobs"]]
    assert {j["backend"] for j in jobs} == {"simulator"}
    # Every job, the run's and the demo's test pass (sent outside the run).
    every = as_json(capsys, "jobs", "--url", url)
    assert {j["id"] for j in jobs} < {j["id"] for j in every}
    budgets = {b["budget"]: b for b in as_json(capsys, "costs", "--url", url)}
    assert budgets["lab"]["spent_usd"] == pytest.approx(0.2)
    assert budgets["lab"]["reserved_usd"] == pytest.approx(0.5)
    assert budgets["lab"]["remaining_usd"] == pytest.approx(1.3)
    ledger = as_json(capsys, "costs", "--budget", "lab", "--url", url)
    assert [e["kind"] for e in ledger["entries"]].count("charge") == 1
    assert sum(e["amount_usd"] for e in ledger["entries"]) == pytest.approx(0.7)
    models = as_json(capsys, "models", "--url", url)
    assert [(m["name"], m["version"], m["run_id"]) for m in models] == [(MODEL_NAME, 1, run_id)]
    alerts = as_json(capsys, "alerts", run_id, "--url", url)
    assert [(a["rule"], a["severity"], a["step"], a["resolved_at"]) for a in alerts] == [
        ("loss_high", "error", 4, None)
    ]
    checked = as_json(capsys, "alerts", run_id, "--rule", "loss > 0.5 for 2", "--url", url)
    above = [v > 0.5 for v in stored["loss"].values]
    first = next(i for i in range(1, len(above)) if above[i] and above[i - 1])
    assert checked[0]["event"] == "fired" and checked[0]["step"] == int(stored["loss"].steps[first])
    datasets = as_json(capsys, "datasets", "--url", url)
    assert [(d["name"], d["version"]) for d in datasets] == [("moons", 1)]
    assert {b["name"] for b in as_json(capsys, "backends")} >= {"simulator", "aer"}


def test_tables_and_the_alerts_listing(
    capsys: pytest.CaptureFixture[str], url: str, demo: tuple[Path, DemoResult]
) -> None:
    run_id = demo[1].run_id
    code, out, err = run(capsys, "alerts", "--url", url)
    assert code == 0, err
    header, row = out.splitlines()
    assert header.split()[:5] == ["id", "run", "severity", "rule", "step"]
    assert row.split()[1:7] == [run_id, "error", "loss_high", "4", "1", "open"]
    code, out, _ = run(capsys, "metrics", run_id, "--url", url)
    assert code == 0 and any(line.startswith("loss ") for line in out.splitlines())
    code, out, _ = run(capsys, "costs", "--url", url)
    assert code == 0 and "lab" in out and "$0.2000" in out


def test_files_exports_and_the_dashboard(
    capsys: pytest.CaptureFixture[str],
    url: str,
    demo: tuple[Path, DemoResult],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    run_id = demo[1].run_id
    exported = as_json(
        capsys, "export", run_id, "--to", "json", "--out", str(tmp_path / "x"), "--url", url
    )
    metrics_file = next(Path(p) for p in exported["files"] if ".metrics." in p)
    rows = json.loads(metrics_file.read_text())
    stored = asyncio.run(_registry(url, run_id))
    assert sum(1 for r in rows if r["key"] == "loss") == len(stored["loss"])
    monkeypatch.setenv("MLFLOW_ALLOW_FILE_STORE", "true")
    uri = (tmp_path / "mlruns").as_uri()
    first = as_json(capsys, "export", run_id, "--to", "mlflow", "--tracking-uri", uri, "--url", url)
    again = as_json(capsys, "export", run_id, "--to", "mlflow", "--tracking-uri", uri, "--url", url)
    assert first["metrics_sent"] > 0 and not first["resumed"]
    assert again["resumed"] and again["metrics_sent"] == 0
    assert again["mlflow_run_id"] == first["mlflow_run_id"]
    board = as_json(capsys, "dashboard", run_id, "--out", str(tmp_path / "board"), "--url", url)
    html = Path(board["html"]).read_text()
    assert run_id in html and '<script src="http' not in html
    assert board["pngs"] and all(
        Path(p).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" for p in board["pngs"]
    )


def test_bad_inputs_are_one_line_and_exit_2(
    capsys: pytest.CaptureFixture[str], url: str, demo: tuple[Path, DemoResult]
) -> None:
    run_id = demo[1].run_id
    for command in (
        ["metrics", "ghost"],
        ["runs", "show", "ghost"],
        ["jobs", "ghost"],
        ["alerts", "ghost"],
        ["dashboard", "ghost"],
        ["export", "ghost", "--to", "csv"],
    ):
        code, out, err = run(capsys, *command, "--url", url)
        assert (code, out) == (2, ""), err
        name = "qdb runs show" if command[:2] == ["runs", "show"] else f"qdb {command[0]}"
        one_line(err, name, "no run 'ghost'")
    code, _, err = run(capsys, "metrics", run_id, "vall_loss", "--url", url)
    assert code == 2
    one_line(err, "qdb metrics", "no metric 'vall_loss'", "did you mean 'val_loss'")
    code, _, err = run(capsys, "alerts", run_id, "--rule", "vall_loss > 1", "--url", url)
    assert code == 2
    one_line(err, "qdb alerts", "has no metric 'vall_loss'")
    code, _, err = run(capsys, "alerts", run_id, "--rule", "loss is big", "--url", url)
    assert code == 2
    one_line(err, "qdb alerts", "cannot read the alert rule")
    code, _, err = run(capsys, "costs", "--budget", "nope", "--url", url)
    assert code == 2
    one_line(err, "qdb costs", "no budget 'nope'", "lab")
    with socket.socket() as closed:
        closed.bind(("127.0.0.1", 0))
        port = closed.getsockname()[1]
    code, _, err = run(
        capsys,
        "export",
        run_id,
        "--to",
        "mlflow",
        "--tracking-uri",
        f"http://127.0.0.1:{port}",
        "--url",
        url,
    )
    assert code == 2
    one_line(err, "qdb export", f"127.0.0.1:{port}")


def test_ui_on_a_taken_port(tmp_path: Path, url: str) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        out = qdb("ui", "--port", str(port), "--url", url, cwd=tmp_path, timeout=60)
    assert out.returncode == 2
    line = [x for x in out.stderr.splitlines() if x.startswith("qdb ui:") and "taken" in x]
    assert line and str(port) in line[0], out.stderr
    assert "Traceback" not in out.stderr


def test_reading_commands_never_create_a_database(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    missing = tmp_path / "typo" / "q.sqlite"
    for command in (
        ["runs"],
        ["runs", "show", "r"],
        ["metrics", "r"],
        ["jobs"],
        ["costs"],
        ["models"],
        ["alerts"],
        ["datasets"],
        ["dashboard", "r"],
        ["export", "r", "--to", "csv"],
    ):
        code, _, err = run(capsys, *command, "--url", f"sqlite:///{missing}")
        assert code == 2, (command, err)
        assert "no database" in err, err
    assert not missing.parent.exists()


def test_help_shows_defaults_and_completion_is_offered(tmp_path: Path) -> None:
    out = qdb("estimate", "--help", cwd=tmp_path)
    assert out.returncode == 0
    assert "[default: 20]" in out.stdout  # --epochs
    top = qdb("--help", cwd=tmp_path)
    assert "--install-completion" in top.stdout and "QDB_DATABASE_URL" in top.stdout
    for command in (
        "runs",
        "metrics",
        "jobs",
        "costs",
        "models",
        "alerts",
        "dashboard",
        "ui",
        "export",
    ):
        assert command in top.stdout
