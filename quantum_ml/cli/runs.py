"""``qdb runs``, ``qdb runs show``, ``qdb metrics``, ``qdb jobs``, ``qdb costs``,
``qdb alerts``: what the runs did. Every one only reads (``qdb runs`` also marks the runs
of dead processes interrupted, so that the table tells the truth)."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import TYPE_CHECKING, Annotated, Any

import typer

from .common import (
    JsonOption,
    UrlOption,
    UsageProblem,
    emit_json,
    emit_table,
    finite,
    number,
    reading,
    shorten,
    state,
    when,
)

if TYPE_CHECKING:
    from quantum_db import QuantumDatabase

__all__ = ["register"]

#: How much of a run's reason fits a line of ``qdb runs``.
_REASON_WIDTH = 48

runs_app = typer.Typer(
    help="list training runs (runs whose process is gone are marked interrupted first); "
    "`qdb runs show RUN` shows one",
    invoke_without_command=True,
    no_args_is_help=False,
)


def register(app: typer.Typer) -> None:
    app.add_typer(runs_app, name="runs")
    app.command("metrics", help="the metrics of a run: every key, or one key's values")(metrics)
    app.command("jobs", help="the jobs sent to backends (of one run, or all)")(jobs)
    app.command("costs", help="budgets: limit, spent, reserved; or one budget's ledger")(costs)
    app.command(
        "alerts",
        help="alerts (of one run, or all); --rule checks a rule against a stored run",
    )(alerts)


async def known_run(db: QuantumDatabase, run_id: str) -> Any:
    from quantum_db.errors import RunNotFoundError

    if not await db.runs.exists(run_id):
        raise RunNotFoundError(f"no run {run_id!r} in this database (`qdb runs` lists them)")
    return await db.runs.get(run_id)


def _run_dict(info: Any, last_step: int | None) -> dict[str, Any]:
    return {
        "id": info.id,
        "status": info.status,
        "reason": info.reason,
        "backend": info.backend,
        "seed": info.seed,
        "last_step": last_step,
        "created_at": info.created_at,
        "updated_at": info.updated_at,
    }


@runs_app.callback()
def runs(
    ctx: typer.Context,
    url: UrlOption = None,
    status: Annotated[
        str | None,
        typer.Option(
            help="only runs in this status: running, finished, stopped, failed or interrupted"
        ),
    ] = None,
    as_json: JsonOption = False,
) -> int:
    if ctx.invoked_subcommand is not None:
        state.command = f"qdb runs {ctx.invoked_subcommand}"
        ctx.obj = url
        return 0
    from quantum_db import RUN_STATUSES

    if status is not None and status not in RUN_STATUSES:
        raise UsageProblem(f"--status must be one of {', '.join(RUN_STATUSES)}, got {status!r}")

    async def go() -> tuple[list[Any], dict[str, int]]:
        async with reading(url).connect() as db:
            await db.runs.detect_interrupted()
            return await db.runs.list(status), await db.runs.last_steps()

    infos, last = asyncio.run(go())
    if as_json:
        emit_json([_run_dict(i, last.get(i.id)) for i in infos])
        return 0
    if not infos:
        typer.echo("no runs stored" if status is None else f"no {status} runs")
        return 0
    emit_table(
        ["run", "status", "reason", "backend", "last step", "created"],
        [
            (
                i.id,
                i.status,
                shorten(i.reason or "-", _REASON_WIDTH),
                i.backend or "-",
                "-" if last.get(i.id) is None else last[i.id],
                when(i.created_at),
            )
            for i in infos
        ],
        right=("last step",),
    )
    return 0


@runs_app.command("show", help="one run: settings, metrics, checkpoints, jobs, cost, alerts")
def show(
    ctx: typer.Context,
    run_id: Annotated[str, typer.Argument(metavar="RUN", help="the run's id")],
    url: UrlOption = None,
    as_json: JsonOption = False,
) -> int:
    chosen = url if url is not None else ctx.obj

    async def go() -> dict[str, Any]:
        async with reading(chosen).connect() as db:
            info = await known_run(db, run_id)
            last = (await db.runs.last_steps([run_id])).get(run_id)
            keys = await db.metrics.keys(run_id)
            summaries = [await _metric_summary(db, run_id, k) for k in keys]
            checkpoints = await db.checkpoints.list(run_id)
            job_rows = await db.accounting.jobs(run_id=run_id)
            alert_rows = await db.alerts.list(run_id)
            models = []
            for name in await db.models.list():
                for number_ in await db.models.list_versions(name):
                    version = await db.models.get(name, number_)
                    if version.provenance.get("run_id") == run_id:
                        models.append(f"{name} v{number_}")
        by_backend: dict[str, int] = {}
        for job in job_rows:
            by_backend[job.backend] = by_backend.get(job.backend, 0) + 1
        return {
            **_run_dict(info, last),
            "config": info.config,
            "metrics": summaries,
            "checkpoints": [
                {"step": c.step, "metric": finite(c.metric_value), "created_at": c.created_at}
                for c in checkpoints
            ],
            "jobs": {"total": len(job_rows), "by_backend": by_backend},
            "cost_usd": sum(float(j.actual_cost or 0.0) for j in job_rows),
            "alerts": {
                "total": len(alert_rows),
                "open": sum(1 for a in alert_rows if a.resolved_at is None),
            },
            "models": models,
        }

    found = asyncio.run(go())
    if as_json:
        emit_json(found)
        return 0
    typer.echo(
        f"run {found['id']}: {found['status']}"
        + (f" ({found['reason']})" if found["reason"] else "")
    )
    typer.echo(
        f"backend {found['backend'] or '-'}, seed {found['seed']}, "
        f"last step {found['last_step'] if found['last_step'] is not None else '-'}"
    )
    typer.echo(f"created {when(found['created_at'])}, updated {when(found['updated_at'])}")
    typer.echo(
        f"jobs {found['jobs']['total']} ("
        + (", ".join(f"{b}: {n}" for b, n in sorted(found["jobs"]["by_backend"].items())) or "-")
        + f"), cost ${found['cost_usd']:.4f}; alerts {found['alerts']['total']} "
        f"({found['alerts']['open']} open); checkpoints {len(found['checkpoints'])}; "
        f"models {', '.join(found['models']) or '-'}"
    )
    settings = ", ".join(f"{k}={v}" for k, v in sorted(found["config"].items()))
    typer.echo(f"settings: {settings or '-'}")
    if found["metrics"]:
        _metrics_table(found["metrics"])
    return 0


async def _metric_summary(db: QuantumDatabase, run_id: str, key: str) -> dict[str, Any]:
    history = await db.metrics.history(run_id, key)
    values = [float(v) for v in history.values]
    finite_values = [v for v in values if v == v and abs(v) != float("inf")]
    return {
        "key": key,
        "count": len(history),
        "first_step": int(history.steps[0]) if len(history) else None,
        "last_step": int(history.steps[-1]) if len(history) else None,
        "last": finite(values[-1]) if values else None,
        "min": min(finite_values) if finite_values else None,
        "max": max(finite_values) if finite_values else None,
    }


def _metrics_table(summaries: Sequence[dict[str, Any]]) -> None:
    emit_table(
        ["metric", "values", "steps", "last", "min", "max"],
        [
            (
                s["key"],
                s["count"],
                f"{s['first_step']}-{s['last_step']}" if s["count"] else "-",
                number(s["last"]),
                number(s["min"]),
                number(s["max"]),
            )
            for s in summaries
        ],
        right=("values", "last", "min", "max"),
    )


def metrics(
    run_id: Annotated[str, typer.Argument(metavar="RUN", help="the run's id")],
    key: Annotated[
        str | None, typer.Argument(metavar="KEY", help="one metric: all its values")
    ] = None,
    url: UrlOption = None,
    as_json: JsonOption = False,
) -> int:
    from ..errors import UnknownMetricError

    async def go() -> Any:
        async with reading(url).connect() as db:
            await known_run(db, run_id)
            keys = await db.metrics.keys(run_id)
            if key is None:
                return [await _metric_summary(db, run_id, k) for k in keys]
            if key not in keys:
                import difflib

                close = difflib.get_close_matches(key, keys, n=1)
                raise UnknownMetricError(
                    f"run {run_id!r} has no metric {key!r}"
                    + (f"; did you mean {close[0]!r}?" if close else "")
                    + (
                        f" (it has: {', '.join(keys[:12])}{', ...' if len(keys) > 12 else ''})"
                        if keys
                        else " (it logged none)"
                    )
                )
            return await db.metrics.history(run_id, key)

    found = asyncio.run(go())
    if key is None:
        if as_json:
            emit_json(found)
        elif not found:
            typer.echo(f"run {run_id} logged no metrics")
        else:
            _metrics_table(found)
        return 0
    points = [
        {"step": int(s), "value": finite(float(v)), "timestamp": float(t)}
        for s, v, t in zip(found.steps, found.values, found.timestamps, strict=True)
    ]
    if as_json:
        emit_json({"run_id": run_id, "key": key, "points": points})
        return 0
    emit_table(
        ["step", key, "time"],
        [(p["step"], number(p["value"], 8), when(p["timestamp"])) for p in points],
        right=("step", key),
    )
    return 0


def jobs(
    run_id: Annotated[
        str | None, typer.Argument(metavar="RUN", help="only this run's jobs")
    ] = None,
    url: UrlOption = None,
    as_json: JsonOption = False,
) -> int:
    async def go() -> list[Any]:
        async with reading(url).connect() as db:
            if run_id is not None:
                await known_run(db, run_id)
            return await db.accounting.jobs(run_id=run_id)

    rows = asyncio.run(go())
    found = [
        {
            "id": r.id,
            "run_id": r.run_id,
            "backend": r.backend,
            "status": r.status,
            "shots": r.shots,
            "batch_size": r.batch_size,
            "circuit_hash": r.circuit_hash,
            "provider_job_ids": list(r.provider_job_ids or []),
            "estimated_cost": r.estimated_cost,
            "actual_cost": r.actual_cost,
            "queue_latency_s": r.queue_latency_s,
            "run_latency_s": r.run_latency_s,
            "error": r.error,
            "created_at": r.created_at,
        }
        for r in rows
    ]
    if as_json:
        emit_json(found)
        return 0
    if not found:
        typer.echo("no jobs recorded" if run_id is None else f"run {run_id} sent no jobs")
        return 0
    emit_table(
        ["job", "run", "backend", "status", "shots", "batch", "estimated", "actual", "created"],
        [
            (
                j["id"][:12],
                j["run_id"] or "-",
                j["backend"],
                j["status"],
                "exact" if j["shots"] is None else j["shots"],
                j["batch_size"],
                f"${j['estimated_cost']:.4f}",
                "-" if j["actual_cost"] is None else f"${j['actual_cost']:.4f}",
                when(j["created_at"]),
            )
            for j in found
        ],
        right=("shots", "batch", "estimated", "actual"),
    )
    return 0


def costs(
    budget: Annotated[str | None, typer.Option(help="one budget: its ledger, line by line")] = None,
    url: UrlOption = None,
    as_json: JsonOption = False,
) -> int:
    async def go() -> Any:
        async with reading(url).connect() as db:
            accounting = db.accounting
            if budget is not None:
                return await accounting.ledger(budget)
            return await accounting.budgets()

    found = asyncio.run(go())
    if budget is not None:
        entries = [
            {
                "job_id": e.job_id,
                "kind": e.kind,
                "amount_usd": e.amount_usd,
                "created_at": e.created_at,
            }
            for e in found
        ]
        if as_json:
            emit_json({"budget": budget, "entries": entries})
            return 0
        if not entries:
            typer.echo(f"budget {budget}: nothing reserved or charged")
            return 0
        emit_table(
            ["time", "kind", "amount", "job"],
            [
                (when(e["created_at"]), e["kind"], f"${e['amount_usd']:.4f}", e["job_id"] or "-")
                for e in entries
            ],
            right=("amount",),
        )
        return 0
    summaries = [
        {
            "budget": b.name,
            "limit_usd": b.limit_usd,
            "spent_usd": b.spent_usd,
            "reserved_usd": b.reserved_usd,
            "remaining_usd": b.remaining_usd,
            "jobs": b.jobs,
            "created_at": b.created_at,
        }
        for b in found
    ]
    if as_json:
        emit_json(summaries)
        return 0
    if not summaries:
        typer.echo("no budgets used (free backends reserve nothing)")
        return 0
    emit_table(
        ["budget", "limit", "spent", "reserved", "remaining", "jobs", "created"],
        [
            (
                s["budget"],
                f"${s['limit_usd']:,.2f}",
                f"${s['spent_usd']:,.4f}",
                f"${s['reserved_usd']:,.4f}",
                f"${s['remaining_usd']:,.4f}",
                s["jobs"],
                when(s["created_at"]),
            )
            for s in summaries
        ],
        right=("limit", "spent", "reserved", "remaining", "jobs"),
    )
    return 0


def alerts(
    run_id: Annotated[
        str | None, typer.Argument(metavar="RUN", help="only this run's alerts")
    ] = None,
    rule: Annotated[
        list[str] | None,
        typer.Option(
            "--rule",
            help="check a rule against RUN's stored metrics, e.g. 'val_loss > 0.5 for 3 "
            "severity=error' (printed, not stored); may be given more than once",
        ),
    ] = None,
    open_only: Annotated[bool, typer.Option("--open", help="only alerts not yet resolved")] = False,
    url: UrlOption = None,
    as_json: JsonOption = False,
) -> int:
    if rule:
        if run_id is None:
            raise UsageProblem("--rule checks a stored run: give RUN")
        return _check_rules(run_id, rule, url, as_json)

    async def go() -> list[Any]:
        async with reading(url).connect() as db:
            if run_id is not None:
                await known_run(db, run_id)
            return await db.alerts.list(run_id, open_only=open_only)

    found = [_alert_dict(a) for a in asyncio.run(go())]
    if as_json:
        emit_json(found)
        return 0
    if not found:
        typer.echo("no alerts" if run_id is None else f"run {run_id} has no alerts")
        return 0
    emit_table(
        ["id", "run", "severity", "rule", "step", "count", "state", "raised", "message"],
        [
            (
                a["id"],
                a["run_id"] or "-",
                a["severity"],
                a["rule"] or a["kind"],
                "-" if a["step"] is None else a["step"],
                a["count"],
                "open" if a["resolved_at"] is None else "resolved",
                when(a["created_at"]),
                shorten(a["message"], 80),
            )
            for a in found
        ],
        right=("id", "step", "count"),
    )
    return 0


def _alert_dict(a: Any) -> dict[str, Any]:
    return {
        "id": a.id,
        "run_id": a.run_id,
        "kind": a.kind,
        "rule": a.rule,
        "severity": a.severity,
        "message": a.message,
        "metric_key": a.metric_key,
        "value": finite(a.value),
        "threshold": finite(a.threshold),
        "step": a.step,
        "count": a.count,
        "acknowledged": a.acknowledged,
        "created_at": a.created_at,
        "updated_at": a.updated_at,
        "resolved_at": a.resolved_at,
    }


def _check_rules(run_id: str, specs: Sequence[str], url: str | None, as_json: bool) -> int:
    from ..errors import AlertRuleError
    from ..monitoring.alerts import AlertEvaluator, AlertRule

    rules = [AlertRule.parse(spec, custom_metric=True) for spec in specs]
    AlertEvaluator(rules)  # names must be unique

    async def go() -> list[dict[str, Any]]:
        async with reading(url).connect() as db:
            await known_run(db, run_id)
            keys = await db.metrics.keys(run_id)
            for r in rules:
                if r.metric not in keys:
                    raise AlertRuleError(
                        f"rule {r.name!r}: run {run_id!r} has no metric {r.metric!r}"
                        + (f" (it has: {', '.join(keys[:12])})" if keys else "")
                    )
            events = []
            for r in rules:
                history = await db.metrics.history(run_id, r.metric)
                evaluator = AlertEvaluator([r])
                was_firing = False
                for step, value in zip(history.steps, history.values, strict=True):
                    for event in evaluator.observe({r.metric: float(value)}, int(step)):
                        if event.kind == "resolved" or not was_firing:
                            events.append(
                                {
                                    "rule": r.name,
                                    "event": event.kind,
                                    "step": event.step,
                                    "value": finite(event.value),
                                    "severity": r.severity,
                                    "message": event.message,
                                }
                            )
                        was_firing = event.kind == "fired"
            return events

    events = asyncio.run(go())
    if as_json:
        emit_json(events)
        return 0
    if not events:
        typer.echo(f"run {run_id}: the rule(s) never fired (checked, nothing stored)")
        return 0
    emit_table(
        ["rule", "event", "step", "value", "severity", "message"],
        [
            (e["rule"], e["event"], e["step"], number(e["value"]), e["severity"], e["message"])
            for e in events
        ],
        right=("step", "value"),
    )
    return 0
