"""Export one training run: to MLflow (``export_to_mlflow``) and to files (``export_files``).

An MLflow export is a resume: the MLflow run is found by its ``qdb.run_id`` tag (created
the first time), what MLflow already holds is read back, and only what is missing is sent.
Exporting twice duplicates nothing, and an export cut short (an unreachable server, a
crash) is completed by the next one. The MLflow client blocks, so every call to it runs
in a worker thread; it retries HTTP requests itself (``MLFLOW_HTTP_REQUEST_MAX_RETRIES``),
so nothing here retries on top of it.

What goes to MLflow:

* params: the run's config flattened to ``a.b.c`` keys; values are strings as they are
  and JSON for everything else (``0.05``, ``null``, ``true``, ``{}``, ``[1, 2]``);
* tags: ``qdb.run_id``, ``qdb.status``, ``qdb.backend``, ``qdb.seed``, ``qdb.reason``,
  ``qdb.circuit_hash`` (of the run's jobs, else rebuilt from its model), ``qdb.models``,
  ``qdb.dataset``/``qdb.dataset_version`` and ``qdb.encoding`` (the encoding contract as
  JSON) when the model version, the run's config or its checkpoint tells them;
* metrics: every metric of the run (``system/...`` keys too), with its step and its
  timestamp in milliseconds. A point is (key, step, timestamp, value), as MLflow
  identifies it: a point stored twice in the registry is sent once;
* artifacts: each model version the run registered (``model/<name>/v<n>/version.json``
  plus one ``.npy`` per parameter array) and the run's best checkpoint (its stored
  ``.npz`` payload and a ``.json`` describing it) under ``checkpoints/``, named by step and
  content hash so that a changed checkpoint is a new file.
"""

from __future__ import annotations

import asyncio
import csv
import dataclasses
import hashlib
import io
import json
import logging
import os
import posixpath
import re
import socket
import tempfile
import types
import typing
import uuid
from collections import Counter
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

import numpy as np
from sqlalchemy import select

from backends.errors import MissingDependencyError
from quantum_db.accounting import SqlAccounting
from quantum_db.alerts import Alert
from quantum_db.checkpoints import Checkpoint
from quantum_db.database import QuantumDatabase
from quantum_db.models import ModelVersion
from quantum_db.registry.schema import CheckpointRow, JobRow, ModelRow, ModelVersionRow
from quantum_db.runs import RunInfo, validate_run_id

from ..errors import ExportError, ExportUnreachableError

if TYPE_CHECKING:
    from mlflow import MlflowClient

__all__ = ["EXPORT_FORMATS", "MlflowExport", "export_files", "export_to_mlflow"]

logger = logging.getLogger(__name__)

#: The formats :func:`export_files` writes.
EXPORT_FORMATS = ("csv", "json", "parquet")

# MLflow's limits (mlflow.utils.validation): entities per log_batch call, key and value
# lengths. A batch holds metrics, or params and tags, never both: 1000 entities at most per
# request, and 100 params of 6000 characters plus 100 tags of 8000 would pass its 1 MB.
_METRICS_PER_BATCH = 1000
_PARAMS_TAGS_PER_BATCH = 100
_MAX_KEY_LENGTH = 250
_MAX_PARAM_VALUE_LENGTH = 6000
_MAX_TAG_VALUE_LENGTH = 8000

#: The MLflow run status of each ended run status (a running run stays RUNNING).
_MLFLOW_STATUS = {
    "finished": "FINISHED",
    "failed": "FAILED",
    # Ended before the end on purpose (a budget, a NaN, a request), or by a signal or a
    # dead process: neither finished nor an error of the code.
    "stopped": "KILLED",
    "interrupted": "KILLED",
}

#: Characters MLflow refuses in metric and param names are replaced by "_" (its own rule,
#: ``mlflow.utils.validation.validate_param_and_metric_name``, without Windows' colon).
_BAD_NAME_CHARACTERS = re.compile(r"[^/\w.\- :]")
_BAD_FILE_CHARACTERS = re.compile(r"[^A-Za-z0-9_.\-]")
_DATASET_AND_VERSION = re.compile(r"^(?P<name>.+?)\s+v(?P<version>\d+)$")
_SECRET_QUERY_KEYS = ("password", "token", "secret", "key", "api_key", "apikey", "access_token")


@dataclass(frozen=True, slots=True)
class MlflowExport:
    """What one :func:`export_to_mlflow` call did: the MLflow run and what it sent."""

    mlflow_run_id: str
    experiment_id: str
    metrics_sent: int
    params_sent: int
    tags_sent: int
    artifacts_sent: int
    #: Whether the MLflow run existed already (a resumed export) rather than being created.
    resumed: bool


# --------------------------------------------------------------------------- MLflow
async def export_to_mlflow(
    db: QuantumDatabase,
    run_id: str,
    *,
    tracking_uri: str | None = None,
    experiment: str = "quantum-db",
    artifact_location: str | None = None,
) -> MlflowExport:
    """Send run ``run_id`` of ``db`` to MLflow, in experiment ``experiment`` (created if
    missing), and return what was sent.

    ``tracking_uri`` is any URI MLflow takes (``http://host:5000``, ``sqlite:///mlflow.db``,
    ``file:///path``; ``None``: MLflow's own default, ``MLFLOW_TRACKING_URI``). Only what
    the MLflow run lacks is sent. ``artifact_location`` is where an experiment created here
    keeps its artifacts (MLflow's default otherwise: the server's for ``http://``, and
    ``./mlruns`` under the working directory for a database such as ``sqlite://``).

    Raises :class:`~quantum_db.errors.RunNotFoundError` for an unknown run,
    :class:`ExportUnreachableError` when the tracking server cannot be reached (export
    again later: the missing part is sent then), :class:`ExportError` when MLflow refuses
    the export, and :class:`MissingDependencyError` without mlflow installed.
    """
    validate_run_id(run_id)
    if not isinstance(experiment, str) or not experiment.strip():
        raise ExportError(f"the MLflow experiment needs a non-empty name, got {experiment!r}")
    await asyncio.to_thread(_import_mlflow)
    snapshot = await _snapshot(db, run_id)
    return await asyncio.to_thread(_send, snapshot, tracking_uri, experiment, artifact_location)


def _import_mlflow() -> types.ModuleType:
    try:
        import mlflow
    except ImportError as exc:
        raise MissingDependencyError(
            "exporting to MLflow needs the MLflow client: pip install 'quantum-db[mlflow]'"
        ) from exc
    return mlflow


@dataclass(frozen=True, slots=True)
class _Snapshot:
    """Everything an MLflow export sends, read from the database before MLflow is called."""

    run: RunInfo
    #: MLflow metric name -> its points (step, timestamp in ms, value), in step order.
    metrics: dict[str, list[tuple[int, int, float]]]
    params: dict[str, str]
    tags: dict[str, str]
    #: Artifact path -> content.
    artifacts: dict[str, bytes]


async def _snapshot(db: QuantumDatabase, run_id: str) -> _Snapshot:
    run = await db.runs.get(run_id)  # RunNotFoundError
    metrics: dict[str, list[tuple[int, int, float]]] = {}
    names = _mlflow_names(await db.metrics.keys(run_id), "metric")
    for key, name in names.items():
        history = await db.metrics.history(run_id, key)
        points = zip(
            history.steps.tolist(),
            history.timestamps.tolist(),
            history.values.tolist(),
            strict=True,
        )
        unique = dict.fromkeys((int(s), _ms(t), float(v)) for s, t, v in points)
        metrics[name] = list(unique)
    versions = await _model_versions(db, run_id)
    jobs = await _jobs(db, run_id)
    checkpoint, payload = await _best_checkpoint(db, run)
    return _Snapshot(
        run=run,
        metrics=metrics,
        params=_params(run.config),
        tags=_tags(run, versions, jobs, checkpoint),
        artifacts=_artifacts(versions, checkpoint, payload),
    )


def _ms(seconds: float) -> int:
    return round(seconds * 1000)


def _mlflow_name(key: str) -> str:
    """``key`` as a name MLflow takes: its characters, a path that normalizes to itself,
    250 characters at most (a longer one is cut, and keeps a hash of the whole key)."""
    parts = [_BAD_NAME_CHARACTERS.sub("_", part) for part in key.split("/")]
    parts = [part if part not in ("", ".", "..") else "_" for part in parts]
    name = "/".join(parts) or "_"
    if len(name) > _MAX_KEY_LENGTH:
        digest = hashlib.sha256(key.encode()).hexdigest()[:12]
        name = f"{name[: _MAX_KEY_LENGTH - 13]}~{digest}"
    return name


def _mlflow_names(keys: Iterable[str], what: str) -> dict[str, str]:
    names: dict[str, str] = {}
    taken: dict[str, str] = {}
    for key in keys:
        name = _mlflow_name(key)
        if name in taken:
            raise ExportError(
                f"{what}s {taken[name]!r} and {key!r} both become {name!r} in MLflow, which "
                "refuses some characters (it takes letters, digits, _ - . / : and spaces)"
            )
        taken[name] = key
        names[key] = name
    return names


def _flatten(config: Mapping[str, Any], prefix: str = "") -> Iterator[tuple[str, str]]:
    for key, value in config.items():
        name = f"{prefix}.{key}" if prefix else str(key)
        if isinstance(value, Mapping) and value:
            yield from _flatten(value, name)
        else:
            yield name, value if isinstance(value, str) else json.dumps(value, sort_keys=True)


def _params(config: Mapping[str, Any]) -> dict[str, str]:
    flat = dict(_flatten(config))
    names = _mlflow_names(flat, "config key")
    # MLflow refuses a param value over 6000 characters (it would cut it itself only with
    # MLFLOW_TRUNCATE_LONG_VALUES): cut here, ending in "...", so that every export sends
    # the same value and a resumed one finds it already there.
    return {names[key]: _cut(value, _MAX_PARAM_VALUE_LENGTH) for key, value in flat.items()}


def _cut(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 3] + "..."


async def _model_versions(db: QuantumDatabase, run_id: str) -> list[ModelVersion]:
    """The model versions whose provenance names ``run_id``, oldest first."""
    async with db.registry.session() as session:
        rows = (
            await session.execute(
                select(ModelRow.name, ModelVersionRow.version, ModelVersionRow.provenance)
                .join(ModelRow, ModelRow.id == ModelVersionRow.model_id)
                .order_by(ModelVersionRow.created_at, ModelRow.name, ModelVersionRow.version)
            )
        ).all()
    wanted = [
        (name, version)
        for name, version, provenance in rows
        if isinstance(provenance, Mapping) and provenance.get("run_id") == run_id
    ]
    return [await db.models.get(name, version) for name, version in wanted]


async def _jobs(db: QuantumDatabase, run_id: str) -> list[JobRow]:
    """The run's recorded jobs, with those this connection still holds back."""
    accounting = db.backend_manager.accounting
    if not isinstance(accounting, SqlAccounting):
        accounting = SqlAccounting(db.registry)
    return await accounting.jobs(run_id=run_id)


async def _best_checkpoint(
    db: QuantumDatabase, run: RunInfo
) -> tuple[Checkpoint | None, bytes | None]:
    """The run's best checkpoint (the latest when none is scored) and its stored bytes."""
    mode: Literal["min", "max"]
    stated = run.config.get("monitor_mode")
    if stated in ("min", "max"):
        mode = stated
    else:  # the trainer's rule (TrainingConfig.monitor_mode)
        scored = [c.metric_name for c in await db.checkpoints.list(run.id) if c.metric_name]
        monitor = run.config.get("monitor") or (scored[-1] if scored else "")
        mode = "max" if str(monitor).endswith("accuracy") else "min"
    checkpoint = await db.checkpoints.best(run.id, mode=mode)
    if checkpoint is None:
        checkpoint = await db.checkpoints.latest(run.id)
    if checkpoint is None:
        return None, None
    async with db.registry.session() as session:
        payload = await session.scalar(
            select(CheckpointRow.payload).where(
                CheckpointRow.run_id == run.id,
                CheckpointRow.step == checkpoint.step,
                CheckpointRow.content_hash == checkpoint.info.content_hash,
            )
        )
    if payload is None:  # replaced or pruned since it was read: the next export sends it
        return checkpoint, None
    return checkpoint, bytes(payload)


def _find(config: Mapping[str, Any], key: str) -> Any:
    """``config[key]``, or the first ``key`` of a nested mapping (depth first)."""
    if key in config and config[key] is not None:
        return config[key]
    for value in config.values():
        if isinstance(value, Mapping):
            found = _find(value, key)
            if found is not None:
                return found
    return None


def _dataset(
    versions: Sequence[ModelVersion], config: Mapping[str, Any]
) -> tuple[str | None, str | None]:
    for source in [*(v.provenance for v in versions), config]:
        name: Any = _find(source, "dataset")
        version: Any = _find(source, "dataset_version")
        if isinstance(name, Mapping):  # {"name": ..., "version": ...}
            if version is None:
                version = name.get("version")
            name = name.get("name")
        if isinstance(name, str) and version is None:
            match = _DATASET_AND_VERSION.match(name)
            if match:
                name, version = match["name"], match["version"]
        if name is not None:
            return str(name), None if version is None else str(version)
    return None, None


def _encoding(
    versions: Sequence[ModelVersion], config: Mapping[str, Any], checkpoint: Checkpoint | None
) -> Mapping[str, Any] | None:
    for version in versions:
        if version.encoding:
            return version.encoding
    found = _find(config, "encoding")
    if isinstance(found, Mapping) and found:
        return found
    stored = None if checkpoint is None else checkpoint.state.get("encoding")
    return stored if isinstance(stored, Mapping) and stored else None


def _circuit_hash(versions: Sequence[ModelVersion], jobs: Sequence[JobRow]) -> str | None:
    hashes = Counter(job.circuit_hash for job in jobs if job.circuit_hash)
    if hashes:
        # Several circuits (rare): all of them, the most used first.
        return ",".join(h for h, _ in hashes.most_common())
    from ..models import QuantumModel

    for version in versions:
        if version.architecture.get("kind") == "quantum_ml.QuantumModel":
            try:
                return QuantumModel.from_registry(version).circuit.content_hash()
            except Exception:  # a version this code cannot rebuild: no hash, not no export
                logger.debug("cannot rebuild %s v%d", version.name, version.version, exc_info=True)
    return None


def _tags(
    run: RunInfo,
    versions: Sequence[ModelVersion],
    jobs: Sequence[JobRow],
    checkpoint: Checkpoint | None,
) -> dict[str, str]:
    dataset, dataset_version = _dataset(versions, run.config)
    encoding = _encoding(versions, run.config, checkpoint)
    backends = sorted({job.backend for job in jobs})
    found: dict[str, str | None] = {
        "qdb.run_id": run.id,
        "qdb.status": run.status,
        "qdb.backend": run.backend or (",".join(backends) if backends else None),
        "qdb.seed": None if run.seed is None else str(run.seed),
        "qdb.reason": run.reason,
        "qdb.circuit_hash": _circuit_hash(versions, jobs),
        "qdb.models": ",".join(f"{v.name}:{v.version}" for v in versions) or None,
        "qdb.dataset": dataset,
        "qdb.dataset_version": dataset_version,
        # A contract over 8000 characters is cut here; the whole one is in the model
        # version's version.json artifact.
        "qdb.encoding": None
        if encoding is None
        else json.dumps(encoding, sort_keys=True, separators=(",", ":")),
    }
    return {k: _cut(v, _MAX_TAG_VALUE_LENGTH) for k, v in found.items() if v is not None}


def _artifacts(
    versions: Sequence[ModelVersion], checkpoint: Checkpoint | None, payload: bytes | None
) -> dict[str, bytes]:
    files: dict[str, bytes] = {}
    for version in versions:
        folder = f"model/{_file_name(version.name)}/v{version.version}"
        arrays: dict[str, Any] = {}
        used: set[str] = set()
        for name, array in version.parameters.items():
            stem = _file_name(name)
            while stem in used:
                stem += "_"
            used.add(stem)
            buffer = io.BytesIO()
            np.save(buffer, array, allow_pickle=False)
            files[f"{folder}/parameters/{stem}.npy"] = buffer.getvalue()
            arrays[name] = {
                "file": f"parameters/{stem}.npy",
                "shape": list(array.shape),
                "dtype": str(array.dtype),
            }
        described = {
            "name": version.name,
            "version": version.version,
            "architecture": version.architecture,
            "encoding": version.encoding,
            "metrics": version.metrics,
            "provenance": version.provenance,
            "aliases": list(version.aliases),
            "parameters_hash": version.parameters_hash,
            "created_at": version.created_at,
            "parameters": arrays,
        }
        files[f"{folder}/version.json"] = _json_bytes(described)
    if checkpoint is not None and payload is not None:
        info = checkpoint.info
        stem = f"checkpoints/step-{info.step}-{info.content_hash[:12]}"
        files[f"{stem}.npz"] = payload
        files[f"{stem}.json"] = _json_bytes(
            {**dataclasses.asdict(info), "best": info.metric_value is not None}
        )
    return files


def _file_name(name: str) -> str:
    cleaned = _BAD_FILE_CHARACTERS.sub("_", name) or "_"
    return "_" + cleaned if cleaned.startswith(".") else cleaned


def _json_bytes(value: Any) -> bytes:
    return json.dumps(value, indent=1, sort_keys=True).encode()


def _send(
    snapshot: _Snapshot, tracking_uri: str | None, experiment: str, artifact_location: str | None
) -> MlflowExport:
    """The blocking part: every MLflow call, in a worker thread."""
    import mlflow
    from mlflow.exceptions import MlflowException

    uri = tracking_uri if tracking_uri is not None else mlflow.get_tracking_uri()
    _probe(uri)
    try:
        return _sync(mlflow.MlflowClient(tracking_uri=uri), snapshot, experiment, artifact_location)
    except MlflowException as exc:
        raise _export_error(exc, uri) from exc
    except OSError as exc:  # requests' errors, a refused connection, an unwritable store
        raise _export_error(exc, uri) from exc


def _probe(uri: str) -> None:
    """Fail fast on a tracking server that refuses connections.

    MLflow's client retries every request itself (7 times with exponential backoff by
    default, minutes in all), and that is the one retrying layer. A server that is not
    listening at all cannot answer any of them, so one TCP connect says so at once; a
    server that is there but slow is still left to MLflow's own retries.
    """
    parts = urlsplit(uri)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        return
    port = parts.port or (443 if parts.scheme == "https" else 80)
    try:
        with socket.create_connection((parts.hostname, port), timeout=5.0):
            pass
    except OSError as exc:
        raise ExportUnreachableError(
            f"the MLflow tracking server at {_redact_uri(uri)} cannot be reached "
            f"({type(exc).__name__}: {exc.strerror or exc}); nothing is lost: exporting "
            "again sends what is missing"
        ) from exc


def _sync(
    client: MlflowClient, snapshot: _Snapshot, experiment: str, artifact_location: str | None
) -> MlflowExport:
    from mlflow.entities import Metric, Param, RunTag, ViewType
    from mlflow.exceptions import MlflowException

    run = snapshot.run
    found = client.get_experiment_by_name(experiment)
    if found is None:
        try:
            experiment_id = client.create_experiment(
                experiment, artifact_location=artifact_location
            )
        except MlflowException:  # made meanwhile by another export
            found = client.get_experiment_by_name(experiment)
            if found is None:
                raise
            experiment_id = found.experiment_id
    elif found.lifecycle_stage == "deleted":
        raise ExportError(
            f"MLflow experiment {experiment!r} is deleted: restore it (mlflow experiments "
            "restore) or export to another experiment"
        )
    else:
        experiment_id = found.experiment_id

    existing = client.search_runs(
        [experiment_id],
        filter_string=f"tags.`qdb.run_id` = '{run.id}'",
        run_view_type=ViewType.ACTIVE_ONLY,
        max_results=2,
        order_by=["attributes.start_time ASC"],
    )
    resumed = bool(existing)
    if resumed:
        mlflow_run = existing[0]
        if len(existing) > 1:
            logger.warning(
                "experiment %r holds several MLflow runs of run %r; exporting to the oldest, %s",
                experiment,
                run.id,
                mlflow_run.info.run_id,
            )
    else:
        # The tag is set by the call that creates the run, so no run is ever left without it.
        mlflow_run = client.create_run(
            experiment_id,
            start_time=_ms(run.created_at),
            tags={"qdb.run_id": run.id},
            run_name=run.id,
        )
    mlflow_run_id = mlflow_run.info.run_id
    have_params = mlflow_run.data.params
    have_tags = mlflow_run.data.tags

    params = []
    for key, value in snapshot.params.items():
        if key not in have_params:
            params.append(Param(key, value))
        elif have_params[key] != value:
            # MLflow params never change: the run's config changed after an export.
            logger.warning(
                "MLflow run %s keeps param %r = %r; the run's config now says %r",
                mlflow_run_id,
                key,
                have_params[key],
                value,
            )
    tags = [RunTag(k, v) for k, v in snapshot.tags.items() if have_tags.get(k) != v]
    for chunk in _chunks(params, _PARAMS_TAGS_PER_BATCH):
        client.log_batch(mlflow_run_id, params=chunk, synchronous=True)
    for chunk in _chunks(tags, _PARAMS_TAGS_PER_BATCH):
        client.log_batch(mlflow_run_id, tags=chunk, synchronous=True)

    metrics = []
    for key, points in snapshot.metrics.items():
        have = set()
        if resumed:
            have = {
                (m.step, m.timestamp, m.value)
                for m in client.get_metric_history(mlflow_run_id, key)
            }
        metrics += [Metric(key, v, t, s) for s, t, v in points if (s, t, v) not in have]
    for chunk in _chunks(metrics, _METRICS_PER_BATCH):
        client.log_batch(mlflow_run_id, metrics=chunk, synchronous=True)

    listed: set[str] = set()
    if resumed:
        for top in sorted({path.split("/", 1)[0] for path in snapshot.artifacts}):
            listed |= _artifact_files(client, mlflow_run_id, top)
    missing = {p: data for p, data in snapshot.artifacts.items() if p not in listed}
    if missing:
        with tempfile.TemporaryDirectory(prefix="qdb-mlflow-") as folder:
            for path, data in missing.items():
                local = Path(folder, *path.split("/"))
                local.parent.mkdir(parents=True, exist_ok=True)
                local.write_bytes(data)
            client.log_artifacts(mlflow_run_id, folder)

    wanted = _MLFLOW_STATUS.get(run.status, "RUNNING")
    current = client.get_run(mlflow_run_id).info.status
    if wanted != current:
        if wanted == "RUNNING":
            client.update_run(mlflow_run_id, status="RUNNING")  # a run resumed since
        else:
            client.set_terminated(mlflow_run_id, wanted, end_time=_ms(run.updated_at))
    return MlflowExport(
        mlflow_run_id=mlflow_run_id,
        experiment_id=experiment_id,
        metrics_sent=len(metrics),
        params_sent=len(params),
        tags_sent=len(tags),
        artifacts_sent=len(missing),
        resumed=resumed,
    )


def _chunks(items: Sequence[Any], size: int) -> Iterator[Sequence[Any]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


def _artifact_files(client: MlflowClient, run_id: str, path: str) -> set[str]:
    """Every file under ``path`` of the run's artifacts (relative to the artifact root)."""
    files: set[str] = set()
    folders = [path]
    while folders:
        for entry in client.list_artifacts(run_id, folders.pop()):
            if entry.is_dir:
                folders.append(entry.path)
            else:
                files.add(posixpath.normpath(entry.path))
    return files


def _unreachable(exc: BaseException) -> bool:
    """Whether ``exc`` (or what caused it) says the server could not be reached at all."""
    try:
        from requests import exceptions as http
    except ImportError:  # pragma: no cover - requests comes with mlflow
        kinds: tuple[type[BaseException], ...] = (ConnectionError, TimeoutError)
    else:
        kinds = (http.ConnectionError, http.Timeout, http.RetryError, ConnectionError, TimeoutError)
    seen: BaseException | None = exc
    for _ in range(8):
        if seen is None:
            return False
        if isinstance(seen, kinds):
            return True
        seen = seen.__cause__ or seen.__context__
    return False


def _export_error(exc: BaseException, uri: str) -> ExportError:
    shown = _redact_uri(uri)
    if _unreachable(exc):
        root: BaseException = exc
        for _ in range(16):  # the first cause: "ConnectionRefusedError: ..."
            inner = root.__cause__ or root.__context__
            if inner is None:
                break
            root = inner
        why = _scrub(f"{type(root).__name__}: {root}", uri)
        return ExportUnreachableError(
            f"the MLflow tracking server at {shown} cannot be reached ({why}); nothing is "
            "lost: exporting again sends what is missing"
        )
    if "MLFLOW_ALLOW_FILE_STORE" in str(exc):
        return ExportError(
            f"MLflow refuses the file store {shown}: MLflow 3 keeps it only with "
            "MLFLOW_ALLOW_FILE_STORE=true; set it, or export to a database (sqlite:///mlflow.db)"
        )
    return ExportError(f"MLflow at {shown} refused the export: {_scrub(str(exc), uri)}")


def _scrub(text: str, uri: str) -> str:
    """``text`` on one line, without ``uri``'s secrets, at most 500 characters."""
    line = " ".join(text.split())
    line = line.replace(uri, _redact_uri(uri))
    password = urlsplit(uri).password
    if password:
        line = line.replace(password, "***")
    return _cut(line, 500)


def _redact_uri(uri: str) -> str:
    """``uri`` with a password and secret query values shown as ``***``."""
    try:
        parts = urlsplit(uri)
        netloc = parts.netloc
        if parts.password is not None:
            user, _, host = netloc.rpartition("@")
            netloc = f"{user.partition(':')[0]}:***@{host}"
        query = parts.query
        if query:
            pairs = parse_qsl(query, keep_blank_values=True)
            hidden = [(k, "***" if k.lower() in _SECRET_QUERY_KEYS else v) for k, v in pairs]
            query = urlencode(hidden, safe="*")
        return urlunsplit((parts.scheme, netloc, parts.path, query, parts.fragment))
    except ValueError:
        return "<unparsable URI>"


# --------------------------------------------------------------------------- files
#: The value kinds of the exported tables' columns.
_Kind = Literal["int", "float", "str", "bool", "json"]


@dataclass(frozen=True, slots=True)
class _Table:
    name: str
    columns: list[tuple[str, _Kind]]
    rows: list[dict[str, Any]]


async def export_files(
    db: QuantumDatabase,
    run_id: str,
    target: str | Path,
    format: Literal["csv", "json", "parquet"],
) -> list[Path]:
    """Write run ``run_id``'s tables into the folder ``target`` (made if missing), one file
    per table, and return their paths: ``<run>.metrics``, ``<run>.run``, ``<run>.jobs`` and
    ``<run>.alerts``, each with the format's suffix (``:`` of a run id becomes ``_``).

    ``metrics`` has the columns run_id, key, step, value, timestamp (UNIX seconds), in key
    and step order; ``run`` one row (config, status, reason...), ``jobs`` and ``alerts``
    the rows of the run. CSV and Parquet hold nested values (a config, a list of provider
    job ids) as JSON text; JSON files are lists of records. Each file is written to a
    temporary file first and then renamed, so a reader never sees half of one.
    Raises :class:`ExportError` for an unknown format or an unwritable folder,
    :class:`MissingDependencyError` for Parquet without pyarrow.
    """
    if format not in EXPORT_FORMATS:
        raise ExportError(
            f"export format must be one of {', '.join(EXPORT_FORMATS)}, got {format!r}"
        )
    validate_run_id(run_id)
    if format == "parquet":
        await asyncio.to_thread(_import_pyarrow)
    run = await db.runs.get(run_id)  # RunNotFoundError
    tables = await _tables(db, run)
    return await asyncio.to_thread(_write_tables, tables, Path(target), run_id, format)


def _import_pyarrow() -> None:
    try:
        import pyarrow
        import pyarrow.parquet  # noqa: F401
    except ImportError as exc:
        raise MissingDependencyError(
            "exporting to Parquet needs pyarrow: pip install 'quantum-db[parquet]'"
        ) from exc


async def _tables(db: QuantumDatabase, run: RunInfo) -> list[_Table]:
    metric_rows = []
    for key in await db.metrics.keys(run.id):
        history = await db.metrics.history(run.id, key)
        for step, value, stamp in zip(
            history.steps.tolist(),
            history.values.tolist(),
            history.timestamps.tolist(),
            strict=True,
        ):
            metric_rows.append(
                {"run_id": run.id, "key": key, "step": step, "value": value, "timestamp": stamp}
            )
    metrics = _Table(
        "metrics",
        [
            ("run_id", "str"),
            ("key", "str"),
            ("step", "int"),
            ("value", "float"),
            ("timestamp", "float"),
        ],
        metric_rows,
    )
    run_columns = _dataclass_columns(RunInfo, rename={"id": "run_id"})
    run_row = {("run_id" if k == "id" else k): v for k, v in dataclasses.asdict(run).items()}
    job_columns = [
        (column.name, _python_kind(column.type.python_type)) for column in JobRow.__table__.columns
    ]
    jobs = [
        {name: getattr(job, name) for name, _ in job_columns} for job in await _jobs(db, run.id)
    ]
    alerts: list[Alert] = await db.alerts.list(run_id=run.id)
    return [
        metrics,
        _Table("run", run_columns, [run_row]),
        _Table("jobs", job_columns, jobs),
        _Table("alerts", _dataclass_columns(Alert), [dataclasses.asdict(a) for a in alerts]),
    ]


def _dataclass_columns(
    cls: type, rename: Mapping[str, str] | None = None
) -> list[tuple[str, _Kind]]:
    hints = typing.get_type_hints(cls)
    names = rename or {}
    return [
        (names.get(field.name, field.name), _python_kind(hints[field.name]))
        for field in dataclasses.fields(cls)
    ]


def _python_kind(hint: Any) -> _Kind:
    options = [a for a in typing.get_args(hint) if a is not type(None)] or [hint]
    if len(options) == 1:
        only = options[0]
        if only is bool:
            return "bool"
        if only is int:
            return "int"
        if only is float:
            return "float"
        if only is str:
            return "str"
    return "json"


def _write_tables(tables: Sequence[_Table], folder: Path, run_id: str, format: str) -> list[Path]:
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ExportError(f"cannot make the export folder {str(folder)!r}: {exc}") from exc
    stem = run_id.replace(":", "_")
    written = []
    for table in tables:
        path = folder / f"{stem}.{table.name}.{format}"
        try:
            _write_atomically(path, table, format)
        except OSError as exc:
            raise ExportError(f"cannot write {str(path)!r}: {exc}") from exc
        written.append(path)
    return written


def _write_atomically(path: Path, table: _Table, format: str) -> None:
    temporary = path.with_name(f".{path.name}.{uuid.uuid4().hex[:8]}.tmp")
    try:
        with temporary.open("wb") as file:
            if format == "csv":
                _write_csv(file, table)
            elif format == "json":
                file.write(json.dumps(table.rows, indent=1, allow_nan=False).encode())
            else:
                _write_parquet(file, table)
            file.flush()
            os.fsync(file.fileno())
        temporary.replace(path)
    finally:
        temporary.unlink(missing_ok=True)


def _write_csv(file: typing.BinaryIO, table: _Table) -> None:
    text = io.TextIOWrapper(file, encoding="utf-8", newline="")
    writer = csv.writer(text)
    writer.writerow([name for name, _ in table.columns])
    for row in table.rows:
        writer.writerow([_csv_value(row[name], kind) for name, kind in table.columns])
    text.flush()
    text.detach()  # the file stays open for the caller's fsync


def _csv_value(value: Any, kind: _Kind) -> Any:
    if value is None:
        return ""
    # csv writes floats with repr(), which reads back to the same float.
    return json.dumps(value, sort_keys=True) if kind == "json" else value


def _write_parquet(file: typing.BinaryIO, table: _Table) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    types_of = {
        "int": pa.int64(),
        "float": pa.float64(),
        "str": pa.string(),
        "bool": pa.bool_(),
        "json": pa.string(),
    }
    schema = pa.schema([(name, types_of[kind]) for name, kind in table.columns])
    rows = [
        {
            name: json.dumps(row[name], sort_keys=True)
            if kind == "json" and row[name] is not None
            else row[name]
            for name, kind in table.columns
        }
        for row in table.rows
    ]
    pq.write_table(pa.Table.from_pylist(rows, schema=schema), file)
