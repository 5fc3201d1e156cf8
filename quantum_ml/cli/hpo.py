"""``qdb hpo create|worker|show|list``: hyperparameter studies that many workers share.

``create`` stores a study's settings (a TOML file, see :mod:`quantum_ml.hpo.spec`) in the
database; any number of ``worker`` processes, on any machines that reach the same
database, then run its trials; ``show`` prints what it found.
"""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Annotated, Any

import typer

from .common import (
    JsonOption,
    UrlOption,
    emit_json,
    emit_table,
    make_database_folder,
    number,
    resolve_url,
    shorten,
)

__all__ = ["register"]

hpo_app = typer.Typer(
    help="hyperparameter studies on Optuna: create one, run workers on it, show it",
    no_args_is_help=True,
)


def register(app: typer.Typer) -> None:
    app.add_typer(hpo_app, name="hpo")


NameArgument = Annotated[str, typer.Argument(help="the study's name", show_default=False)]


@hpo_app.command("create", help="create a study from a TOML file (nothing runs yet)")
def create(
    name: NameArgument,
    config: Annotated[
        Path,
        typer.Option(
            "--config",
            "-c",
            help="the study's TOML: [study], [training], [model], [space]",
            show_default=False,
        ),
    ],
    url: UrlOption = None,
) -> int:
    from quantum_db import QuantumDatabase

    from ..hpo import StudySpec, create_study

    spec = StudySpec.from_toml(config)  # every setting checked before the database opens
    chosen = resolve_url(url)
    make_database_folder(chosen)

    async def go() -> tuple[StudySpec, bool]:
        async with QuantumDatabase(chosen).connect() as db:
            return await create_study(db, name, spec)

    pinned, created = asyncio.run(go())
    verb = "created" if created else "exists with the same settings:"
    typer.echo(
        f"study {name!r} {verb} {pinned.sampler} over {list(pinned.space)}, "
        f"{pinned.n_trials or 'every grid point as'} trials, {pinned.metric} ({pinned.mode}) "
        f"on {pinned.dataset} v{pinned.dataset_version}"
    )
    typer.echo(f"run workers with: qdb hpo worker {name}")
    return 0


@hpo_app.command("worker", help="run the study's trials until it is done (start any number)")
def worker(
    name: NameArgument,
    trials: Annotated[
        int | None,
        typer.Option(
            "--trials",
            "-n",
            min=1,
            help="stop after this many trials of this worker",
            show_default=False,
        ),
    ] = None,
    url: UrlOption = None,
) -> int:
    from quantum_db import QuantumDatabase

    from ..hpo import run_worker

    async def go() -> Any:
        # create=False: a mistyped SQLite path is refused, not created empty.
        async with QuantumDatabase(resolve_url(url), create=False).connect() as db:
            return await run_worker(db, name, max_trials=trials, echo=typer.echo)

    report = asyncio.run(go())
    typer.echo(f"worker done: {len(report.trials)} trial(s); {report.message}")
    return 0


def _params(params: dict[str, Any]) -> str:
    return " ".join(f"{k}={number(v, 4) if isinstance(v, float) else v}" for k, v in params.items())


@hpo_app.command("show", help="the best trial, every trial with its run, the importances")
def show(name: NameArgument, url: UrlOption = None, as_json: JsonOption = False) -> int:
    from quantum_db import QuantumDatabase

    from ..hpo import study_report

    async def go() -> Any:
        async with QuantumDatabase(resolve_url(url), create=False).connect() as db:
            return await study_report(db, name)

    report = asyncio.run(go())
    data = report.to_json()
    if as_json:
        emit_json(data)
        return 0
    spec = report.spec
    counts = ", ".join(f"{n} {state}" for state, n in sorted(report.counts.items()))
    typer.echo(
        f"study {name}: {spec.sampler} sampler, {spec.pruner} pruner, {spec.metric} "
        f"({spec.mode}) on {spec.dataset} v{spec.dataset_version}; {counts or 'no trials yet'}"
    )
    if spec.budget_usd is not None:
        typer.echo(f"budget: ${report.spent_usd:.4f} of ${spec.budget_usd:g} spent or reserved")
    best = report.best
    if best is None:
        typer.echo("best: none yet (no trial has completed)")
    else:
        typer.echo(
            f"best: trial {best.number}, {spec.metric}={number(best.score)}, run {best.run_id}, "
            f"{_params(best.params)}"
        )
    typer.echo("")
    emit_table(
        ["trial", "state", spec.metric, "params", "run", "run status", "cost_usd", "seconds"],
        (
            [
                t.number,
                t.state + (f" (retry of {t.retry_of})" if t.retry_of is not None else ""),
                number(t.score) if t.state == "complete" else "-",
                shorten(_params(t.params), 60),
                t.run_id or "-",
                t.run_status or "-",
                f"{t.cost_usd:.4f}",
                "-" if t.duration_s is None else f"{t.duration_s:.1f}",
            ]
            for t in report.trials
        ),
        right=[spec.metric, "cost_usd", "seconds", "trial"],
    )
    typer.echo("")
    if report.importances:
        typer.echo(
            "importances (fANOVA): "
            + ", ".join(f"{k} {v:.3f}" for k, v in report.importances.items())
        )
    else:
        typer.echo("importances: need at least two completed trials")
    typer.echo(f"optuna-dashboard {json.dumps(report.storage_url)}")
    return 0


@hpo_app.command("list", help="the studies in the database")
def list_(url: UrlOption = None, as_json: JsonOption = False) -> int:
    from quantum_db import QuantumDatabase

    from ..hpo import list_studies

    async def go() -> Any:
        async with QuantumDatabase(resolve_url(url), create=False).connect() as db:
            return await list_studies(db)

    studies = asyncio.run(go())
    if as_json:
        emit_json(studies)
        return 0
    if not studies:
        typer.echo("no studies (create one with `qdb hpo create NAME --config FILE`)")
        return 0
    emit_table(
        ["study", "direction", "trials", "states"],
        (
            [
                s["study"],
                s["direction"],
                s["trials"],
                ", ".join(f"{n} {k}" for k, n in sorted(s["counts"].items())),
            ]
            for s in studies
        ),
        right=["trials"],
    )
    return 0
