"""``qdb datasets``, ``qdb models``, ``qdb backends``, ``qdb estimate``: what there is."""

from __future__ import annotations

import asyncio
from enum import StrEnum
from typing import Annotated, Any

import typer

from .common import JsonOption, UrlOption, UsageProblem, emit_json, emit_table, reading, when

__all__ = ["register"]


def register(app: typer.Typer) -> None:
    app.command("datasets", help="list stored datasets")(datasets)
    app.command("models", help="list registered models and their versions")(models)
    app.command("backends", help="list backends with their capabilities and prices")(backends)
    app.command("estimate", help="cost plan of a training configuration, before anything runs")(
        estimate
    )


def datasets(url: UrlOption = None, as_json: JsonOption = False) -> int:
    async def go() -> list[Any]:
        async with reading(url).connect() as db:
            return await db.list_datasets()

    infos = asyncio.run(go())
    if as_json:
        emit_json(
            [
                {
                    "name": i.name,
                    "version": i.version,
                    "n_samples": i.n_samples,
                    "dim": i.dim,
                    "label_kind": i.label_kind,
                    "created_at": i.created_at,
                }
                for i in infos
            ]
        )
        return 0
    if not infos:
        typer.echo("no datasets stored")
        return 0
    emit_table(
        ["name", "version", "samples", "dim", "labels", "created"],
        [(i.name, i.version, i.n_samples, i.dim, i.label_kind, when(i.created_at)) for i in infos],
        right=("version", "samples", "dim"),
    )
    return 0


def models(url: UrlOption = None, as_json: JsonOption = False) -> int:
    async def go() -> list[dict[str, Any]]:
        out = []
        async with reading(url).connect() as db:
            for name in await db.models.list():
                for number in await db.models.list_versions(name):
                    v = await db.models.get(name, number)
                    out.append(
                        {
                            "name": v.name,
                            "version": v.version,
                            "kind": v.architecture.get("kind", "quantum"),
                            "aliases": list(v.aliases),
                            "run_id": v.provenance.get("run_id"),
                            "metrics": v.metrics,
                            "created_at": v.created_at,
                        }
                    )
        return out

    found = asyncio.run(go())
    if as_json:
        emit_json(found)
        return 0
    if not found:
        typer.echo("no models registered")
        return 0
    emit_table(
        ["model", "version", "kind", "aliases", "run", "metrics", "created"],
        [
            (
                m["name"],
                m["version"],
                m["kind"],
                ",".join(m["aliases"]) or "-",
                m["run_id"] or "-",
                " ".join(
                    f"{k}={v:.4g}"
                    for k, v in sorted(m["metrics"].items())
                    if isinstance(v, int | float)
                    and k
                    in (
                        "test_accuracy",
                        "val_accuracy",
                        "train_loss",
                        "val_loss",
                        "relative_entropy",
                    )
                )
                or "-",
                when(m["created_at"]),
            )
            for m in found
        ],
        right=("version",),
    )
    return 0


def backends(as_json: JsonOption = False) -> int:
    from quantum_db.settings import Settings

    from ..backend_report import catalogue, catalogue_lines

    entries = catalogue(ionq_configured=Settings().ionq_api_key is not None)
    if as_json:
        emit_json([_entry(e) for e in entries])
        return 0
    for line in catalogue_lines(entries):
        typer.echo(line)
    return 0


def _entry(entry: Any) -> dict[str, Any]:
    from dataclasses import asdict, is_dataclass

    if is_dataclass(entry) and not isinstance(entry, type):
        raw = asdict(entry)
    else:  # pragma: no cover - the catalogue's entries are dataclasses
        raw = dict(vars(entry))
    return {
        k: (str(v) if not isinstance(v, int | float | str | bool | None) else v)
        for k, v in raw.items()
    }


class Mitigation(StrEnum):
    on = "on"
    off = "off"
    default = "default"


def estimate(
    qubits: Annotated[int, typer.Option(help="circuit width")] = 4,
    layers: Annotated[int, typer.Option(help="variational layers")] = 2,
    shots: Annotated[
        int | None, typer.Option(help="shots per circuit [default: 1000]", show_default=False)
    ] = None,
    exact: Annotated[
        bool, typer.Option("--exact", help="exact expectations (backends with an exact mode)")
    ] = False,
    epochs: Annotated[int, typer.Option(help="training epochs")] = 20,
    samples: Annotated[int, typer.Option(help="training samples per epoch")] = 120,
    batch_size: Annotated[int, typer.Option(help="samples per step")] = 16,
    validation_samples: Annotated[
        int, typer.Option(help="validation samples, each evaluated once per epoch")
    ] = 0,
    error_mitigation: Annotated[
        Mitigation,
        typer.Option(help="IonQ error mitigation (default: on from 500 shots, as IonQ does)"),
    ] = Mitigation.default,
    qgan: Annotated[
        bool,
        typer.Option(
            "--qgan",
            help="price a Born-machine QGAN instead: H then --layers RY/CZ reps on --qubits, "
            "--steps steps per epoch",
        ),
    ] = False,
    steps: Annotated[int, typer.Option(help="QGAN steps per epoch")] = 1,
    g_steps: Annotated[int, typer.Option(help="QGAN generator updates per step")] = 1,
) -> int:
    from quantum_db.settings import Settings

    from ..backend_report import estimate_lines, qgan_estimate_lines

    if exact and shots is not None:
        raise UsageProblem("--shots and --exact exclude each other: give one")
    shots = 1000 if shots is None else shots
    given = {
        "qubits": qubits,
        "layers": layers,
        "shots": shots,
        "epochs": epochs,
        "samples": samples,
        "batch_size": batch_size,
    }
    for name, value in given.items():
        if value < 1:
            raise UsageProblem(f"--{name.replace('_', '-')} must be positive")
    if validation_samples < 0:
        raise UsageProblem("--validation-samples must be 0 or more")
    # Bounds that keep the plan's circuit buildable in a moment: wider than any backend
    # (36 qubits at most) is already answered by "cannot run" at 64.
    for name, limit in (("qubits", 64), ("layers", 1000)):
        if given[name] > limit:
            raise UsageProblem(f"--{name} must be at most {limit}")
    mitigation = {"on": True, "off": False, "default": None}[error_mitigation.value]
    keyed = Settings().ionq_api_key is not None
    if qgan:
        if exact:
            raise UsageProblem("--qgan prices measured distributions: give --shots")
        for name, value in (("steps", steps), ("g_steps", g_steps)):
            if value < 1:
                raise UsageProblem(f"--{name.replace('_', '-')} must be positive")
        lines = qgan_estimate_lines(
            qubits=qubits,
            reps=layers,
            shots=shots,
            epochs=epochs,
            steps_per_epoch=steps,
            g_steps=g_steps,
            error_mitigation=mitigation,
            ionq_configured=keyed,
        )
    else:
        lines = estimate_lines(
            qubits=qubits,
            layers=layers,
            shots=None if exact else shots,
            epochs=epochs,
            samples=samples,
            batch_size=batch_size,
            validation_samples=validation_samples,
            error_mitigation=mitigation,
            ionq_configured=keyed,
        )
    for line in lines:
        typer.echo(line)
    return 0
