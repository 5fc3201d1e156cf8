"""quantum_ml.monitoring.export: one real demo run, exported to MLflow and to files."""

from __future__ import annotations

import asyncio
import csv
import hashlib
import json
import socket
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from backends.errors import MissingDependencyError
from quantum_db import QuantumDatabase, SqlAccounting
from quantum_db.errors import RunNotFoundError
from quantum_ml.errors import ExportError, ExportUnreachableError
from quantum_ml.monitoring import export
from quantum_ml.monitoring.export import MlflowExport, export_files, export_to_mlflow
from quantum_ml.training_demo import MODEL_NAME, DemoResult, run_training_demo

from .clitools import copy_sqlite

mlflow = pytest.importorskip("mlflow")
from mlflow import MlflowClient  # noqa: E402

Points = dict[str, list[tuple[int, int, float]]]


# --------------------------------------------------------------------------- fixtures
@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, DemoResult]:
    """One database trained and registered by the real `qdb demo`, built once."""
    path = tmp_path_factory.mktemp("demo") / "demo.sqlite"
    result = asyncio.run(run_training_demo(f"sqlite:///{path}", budget_usd=5.0, verbose=False))
    assert result.model_version is not None
    return path, result


@pytest.fixture
def url(demo: tuple[Path, DemoResult], tmp_path: Path) -> str:
    """A copy of the demo's database, for this test alone."""
    return copy_sqlite(demo[0], tmp_path)


@pytest.fixture
def run_id(demo: tuple[Path, DemoResult]) -> str:
    return demo[1].run_id


@pytest.fixture(autouse=True)
def _mlflow_env(monkeypatch: pytest.MonkeyPatch) -> None:
    # MLflow 3.18 refuses a file store (maintenance mode) unless told otherwise.
    monkeypatch.setenv("MLFLOW_ALLOW_FILE_STORE", "true")
    monkeypatch.setenv("MLFLOW_DISABLE_TELEMETRY", "true")
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)


# --------------------------------------------------------------------------- helpers
async def registry_points(db: QuantumDatabase, run_id: str) -> Points:
    out: Points = {}
    for key in await db.metrics.keys(run_id):
        h = await db.metrics.history(run_id, key)
        out[key] = sorted(
            (int(s), round(t * 1000), float(v))
            for s, t, v in zip(h.steps, h.timestamps, h.values, strict=True)
        )
    return out


def mlflow_run(uri: str, run_id: str) -> tuple[MlflowClient, Any]:
    client = MlflowClient(tracking_uri=uri)
    experiment = client.get_experiment_by_name("quantum-db")
    assert experiment is not None
    runs = client.search_runs(
        [experiment.experiment_id], filter_string=f"tags.`qdb.run_id` = '{run_id}'"
    )
    assert len(runs) == 1
    return client, runs[0]


def mlflow_points(uri: str, run_id: str) -> Points:
    client, run = mlflow_run(uri, run_id)
    return {
        key: sorted(
            (m.step, m.timestamp, m.value) for m in client.get_metric_history(run.info.run_id, key)
        )
        for key in run.data.metrics
    }


def artifact_files(client: MlflowClient, run_id: str, path: str | None = None) -> set[str]:
    found: set[str] = set()
    for entry in client.list_artifacts(run_id, path):
        found |= artifact_files(client, run_id, entry.path) if entry.is_dir else {entry.path}
    return found


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


# --------------------------------------------------------------------------- MLflow
async def test_export_round_trip_resume_and_new_metrics(
    url: str, run_id: str, tmp_path: Path
) -> None:
    uri = (tmp_path / "mlruns").as_uri()
    async with QuantumDatabase(url).connect() as db:
        expected = await registry_points(db, run_id)
        run = await db.runs.get(run_id)
        version = await db.models.get(MODEL_NAME)
        jobs = await SqlAccounting(db.registry).jobs(run_id=run_id)
        best = await db.checkpoints.best(run_id)
        assert best is not None

        first = await export_to_mlflow(db, run_id, tracking_uri=uri)
        assert isinstance(first, MlflowExport)
        assert not first.resumed
        assert first.metrics_sent == sum(len(p) for p in expected.values())
        assert mlflow_points(uri, run_id) == expected

        client, mlrun = mlflow_run(uri, run_id)
        assert mlrun.info.run_id == first.mlflow_run_id
        assert mlrun.info.experiment_id == first.experiment_id
        assert mlrun.info.status == "FINISHED"
        # The demo's config is flat: strings as they are, everything else as JSON.
        params = {k: v if isinstance(v, str) else json.dumps(v) for k, v in run.config.items()}
        assert mlrun.data.params == params
        assert first.params_sent == len(params)
        tags = mlrun.data.tags
        assert tags["qdb.run_id"] == run_id
        assert tags["qdb.backend"] == run.backend == "simulator"
        assert tags["qdb.status"] == "finished"
        assert tags["qdb.circuit_hash"] == jobs[0].circuit_hash
        assert {j.circuit_hash for j in jobs} == {jobs[0].circuit_hash}
        assert (tags["qdb.dataset"], tags["qdb.dataset_version"]) == ("moons", "1")
        assert json.loads(tags["qdb.encoding"]) == version.encoding
        # Every qdb.* tag but qdb.run_id, which the call that made the run set.
        assert first.tags_sent == sum(k.startswith("qdb.") for k in tags) - 1

        folder = f"model/{MODEL_NAME}/v{version.version}"
        stem = f"checkpoints/step-{best.step}-{best.info.content_hash[:12]}"
        listed = artifact_files(client, first.mlflow_run_id)
        assert listed == {
            f"{folder}/version.json",
            *(f"{folder}/parameters/{name}.npy" for name in version.parameters),
            f"{stem}.npz",
            f"{stem}.json",
        }
        assert first.artifacts_sent == len(listed)
        local = Path(client.download_artifacts(first.mlflow_run_id, "", str(tmp_path / "dl")))
        for name, array in version.parameters.items():
            assert np.array_equal(np.load(local / folder / "parameters" / f"{name}.npy"), array)
        described = json.loads((local / folder / "version.json").read_text())
        assert described["provenance"]["run_id"] == run_id
        assert described["metrics"] == version.metrics
        payload = (local / f"{stem}.npz").read_bytes()
        assert hashlib.sha256(payload).hexdigest() == best.info.content_hash

        second = await export_to_mlflow(db, run_id, tracking_uri=uri)
        assert second == MlflowExport(first.mlflow_run_id, first.experiment_id, 0, 0, 0, 0, True)
        assert mlflow_points(uri, run_id) == expected
        assert artifact_files(client, first.mlflow_run_id) == listed

        await db.metrics.log(run_id, {"loss": 0.25, "system/cpu_percent": 12.5}, step=10_000)
        third = await export_to_mlflow(db, run_id, tracking_uri=uri)
        assert (third.metrics_sent, third.params_sent, third.artifacts_sent) == (2, 0, 0)
        assert third.resumed
        after = await registry_points(db, run_id)
        assert "system/cpu_percent" in after
        assert mlflow_points(uri, run_id) == after


async def test_unreachable_server_then_a_full_export(
    url: str, run_id: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_TIMEOUT", "2")
    port = closed_port()
    async with QuantumDatabase(url).connect() as db:
        with pytest.raises(ExportUnreachableError) as caught:
            await export_to_mlflow(db, run_id, tracking_uri=f"http://qdb:s3cret@127.0.0.1:{port}")
        message = str(caught.value)
        assert f"127.0.0.1:{port}" in message
        assert "s3cret" not in message
        assert "\n" not in message

        uri = (tmp_path / "mlruns").as_uri()
        done = await export_to_mlflow(db, run_id, tracking_uri=uri)
        assert not done.resumed
        assert mlflow_points(uri, run_id) == await registry_points(db, run_id)


async def test_an_export_cut_short_is_completed_by_the_next(
    url: str, run_id: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import requests

    uri = (tmp_path / "mlruns").as_uri()
    monkeypatch.setattr(export, "_METRICS_PER_BATCH", 200)
    real_log_batch = MlflowClient.log_batch
    metric_batches: list[int] = []

    def flaky(self: MlflowClient, run_id: str, **kwargs: Any) -> Any:
        if kwargs.get("metrics"):
            if len(metric_batches) == 2:
                raise requests.exceptions.ConnectionError("connection reset by peer")
            metric_batches.append(len(kwargs["metrics"]))
        return real_log_batch(self, run_id, **kwargs)

    monkeypatch.setattr(MlflowClient, "log_batch", flaky)
    async with QuantumDatabase(url).connect() as db:
        expected = await registry_points(db, run_id)
        with pytest.raises(ExportUnreachableError, match="cannot be reached"):
            await export_to_mlflow(db, run_id, tracking_uri=uri)
        assert metric_batches == [200, 200]

        monkeypatch.setattr(MlflowClient, "log_batch", real_log_batch)
        done = await export_to_mlflow(db, run_id, tracking_uri=uri)
        assert done.resumed
        assert done.metrics_sent == sum(len(p) for p in expected.values()) - 400
        assert done.params_sent == 0
        assert done.artifacts_sent > 0
        assert mlflow_points(uri, run_id) == expected


# MLflow's SQLAlchemy store maps its tables with a loader strategy SQLAlchemy 2.1 deprecates;
# the warning comes once, when mlflow.store.tracking.sqlalchemy_store is imported.
@pytest.mark.filterwarnings(
    "ignore:The ``noload`` loader strategy is deprecated:sqlalchemy.exc.SADeprecationWarning"
)
async def test_export_to_an_sqlite_tracking_database(
    url: str, run_id: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A database store keeps artifacts in ./mlruns unless the experiment says otherwise.
    monkeypatch.chdir(tmp_path)
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    artifacts = tmp_path / "artifacts"
    async with QuantumDatabase(url).connect() as db:
        first = await export_to_mlflow(
            db, run_id, tracking_uri=uri, artifact_location=artifacts.as_uri()
        )
        assert mlflow_points(uri, run_id) == await registry_points(db, run_id)
        again = await export_to_mlflow(db, run_id, tracking_uri=uri)
    assert first.metrics_sent > 0 and first.artifacts_sent > 0
    sent = (again.metrics_sent, again.params_sent, again.tags_sent, again.artifacts_sent)
    assert sent == (0, 0, 0, 0)
    client, mlrun = mlflow_run(uri, run_id)
    assert mlrun.info.status == "FINISHED"
    assert len(artifact_files(client, first.mlflow_run_id)) == first.artifacts_sent
    assert len([p for p in artifacts.rglob("*") if p.is_file()]) == first.artifacts_sent
    assert not (tmp_path / "mlruns").exists()


async def test_nested_config_limits_and_status(
    url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    uri = (tmp_path / "mlruns").as_uri()
    sizes: list[tuple[int, int, int]] = []
    real_log_batch = MlflowClient.log_batch

    def counted(self: MlflowClient, run_id: str, **kwargs: Any) -> Any:
        sizes.append(tuple(len(kwargs.get(k, ())) for k in ("metrics", "params", "tags")))
        return real_log_batch(self, run_id, **kwargs)

    monkeypatch.setattr(MlflowClient, "log_batch", counted)
    config = {
        "model": {"layers": 3, "rotations": ["rx", "ry"], "head": {"width": 8}},
        "optimizer": {"name": "adam", "kwargs": {}},
        "note": "x" * 7000,
        "bad key!": None,
        "hpo": {"dataset": "iris", "dataset_version": 4},
        **{f"k{i:03d}": i for i in range(150)},
    }
    async with QuantumDatabase(url).connect() as db:
        await db.runs.create("nested-run", config=config, backend="simulator", seed=3)
        await db.metrics.log("nested-run", {"loss": 1.0, "system/memory_mb": 10.0}, step=0)
        await db.metrics.log("nested-run", {"loss": 0.5, "system/memory_mb": 11.0}, step=1)
        result = await export_to_mlflow(db, "nested-run", tracking_uri=uri)
        _, mlrun = mlflow_run(uri, "nested-run")
        assert mlrun.info.status == "RUNNING"
        params = mlrun.data.params
        assert params["model.layers"] == "3"
        assert params["model.rotations"] == '["rx", "ry"]'
        assert params["model.head.width"] == "8"
        assert params["optimizer.name"] == "adam"
        assert params["optimizer.kwargs"] == "{}"
        assert params["bad key_"] == "null"
        assert params["note"] == "x" * 5997 + "..."
        assert params["hpo.dataset_version"] == "4"
        assert len(params) == result.params_sent == 159
        assert mlrun.data.tags["qdb.dataset"] == "iris"
        assert mlrun.data.tags["qdb.dataset_version"] == "4"
        assert mlrun.data.tags["qdb.seed"] == "3"
        assert "qdb.circuit_hash" not in mlrun.data.tags  # no jobs, no model
        assert result.artifacts_sent == 0
        assert mlflow_points(uri, "nested-run") == await registry_points(db, "nested-run")
        assert all(m <= 1000 and p <= 100 and t <= 100 for m, p, t in sizes)
        assert all(m == 0 or p + t == 0 for m, p, t in sizes)  # metrics go alone
        assert sum(p for _, p, _ in sizes) == 159 and max(p for _, p, _ in sizes) == 100

        await db.runs.finish("nested-run", "failed", "ValueError: boom")
        await export_to_mlflow(db, "nested-run", tracking_uri=uri)
        _, mlrun = mlflow_run(uri, "nested-run")
        assert mlrun.info.status == "FAILED"
        assert mlrun.data.tags["qdb.status"] == "failed"
        assert mlrun.data.tags["qdb.reason"] == "ValueError: boom"

        await db.runs.start("nested-run", db.owner_id)
        await export_to_mlflow(db, "nested-run", tracking_uri=uri)
        assert mlflow_run(uri, "nested-run")[1].info.status == "RUNNING"
        await db.runs.finish("nested-run", "stopped", "budget")
        again = await export_to_mlflow(db, "nested-run", tracking_uri=uri)
        assert mlflow_run(uri, "nested-run")[1].info.status == "KILLED"
        assert (again.metrics_sent, again.params_sent) == (0, 0)


async def test_mlflow_bad_inputs(
    url: str, run_id: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    uri = (tmp_path / "mlruns").as_uri()
    async with QuantumDatabase(url).connect() as db:
        with pytest.raises(RunNotFoundError):
            await export_to_mlflow(db, "no-such-run", tracking_uri=uri)
        with pytest.raises(ExportError, match="experiment"):
            await export_to_mlflow(db, run_id, tracking_uri=uri, experiment=" ")
        monkeypatch.delenv("MLFLOW_ALLOW_FILE_STORE")
        with pytest.raises(ExportError, match="MLFLOW_ALLOW_FILE_STORE=true"):
            await export_to_mlflow(db, run_id, tracking_uri=uri)
        monkeypatch.setitem(sys.modules, "mlflow", None)
        with pytest.raises(MissingDependencyError, match=r"pip install 'quantum-db\[mlflow\]'"):
            await export_to_mlflow(db, run_id, tracking_uri=uri)
    assert not (tmp_path / "mlruns").exists()


# --------------------------------------------------------------------------- files
def read_table(path: Path, fmt: str) -> list[dict[str, Any]]:
    if fmt == "json":
        rows: list[dict[str, Any]] = json.loads(path.read_text())
        return rows
    if fmt == "csv":
        with path.open(newline="") as f:
            return list(csv.DictReader(f))
    import pyarrow.parquet as pq

    return list(pq.read_table(path).to_pylist())


@pytest.mark.parametrize("fmt", ["csv", "json", "parquet"])
async def test_export_files_read_back(url: str, run_id: str, tmp_path: Path, fmt: str) -> None:
    target = tmp_path / "out" / "nested"
    async with QuantumDatabase(url).connect() as db:
        await db.alerts.raise_alert(
            run_id, "threshold", "loss above 0.5", metric_key="loss", value=0.7, threshold=0.5
        )
        paths = await export_files(db, run_id, target, fmt)  # type: ignore[arg-type]
        expected = []
        for key in await db.metrics.keys(run_id):
            h = await db.metrics.history(run_id, key)
            expected += [
                (key, int(s), float(v), float(t))
                for s, v, t in zip(h.steps, h.values, h.timestamps, strict=True)
            ]
        run = await db.runs.get(run_id)
        jobs = await SqlAccounting(db.registry).jobs(run_id=run_id)
    assert [p.name for p in paths] == [
        f"{run_id}.{table}.{fmt}" for table in ("metrics", "run", "jobs", "alerts")
    ]
    assert sorted(p.name for p in target.iterdir()) == sorted(p.name for p in paths)  # no temp

    metrics, (run_row,), job_rows, alert_rows = (read_table(p, fmt) for p in paths)
    assert list(metrics[0]) == ["run_id", "key", "step", "value", "timestamp"]
    assert {m["run_id"] for m in metrics} == {run_id}
    got = [(m["key"], int(m["step"]), float(m["value"]), float(m["timestamp"])) for m in metrics]
    assert got == expected

    config = run_row["config"] if fmt == "json" else json.loads(run_row["config"])
    assert config == run.config
    assert (run_row["run_id"], run_row["status"], run_row["backend"]) == (
        run_id,
        "finished",
        "simulator",
    )
    assert float(run_row["updated_at"]) == run.updated_at
    assert sorted(j["id"] for j in job_rows) == sorted(j.id for j in jobs)
    assert {j["circuit_hash"] for j in job_rows} == {j.circuit_hash for j in jobs}
    (alert,) = [a for a in alert_rows if a["message"] == "loss above 0.5"]
    assert (alert["run_id"], alert["kind"], float(alert["value"])) == (run_id, "threshold", 0.7)


async def test_export_files_bad_inputs(
    url: str, run_id: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    async with QuantumDatabase(url).connect() as db:
        with pytest.raises(ExportError, match="format"):
            await export_files(db, run_id, tmp_path, "xlsx")  # type: ignore[arg-type]
        with pytest.raises(RunNotFoundError):
            await export_files(db, "no-such-run", tmp_path, "csv")
        blocker = tmp_path / "a-file"
        blocker.write_text("")
        with pytest.raises(ExportError, match="folder"):
            await export_files(db, run_id, blocker, "json")
        monkeypatch.setitem(sys.modules, "pyarrow", None)
        with pytest.raises(MissingDependencyError, match=r"quantum-db\[parquet\]"):
            await export_files(db, run_id, tmp_path / "p", "parquet")
    assert not (tmp_path / "p").exists()
