"""``qdb dashboard``: the run report and the self-contained HTML file + PNGs it writes,
checked against what the registry holds (a real demo run and a synthetic GAN-like run)."""

from __future__ import annotations

import asyncio
import json
import re
import subprocess
from collections import Counter
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
import pytest
from sqlalchemy import select, update

from quantum_db import QuantumDatabase
from quantum_db.errors import RunNotFoundError
from quantum_db.registry.schema import BudgetRow, JobRow, LedgerRow, RunRow
from quantum_ml.errors import DashboardError
from quantum_ml.monitoring.dashboard import HTML_NAME, PLOTS, write_dashboard
from quantum_ml.monitoring.report import (
    METRIC_GROUPS,
    _alert_info,
    load_run_report,
    load_run_summaries,
    metric_group,
)
from quantum_ml.training_demo import run_training_demo

CHROMIUM = Path("/usr/bin/chromium")
SYNTHETIC = "qgan-synthetic"
LIMIT_USD = 1.0
_TIME_GROUPS = ("cost", "system")
_DATA = re.compile(r'<script type="application/json" id="qdb-data">(.*?)</script>', re.S)


async def _add_synthetic_run(url: str) -> None:
    """A GAN-like run with distribution, cost, lr and system metrics, jobs on two backends
    charged against one budget, and two alerts; plus a job of another run on that budget."""
    async with QuantumDatabase(url).connect() as db:
        run = await db.runs.create(SYNTHETIC, backend="fake.qpu", seed=3, config={"kind": "qgan"})
        # Created 30 s ago, so that every point below is logged before the alerts.
        t0 = run.created_at - 30
        async with db.registry.session() as session:
            await session.execute(
                update(RunRow).where(RunRow.id == SYNTHETIC).values(created_at=t0)
            )
        for step in range(1, 21):
            at = t0 + step
            await db.metrics.log(
                SYNTHETIC,
                {"step_generator_loss": 1.0 / step, "step_discriminator_loss": 0.5 + 0.01 * step},
                step,
                timestamp=at,
            )
            if step % 5 == 0:
                await db.metrics.log(
                    SYNTHETIC,
                    {
                        "relative_entropy": 2.0 / step,
                        "jensen_shannon": 0.3 / step,
                        "mode_coverage": step / 20,
                        "mmd": 0.1 / step,
                        "generator_lr": 0.01,
                        "cost_usd": 0.1 * step / 5,
                        "system/cpu_utilization_percentage": 50.0 + step,
                    },
                    step,
                    timestamp=at + 0.5,
                )
        await db.metrics.flush()
        async with db.registry.session() as session:
            session.add(BudgetRow(id="synthetic-budget", limit_usd=LIMIT_USD, created_at=t0))
            jobs = [("fake.qpu", "completed")] * 4 + [
                ("fake.qpu", "failed"),
                ("fake.sim", "completed"),
            ]
            for i, (backend, status) in enumerate(jobs):
                charged = backend == "fake.qpu" and status == "completed"
                session.add(
                    JobRow(
                        id=f"job-{i}",
                        run_id=SYNTHETIC,
                        backend=backend,
                        circuit_hash="0" * 64,
                        status=status,
                        estimated_cost=0.1 if charged else 0.0,
                        actual_cost=0.1 if charged else None,
                        created_at=t0 + 1 + 3 * i,
                    )
                )
                if charged:
                    for kind, amount, dt in (
                        ("reservation", 0.1, 0),
                        ("release", -0.1, 1),
                        ("charge", 0.1, 1),
                    ):
                        session.add(
                            LedgerRow(
                                budget_id="synthetic-budget",
                                job_id=f"job-{i}",
                                kind=kind,
                                amount_usd=amount,
                                created_at=t0 + 2 + 3 * i + dt,
                            )
                        )
            # Another run's job on the same budget: not this run's spend.
            session.add(
                JobRow(
                    id="other-job",
                    run_id=None,
                    backend="fake.qpu",
                    circuit_hash="1" * 64,
                    status="completed",
                    actual_cost=0.3,
                    created_at=t0,
                )
            )
            session.add(
                LedgerRow(
                    budget_id="synthetic-budget",
                    job_id="other-job",
                    kind="charge",
                    amount_usd=0.3,
                    created_at=t0 + 1,
                )
            )
        await db.alerts.raise_alert(
            SYNTHETIC,
            "mode_collapse",
            "coverage fell",
            metric_key="mode_coverage",
            value=0.25,
            threshold=0.5,
        )
        await db.alerts.raise_alert(SYNTHETIC, "cost", "half the budget spent")
        await db.runs.finish(SYNTHETIC, "finished")


@pytest.fixture(scope="module")
def database(tmp_path_factory: pytest.TempPathFactory) -> tuple[str, str]:
    """``(url, demo run id)``: the real demo run with an alert, and the synthetic run. No
    test writes to it."""
    url = f"sqlite:///{tmp_path_factory.mktemp('dashboard') / 'runs.db'}"

    async def build() -> str:
        demo = await run_training_demo(url, budget_usd=5.0, verbose=False)
        async with QuantumDatabase(url).connect() as db:
            await db.alerts.raise_alert(
                demo.run_id,
                "loss_threshold",
                "loss above 0.5 <b>",
                metric_key="loss",
                value=1.0,
                threshold=0.5,
            )
        await _add_synthetic_run(url)
        return demo.run_id

    return url, asyncio.run(build())


def _embedded(page: str) -> dict[str, Any]:
    found = _DATA.search(page)
    assert found is not None, "no qdb-data JSON in the page"
    data: dict[str, Any] = json.loads(found.group(1))
    return data


async def check_figures(db: QuantumDatabase, data: dict[str, Any]) -> dict[str, int]:
    """Every plotted trace against the registry; returns the expected points per plot."""
    import plotly.graph_objects as go

    run = data["report"]["run"]
    run_id, start = run["id"], run["created_at"]
    figures = {f["id"]: f for f in data["figures"]}
    assert list(figures) == [p for p, _ in PLOTS if p in figures]
    assert set(figures).isdisjoint(o["id"] for o in data["omitted"])
    assert set(figures) | {o["id"] for o in data["omitted"]} == {p for p, _ in PLOTS}
    expected: dict[str, int] = {}
    plotted_keys = set()
    for plot_id, fig in figures.items():
        go.Figure(fig["figure"])  # a valid Plotly figure
        traces = fig["figure"]["data"]
        assert fig["points"] == sum(len(t["x"]) for t in traces) > 0
        if plot_id not in METRIC_GROUPS:
            continue
        for trace in traces:
            if trace["name"] == "charged (budget ledger)":
                continue
            history = await db.metrics.history(run_id, trace["name"])
            assert metric_group(trace["name"]) == plot_id
            if plot_id in _TIME_GROUPS:
                assert trace["x"] == [t - start for t in history.timestamps.tolist()]
            else:
                assert trace["x"] == history.steps.tolist()
            assert trace["y"] == history.values.tolist()
            plotted_keys.add(trace["name"])
            expected[plot_id] = expected.get(plot_id, 0) + len(history)
    assert plotted_keys == set(await db.metrics.keys(run_id))

    async with db.registry.session() as session:
        jobs = (
            await session.execute(
                select(JobRow.backend, JobRow.status, JobRow.created_at)
                .where(JobRow.run_id == run_id)
                .order_by(JobRow.created_at, JobRow.id)
            )
        ).all()
        charges = (
            await session.execute(
                select(LedgerRow.amount_usd, LedgerRow.created_at)
                .join(JobRow, JobRow.id == LedgerRow.job_id)
                .where(JobRow.run_id == run_id, LedgerRow.kind == "charge")
                .order_by(LedgerRow.created_at, LedgerRow.id)
            )
        ).all()
    counts = Counter((j.backend, j.status) for j in jobs)
    bars = {
        (backend, t["name"]): n
        for t in figures["jobs"]["figure"]["data"]
        for backend, n in zip(t["x"], t["y"], strict=True)
    }
    assert bars == dict(counts)
    expected["jobs"] = len(counts)
    timeline = {t["name"]: t for t in figures["jobs_timeline"]["figure"]["data"]}
    for backend in {j.backend for j in jobs}:
        times = [j.created_at - start for j in jobs if j.backend == backend]
        assert timeline[backend]["x"] == times
        assert timeline[backend]["y"] == list(range(1, len(times) + 1))
    expected["jobs_timeline"] = len(jobs)

    cost_traces = {t["name"]: t for t in figures["cost"]["figure"]["data"]}
    if charges:
        ledger = cost_traces["charged (budget ledger)"]
        assert ledger["x"] == [c.created_at - start for c in charges]
        assert ledger["y"] == pytest.approx(np.cumsum([c.amount_usd for c in charges]).tolist())
        expected["cost"] += len(charges)
    else:
        assert "charged (budget ledger)" not in cost_traces

    alerts = await db.alerts.list(run_id)
    if alerts:
        shown = [x for t in figures["alerts"]["figure"]["data"] for x in t["x"]]
        assert sorted(shown) == sorted(a.created_at - start for a in alerts)
        texts = [x for t in figures["alerts"]["figure"]["data"] for x in t["text"]]
        assert sorted(texts) == sorted(f"{a.kind}: {a.message}" for a in alerts)
        expected["alerts"] = len(alerts)
    assert {p: f["points"] for p, f in figures.items()} == expected
    return expected


async def test_report_matches_registry(database: tuple[str, str]) -> None:
    url, demo = database
    async with QuantumDatabase(url, create=False).connect() as db:
        for run_id in (demo, SYNTHETIC):
            report = await load_run_report(db, run_id)
            info = await db.runs.get(run_id)
            assert report.run.id == info.id and report.run.status == info.status == "finished"
            assert report.run.config == info.config and report.run.backend == info.backend
            assert list(report.metrics) == await db.metrics.keys(run_id)
            for key, series in report.metrics.items():
                history = await db.metrics.history(run_id, key)
                assert list(series.steps) == history.steps.tolist()
                assert list(series.values) == history.values.tolist()
                assert list(series.timestamps) == history.timestamps.tolist()
            assert [a.id for a in report.alerts] == [a.id for a in await db.alerts.list(run_id)]
            json.dumps(report.to_dict(), allow_nan=False)  # JSON-ready
        synthetic = await load_run_report(db, SYNTHETIC)
        assert synthetic.spend.budget_id == "synthetic-budget"
        assert synthetic.spend.limit_usd == LIMIT_USD
        assert synthetic.spend.spent_usd == pytest.approx(0.4)  # not the other run's 0.3
        assert synthetic.spend.actual_cost_usd == pytest.approx(0.4)
        assert {j.backend: dict(j.by_status) for j in synthetic.jobs} == {
            "fake.qpu": {"completed": 4, "failed": 1},
            "fake.sim": {"completed": 1},
        }
        assert set(synthetic.groups) == {"losses", "distribution", "cost", "system", "other"}
        # The alerts have no step: placed at the last step logged by their time.
        last = max(s.steps[-1] for s in synthetic.metrics.values())
        assert [a.plot_step for a in synthetic.alerts] == [last, last]
        demo_report = await load_run_report(db, demo)
        assert demo_report.spend.limit_usd is None and demo_report.spend.spent_usd == 0.0

        summaries = {s.id: s for s in await load_run_summaries(db)}
        assert set(summaries) == {demo, SYNTHETIC}
        best = summaries[demo].best
        assert best is not None and (best.key, best.mode) == ("val_loss", "min")
        assert best.value == (await db.metrics.history(demo, "val_loss")).values.min()
        gan_best = summaries[SYNTHETIC].best
        assert gan_best is not None and gan_best.key == "relative_entropy"
        assert gan_best.value == pytest.approx(0.1)
        assert summaries[SYNTHETIC].cost_usd == pytest.approx(0.4)
        assert summaries[SYNTHETIC].steps == 20 and summaries[SYNTHETIC].jobs == 6
        assert summaries[demo].steps == (await db.metrics.history(demo, "loss")).steps.max()


def test_metric_groups() -> None:
    cases = {
        "loss": "losses",
        "val_loss": "losses",
        "g_loss": "losses",
        "step_generator_loss": "losses",
        "nan_loss": "other",
        "val_accuracy": "validation",
        "train_accuracy": "validation",
        "grad_norm": "gradients",
        "grad/layer_0/variance": "gradients",
        "relative_entropy": "distribution",
        "step_relative_entropy_low": "distribution",
        "js_divergence": "distribution",
        "tv_distance": "distribution",
        "mode_coverage": "distribution",
        "cost_usd": "cost",
        "cost_per_sample_usd": "cost",
        "system/gpu_0_utilization_percentage": "system",
        "entanglement/half_chain": "quantum",
        "circuit/depth": "quantum",
        "fidelity/previous": "quantum",
        "snr/layer_0": "quantum",
        "lr": "other",
    }
    assert {k: metric_group(k) for k in cases} == cases


def test_alerts_with_and_without_the_new_fields() -> None:
    base = {
        "id": 1,
        "kind": "k",
        "message": "m",
        "metric_key": None,
        "value": None,
        "created_at": 5.0,
    }
    old = _alert_info(SimpleNamespace(**base), ([1.0, 4.0, 6.0], [1, 2, 3]))
    assert (old.severity, old.step, old.plot_step, old.resolved_at) == ("warning", None, 2, None)
    new = _alert_info(SimpleNamespace(**base, severity="error", step=7, resolved_at=9.0), ([], []))
    assert (new.severity, new.step, new.plot_step, new.resolved_at) == ("error", 7, 7, 9.0)


@pytest.mark.parametrize("which", ["demo", "synthetic"])
async def test_dashboard_matches_registry(
    database: tuple[str, str], which: str, tmp_path: Path
) -> None:
    from matplotlib.image import imread
    from plotly.offline import get_plotlyjs

    url, demo = database
    run_id = demo if which == "demo" else SYNTHETIC
    async with QuantumDatabase(url, create=False).connect() as db:
        files = await write_dashboard(db, run_id, tmp_path / "a" / "b")
        again = await write_dashboard(db, run_id, tmp_path / "again")
        page = files.html.read_text(encoding="utf-8")
        data = _embedded(page)
        assert data["report"]["run"]["id"] == run_id
        expected = await check_figures(db, data)
    assert files.html == tmp_path / "a" / "b" / HTML_NAME
    assert set(files.plots) == set(expected)
    assert [p.name for p in files.pngs] == [f"{p}.png" for p in files.plots]
    assert set(files.omitted) == {p for p, _ in PLOTS} - set(expected)
    if which == "synthetic":
        assert set(files.plots) >= {"losses", "distribution", "cost", "alerts", "system"}
        budget = data["figures"][files.plots.index("cost")]["figure"]["layout"]["shapes"]
        assert [(s["y0"], s["y1"], s["xref"]) for s in budget] == [(LIMIT_USD, LIMIT_USD, "paper")]
    else:
        alert_lines = data["figures"][0]["figure"]["layout"]["shapes"]  # on the losses plot
        assert data["figures"][0]["id"] == "losses" and len(alert_lines) == 1
        assert "loss above 0.5 &lt;b&gt;" in page  # the alert table, escaped

    # Self-contained: plotly.js inline once, nothing fetched from anywhere.
    assert page.count(get_plotlyjs()[:300]) == 1
    assert not re.search(r"<(script|link|img|iframe)\b[^>]*\b(src|href)\s*=", page, re.I)
    assert "No data (plot left out)" in page
    # Deterministic: the same data writes the same bytes.
    assert again.html.read_bytes() == files.html.read_bytes()
    for png, twin in zip(files.pngs, again.pngs, strict=True):
        raw = png.read_bytes()
        assert raw[:8] == b"\x89PNG\r\n\x1a\n" and len(raw) > 5000
        assert twin.read_bytes() == raw
        pixels = imread(png)
        assert pixels.shape[0] > 100 and pixels.shape[1] > 100 and pixels.std() > 0


@pytest.mark.skipif(
    not CHROMIUM.exists(), reason="/usr/bin/chromium is not installed (CI installs it)"
)
async def test_dashboard_renders_offline(database: tuple[str, str], tmp_path: Path) -> None:
    url, _ = database
    async with QuantumDatabase(url, create=False).connect() as db:
        files = await write_dashboard(db, SYNTHETIC, tmp_path / "out")
        expected = await check_figures(db, _embedded(files.html.read_text(encoding="utf-8")))
    dom = dump_dom(files.html.as_uri(), tmp_path / "profile")
    assert plotted(dom) == expected
    assert len(re.findall(r'class="main-svg"', dom)) >= len(expected)


def dump_dom(url: str, profile: Path) -> str:
    done = subprocess.run(
        [
            str(CHROMIUM),
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-dev-shm-usage",
            f"--user-data-dir={profile}",
            "--virtual-time-budget=10000",
            "--dump-dom",
            url,
        ],
        capture_output=True,
        text=True,
        timeout=90,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    return done.stdout


def plotted(dom: str) -> dict[str, int]:
    found = re.search(r'data-plotted="([^"]*)"', dom)
    assert found is not None, "the page never marked itself plotted"
    counts: dict[str, int] = json.loads(found.group(1).replace("&quot;", '"'))
    # And the SVG has one point element per data point (markers or bars) in each plot.
    parts = re.split(r'<div id="plot-([a-z_]+)"', dom)
    in_svg = {
        parts[i]: len(re.findall(r'class="point"', parts[i + 1])) for i in range(1, len(parts), 2)
    }
    assert in_svg == counts
    return counts


async def test_unknown_run(database: tuple[str, str], tmp_path: Path) -> None:
    url, _ = database
    async with QuantumDatabase(url, create=False).connect() as db:
        with pytest.raises(RunNotFoundError):
            await write_dashboard(db, "no-such-run", tmp_path / "out")
        with pytest.raises(RunNotFoundError):
            await load_run_report(db, "no-such-run")
    assert not (tmp_path / "out").exists()


async def test_unwritable_folder(database: tuple[str, str], tmp_path: Path) -> None:
    url, demo = database
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    async with QuantumDatabase(url, create=False).connect() as db:
        with pytest.raises(DashboardError, match="cannot create the dashboard folder"):
            await write_dashboard(db, demo, blocker / "out")
        with pytest.raises(DashboardError):
            await write_dashboard(db, demo, blocker)
