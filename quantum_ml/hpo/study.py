"""Studies and workers: a study is an Optuna study; a trial is a quantum-db run.

:func:`create_study` checks a :class:`StudySpec` (the space, the dataset, the backend)
and creates the study in Optuna's storage beside the registry (see ``storage.py``), or
finds the one of that name with the same settings. :func:`run_worker` then runs trials
until the study is done; any number of workers, in any number of processes and machines,
can work on one study at once:

* under the study lock a worker fails the trials of workers that stopped heartbeating
  (their runs are marked ``failed``; Optuna enqueues a retry of each, up to
  ``max_retries``), counts the trials, checks the study budget and asks for the next one,
  so a study of N trials gets exactly N (a retry replaces the trial it retries);
* the trial is one :meth:`QuantumTrainer.fit` of run ``NAME-trial-K``, whose config keeps
  the hyperparameters and the study (``config["hpo"]``). The trial's user attributes link
  to the run (``run_id``) and keep its final metrics, cost and stop reason. A retry trains
  the failed trial's run again, so it resumes from that run's last checkpoint;
* each epoch's ``metric`` is reported to Optuna and the pruner may stop the run (status
  ``stopped``, reason ``pruned``; the trial ends ``PRUNED``);
* every trial's jobs reserve from the ledger budget ``hpo:NAME`` of ``budget_usd``, and no
  trial starts once the spent money plus the running trials' and the next trial's
  estimated cost (the mean cost of the completed trials) no longer fits it.

A worker ends when every trial has ended (it waits for the other workers' running trials,
any of which may still fail and be retried), when the budget stops new trials, or after
``max_trials`` trials of its own.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import math
import os
import re
import socket
import time
import warnings
from collections.abc import AsyncIterator, Callable, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal, cast

from backends.base import Backend
from backends.errors import QuantumDBError
from quantum_db.runs import validate_run_id

from ..encoders import QuantumDataEncoder
from ..errors import HPOError
from ..models import Entanglement, QuantumModel, Readout
from ..training.callbacks import Callback, TrainingContext
from ..training.trainer import QuantumTrainer
from .space import MODEL_HYPERPARAMETERS
from .spec import StudySpec
from .storage import Heartbeat, open_storage, optuna_url, prepare_storage, study_lock

if TYPE_CHECKING:
    import optuna
    from optuna.storages import RDBStorage
    from optuna.trial import FrozenTrial

    from quantum_db.database import QuantumDatabase
    from quantum_db.datasets import DatasetInfo

__all__ = [
    "SPEC_ATTR",
    "ModelFactory",
    "WorkerReport",
    "budget_name",
    "create_study",
    "load_spec",
    "run_worker",
    "trial_run_id",
]

logger = logging.getLogger(__name__)

#: The study user attribute that holds its :class:`StudySpec` as JSON.
SPEC_ATTR = "qdb_spec"
Params = dict[str, Any]
ModelFactory = Callable[[Params], QuantumModel]
Stop = Literal["done", "budget", "max_trials"]


def budget_name(study: str) -> str:
    """The ledger budget every trial of ``study`` reserves from."""
    return f"hpo:{study}"


def trial_run_id(study: str, number: int) -> str:
    return f"{study}-trial-{number}"


def _check_name(name: object) -> str:
    if not isinstance(name, str) or not name or len(name) > 100 or not name.isprintable():
        raise HPOError(f"a study name is 1-100 printable characters, got {name!r}")
    try:
        validate_run_id(trial_run_id(name, 0))
    except QuantumDBError as exc:
        raise HPOError(f"study name {name!r} cannot name its runs: {exc}") from None
    return name


def _optuna() -> Any:
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)  # the worker reports each trial
    # Heartbeats outside Study.optimize are what a worker that runs async trials needs
    # (it records them itself, see Heartbeat); Optuna's notes about it are not for users.
    for message in (
        "Heartbeat of storage is supposed to be used",
        "Argument ``heartbeat_interval`` is an experimental",
        "Argument ``grace_period`` is an experimental",
        "optuna.storages._heartbeat.fail_stale_trials is experimental",
    ):
        warnings.filterwarnings("ignore", message=re.escape(message))
    return optuna


@dataclass(frozen=True, slots=True)
class WorkerReport:
    """What one :func:`run_worker` did: the trials it ran and why it stopped."""

    study: str
    trials: list[int] = field(default_factory=list)
    stop: Stop = "done"
    message: str = ""


# ---------------------------------------------------------------------- the study
def _spec_of(study: optuna.Study, name: str) -> StudySpec:
    data = study.user_attrs.get(SPEC_ATTR)
    if data is None:
        raise HPOError(
            f"study {name!r} was not created by qdb hpo create (it has no {SPEC_ATTR!r}): "
            "it cannot be run by a qdb worker"
        )
    return StudySpec.from_json(data)


async def _study_tables_exist(db: QuantumDatabase, url: str) -> bool:
    from pathlib import Path

    from sqlalchemy import text
    from sqlalchemy.engine import make_url

    if url.startswith("sqlite"):
        return await asyncio.to_thread(Path(make_url(url).database or "").is_file)
    async with db.registry.engine.connect() as connection:
        found = await connection.scalar(text("SELECT to_regclass('optuna.studies')"))
    return found is not None


async def _load(db: QuantumDatabase, name: str, storage: RDBStorage) -> Any:
    """The Optuna study ``name`` in ``storage``; a clear HPOError when it has none."""
    from quantum_db.registry import redact_url

    optuna = _optuna()
    try:
        return await asyncio.to_thread(optuna.load_study, study_name=name, storage=storage)
    except KeyError:
        names = sorted(s.study_name for s in await asyncio.to_thread(storage.get_all_studies))
        raise HPOError(
            f"no study {name!r} at {redact_url(optuna_url(db.url))}; the studies there: "
            f"{names or 'none'}; create it with `qdb hpo create {name} --config FILE`"
        ) from None


async def dispose(storage: RDBStorage) -> None:
    """Close the storage's connections (its engine's pool)."""
    await asyncio.to_thread(storage.remove_session)
    await asyncio.to_thread(storage.engine.dispose)


@asynccontextmanager
async def loaded_study(db: QuantumDatabase, name: str) -> AsyncIterator[Any]:
    """Study ``name`` for the block; its storage's connections are closed after it."""
    from quantum_db.registry import redact_url

    url = optuna_url(db.url)
    if not await _study_tables_exist(db, url):  # checked first: opening would create them
        raise HPOError(
            f"no study {name!r} at {redact_url(db.url)}: no study was ever created in "
            f"this database; create it with `qdb hpo create {name} --config FILE`"
        )
    storage = await asyncio.to_thread(open_storage, url)
    try:
        yield await _load(db, name, storage)
    finally:
        await dispose(storage)


async def load_spec(db: QuantumDatabase, name: str) -> StudySpec:
    """The settings of study ``name`` (HPOError if the database has no such study)."""
    async with loaded_study(db, _check_name(name)) as study:
        return _spec_of(study, name)


async def _check_against_database(
    db: QuantumDatabase, name: str, spec: StudySpec
) -> tuple[StudySpec, DatasetInfo]:
    """The dataset (pinned to its version), splits, backend and budget all exist and fit."""
    info = (await db.get_dataset(spec.dataset, spec.dataset_version)).info
    counts = info.splits.get("counts", {}) if isinstance(info.splits, Mapping) else {}
    for split in (spec.train_split, spec.val_split):
        if split is not None and isinstance(counts, Mapping) and not counts.get(split):
            having = sorted(k for k, n in counts.items() if n)
            raise HPOError(
                f"dataset {info.name!r} v{info.version} has no samples in split {split!r}; "
                f"its splits with samples: {having}"
            )
    if spec.metric.endswith("accuracy") and info.label_kind != "class":
        raise HPOError(f"metric {spec.metric!r} needs class labels; {info.name!r} is regression")
    if spec.backend is not None:
        db.backend_manager.get(spec.backend)  # UnknownBackendError naming the registered ones
    if spec.budget_usd is not None and spec.training.get("budget_usd") is not None:
        raise HPOError("give the budget once: [study] budget_usd, not [training] budget_usd too")
    return dataclasses.replace(spec, dataset_version=info.version), info


async def create_study(db: QuantumDatabase, name: str, spec: StudySpec) -> tuple[StudySpec, bool]:
    """Create study ``name`` with ``spec`` (its dataset pinned to the version found now);
    returns the spec and whether it was created.

    A study of that name with the same settings is returned as it is (``False``); one with
    other settings is refused with :class:`HPOError` naming what differs. Nothing is
    written before everything is checked.
    """
    _check_name(name)
    if not isinstance(spec, StudySpec):
        raise HPOError(f"spec must be a StudySpec, got {type(spec).__name__}")
    pinned, _ = await _check_against_database(db, name, spec)
    await prepare_storage(db.registry)
    url = optuna_url(db.url)
    async with study_lock(db.registry, url, name):
        storage = await asyncio.to_thread(open_storage, url)
        try:
            return await _create_locked(db, name, spec, pinned, storage)
        finally:
            await dispose(storage)


async def _create_locked(
    db: QuantumDatabase, name: str, spec: StudySpec, pinned: StudySpec, storage: RDBStorage
) -> tuple[StudySpec, bool]:
    optuna = _optuna()
    names = {s.study_name for s in await asyncio.to_thread(storage.get_all_studies)}
    if name not in names:
        await _check_no_runs_named_like(db, name)
    try:
        study = await asyncio.to_thread(
            optuna.create_study,
            study_name=name,
            storage=storage,
            direction=pinned.direction,
        )
    except optuna.exceptions.DuplicatedStudyError:
        existing = _spec_of(await _load(db, name, storage), name)
        # A study made with "latest version" finds the version it pinned.
        wanted = (
            dataclasses.replace(pinned, dataset_version=existing.dataset_version)
            if spec.dataset_version is None
            else pinned
        )
        differences = wanted.differences(existing)
        if differences:
            raise HPOError(
                f"study {name!r} exists with other settings ({', '.join(differences)}): "
                "a study's space and settings are fixed when it is created; use another name"
            ) from None
        return existing, False
    await asyncio.to_thread(study.set_user_attr, SPEC_ATTR, pinned.to_json())
    return pinned, True


async def _check_no_runs_named_like(db: QuantumDatabase, name: str) -> None:
    prefix = trial_run_id(name, 0)[:-1]
    taken = sorted(r.id for r in await db.runs.list() if r.id.startswith(prefix))
    if taken:
        raise HPOError(
            f"the registry has runs named like study {name!r}'s trials ({', '.join(taken[:3])}"
            f"{', ...' if len(taken) > 3 else ''}) but no such study: use another study name"
        )


# ---------------------------------------------------------------------- samplers
def _grid_sampler(spec: StudySpec) -> Any:
    """Optuna's GridSampler without its stop: outside ``optimize`` ``study.stop()`` raises,
    and the worker counts the trials itself. One seed for every trial: the grid's order
    (and its points' ids) follow it."""
    from optuna.samplers import GridSampler

    class GridWithoutStop(GridSampler):
        def after_trial(self, *args: Any, **kwargs: Any) -> None:
            return None

    return GridWithoutStop(spec.space.grid(), seed=spec.seed)


def _sampler(spec: StudySpec, salt: int) -> Any:
    """A fresh sampler per trial, seeded with the study's seed and the trial count.

    Workers that all seeded one sampler alike would propose the same first trials; this
    way each proposal is a function of the study's history alone (TPE and CMA-ES read
    that from the storage; CMA-ES keeps its state in the trials' system attributes).
    """
    from optuna import samplers

    if spec.sampler == "grid":
        return _grid_sampler(spec)
    seed = (spec.seed * 1_000_003 + salt) % 2**32
    if spec.sampler == "random":
        return samplers.RandomSampler(seed=seed)
    if spec.sampler == "cmaes":
        # Categorical parameters are sampled at random beside CMA-ES (documented).
        return samplers.CmaEsSampler(seed=seed, warn_independent_sampling=False)
    return samplers.TPESampler(seed=seed)


def _pruner(spec: StudySpec) -> Any:
    from optuna import pruners

    if spec.pruner == "median":
        return pruners.MedianPruner(
            n_startup_trials=spec.pruner_startup_trials, n_warmup_steps=spec.pruner_warmup_epochs
        )
    if spec.pruner == "successive_halving":
        return pruners.SuccessiveHalvingPruner(
            min_resource=max(1, spec.pruner_warmup_epochs + 1), reduction_factor=3
        )
    return pruners.NopPruner()


# ---------------------------------------------------------------------- the trial
class OptunaPruning(Callback):
    """Reports ``metric`` to the trial after every epoch; stops the run when it is pruned."""

    def __init__(self, trial: optuna.Trial, metric: str) -> None:
        self.trial = trial
        self.metric = metric

    async def on_epoch_end(
        self, ctx: TrainingContext, epoch: int, metrics: Mapping[str, float]
    ) -> None:
        value = metrics.get(self.metric)
        if value is None or not math.isfinite(value):
            return
        await asyncio.to_thread(self.trial.report, float(value), epoch)
        if await asyncio.to_thread(self.trial.should_prune):
            ctx.request_stop(
                "pruned", f"pruned by Optuna after epoch {epoch} ({self.metric} {value:.6g})"
            )


def _default_model(spec: StudySpec, params: Params, info: DatasetInfo) -> QuantumModel:
    settings = {**spec.model, **{k: v for k, v in params.items() if k in MODEL_HYPERPARAMETERS}}
    encoder = QuantumDataEncoder.from_contract(info.encoding) if info.encoding else None
    n_qubits = (encoder.n_qubits if encoder is not None else None) or info.dim
    classify = info.label_kind == "class"
    return QuantumModel(
        n_qubits,
        int(settings.get("layers", 1)),
        encoding=encoder.encoder if encoder is not None else "angle",
        entanglement=cast(Entanglement, settings.get("entanglement", "linear")),
        readout=cast(Readout, settings.get("readout", "expectation")),
        task="classification" if classify else "regression",
        n_outputs=max(int(info.n_classes or 2), 2) if classify else 1,
        seed=spec.seed,
        encoder=encoder,
    )


def _finite(metrics: Mapping[str, float]) -> dict[str, float]:
    return {k: float(v) for k, v in metrics.items() if math.isfinite(v)}


class _Worker:
    def __init__(
        self,
        db: QuantumDatabase,
        name: str,
        spec: StudySpec,
        info: DatasetInfo,
        storage: RDBStorage,
        backend: Backend | str | None,
        model_factory: ModelFactory | None,
        echo: Callable[[str], None],
    ) -> None:
        self.db = db
        self.name = name
        self.spec = spec
        self.info = info
        self.storage = storage
        self.backend = backend if backend is not None else spec.backend
        self.model_factory = model_factory
        self.echo = echo
        self.url = optuna_url(db.url)
        self.stale: list[FrozenTrial] = []
        self.worker_id = f"{socket.gethostname()}:{os.getpid()}"

    def on_stale(self, study: optuna.Study, trial: FrozenTrial) -> None:
        """Optuna failed ``trial`` (its worker stopped heartbeating): retry it, remember it."""
        from optuna.storages import RetryHeartbeatStaleTrialCallback

        self.stale.append(trial)
        RetryHeartbeatStaleTrialCallback(
            max_retry=self.spec.max_retries, inherit_intermediate_values=True
        )(study, trial)

    def study(self, salt: int) -> Any:
        optuna = _optuna()
        return optuna.Study(
            study_name=self.name,
            storage=self.storage,
            sampler=_sampler(self.spec, salt),
            pruner=_pruner(self.spec),
        )

    @property
    def n_trials(self) -> int:
        size = self.spec.space.grid_size if self.spec.sampler == "grid" else None
        wanted = self.spec.n_trials
        if size is not None:
            return size if wanted is None else min(wanted, size)
        assert wanted is not None  # StudySpec refuses it otherwise
        return wanted

    async def _fail_runs_of_stale(self) -> None:
        """The runs of trials whose worker is gone end ``failed`` (a retry resumes them)."""
        stale, self.stale = self.stale, []
        for trial in stale:
            run_id = trial.user_attrs.get("run_id")
            if not run_id or not await self.db.runs.exists(run_id):
                continue
            run = await self.db.runs.get(run_id)
            if run.status == "running":
                await self.db.runs.finish(
                    run_id,
                    "failed",
                    f"trial {trial.number} of study {self.name!r}: its worker stopped "
                    f"heartbeating for {self.spec.grace_s:g} s (killed or cut off)",
                )
            self.echo(f"trial {trial.number}: its worker is gone; the trial failed")

    def _estimate(self, trials: list[FrozenTrial]) -> float:
        from optuna.trial import TrialState

        def costs(states: tuple[TrialState, ...]) -> list[float]:
            return [
                float(t.user_attrs["cost_usd"])
                for t in trials
                if t.state in states and "cost_usd" in t.user_attrs
            ]

        complete = costs((TrialState.COMPLETE,))
        if complete:
            return sum(complete) / len(complete)
        ended = costs((TrialState.PRUNED, TrialState.FAIL))
        if ended:
            return max(ended)
        return float(self.spec.trial_cost_usd or 0.0)

    async def _budget_allows(self, trials: list[FrozenTrial]) -> str | None:
        """``None`` when the next trial fits the study budget, else why it does not."""
        from optuna.trial import TrialState

        from backends.accounting import Budget

        if self.spec.budget_usd is None:
            return None
        limit = float(self.spec.budget_usd)
        exposure = await self.db.accounting.exposure(Budget(limit, budget_name(self.name)))
        running = sum(1 for t in trials if t.state == TrialState.RUNNING)
        estimate = self._estimate(trials)
        needed = exposure + (running + 1) * estimate
        if exposure < limit and needed <= limit + 1e-12:
            return None
        return (
            f"the study budget ${limit:g} has ${max(limit - exposure, 0.0):.4f} left, and "
            f"{running} running trial(s) and the next one are estimated at ${estimate:.4f} "
            "each: no new trial starts"
        )

    def _plan(self, trials: list[FrozenTrial]) -> Literal["ask", "wait", "done"]:
        from optuna.trial import TrialState

        retries = sum(1 for t in trials if "failed_trial" in t.system_attrs)
        if any(t.state == TrialState.WAITING for t in trials):
            return "ask"
        if len(trials) - retries < self.n_trials:
            return "ask"
        return "wait" if any(t.state == TrialState.RUNNING for t in trials) else "done"

    async def next_trial(self) -> tuple[Any, Any, bool] | Literal["wait", "done"] | str:
        """Under the lock: the next (study, trial, is a retry), or "wait", "done" or a
        budget message."""
        optuna = _optuna()
        async with study_lock(self.db.registry, self.url, self.name):
            probe = self.study(0)
            await asyncio.to_thread(optuna.storages.fail_stale_trials, probe)
            await self._fail_runs_of_stale()
            trials = await asyncio.to_thread(probe.get_trials, deepcopy=False)
            plan = self._plan(trials)
            if plan != "ask":
                return plan
            refused = await self._budget_allows(trials)
            if refused is not None:
                return refused
            study = self.study(len(trials))
            trial = await asyncio.to_thread(study.ask, self.spec.space.distributions())
            # A retry keeps the run of the trial it retries (its user attributes are
            # copied), so the run resumes from its last checkpoint.
            frozen = await asyncio.to_thread(self.storage.get_trial, trial._trial_id)
            origin = frozen.system_attrs.get("failed_trial")
            run_id = frozen.user_attrs.get("run_id") or trial_run_id(
                self.name, trial.number if origin is None else int(origin)
            )
            await asyncio.to_thread(trial.set_user_attr, "run_id", run_id)
            await asyncio.to_thread(trial.set_user_attr, "worker", self.worker_id)
            return study, trial, origin is not None

    async def run_trial(self, study: Any, trial: Any, retry: bool) -> None:
        optuna = _optuna()
        from optuna.trial import TrialState

        params = dict(trial.params)
        run_id = str(trial.user_attrs["run_id"])
        started = time.monotonic()
        config = self.spec.training_config(params)
        if self.spec.budget_usd is not None:
            config = dataclasses.replace(
                config, budget_usd=float(self.spec.budget_usd), budget_name=budget_name(self.name)
            )
        state: TrialState = TrialState.FAIL
        value: float | None = None
        attrs: dict[str, Any] = {}
        with Heartbeat(self.storage, trial._trial_id, self.spec.heartbeat_s):
            try:
                history = await self._fit(trial, params, run_id, config, retry)
            except QuantumDBError as exc:
                attrs["error"] = f"{type(exc).__name__}: {exc}"[:2000]
            else:
                final = _finite(history.final)
                attrs.update(
                    metrics=final, cost_usd=history.cost_usd, stop_reason=history.stop_reason
                )
                if history.stop_reason == "pruned":
                    state = TrialState.PRUNED
                elif history.stop_reason == "budget":
                    attrs["error"] = "stopped by the study budget before it ended"
                elif self.spec.metric in final:
                    state, value = TrialState.COMPLETE, final[self.spec.metric]
                else:
                    attrs["error"] = f"the run recorded no finite {self.spec.metric!r}"
            finally:
                for key, item in attrs.items():
                    await asyncio.to_thread(trial.set_user_attr, key, item)
                try:
                    await asyncio.to_thread(
                        study.tell, trial, value if state == TrialState.COMPLETE else None,
                        state=state,
                    )  # fmt: skip
                except optuna.exceptions.UpdateFinishedTrialError:
                    logger.warning(
                        "trial %d of %r was failed by another worker meanwhile (no heartbeat "
                        "for %g s); its result is not recorded",
                        trial.number,
                        self.name,
                        self.spec.grace_s,
                    )
        seconds = time.monotonic() - started
        shown = f" {self.spec.metric}={value:.6g}" if value is not None else ""
        why = f" ({attrs['error']})" if "error" in attrs else ""
        self.echo(
            f"trial {trial.number}: {state.name.lower()}{shown}{why} (run {run_id}, "
            f"{seconds:.1f} s)"
        )

    async def _fit(self, trial: Any, params: Params, run_id: str, config: Any, retry: bool) -> Any:
        info = self.info
        exists = await self.db.runs.exists(run_id)
        if exists and not retry:
            raise HPOError(f"run {run_id!r} exists already: it is not this trial's to train")
        model = (
            self.model_factory(dict(params))
            if self.model_factory is not None
            else _default_model(self.spec, params, info)
        )
        if not isinstance(model, QuantumModel):
            raise HPOError(f"model_factory must return a QuantumModel, got {type(model).__name__}")
        trainer = QuantumTrainer(
            config, self.db, self.backend, callbacks=[OptunaPruning(trial, self.spec.metric)]
        )
        if not exists:
            await self.db.runs.create(
                run_id,
                config={
                    "hyperparameters": params,
                    "training": config.to_dict(),
                    "model": model.architecture(),
                    "hpo": {
                        "study": self.name,
                        "trial": trial.number,
                        "sampler": self.spec.sampler,
                        "pruner": self.spec.pruner,
                        "metric": self.spec.metric,
                        "mode": self.spec.mode,
                        "seed": self.spec.seed,
                        "dataset": info.name,
                        "dataset_version": info.version,
                    },
                },
                backend=trainer.backend.name,
                seed=config.seed,
                owner_id=self.db.owner_id,
            )
        train = self.db.create_ml_data_loader(
            info.name,
            self.spec.batch_size,
            seed=config.seed,
            split=self.spec.train_split,
            version=info.version,
        )
        val = (
            None
            if self.spec.val_split is None
            else self.db.create_ml_data_loader(
                info.name,
                self.spec.batch_size,
                shuffle=False,
                split=self.spec.val_split,
                version=info.version,
            )
        )
        try:
            return await trainer.fit(model, train, val, run_id=run_id)
        finally:
            await trainer.aclose()


async def run_worker(
    db: QuantumDatabase,
    name: str,
    *,
    max_trials: int | None = None,
    backend: Backend | str | None = None,
    model_factory: ModelFactory | None = None,
    echo: Callable[[str], None] | None = None,
    poll_s: float | None = None,
) -> WorkerReport:
    """Run trials of study ``name`` until it is done (see the module docstring).

    ``backend`` overrides the study's (a Backend of your own: a priced simulator, say);
    ``model_factory`` builds the model of a trial from its hyperparameters instead of the
    default classifier or regressor on the dataset's encoder. ``echo`` gets one line per
    trial (default: the log at INFO).
    """
    if max_trials is not None and (
        isinstance(max_trials, bool) or not isinstance(max_trials, int) or max_trials < 1
    ):
        raise HPOError(f"max_trials must be an integer >= 1, got {max_trials!r}")
    if model_factory is not None and not callable(model_factory):
        raise HPOError("model_factory must be callable")
    spec = await load_spec(db, name)
    _, info = await _check_against_database(db, name, spec)
    say = echo if echo is not None else logger.info
    holder: dict[str, _Worker] = {}

    def on_stale(study: Any, trial: Any) -> None:
        holder["worker"].on_stale(study, trial)

    storage = await asyncio.to_thread(
        open_storage,
        optuna_url(db.url),
        heartbeat_s=spec.heartbeat_s,
        grace_s=spec.grace_s,
        stale_trial_callback=on_stale,
    )
    worker = _Worker(db, name, spec, info, storage, backend, model_factory, say)
    holder["worker"] = worker
    ran: list[int] = []
    poll = poll_s if poll_s is not None else min(spec.heartbeat_s, 5.0)
    try:
        while max_trials is None or len(ran) < max_trials:
            step = await worker.next_trial()
            if step == "done":
                return WorkerReport(name, ran, "done", "every trial of the study has ended")
            if step == "wait":
                await asyncio.sleep(poll)  # another worker's trial may still fail and retry
                continue
            if isinstance(step, str):
                say(step)
                return WorkerReport(name, ran, "budget", step)
            study, trial, retry = step
            ran.append(trial.number)
            await worker.run_trial(study, trial, retry)
        return WorkerReport(name, ran, "max_trials", f"ran the {max_trials} trial(s) asked for")
    finally:
        await dispose(storage)
