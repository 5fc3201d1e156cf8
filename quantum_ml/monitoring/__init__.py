"""Watching a run: quantum metrics, alerts, system metrics, dashboards and exports."""
