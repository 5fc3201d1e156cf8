"""``qdb dashboard``: one self-contained HTML file of a run's plots, and a PNG of each.

:func:`write_dashboard` writes ``dashboard.html`` into a folder: Plotly's JavaScript
(from the ``plotly`` package) inlined once, the run's data as JSON in
``<script type="application/json" id="qdb-data">`` and a small script that draws every
figure from it; it opens from disk with no network. Next to it, ``<plot id>.png`` of
each plot, drawn by matplotlib from the same figures. The output depends on the run's
data alone (no "generated at" time), so writing it twice gives the same bytes.

The figures are plain Plotly figure dicts (:func:`build_figures`), shared with
``qdb ui`` (:mod:`quantum_ml.monitoring.ui`), which draws them live. Plot ids, in page
order (see :data:`PLOTS`): ``losses``, ``validation``, ``gradients``, ``distribution``,
``cost``, ``jobs``, ``jobs_timeline``, ``alerts``, ``system``, ``quantum``, ``other``.
Metric plots have the step on the x axis, except ``cost`` and ``system``, which have the
seconds since the run was created (as do ``jobs_timeline`` and ``alerts``). A plot
without data is left out, and the page says so.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import html
import json
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from quantum_db import QuantumDatabase

from ..errors import DashboardError
from .report import RunReport, load_run_report

__all__ = [
    "HTML_NAME",
    "PLOTS",
    "DashboardFiles",
    "PlotFigure",
    "build_figures",
    "dashboard_data",
    "inline_plotly_script",
    "render_page",
    "write_dashboard",
]

#: The HTML file's name in the output folder.
HTML_NAME = "dashboard.html"

#: ``(plot id, title)`` of every plot, in page order.
PLOTS: tuple[tuple[str, str], ...] = (
    ("losses", "Losses"),
    ("validation", "Validation and accuracy"),
    ("gradients", "Gradients"),
    ("distribution", "Distribution metrics"),
    ("cost", "Cost and spend against the budget"),
    ("jobs", "Jobs per backend"),
    ("jobs_timeline", "Jobs over time"),
    ("alerts", "Alerts"),
    ("system", "System"),
    ("quantum", "Quantum metrics"),
    ("other", "Other metrics"),
)
_TITLES = dict(PLOTS)
#: Metric groups whose plot has time (seconds since the run was created) on the x axis.
_TIME_GROUPS = ("cost", "system")
#: Above this many points a trace is drawn as a line only (no marker per point).
_MARKERS_UP_TO = 1000
_SEVERITY_COLORS = {"info": "#1f77b4", "warning": "#ff7f0e", "error": "#d62728"}
_SEVERITY_ORDER = ("info", "warning", "error")
_ELAPSED = "seconds since the run started"


@dataclass(frozen=True, slots=True)
class PlotFigure:
    """One plot: a Plotly figure dict (``{"data": [...], "layout": {...}}``) and its number
    of data points (the length of every trace's ``x``, summed)."""

    id: str
    title: str
    figure: Mapping[str, Any]
    points: int

    def to_dict(self) -> dict[str, Any]:
        return {"id": self.id, "title": self.title, "points": self.points, "figure": self.figure}


@dataclass(frozen=True, slots=True)
class DashboardFiles:
    """What :func:`write_dashboard` wrote: the HTML file, a PNG per plot (in ``plots``
    order) and the ids of the plots left out for want of data."""

    html: Path
    pngs: tuple[Path, ...]
    plots: tuple[str, ...]
    omitted: tuple[str, ...]


# ---------------------------------------------------------------------------- figures
def _trace(
    name: str, x: Sequence[float], y: Sequence[float | None], **extra: Any
) -> dict[str, Any]:
    mode = "lines+markers" if len(x) <= _MARKERS_UP_TO else "lines"
    trace: dict[str, Any] = {
        "type": "scatter",
        "mode": mode,
        "name": name,
        "x": list(x),
        "y": list(y),
    }
    if mode == "lines+markers":
        trace["marker"] = {"size": 4}
    trace.update(extra)
    return trace


def _layout(title: str, x_title: str, y_title: str, **extra: Any) -> dict[str, Any]:
    layout: dict[str, Any] = {
        "title": {"text": title},
        "xaxis": {"title": {"text": x_title}},
        "yaxis": {"title": {"text": y_title}},
        "height": 420,
        "margin": {"l": 70, "r": 30, "t": 60, "b": 60},
        "hovermode": "closest",
        "legend": {"orientation": "h", "y": -0.2},
    }
    layout.update(extra)
    return layout


def _elapsed(times: Sequence[float], start: float) -> list[float]:
    return [t - start for t in times]


def _metric_figure(report: RunReport, group: str) -> dict[str, Any] | None:
    keys = report.groups.get(group, ())
    if not keys and not (group == "cost" and report.spend.times):
        return None
    by_time = group in _TIME_GROUPS
    start = report.run.created_at
    data = []
    for key in keys:
        series = report.metrics[key]
        x: list[float] = (
            _elapsed(series.timestamps, start) if by_time else [float(s) for s in series.steps]
        )
        data.append(_trace(key, x, series.to_dict()["values"]))
    shapes: list[dict[str, Any]] = []
    if group == "cost":
        spend = report.spend
        if spend.times:
            data.append(
                _trace(
                    "charged (budget ledger)",
                    _elapsed(spend.times, start),
                    list(spend.cumulative_usd),
                    line={"shape": "hv"},
                )
            )
        if spend.limit_usd is not None:
            shapes.append(_budget_line(spend.limit_usd, spend.budget_id))
    if group == "losses":
        shapes += _alert_lines(report)
    title = _TITLES[group]
    y_title = "USD" if group == "cost" else "value"
    layout = _layout(title, _ELAPSED if by_time else "step", y_title)
    if group == "cost":  # money from zero up
        layout["yaxis"]["rangemode"] = "tozero"
    if shapes:
        layout["shapes"] = shapes
    if group == "cost" and report.spend.limit_usd is not None:
        layout["annotations"] = [
            {
                "xref": "paper",
                "x": 1,
                "xanchor": "right",
                "yref": "y",
                "y": report.spend.limit_usd,
                "yanchor": "bottom",
                "text": shapes[0]["name"],
                "showarrow": False,
                "font": {"color": "#d62728"},
            }
        ]
    return {"data": data, "layout": layout}


def _budget_line(limit: float, budget_id: str | None) -> dict[str, Any]:
    name = f" {budget_id}" if budget_id else ""
    return {
        "type": "line",
        "xref": "paper",
        "x0": 0,
        "x1": 1,
        "yref": "y",
        "y0": limit,
        "y1": limit,
        "line": {"color": "#d62728", "dash": "dash", "width": 2},
        "name": f"budget{name}: ${limit:g}",
    }


def _alert_lines(report: RunReport) -> list[dict[str, Any]]:
    lines = []
    for alert in report.alerts:
        if alert.plot_step is None:
            continue
        lines.append(
            {
                "type": "line",
                "xref": "x",
                "x0": alert.plot_step,
                "x1": alert.plot_step,
                "yref": "paper",
                "y0": 0,
                "y1": 1,
                "line": {"color": _SEVERITY_COLORS.get(alert.severity, "#7f7f7f"), "dash": "dot"},
                "label": {"text": alert.kind, "textposition": "end", "font": {"size": 10}},
            }
        )
    return lines


def _jobs_figure(report: RunReport) -> dict[str, Any] | None:
    if not report.jobs:
        return None
    statuses = sorted({s for j in report.jobs for s in j.by_status})
    data = []
    for status in statuses:
        having = [j for j in report.jobs if status in j.by_status]
        data.append(
            {
                "type": "bar",
                "name": status,
                "x": [j.backend for j in having],
                "y": [j.by_status[status] for j in having],
            }
        )
    layout = _layout(_TITLES["jobs"], "backend", "jobs", barmode="stack")
    return {"data": data, "layout": layout}


def _jobs_timeline_figure(report: RunReport) -> dict[str, Any] | None:
    if not report.jobs:
        return None
    start = report.run.created_at
    data = [
        _trace(j.backend, _elapsed(j.times, start), list(j.counts), line={"shape": "hv"})
        for j in report.jobs
    ]
    return {"data": data, "layout": _layout(_TITLES["jobs_timeline"], _ELAPSED, "jobs sent")}


def _alerts_figure(report: RunReport) -> dict[str, Any] | None:
    if not report.alerts:
        return None
    start = report.run.created_at
    severities = sorted(
        {a.severity for a in report.alerts},
        key=lambda s: (_SEVERITY_ORDER.index(s) if s in _SEVERITY_ORDER else 99, s),
    )
    data = []
    for severity in severities:
        alerts = [a for a in report.alerts if a.severity == severity]
        data.append(
            {
                "type": "scatter",
                "mode": "markers",
                "name": severity,
                "x": [a.created_at - start for a in alerts],
                "y": [severity] * len(alerts),
                "text": [f"{a.kind}: {a.message}" for a in alerts],
                "hoverinfo": "text+x",
                "marker": {"size": 12, "color": _SEVERITY_COLORS.get(severity, "#7f7f7f")},
            }
        )
    layout = _layout(
        _TITLES["alerts"],
        _ELAPSED,
        "severity",
        height=300,
        yaxis={
            "title": {"text": "severity"},
            "type": "category",
            "categoryorder": "array",
            "categoryarray": list(severities),
        },
    )
    return {"data": data, "layout": layout}


def _points(figure: Mapping[str, Any]) -> int:
    return sum(len(trace["x"]) for trace in figure["data"])


def build_figures(report: RunReport) -> tuple[list[PlotFigure], list[str]]:
    """The figures with data, in :data:`PLOTS` order, and the ids of those without."""
    made: dict[str, dict[str, Any] | None] = {}
    for plot_id, _ in PLOTS:
        if plot_id == "jobs":
            made[plot_id] = _jobs_figure(report)
        elif plot_id == "jobs_timeline":
            made[plot_id] = _jobs_timeline_figure(report)
        elif plot_id == "alerts":
            made[plot_id] = _alerts_figure(report)
        else:
            made[plot_id] = _metric_figure(report, plot_id)
    figures = [
        PlotFigure(plot_id, title, figure, _points(figure))
        for plot_id, title in PLOTS
        if (figure := made[plot_id]) is not None and _points(figure) > 0
    ]
    drawn = {f.id for f in figures}
    return figures, [plot_id for plot_id, _ in PLOTS if plot_id not in drawn]


def dashboard_data(
    report: RunReport, built: tuple[list[PlotFigure], list[str]] | None = None
) -> dict[str, Any]:
    """The JSON a page draws from: ``report`` (:meth:`RunReport.to_dict`), ``figures``
    (:meth:`PlotFigure.to_dict` of each plot with data) and ``omitted`` (the plots left
    out, with their titles). ``qdb ui``'s ``/api/runs/{run_id}`` answers the same."""
    figures, omitted = built if built is not None else build_figures(report)
    return {
        "report": report.to_dict(),
        "figures": [f.to_dict() for f in figures],
        "omitted": [{"id": plot_id, "title": _TITLES[plot_id]} for plot_id in omitted],
    }


# ---------------------------------------------------------------------------- HTML
def _script_json(data: Any) -> str:
    """JSON safe inside a ``<script>`` element (no ``</script>``, no ``<!--``)."""
    text = json.dumps(data, allow_nan=False, ensure_ascii=False, separators=(",", ":"))
    return text.replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026")


def _when(timestamp: float) -> str:
    return dt.datetime.fromtimestamp(timestamp, dt.UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


_STYLE = """
body { font-family: system-ui, -apple-system, "Segoe UI", sans-serif; margin: 1.5rem;
       color: #222; }
h1 { font-size: 1.4rem; margin-bottom: 0.3rem; }
h2 { font-size: 1.1rem; margin: 1.5rem 0 0.4rem; }
table { border-collapse: collapse; margin: 0.4rem 0; }
th, td { border: 1px solid #ddd; padding: 0.25rem 0.6rem; text-align: left;
         vertical-align: top; font-size: 0.9rem; }
th { background: #f4f4f4; }
td.num { text-align: right; font-variant-numeric: tabular-nums; }
.qdb-plot { width: 100%; min-height: 420px; }
.status-running { color: #1f77b4; } .status-finished { color: #2ca02c; }
.status-failed, .status-interrupted { color: #d62728; } .status-stopped { color: #ff7f0e; }
.severity-error { color: #d62728; } .severity-warning { color: #ff7f0e; }
#qdb-live { color: #666; font-size: 0.85rem; }
pre { background: #f8f8f8; padding: 0.5rem; overflow-x: auto; font-size: 0.8rem; }
a { color: #1f5fa8; }
"""

#: Draws every figure of the page's data with Plotly.react, then marks the page:
#: ``document.body.dataset.plotted`` = ``{"<plot id>": <points Plotly drew>, ...}``.
#: With a poll URL (``qdb ui``), it fetches the data there first and again every 2 s
#: while the run is running.
_RENDER_JS = r"""
(function () {
  "use strict";
  var CONFIG = {displaylogo: false, responsive: true, showLink: false};
  function plotDiv(fig) {
    var div = document.getElementById("plot-" + fig.id);
    if (div) { return div; }
    var section = document.createElement("section");
    section.id = "section-" + fig.id;
    var heading = document.createElement("h2");
    heading.textContent = fig.title;
    div = document.createElement("div");
    div.id = "plot-" + fig.id;
    div.className = "qdb-plot";
    section.appendChild(heading);
    section.appendChild(div);
    document.getElementById("qdb-plots").appendChild(section);
    return div;
  }
  function drawnPoints(gd) {
    var n = 0;
    (gd.calcdata || []).forEach(function (cd) { n += cd.length; });
    return n;
  }
  function showOmitted(omitted) {
    var el = document.getElementById("qdb-omitted");
    if (!el) { return; }
    el.textContent = omitted.length ?
      "No data (plot left out): " + omitted.map(function (o) { return o.title; }).join(", ") + "." :
      "";
  }
  function showRun(run) {
    document.querySelectorAll("[data-run-field]").forEach(function (el) {
      var value = run[el.dataset.runField];
      el.textContent = value === null || value === undefined ? "-" : String(value);
      if (el.dataset.runField === "status") { el.className = "status-" + value; }
    });
  }
  function draw(data) {
    // Sections of plots that lost their data (a truncated resume) go.
    var wanted = {};
    data.figures.forEach(function (fig) { wanted["section-" + fig.id] = true; });
    document.querySelectorAll("#qdb-plots > section").forEach(function (s) {
      if (!wanted[s.id]) { s.remove(); }
    });
    var plotted = {};
    var drawing = data.figures.map(function (fig) {
      // The section's heading is the title; the figure's own is for the PNG.
      var layout = Object.assign({}, fig.figure.layout, {title: {text: ""}});
      layout.margin = Object.assign({}, layout.margin, {t: 30});
      return Plotly.react(plotDiv(fig), fig.figure.data, layout, CONFIG)
        .then(function (gd) { plotted[fig.id] = drawnPoints(gd); });
    });
    showOmitted(data.omitted);
    showRun(data.report.run);
    return Promise.all(drawing).then(function () {
      document.body.dataset.plotted = JSON.stringify(plotted);
      return data;
    });
  }
  function live(url) {
    var status = document.getElementById("qdb-live");
    function tick() {
      fetch(url, {cache: "no-store"})
        .then(function (r) {
          if (!r.ok) { throw new Error("HTTP " + r.status); }
          return r.json();
        })
        .then(draw)
        .then(function (data) {
          var running = data.report.run.status === "running";
          status.textContent = running ?
            "Live: updated every 2 s." :
            "The run has ended (" + data.report.run.status + "): live updates stopped; " +
            "reload the page after a resume.";
          if (running) { setTimeout(tick, 2000); }
        })
        .catch(function (err) {
          status.textContent = "Could not update (" + err.message + "); trying again in 2 s.";
          setTimeout(tick, 2000);
        });
    }
    tick();
  }
  var source = document.getElementById("qdb-data");
  if (source) {
    draw(JSON.parse(source.textContent));
  } else if (document.body.dataset.poll) {
    live(document.body.dataset.poll);
  }
})();
"""


def _summary_html(report: RunReport) -> str:
    run = report.run
    esc = html.escape
    rows = [
        ("run", esc(run.id)),
        (
            "status",
            f'<span data-run-field="status" class="status-{esc(run.status)}">'
            f"{esc(run.status)}</span>",
        ),
        ("reason", f'<span data-run-field="reason">{esc(run.reason or "-")}</span>'),
        ("backend", esc(run.backend or "-")),
        ("seed", esc("-" if run.seed is None else str(run.seed))),
        ("created", esc(_when(run.created_at))),
        ("updated", esc(_when(run.updated_at))),
    ]
    spend = report.spend
    budget = "-"
    if spend.limit_usd is not None:
        budget = f"{esc(spend.budget_id or '')} ${spend.limit_usd:.4f}"
    elif len(spend.budget_ids) > 1:
        budget = esc(f"several budgets: {', '.join(spend.budget_ids)}")
    cost_rows = [
        ("charged (budget ledger)", f"${spend.spent_usd:.4f}"),
        ("actual cost of jobs", f"${spend.actual_cost_usd:.4f}"),
        ("estimated cost of jobs", f"${spend.estimated_cost_usd:.4f}"),
        ("budget", budget),
    ]
    out = ['<table id="qdb-run">']
    out += [f"<tr><th>{k}</th><td>{v}</td></tr>" for k, v in rows + cost_rows]
    out.append("</table>")
    config = json.dumps(dict(run.config), indent=2, sort_keys=True, default=str)
    out.append(f"<details><summary>config</summary><pre>{esc(config)}</pre></details>")
    if report.jobs:
        out.append(
            '<h2>Jobs</h2><table id="qdb-jobs"><tr><th>backend</th><th>jobs</th>'
            "<th>by status</th><th>actual cost</th></tr>"
        )
        for j in report.jobs:
            statuses = ", ".join(f"{s}: {n}" for s, n in j.by_status.items())
            out.append(
                f"<tr><td>{esc(j.backend)}</td><td class=num>{j.total}</td>"
                f"<td>{esc(statuses)}</td><td class=num>${j.actual_cost_usd:.4f}</td></tr>"
            )
        out.append("</table>")
    if report.alerts:
        out.append(
            '<h2>Alerts</h2><table id="qdb-alerts"><tr><th>severity</th><th>kind</th>'
            "<th>message</th><th>metric</th><th>value</th><th>step</th><th>raised</th>"
            "<th>resolved</th></tr>"
        )
        for a in report.alerts:
            value = "-" if a.value is None else f"{a.value:.6g}"
            step = "-" if a.plot_step is None else str(a.plot_step)
            resolved = "-" if a.resolved_at is None else _when(a.resolved_at)
            out.append(
                f'<tr><td class="severity-{esc(a.severity)}">{esc(a.severity)}</td>'
                f"<td>{esc(a.kind)}</td><td>{esc(a.message)}</td>"
                f"<td>{esc(a.metric_key or '-')}</td><td class=num>{value}</td>"
                f"<td class=num>{step}</td><td>{esc(_when(a.created_at))}</td>"
                f"<td>{esc(resolved)}</td></tr>"
            )
        out.append("</table>")
    return "\n".join(out)


def render_page(
    report: RunReport,
    *,
    plotly_script: str,
    data: Mapping[str, Any] | None = None,
    poll_url: str | None = None,
    back_link: str | None = None,
) -> str:
    """A run's page. ``plotly_script`` is the ``<script>`` element that loads plotly.js
    (inline for a dashboard file, ``/static/plotly.min.js`` for ``qdb ui``). With ``data``
    (:func:`dashboard_data`) the figures are embedded and drawn from it; with ``poll_url``
    instead they are fetched from there and kept up to date while the run runs."""
    esc = html.escape
    title = f"qdb: run {report.run.id}"
    sections = []
    if data is not None:
        for fig in data["figures"]:
            plot_id = esc(fig["id"])
            sections.append(
                f'<section id="section-{plot_id}"><h2>{esc(fig["title"])}</h2>'
                f'<div id="plot-{plot_id}" class="qdb-plot"></div></section>'
            )
        omitted = [o["title"] for o in data["omitted"]]
        omitted_text = f"No data (plot left out): {esc(', '.join(omitted))}." if omitted else ""
    else:
        omitted_text = ""
    body_attrs = f' data-poll="{esc(poll_url)}"' if poll_url else ""
    back = f'<p><a href="{esc(back_link)}">&larr; all runs</a></p>' if back_link else ""
    live = '<p id="qdb-live">Loading...</p>' if poll_url else ""
    embedded = (
        f'<script type="application/json" id="qdb-data">{_script_json(data)}</script>'
        if data is not None
        else ""
    )
    return (
        "<!DOCTYPE html>\n"
        '<html lang="en">\n<head>\n<meta charset="utf-8">\n'
        '<meta name="viewport" content="width=device-width, initial-scale=1">\n'
        f"<title>{esc(title)}</title>\n<style>{_STYLE}</style>\n{plotly_script}\n</head>\n"
        f"<body{body_attrs}>\n{back}<h1>{esc(title)}</h1>\n{live}\n"
        f"{_summary_html(report)}\n"
        f'<div id="qdb-plots">{"".join(sections)}</div>\n'
        f'<p id="qdb-omitted">{omitted_text}</p>\n'
        f"{embedded}\n<script>{_RENDER_JS}</script>\n</body>\n</html>\n"
    )


def inline_plotly_script() -> str:
    """plotly.js (bundled with the ``plotly`` package) in one inline ``<script>``."""
    try:
        from plotly.offline import get_plotlyjs
    except ImportError as exc:
        raise DashboardError(
            "dashboards need plotly and matplotlib: pip install 'quantum-db[dashboard]'"
        ) from exc
    # A "</script" inside the library would end the element early.
    library = str(get_plotlyjs())
    return "<script>" + library.replace("</script", "<\\/script") + "</script>"


# ---------------------------------------------------------------------------- PNG
def _png(plot: PlotFigure, path: Path) -> None:
    try:
        from matplotlib.figure import Figure
    except ImportError as exc:
        raise DashboardError(
            "dashboards need plotly and matplotlib: pip install 'quantum-db[dashboard]'"
        ) from exc
    layout = plot.figure["layout"]
    fig = Figure(figsize=(9, 4.8), dpi=100, layout="constrained")
    ax = fig.add_subplot()
    bottoms: dict[Any, float] = {}
    for trace in plot.figure["data"]:
        x, y = trace["x"], trace["y"]
        if trace["type"] == "bar":
            base = [bottoms.get(k, 0.0) for k in x]
            ax.bar(x, y, bottom=base, label=trace["name"])
            for k, v in zip(x, y, strict=True):
                bottoms[k] = bottoms.get(k, 0.0) + v
            continue
        mode = trace.get("mode", "lines")
        steps = trace.get("line", {}).get("shape") == "hv"
        color = trace.get("marker", {}).get("color")
        ys = [float("nan") if v is None else v for v in y]
        if mode == "markers":
            ax.plot(x, ys, "o", label=trace["name"], color=color)
        else:
            marker = "." if "markers" in mode else None
            ax.plot(
                x,
                ys,
                marker=marker,
                markersize=3,
                label=trace["name"],
                drawstyle="steps-post" if steps else "default",
            )
    for shape in layout.get("shapes", []):
        label = shape.get("name")
        color = shape["line"]["color"]
        if shape["xref"] == "paper":
            ax.axhline(shape["y0"], color=color, linestyle="--", label=label)
        else:
            ax.axvline(shape["x0"], color=color, linestyle=":", linewidth=1)
    ax.set_title(layout["title"]["text"])
    ax.set_xlabel(layout["xaxis"]["title"]["text"])
    ax.set_ylabel(layout["yaxis"]["title"]["text"])
    if layout["yaxis"].get("rangemode") == "tozero":
        ax.set_ylim(bottom=0)
    ax.grid(True, alpha=0.3)
    if ax.get_legend_handles_labels()[0]:
        ax.legend(fontsize="small")
    # No "Software" entry: the file then depends on the data alone.
    fig.savefig(path, format="png", metadata={"Software": None})


# ---------------------------------------------------------------------------- writing
def _write_atomic(path: Path, write: Any) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    try:
        write(tmp)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def _write_files(
    report: RunReport, out: Path, plotly_script: str
) -> tuple[list[Path], list[str], list[str]]:
    figures, omitted = build_figures(report)
    data = dashboard_data(report, (figures, omitted))
    pngs = []
    for plot in figures:
        path = out / f"{plot.id}.png"
        _write_atomic(path, lambda tmp, plot=plot: _png(plot, tmp))
        pngs.append(path)
    for plot_id in omitted:  # a plot of an earlier dashboard in this folder that has no data now
        (out / f"{plot_id}.png").unlink(missing_ok=True)
    page = render_page(report, plotly_script=plotly_script, data=data)
    _write_atomic(out / HTML_NAME, lambda tmp: tmp.write_text(page, encoding="utf-8"))
    return pngs, [f.id for f in figures], omitted


def _prepare_folder(out: Path) -> None:
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise DashboardError(
            f"cannot create the dashboard folder {out}: {exc.strerror or exc}; "
            "give a folder you can write to"
        ) from exc
    if not os.access(out, os.W_OK):
        raise DashboardError(f"the dashboard folder {out} is not writable by this user")


async def write_dashboard(
    db: QuantumDatabase, run_id: str, out_dir: str | os.PathLike[str]
) -> DashboardFiles:
    """Write run ``run_id``'s dashboard into ``out_dir`` (created if missing):
    ``dashboard.html`` and ``<plot id>.png`` of each plot with data.

    Raises :class:`~quantum_db.errors.RunNotFoundError` for an unknown run and
    :class:`~quantum_ml.errors.DashboardError` when the folder cannot be made or written.
    """
    report = await load_run_report(db, run_id)
    out = Path(out_dir)
    await asyncio.to_thread(_prepare_folder, out)
    plotly_script = inline_plotly_script()
    try:
        pngs, drawn, omitted = await asyncio.to_thread(_write_files, report, out, plotly_script)
    except OSError as exc:
        raise DashboardError(
            f"cannot write the dashboard into {out}: {exc.strerror or exc}"
        ) from exc
    return DashboardFiles(
        html=out / HTML_NAME, pngs=tuple(pngs), plots=tuple(drawn), omitted=tuple(omitted)
    )
