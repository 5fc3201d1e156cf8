"""Alerts: thresholds crossed and other events of a run worth a person's attention."""

from __future__ import annotations

import builtins
import logging
from dataclasses import dataclass

from sqlalchemy import select

from .errors import DataValidationError, NotFoundError, RunNotFoundError
from .registry.engine import Registry
from .registry.schema import AlertRow, RunRow
from .runs import validate_run_id
from .validation import check_int, check_number, check_text

__all__ = ["MAX_ALERT_MESSAGE_LENGTH", "Alert", "AlertStore"]

logger = logging.getLogger(__name__)

#: The ``alerts.message`` column's width; longer messages are cut to it.
MAX_ALERT_MESSAGE_LENGTH = 2000
_MAX_KIND_LENGTH = 64
_MAX_METRIC_KEY_LENGTH = 128


@dataclass(frozen=True, slots=True)
class Alert:
    """One raised alert; ``value`` crossed ``threshold`` of ``metric_key`` when given."""

    id: int
    run_id: str | None
    kind: str
    message: str
    metric_key: str | None
    value: float | None
    threshold: float | None
    acknowledged: bool
    created_at: float

    @classmethod
    def from_row(cls, row: AlertRow) -> Alert:
        return cls(
            row.id,
            row.run_id,
            row.kind,
            row.message,
            row.metric_key,
            row.value,
            row.threshold,
            bool(row.acknowledged),
            row.created_at,
        )


def _check_kind(kind: object) -> str:
    text = check_text(kind, "alert kind", max_length=_MAX_KIND_LENGTH)
    if not text.isprintable() or text != text.strip():
        raise DataValidationError(
            f"alert kind {text!r} must be printable characters without surrounding blanks "
            "(e.g. 'loss_threshold')"
        )
    return text


def _check_message(message: object) -> str:
    if not isinstance(message, str) or not message.strip():
        raise DataValidationError(f"an alert needs a non-empty message, got {message!r}")
    if len(message) <= MAX_ALERT_MESSAGE_LENGTH:
        return message
    # An alert is raised where something already went wrong: a long message is cut (and
    # says so) rather than refused, so that the alert itself is not lost.
    return message[: MAX_ALERT_MESSAGE_LENGTH - 3] + "..."


class AlertStore:
    """``db.alerts``: raise, list and acknowledge alerts.

    Every raised alert is stored and logged at WARNING (logger ``quantum_db.alerts``).
    Messages longer than :data:`MAX_ALERT_MESSAGE_LENGTH` are cut to it, ending in
    "..."; every other bad input is refused with :class:`DataValidationError` (or
    :class:`RunNotFoundError` for a run that does not exist) and nothing is stored.
    """

    def __init__(self, registry: Registry) -> None:
        self._registry = registry

    async def raise_alert(
        self,
        run_id: str | None,
        kind: str,
        message: str,
        *,
        metric_key: str | None = None,
        value: float | None = None,
        threshold: float | None = None,
    ) -> Alert:
        """Store an alert about ``run_id`` (``None``: not about one run) and log it."""
        if run_id is not None:
            validate_run_id(run_id)
        row = AlertRow(
            run_id=run_id,
            kind=_check_kind(kind),
            message=_check_message(message),
            metric_key=None
            if metric_key is None
            else check_text(metric_key, "metric_key", max_length=_MAX_METRIC_KEY_LENGTH),
            value=None if value is None else check_number(value, "alert value"),
            threshold=None if threshold is None else check_number(threshold, "alert threshold"),
            acknowledged=False,
        )
        async with self._registry.session() as session:
            if run_id is not None and await session.get(RunRow, run_id) is None:
                raise RunNotFoundError(f"no run {run_id!r} to raise an alert about")
            session.add(row)
            await session.flush()
        alert = Alert.from_row(row)
        logger.warning(
            "alert %d (%s)%s: %s",
            alert.id,
            alert.kind,
            "" if alert.run_id is None else f" on run {alert.run_id!r}",
            alert.message,
        )
        return alert

    async def list(
        self, run_id: str | None = None, kind: str | None = None, unacknowledged: bool = False
    ) -> builtins.list[Alert]:
        """Alerts, oldest first: of ``run_id`` and ``kind`` when given, only those not yet
        acknowledged when ``unacknowledged``."""
        query = select(AlertRow).order_by(AlertRow.created_at, AlertRow.id)
        if run_id is not None:
            query = query.where(AlertRow.run_id == validate_run_id(run_id))
        if kind is not None:
            query = query.where(AlertRow.kind == _check_kind(kind))
        if not isinstance(unacknowledged, bool):
            raise DataValidationError(f"unacknowledged must be a bool, got {unacknowledged!r}")
        if unacknowledged:
            query = query.where(AlertRow.acknowledged.is_(False))
        async with self._registry.session() as session:
            rows = (await session.scalars(query)).all()
        return [Alert.from_row(r) for r in rows]

    async def acknowledge(self, alert_id: int) -> Alert:
        """Mark the alert acknowledged (again is a no-op); returns it."""
        wanted = check_int(alert_id, "alert id", minimum=1)
        async with self._registry.session() as session:
            row = await session.get(AlertRow, wanted)
            if row is None:
                raise NotFoundError(f"no alert {wanted}")
            row.acknowledged = True
        return Alert.from_row(row)
