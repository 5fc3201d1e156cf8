"""Alerts: thresholds crossed and other events of a run worth a person's attention.

Two ways in. :meth:`AlertStore.raise_alert` stores one alert as given (a note by hand, an
event such as a degrade). :meth:`AlertStore.fire` is what alert rules use: while a rule's
alert on a run is open, firing again updates that one row (latest value and step, one
more in ``count``) instead of adding another, and :meth:`AlertStore.resolve` closes it
when the condition clears; the next firing after that opens a new row.
"""

from __future__ import annotations

import builtins
import logging
import time
from dataclasses import dataclass

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from .errors import DataValidationError, NotFoundError, RunNotFoundError
from .registry.engine import Registry
from .registry.schema import AlertRow, RunRow
from .runs import validate_run_id
from .validation import check_int, check_number, check_text

__all__ = ["ALERT_SEVERITIES", "MAX_ALERT_MESSAGE_LENGTH", "Alert", "AlertStore"]

logger = logging.getLogger(__name__)

#: The ``alerts.message`` column's width; longer messages are cut to it.
MAX_ALERT_MESSAGE_LENGTH = 2000
_MAX_KIND_LENGTH = 64
_MAX_METRIC_KEY_LENGTH = 128
_MAX_RULE_LENGTH = 128
#: Severities, mildest first; each logs at the logging level of the same name.
ALERT_SEVERITIES = ("info", "warning", "error")
_LOG_LEVELS = {"info": logging.INFO, "warning": logging.WARNING, "error": logging.ERROR}


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
    #: The rule that fired it (None: raised by hand) and how bad it is.
    rule: str | None = None
    severity: str = "warning"
    #: The training step of the latest firing, when the rule knew it.
    step: int | None = None
    #: Firings this alert stands for (repeats while open are deduplicated into it).
    count: int = 1
    #: The latest firing's time, and when the condition cleared (None: still open).
    updated_at: float | None = None
    resolved_at: float | None = None

    @property
    def open(self) -> bool:
        return self.resolved_at is None

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
            row.rule,
            row.severity or "warning",
            row.step,
            int(row.count or 1),
            row.updated_at if row.updated_at is not None else row.created_at,
            row.resolved_at,
        )


def _check_kind(kind: object) -> str:
    text = check_text(kind, "alert kind", max_length=_MAX_KIND_LENGTH)
    if not text.isprintable() or text != text.strip():
        raise DataValidationError(
            f"alert kind {text!r} must be printable characters without surrounding blanks "
            "(e.g. 'loss_threshold')"
        )
    return text


def _check_severity(severity: object) -> str:
    if severity not in ALERT_SEVERITIES:
        raise DataValidationError(
            f"alert severity must be one of {', '.join(ALERT_SEVERITIES)}, got {severity!r}"
        )
    return str(severity)


def _check_rule(rule: object) -> str:
    text = check_text(rule, "alert rule", max_length=_MAX_RULE_LENGTH)
    if not text.isprintable() or text != text.strip():
        raise DataValidationError(f"alert rule {text!r} must be printable, without blanks around")
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
        severity: str = "warning",
        step: int | None = None,
    ) -> Alert:
        """Store an alert about ``run_id`` (``None``: not about one run) and log it."""
        if run_id is not None:
            validate_run_id(run_id)
        checked_severity = _check_severity(severity)
        checked_step = None if step is None else check_int(step, "alert step", minimum=0)
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
            severity=checked_severity,
            step=checked_step,
        )
        async with self._registry.session() as session:
            if run_id is not None and await session.get(RunRow, run_id) is None:
                raise RunNotFoundError(f"no run {run_id!r} to raise an alert about")
            session.add(row)
            await session.flush()
        alert = Alert.from_row(row)
        _log(alert, "alert")
        return alert

    async def fire(
        self,
        run_id: str,
        rule: str,
        message: str,
        *,
        severity: str = "warning",
        metric_key: str | None = None,
        value: float | None = None,
        threshold: float | None = None,
        step: int | None = None,
    ) -> tuple[Alert, bool]:
        """Record that ``rule`` fired on ``run_id``; returns the alert and whether it is new.

        While the rule's alert on the run is open, this updates it (message, value, step,
        ``count`` + 1) instead of storing another; otherwise a new alert opens. Only a new
        alert is logged (at the level of its severity); repeats log at DEBUG.
        """
        validate_run_id(run_id)
        checked_rule = _check_rule(rule)
        fields = {
            "message": _check_message(message),
            "severity": _check_severity(severity),
            "metric_key": None
            if metric_key is None
            else check_text(metric_key, "metric_key", max_length=_MAX_METRIC_KEY_LENGTH),
            "value": None if value is None else check_number(value, "alert value"),
            "threshold": None if threshold is None else check_number(threshold, "alert threshold"),
            "step": None if step is None else check_int(step, "alert step", minimum=0),
        }
        stamp = time.time()
        async with self._registry.session() as session:
            if await session.get(RunRow, run_id) is None:
                raise RunNotFoundError(f"no run {run_id!r} to raise an alert about")
            row = await _open_row(session, run_id, checked_rule)
            created = row is None
            if row is None:
                row = AlertRow(
                    run_id=run_id,
                    kind=checked_rule,
                    rule=checked_rule,
                    acknowledged=False,
                    count=1,
                    created_at=stamp,
                    updated_at=stamp,
                    **fields,
                )
                session.add(row)
            else:
                for name, value_ in fields.items():
                    setattr(row, name, value_)
                row.count = int(row.count or 1) + 1
                row.updated_at = stamp
            await session.flush()
            alert = Alert.from_row(row)
        if created:
            _log(alert, "alert")
        else:
            logger.debug("alert %d (%s) fired again (%d times)", alert.id, alert.kind, alert.count)
        return alert, created

    async def resolve(self, run_id: str, rule: str, *, step: int | None = None) -> Alert | None:
        """Close the open alert of ``rule`` on ``run_id`` (the condition cleared); returns
        it, or None when none was open."""
        validate_run_id(run_id)
        checked_rule = _check_rule(rule)
        checked_step = None if step is None else check_int(step, "alert step", minimum=0)
        async with self._registry.session() as session:
            row = await _open_row(session, run_id, checked_rule)
            if row is None:
                return None
            row.resolved_at = time.time()
            if checked_step is not None:
                row.step = checked_step
            await session.flush()
            alert = Alert.from_row(row)
        logger.info("alert %d (%s) on run %r resolved", alert.id, alert.kind, run_id)
        return alert

    async def list(
        self,
        run_id: str | None = None,
        kind: str | None = None,
        unacknowledged: bool = False,
        *,
        open_only: bool = False,
        severity: str | None = None,
    ) -> builtins.list[Alert]:
        """Alerts, oldest first: of ``run_id``, ``kind`` and ``severity`` when given, only
        those not yet acknowledged when ``unacknowledged``, only unresolved ones when
        ``open_only``."""
        query = select(AlertRow).order_by(AlertRow.created_at, AlertRow.id)
        if severity is not None:
            query = query.where(AlertRow.severity == _check_severity(severity))
        if not isinstance(open_only, bool):
            raise DataValidationError(f"open_only must be a bool, got {open_only!r}")
        if open_only:
            query = query.where(AlertRow.resolved_at.is_(None))
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


async def _open_row(session: AsyncSession, run_id: str, rule: str) -> AlertRow | None:
    query = (
        select(AlertRow)
        .where(AlertRow.run_id == run_id, AlertRow.rule == rule, AlertRow.resolved_at.is_(None))
        .order_by(AlertRow.id.desc())
        .limit(1)
    )
    return (await session.scalars(query)).first()


def _log(alert: Alert, what: str) -> None:
    logger.log(
        _LOG_LEVELS.get(alert.severity, logging.WARNING),
        "%s %d (%s)%s: %s",
        what,
        alert.id,
        alert.kind,
        "" if alert.run_id is None else f" on run {alert.run_id!r}",
        alert.message,
    )
