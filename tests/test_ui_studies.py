"""``qdb ui`` and hyperparameter studies: the study list, a study's page with each trial
linked to its run, their JSON, and a trial's run page linking back to its study."""

from __future__ import annotations

import asyncio
import re
import warnings
from pathlib import Path

import numpy as np
import pytest

from quantum_db import QuantumDatabase
from quantum_ml.hpo import HPOResult, QuantumHPOSearch
from quantum_ml.monitoring.ui import create_app
from quantum_ml.trainer import TrainingConfig

with warnings.catch_warnings():
    # Starlette >= 1.x asks for httpx2 at import; plain httpx (a dependency) works the same.
    warnings.filterwarnings("ignore", message="Using `httpx` with `starlette.testclient`")
    from starlette.testclient import TestClient

STUDY = "ui-study"


@pytest.fixture(scope="module")
def study(tmp_path_factory: pytest.TempPathFactory) -> tuple[str, HPOResult, set[str]]:
    """``(url, the search's result, the registry's run ids)`` of a finished 2-point grid."""
    url = f"sqlite+aiosqlite:///{tmp_path_factory.mktemp('ui-studies') / 'qdb.sqlite'}"

    async def build() -> tuple[HPOResult, set[str]]:
        async with QuantumDatabase(url).connect() as db:
            rng = np.random.default_rng(0)
            y = np.arange(60) % 2
            X = np.where(y[:, None] == 1, 1.0, -1.0) + rng.normal(scale=0.5, size=(60, 2))
            await db.store_training_data(
                "tiny",
                X,
                y,
                splits={"train": 0.75, "validation": 0.25},
                encoding={"scaling": "minmax"},
            )
            search = QuantumHPOSearch(
                db,
                space={"learning_rate": [0.05, 0.2]},
                sampler="grid",
                base_config=TrainingConfig(epochs=2, checkpoint_every=100),
                study_name=STUDY,
            )
            result = await search.search("tiny", batch_size=15)
            return result, {r.id for r in await db.runs.list()}

    result, run_ids = asyncio.run(build())
    return url, result, run_ids


def test_study_list(study: tuple[str, HPOResult, set[str]]) -> None:
    url, result, _ = study
    with TestClient(create_app(url)) as client:
        index = client.get("/")
        assert index.status_code == 200 and 'href="/studies"' in index.text
        page = client.get("/studies")
        assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
        assert f'href="/studies/{STUDY}"' in page.text
        listed = client.get("/api/studies").json()
    assert [s["study"] for s in listed] == [STUDY]
    assert listed[0]["trials"] == len(result.trials) == 2
    assert listed[0]["counts"] == {"complete": 2} and listed[0]["qdb"] is True


def test_study_page_links_each_trial_to_its_run(study: tuple[str, HPOResult, set[str]]) -> None:
    url, result, run_ids = study
    with TestClient(create_app(url)) as client:
        page = client.get(f"/studies/{STUDY}")
        assert page.status_code == 200, page.text
        table = page.text[page.text.index('<table id="qdb-trials">') :]
        table = table[: table.index("</table>")]
        linked = re.findall(r'href="/runs/([^"]+)"', table)
        expected = [t.run_id for t in result.trials]
        assert linked == expected and len(linked) == 2
        assert set(linked) <= run_ids  # every link is to a run the registry has
        for run_id in linked:
            assert client.get(f"/runs/{run_id}").status_code == 200
        assert f'run <a href="/runs/{result.best_run_id}">' in page.text  # the best trial
        assert "sampler grid" in page.text and "val_loss (min)" in page.text

        data = client.get(f"/api/studies/{STUDY}").json()
    assert data["study"] == STUDY and data["sampler"] == "grid"
    assert [(t["number"], t["run_id"], t["state"]) for t in data["trials"]] == [
        (t.number, t.run_id, t.state) for t in result.trials
    ]
    assert data["best"]["run_id"] == result.best_run_id
    assert data["best"]["value"] == result.best_score


def test_run_page_links_back_to_its_study(study: tuple[str, HPOResult, set[str]]) -> None:
    url, result, _ = study
    trial = result.trials[1]
    assert trial.run_id is not None
    with TestClient(create_app(url)) as client:
        page = client.get(f"/runs/{trial.run_id}").text
    assert f'trial {trial.number} of study <a href="/studies/{STUDY}">{STUDY}</a>' in page


def test_unknown_study(study: tuple[str, HPOResult, set[str]]) -> None:
    url, _, _ = study
    with TestClient(create_app(url)) as client:
        page = client.get("/studies/no-such-study")
        assert page.status_code == 404 and page.headers["content-type"].startswith("text/html")
        assert "no study &#x27;no-such-study&#x27;" in page.text and STUDY in page.text
        missing = client.get("/api/studies/no-such-study")
        assert missing.status_code == 404
        assert "no study 'no-such-study'" in missing.json()["error"]
        assert client.post(f"/api/studies/{STUDY}").status_code == 405


def test_no_studies(tmp_path: Path) -> None:
    path = tmp_path / "empty.sqlite"
    url = f"sqlite+aiosqlite:///{path}"

    async def init() -> None:
        async with QuantumDatabase(url).connect():
            pass

    asyncio.run(init())
    with TestClient(create_app(url)) as client:
        assert "No studies yet." in client.get("/studies").text
        assert client.get("/api/studies").json() == []
        missing = client.get(f"/studies/{STUDY}")
        assert missing.status_code == 404 and "no study was ever created" in missing.text
    assert not path.with_name("empty.optuna.sqlite").exists()  # read-only: nothing created
