"""``qdb ui``: the real server (uvicorn, in a subprocess) against a database with a finished
demo run; its JSON against the registry, and its run page as headless Chromium draws it."""

from __future__ import annotations

import asyncio
import json
import os
import re
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from quantum_db import QuantumDatabase
from quantum_db.errors import ConfigurationError
from quantum_ml.errors import UIError
from quantum_ml.monitoring.ui import serve
from quantum_ml.training_demo import run_training_demo

from .clitools import ROOT
from .test_dashboard import CHROMIUM, check_figures, dump_dom, plotted


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


async def get_json(url: str) -> Any:
    async with httpx.AsyncClient(timeout=30) as client:
        answer = await client.get(url)
    assert answer.status_code == 200, answer.text
    return answer.json()


@pytest.fixture(scope="module")
def database(tmp_path_factory: pytest.TempPathFactory) -> tuple[str, str]:
    """``(url, run id)`` of a finished demo run with one alert."""
    url = f"sqlite:///{tmp_path_factory.mktemp('ui') / 'runs.db'}"

    async def build() -> str:
        demo = await run_training_demo(url, verbose=False)
        async with QuantumDatabase(url).connect() as db:
            await db.alerts.raise_alert(
                demo.run_id,
                "loss_threshold",
                "loss above 0.5",
                metric_key="loss",
                value=1.0,
                threshold=0.5,
            )
        return demo.run_id

    return url, asyncio.run(build())


@pytest.fixture(scope="module")
def server(database: tuple[str, str], tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """The base URL of ``serve(url, port=...)`` running in a subprocess."""
    url, _ = database
    log_path = tmp_path_factory.mktemp("ui-log") / "server.log"
    log = log_path.open("w")
    port = free_port()
    code = f"from quantum_ml.monitoring.ui import serve; serve({url!r}, port={port})"
    proc = subprocess.Popen(
        [sys.executable, "-c", code],
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            if proc.poll() is not None:
                out = log_path.read_text()[-3000:]
                pytest.fail(f"qdb ui exited with {proc.returncode}: {out}")
            try:
                if httpx.get(f"{base}/api/runs", timeout=2).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            if time.monotonic() > deadline:
                pytest.fail("qdb ui did not answer within 60 s")
            time.sleep(0.2)
        yield base
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=15)
        log.close()


async def test_api_matches_registry(database: tuple[str, str], server: str) -> None:
    url, run_id = database
    runs = await get_json(f"{server}/api/runs")
    data = await get_json(f"{server}/api/runs/{run_id}")
    async with QuantumDatabase(url, create=False).connect() as db:
        listed = {r["id"]: r for r in runs}
        stored = await db.runs.list()
        assert set(listed) >= {r.id for r in stored}
        demo = listed[run_id]
        assert (demo["status"], demo["backend"]) == ("finished", "simulator")
        val_loss = await db.metrics.history(run_id, "val_loss")
        assert demo["best"] == {"key": "val_loss", "mode": "min", "value": val_loss.values.min()}
        assert demo["steps"] == (await db.metrics.history(run_id, "loss")).steps.max()

        assert data["report"]["run"]["id"] == run_id
        assert data["report"]["run"]["config"] == (await db.runs.get(run_id)).config
        for key in await db.metrics.keys(run_id):
            history = await db.metrics.history(run_id, key)
            series = data["report"]["metrics"][key]
            assert series["steps"] == history.steps.tolist()
            assert series["values"] == history.values.tolist()
        await check_figures(db, data)


def test_errors_and_static(database: tuple[str, str], server: str) -> None:
    from plotly.offline import get_plotlyjs

    _, run_id = database
    missing = httpx.get(f"{server}/api/runs/no-such-run", timeout=30)
    assert missing.status_code == 404 and "no-such-run" in missing.json()["error"]
    page = httpx.get(f"{server}/runs/no-such-run", timeout=30)
    assert page.status_code == 404 and page.headers["content-type"].startswith("text/html")
    # Read-only: GET routes only.
    assert httpx.post(f"{server}/api/runs", timeout=30).status_code == 405
    assert httpx.delete(f"{server}/api/runs/{run_id}", timeout=30).status_code == 405
    script = httpx.get(f"{server}/static/plotly.min.js", timeout=30)
    assert script.status_code == 200 and script.text == get_plotlyjs()
    index = httpx.get(f"{server}/", timeout=30)
    assert index.status_code == 200 and f'href="/runs/{run_id}"' in index.text
    run_page = httpx.get(f"{server}/runs/{run_id}", timeout=30).text
    for html in (index.text, run_page):
        sources = re.findall(r"<(?:script|link|img)\b[^>]*\b(?:src|href)=\"([^\"]*)\"", html)
        assert all(s.startswith("/") for s in sources), sources  # no CDN: all from this server
    assert '<script src="/static/plotly.min.js"></script>' in run_page


async def test_live_run_updates(database: tuple[str, str], server: str) -> None:
    """The app's one long-lived connection sees what another process writes meanwhile."""
    url, _ = database
    async with QuantumDatabase(url).connect() as db:
        await db.runs.create("live-run", backend="simulator")
        for n in (5, 12):
            for step in range(1, n + 1):
                await db.metrics.log("live-run", {"loss": 1.0 / step}, step)
            await db.metrics.flush()
            data = await get_json(f"{server}/api/runs/live-run")
            assert data["report"]["run"]["status"] == "running"
            losses = data["figures"][0]
            assert losses["id"] == "losses"
            assert losses["points"] == len(await db.metrics.history("live-run", "loss"))
        await db.runs.finish("live-run", "finished")
    data = await get_json(f"{server}/api/runs/live-run")
    assert data["report"]["run"]["status"] == "finished"


@pytest.mark.skipif(
    not CHROMIUM.exists(), reason="/usr/bin/chromium is not installed (CI installs it)"
)
async def test_browser_draws_the_run(
    database: tuple[str, str], server: str, tmp_path: Path
) -> None:
    url, run_id = database
    page = f"{server}/runs/{run_id}"
    dom = dump_dom(page, tmp_path / "profile")
    async with QuantumDatabase(url, create=False).connect() as db:
        data = await get_json(f"{server}/api/runs/{run_id}")
        expected = await check_figures(db, data)
    # The page fetched the API and drew every plot: the points Plotly drew, and one SVG
    # point per data point, equal what the registry holds.
    assert plotted(dom) == expected
    assert len(re.findall(r'class="main-svg"', dom)) >= len(expected)
    assert "live updates stopped" in dom  # a finished run is not polled forever

    shot = tmp_path / "ui.png"
    done = subprocess.run(
        [
            str(CHROMIUM),
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-dev-shm-usage",
            f"--user-data-dir={tmp_path / 'profile2'}",
            "--virtual-time-budget=10000",
            "--hide-scrollbars",
            f"--screenshot={shot}",
            "--window-size=1280,2000",
            page,
        ],
        capture_output=True,
        text=True,
        timeout=90,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    from matplotlib.image import imread

    raw = shot.read_bytes()
    assert raw[:8] == b"\x89PNG\r\n\x1a\n" and len(raw) > 20_000
    pixels = imread(shot)
    assert pixels.shape[:2] == (2000, 1280)
    assert pixels.std() > 0.05  # plots, not a blank page


def test_port_taken(database: tuple[str, str]) -> None:
    url, _ = database
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        with pytest.raises(UIError, match=rf"port {port} on 127\.0\.0\.1 is taken.*--port"):
            serve(url, port=port)


def test_missing_database(tmp_path: Path) -> None:
    missing = tmp_path / "nothing.db"
    with pytest.raises(ConfigurationError, match="qdb init"):
        serve(f"sqlite:///{missing}", port=free_port())
    assert not missing.exists()


def test_api_is_json(database: tuple[str, str], server: str) -> None:
    _, run_id = database
    answer = httpx.get(f"{server}/api/runs/{run_id}", timeout=30)
    assert answer.headers["content-type"].startswith("application/json")
    json.loads(answer.text)  # strict JSON: no NaN
