"""``qdb dashboard``, ``qdb ui``, ``qdb export``: a run's pictures, live pages and exports."""

from __future__ import annotations

import asyncio
from enum import StrEnum
from pathlib import Path
from typing import Annotated, Any

import typer

from .common import JsonOption, UrlOption, UsageProblem, database_url, emit_json, reading
from .runs import known_run

__all__ = ["register"]


def register(app: typer.Typer) -> None:
    app.command(
        "dashboard",
        help="write a run's dashboard: one self-contained HTML file (no network needed to view "
        "it) and a PNG per plot",
    )(dashboard)
    app.command(
        "ui", help="serve a live, read-only dashboard of every run in the browser (like mlflow ui)"
    )(ui)
    app.command("export", help="export a run to MLflow, or to CSV, JSON or Parquet files")(export)


def _progress(description: str) -> Any:
    """A spinner on stderr while a long command works (nothing when stderr is not a TTY)."""
    from rich.console import Console
    from rich.progress import Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

    console = Console(stderr=True)
    progress = Progress(
        SpinnerColumn(),
        TextColumn("{task.description}"),
        TimeElapsedColumn(),
        console=console,
        transient=True,
        disable=not console.is_terminal,
    )
    progress.add_task(description, total=None)
    return progress


def dashboard(
    run_id: Annotated[str, typer.Argument(metavar="RUN", help="the run's id")],
    out: Annotated[
        Path | None,
        typer.Option(help="folder for the HTML file and the PNGs (default: ./qdb-dashboard-RUN)"),
    ] = None,
    url: UrlOption = None,
    as_json: JsonOption = False,
) -> int:
    from ..monitoring.dashboard import write_dashboard

    target = out if out is not None else Path(f"qdb-dashboard-{run_id}")

    async def go() -> Any:
        async with reading(url).connect() as db:
            await known_run(db, run_id)
            with _progress(f"writing the dashboard of {run_id}"):
                return await write_dashboard(db, run_id, target)

    files = asyncio.run(go())
    html = Path(files.html)
    pngs = [Path(p) for p in files.pngs]
    if as_json:
        emit_json({"run_id": run_id, "html": str(html), "pngs": [str(p) for p in pngs]})
        return 0
    typer.echo(f"dashboard of run {run_id}: {html} ({len(pngs)} PNG plots beside it)")
    return 0


def ui(
    host: Annotated[
        str, typer.Option(help="interface to bind; another than 127.0.0.1 serves other machines")
    ] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="TCP port")] = 5000,
    url: UrlOption = None,
) -> int:
    from ..monitoring.ui import check_port_free, serve

    if not 0 < port < 65536:
        raise UsageProblem(f"--port must be 1-65535, got {port}")
    target = database_url(url)
    # The database must exist (the UI only reads: it never creates one) and the port be
    # free before the line below says where it serves.
    asyncio.run(_check_readable(target))
    check_port_free(host, port)
    typer.echo(f"qdb ui: serving http://{host}:{port}/ (read-only; Ctrl+C stops)", err=True)
    serve(target, host=host, port=port)
    return 0


async def _check_readable(url: str) -> None:
    async with reading(url).connect():
        pass


class Target(StrEnum):
    mlflow = "mlflow"
    csv = "csv"
    json = "json"
    parquet = "parquet"


def export(
    run_id: Annotated[str, typer.Argument(metavar="RUN", help="the run's id")],
    to: Annotated[Target, typer.Option("--to", help="where to: MLflow, or files")],
    tracking_uri: Annotated[
        str | None,
        typer.Option(help="MLflow tracking URI (default: MLFLOW_TRACKING_URI, or ./mlruns)"),
    ] = None,
    experiment: Annotated[str, typer.Option(help="MLflow experiment")] = "quantum-db",
    out: Annotated[
        Path | None, typer.Option(help="folder for the files (default: ./qdb-export-RUN)")
    ] = None,
    url: UrlOption = None,
    as_json: JsonOption = False,
) -> int:
    if to is not Target.mlflow and tracking_uri is not None:
        raise UsageProblem("--tracking-uri is for --to mlflow")
    if to is Target.mlflow and out is not None:
        raise UsageProblem("--out is for file exports (--to csv, json or parquet)")

    async def go() -> Any:
        async with reading(url).connect() as db:
            await known_run(db, run_id)
            if to is Target.mlflow:
                from ..monitoring.export import export_to_mlflow

                with _progress(f"exporting {run_id} to MLflow"):
                    return await export_to_mlflow(
                        db, run_id, tracking_uri=tracking_uri, experiment=experiment
                    )
            from ..monitoring.export import export_files

            folder = out if out is not None else Path(f"qdb-export-{run_id}")
            with _progress(f"exporting {run_id} as {to.value}"):
                return await export_files(db, run_id, folder, to.value)  # type: ignore[arg-type]

    result = asyncio.run(go())
    if to is Target.mlflow:
        summary = {
            "run_id": run_id,
            "mlflow_run_id": result.mlflow_run_id,
            "experiment_id": result.experiment_id,
            "metrics_sent": result.metrics_sent,
            "params_sent": result.params_sent,
            "tags_sent": result.tags_sent,
            "artifacts_sent": result.artifacts_sent,
            "resumed": result.resumed,
        }
        if as_json:
            emit_json(summary)
        else:
            typer.echo(
                f"run {run_id} -> MLflow run {result.mlflow_run_id} "
                f"({'resumed' if result.resumed else 'new'}): {result.metrics_sent} metric "
                f"values, {result.params_sent} params, {result.tags_sent} tags, "
                f"{result.artifacts_sent} artifacts sent"
            )
        return 0
    paths = [str(p) for p in result]
    if as_json:
        emit_json({"run_id": run_id, "files": paths})
    else:
        for path in paths:
            typer.echo(path)
    return 0
