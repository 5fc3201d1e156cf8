"""The ``qdb`` command line: a Typer app, one module per command group.

``setup`` (init, health, gc) · ``catalog`` (datasets, models, backends, estimate) ·
``runs`` (runs, runs show, metrics, jobs, costs, alerts) · ``views`` (dashboard, ui,
export) · ``train`` (demo, tour). :func:`main` runs it and turns every quantum-db error
into one line on stderr and exit status 2.
"""

from .app import app, main

__all__ = ["app", "main"]
