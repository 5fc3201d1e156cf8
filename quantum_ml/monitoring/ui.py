"""``qdb ui``: a read-only live dashboard of a database's runs, like ``mlflow ui``.

:func:`create_app` builds the Starlette app; :func:`serve` runs it with uvicorn. Routes
(GET only; anything else answers 405):

* ``/``: the run list (id, status, backend, cost, best metric, steps, a link to each);
* ``/runs/{run_id}``: the run's page, with the plots of ``qdb dashboard``, which fetches
  ``/api/runs/{run_id}`` and redraws (``Plotly.react``) every 2 s while the run runs;
* ``/api/runs``: :meth:`RunSummary.to_dict` of every run, newest first;
* ``/api/runs/{run_id}``: :func:`~quantum_ml.monitoring.dashboard.dashboard_data`
  (``{"report": ..., "figures": [...], "omitted": [...]}``);
* ``/studies``: the hyperparameter studies (:func:`~quantum_ml.hpo.list_studies`);
* ``/studies/{name}``: a study's settings, best trial and trials, each linked to its run's
  page (a trial's run page links back to its study);
* ``/api/studies``, ``/api/studies/{name}``: the same as JSON (the list, and
  :meth:`~quantum_ml.hpo.StudyReport.to_json`);
* ``/static/plotly.min.js``: plotly.js as bundled with the ``plotly`` package (nothing is
  loaded from a CDN).

An unknown run or study answers 404 (JSON under ``/api``, HTML otherwise). The app opens the
database once, read-only (``QuantumDatabase(url, create=False)``: nothing is created),
for its whole lifespan, and answers every request on that connection.
"""

from __future__ import annotations

import asyncio
import errno
import html
import json
import socket
import threading
import webbrowser
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING, Any
from urllib.parse import quote

from quantum_db import QuantumDatabase
from quantum_db.errors import InvalidNameError, RunNotFoundError

from ..errors import UIError
from .dashboard import dashboard_data, render_page
from .report import RunSummary, load_run_report, load_run_summaries

if TYPE_CHECKING:
    from starlette.applications import Starlette
    from starlette.requests import Request
    from starlette.responses import Response

    from quantum_ml.hpo import StudyReport

__all__ = ["DEFAULT_HOST", "DEFAULT_PORT", "check_port_free", "create_app", "serve"]

DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 5000
_INSTALL_HINT = "qdb ui needs starlette and uvicorn: pip install 'quantum-db[dashboard]'"

_LIST_STYLE = """
body { font-family: system-ui, -apple-system, "Segoe UI", sans-serif; margin: 1.5rem;
       color: #222; }
table { border-collapse: collapse; }
th, td { border: 1px solid #ddd; padding: 0.3rem 0.7rem; text-align: left; font-size: 0.9rem; }
th { background: #f4f4f4; }
td.num { text-align: right; font-variant-numeric: tabular-nums; }
.status-running { color: #1f77b4; } .status-finished { color: #2ca02c; }
.status-failed, .status-interrupted { color: #d62728; } .status-stopped { color: #ff7f0e; }
a { color: #1f5fa8; }
"""


def _json(data: Any, status_code: int = 200) -> Response:
    from starlette.responses import Response

    body = json.dumps(data, allow_nan=False, separators=(",", ":"))
    return Response(body, status_code=status_code, media_type="application/json")


def _html(text: str, status_code: int = 200) -> Response:
    from starlette.responses import HTMLResponse

    return HTMLResponse(text, status_code=status_code)


def _not_found_page(message: str) -> str:
    esc = html.escape
    return (
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8"><title>qdb: not found'
        f"</title><style>{_LIST_STYLE}</style></head><body><h1>Not found</h1>"
        f'<p>{esc(message)}</p><p><a href="/">all runs</a></p></body></html>\n'
    )


def _when(timestamp: float) -> str:
    import datetime as dt

    return dt.datetime.fromtimestamp(timestamp, dt.UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def _run_list_page(runs: list[RunSummary]) -> str:
    esc = html.escape
    rows = []
    for run in runs:
        link = f"/runs/{quote(run.id, safe='')}"
        best = "-"
        if run.best is not None:
            best = f"{run.best.key} {run.best.mode} {run.best.value:.6g}"
        rows.append(
            f'<tr><td><a href="{esc(link)}">{esc(run.id)}</a></td>'
            f'<td class="status-{esc(run.status)}">{esc(run.status)}</td>'
            f"<td>{esc(run.backend or '-')}</td>"
            f"<td class=num>${run.cost_usd:.4f}</td><td>{esc(best)}</td>"
            f"<td class=num>{'-' if run.steps is None else run.steps}</td>"
            f"<td class=num>{run.jobs}</td><td>{esc(_when(run.created_at))}</td></tr>"
        )
    table = (
        '<table id="qdb-runs"><tr><th>run</th><th>status</th><th>backend</th><th>cost</th>'
        "<th>best metric</th><th>steps</th><th>jobs</th><th>created</th></tr>"
        + "".join(rows)
        + "</table>"
        if rows
        else "<p>No runs yet.</p>"
    )
    return (
        '<!DOCTYPE html>\n<html lang="en">\n<head>\n<meta charset="utf-8">\n'
        f"<title>qdb: runs</title>\n<style>{_LIST_STYLE}</style>\n</head>\n<body>\n"
        f'<h1>Runs</h1>\n<p><a href="/studies">hyperparameter studies</a></p>\n{table}\n'
        "<p>Best metric: the lowest val_loss, else the lowest train_loss, else the lowest "
        "loss, else the highest val_accuracy, else the lowest relative_entropy. Cost: the "
        "actual costs of the run's jobs.</p>\n</body>\n</html>\n"
    )


def _page(title: str, body: str) -> str:
    return (
        '<!DOCTYPE html>\n<html lang="en">\n<head>\n<meta charset="utf-8">\n'
        f"<title>{html.escape(title)}</title>\n<style>{_LIST_STYLE}</style>\n</head>\n"
        f'<body>\n<p><a href="/">&larr; all runs</a></p>\n{body}\n</body>\n</html>\n'
    )


def _study_link(name: str) -> str:
    return f"/studies/{quote(name, safe='')}"


def _study_list_page(studies: list[dict[str, Any]]) -> str:
    esc = html.escape
    rows = [
        f'<tr><td><a href="{esc(_study_link(s["study"]))}">{esc(s["study"])}</a></td>'
        f"<td>{esc(s['direction'])}</td><td class=num>{s['trials']}</td>"
        f"<td>{esc(', '.join(f'{k} {n}' for k, n in sorted(s['counts'].items())) or '-')}</td>"
        f"<td>{'yes' if s['qdb'] else 'no'}</td></tr>"
        for s in studies
    ]
    table = (
        '<table id="qdb-studies"><tr><th>study</th><th>direction</th><th>trials</th>'
        "<th>states</th><th>qdb study</th></tr>" + "".join(rows) + "</table>"
        if rows
        else "<p>No studies yet.</p>"
    )
    return _page("qdb: studies", f"<h1>Studies</h1>\n{table}")


def _value(value: float | None) -> str:
    return "-" if value is None else f"{value:.6g}"


def _study_page(report: StudyReport) -> str:
    esc = html.escape
    data = report.to_json()

    def run_cell(run_id: str | None) -> str:
        if run_id is None:
            return "-"
        return f'<a href="/runs/{esc(quote(run_id, safe=""))}">{esc(run_id)}</a>'

    def params(values: Mapping[str, Any]) -> str:
        return esc(", ".join(f"{k}={v}" for k, v in values.items()) or "-")

    version = "" if data["dataset_version"] is None else f" v{data['dataset_version']}"
    n_trials = "the whole grid" if data["n_trials"] is None else f"{data['n_trials']} trials"
    budget = "" if data["budget_usd"] is None else f", budget ${data['budget_usd']:.4f}"
    settings = (
        f"{data['metric']} ({data['mode']}), sampler {data['sampler']}, pruner "
        f"{data['pruner']}, dataset {data['dataset']}{version}, {n_trials}{budget}; "
        f"spent ${data['spent_usd']:.4f}"
    )
    best = data["best"]
    best_text = (
        "No completed trial yet."
        if best is None
        else f"Best: trial {best['number']}, {esc(data['metric'])} {_value(best['value'])}, "
        f"{params(best['params'])}, run {run_cell(best['run_id'])}"
    )
    rows = [
        f"<tr><td class=num>{t['number']}</td><td>{esc(t['state'])}</td>"
        f"<td class=num>{_value(t['value'])}</td><td>{params(t['params'])}</td>"
        f"<td class=num>${t['cost_usd']:.4f}</td><td>{run_cell(t['run_id'])}</td>"
        f'<td class="status-{esc(t["run_status"] or "")}">{esc(t["run_status"] or "-")}</td>'
        "</tr>"
        for t in data["trials"]
    ]
    table = (
        '<table id="qdb-trials"><tr><th>trial</th><th>state</th><th>value</th><th>params</th>'
        "<th>cost</th><th>run</th><th>run status</th></tr>" + "".join(rows) + "</table>"
        if rows
        else "<p>No trials yet.</p>"
    )
    return _page(
        f"qdb: study {report.name}",
        f'<p><a href="/studies">all studies</a></p>\n<h1>Study {esc(report.name)}</h1>\n'
        f'<p id="qdb-settings">{esc(settings)}</p>\n<p id="qdb-best">{best_text}</p>\n{table}',
    )


def _study_of(config: Mapping[str, Any]) -> str | None:
    """The study of a trial's run (``config["hpo"]["study"]``), if it is one."""
    hpo = config.get("hpo")
    study = hpo.get("study") if isinstance(hpo, Mapping) else None
    return study if isinstance(study, str) and study else None


def create_app(url: str) -> Starlette:
    """The read-only app over the database at ``url`` (opened when the app starts)."""
    try:
        from starlette.applications import Starlette
        from starlette.responses import Response
        from starlette.routing import Route
    except ImportError as exc:
        raise UIError(_INSTALL_HINT) from exc

    plotly_js: list[bytes] = []  # read from the plotly package once, on first request

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[dict[str, Any]]:
        db = QuantumDatabase(url, create=False)
        async with db.connect():
            yield {"db": db}

    def db_of(request: Request) -> QuantumDatabase:
        db: QuantumDatabase = request.state.db
        return db

    async def index(request: Request) -> Response:
        return _html(_run_list_page(await load_run_summaries(db_of(request))))

    async def api_runs(request: Request) -> Response:
        runs = await load_run_summaries(db_of(request))
        return _json([r.to_dict() for r in runs])

    async def api_run(request: Request) -> Response:
        run_id = request.path_params["run_id"]
        try:
            report = await load_run_report(db_of(request), run_id)
        except (RunNotFoundError, InvalidNameError) as exc:
            return _json({"error": str(exc), "run_id": run_id}, status_code=404)
        return _json(dashboard_data(report))

    async def run_page(request: Request) -> Response:
        run_id = request.path_params["run_id"]
        try:
            report = await load_run_report(db_of(request), run_id)
        except (RunNotFoundError, InvalidNameError) as exc:
            return _html(_not_found_page(str(exc)), status_code=404)
        page = render_page(
            report,
            plotly_script='<script src="/static/plotly.min.js"></script>',
            poll_url=f"/api/runs/{quote(run_id, safe='')}",
            back_link="/",
        )
        study = _study_of(report.run.config)
        if study is not None:
            trial = report.run.config["hpo"].get("trial")
            what = f"trial {trial} of study" if isinstance(trial, int) else "a trial of study"
            link = (
                f'<p id="qdb-study">{html.escape(what)} <a href="'
                f'{html.escape(_study_link(study))}">{html.escape(study)}</a></p>\n'
            )
            page = page.replace("<h1>", link + "<h1>", 1)
        return _html(page)

    async def studies_page(request: Request) -> Response:
        from quantum_ml.hpo import list_studies

        return _html(_study_list_page(await list_studies(db_of(request))))

    async def api_studies(request: Request) -> Response:
        from quantum_ml.hpo import list_studies

        return _json(await list_studies(db_of(request)))

    async def study_page(request: Request) -> Response:
        from quantum_ml.hpo import HPOError, study_report

        name = request.path_params["name"]
        try:
            report = await study_report(db_of(request), name)
        except HPOError as exc:
            return _html(_not_found_page(str(exc)), status_code=404)
        return _html(_study_page(report))

    async def api_study(request: Request) -> Response:
        from quantum_ml.hpo import HPOError, study_report

        name = request.path_params["name"]
        try:
            report = await study_report(db_of(request), name)
        except HPOError as exc:
            return _json({"error": str(exc), "study": name}, status_code=404)
        return _json(report.to_json())

    async def plotly_script(request: Request) -> Response:
        if not plotly_js:
            try:
                from plotly.offline import get_plotlyjs
            except ImportError as exc:
                raise UIError(_INSTALL_HINT) from exc
            plotly_js.append(str(get_plotlyjs()).encode())
        return Response(
            plotly_js[0],
            media_type="text/javascript",
            headers={"Cache-Control": "public, max-age=86400"},
        )

    get = ["GET"]
    return Starlette(
        routes=[
            Route("/", index, methods=get),
            Route("/runs/{run_id}", run_page, methods=get),
            Route("/api/runs", api_runs, methods=get),
            Route("/api/runs/{run_id}", api_run, methods=get),
            Route("/studies", studies_page, methods=get),
            Route("/studies/{name}", study_page, methods=get),
            Route("/api/studies", api_studies, methods=get),
            Route("/api/studies/{name}", api_study, methods=get),
            Route("/static/plotly.min.js", plotly_script, methods=get),
        ],
        lifespan=lifespan,
    )


def check_port_free(host: str, port: int) -> None:
    """Raise :class:`UIError` unless a server could listen on ``host``:``port`` now."""
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except (socket.gaierror, UnicodeError) as exc:
        raise UIError(f"cannot serve on host {host!r}: it does not resolve ({exc})") from exc
    family, kind, proto, _, address = infos[0]
    with socket.socket(family, kind, proto) as probe:
        # As uvicorn binds: SO_REUSEADDR, so a port left in TIME_WAIT does not count as taken.
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind(address)
        except OSError as exc:
            if exc.errno == errno.EADDRINUSE:
                raise UIError(
                    f"port {port} on {host} is taken: another program listens there "
                    f"({exc.strerror}); stop it, or give --port with a free port"
                ) from exc
            raise UIError(
                f"cannot serve on {host}:{port}: {exc.strerror or exc}; give another --host "
                "or --port (ports below 1024 need privileges)"
            ) from exc


async def _check_database(url: str) -> None:
    async with QuantumDatabase(url, create=False).connect():
        pass


def serve(
    url: str,
    host: str = DEFAULT_HOST,
    port: int = DEFAULT_PORT,
    open_browser: bool = False,
) -> None:
    """Serve :func:`create_app` (``url``) on ``host``:``port`` with uvicorn, until stopped.

    Before anything starts, the database is opened once (a missing SQLite file raises
    :class:`~quantum_db.errors.ConfigurationError` saying to run ``qdb init``; nothing is
    created) and the port is checked (:class:`UIError` when it is taken). With
    ``open_browser`` the run list opens in the default browser once the server is up.
    """
    try:
        import uvicorn
    except ImportError as exc:
        raise UIError(_INSTALL_HINT) from exc
    asyncio.run(_check_database(url))
    check_port_free(host, port)
    app = create_app(url)
    if open_browser:
        shown = f"[{host}]" if ":" in host else host
        timer = threading.Timer(1.0, webbrowser.open, [f"http://{shown}:{port}/"])
        timer.daemon = True
        timer.start()
    # No access log: every open run page asks for its data every 2 s.
    uvicorn.run(app, host=host, port=port, access_log=False, log_level="info", lifespan="on")
