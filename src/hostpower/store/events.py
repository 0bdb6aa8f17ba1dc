"""The event table: every fence attempt, skip and status change, queryable."""

from __future__ import annotations

import json
from dataclasses import replace
from datetime import UTC, datetime

from sqlalchemy import BigInteger, Connection, Text, bindparam, cast, func, insert, select
from sqlalchemy.orm import Session

from hostpower.model.events import Event, Severity
from hostpower.store.tables import EventRow

_EVENTS = EventRow.__table__
# Built once: every fence attempt stores an event.
_INSERT = insert(_EVENTS).values(
    {c: bindparam(c) for c in ("created_at", "severity", "kind", "host_id", "host_name",
                               "operation_id", "user", "engine", "message", "details")}
).returning(_EVENTS.c.id)


class Events:
    def __init__(self, session: Session | Connection) -> None:
        self.s = session

    def add(self, event: Event) -> Event:
        """Store `event` (a Core insert: on a Session or on the group-commit
        writer's Connection, store/groupcommit.py); returns it with its id."""
        values = {
            "created_at": event.created_at or datetime.now(UTC), "severity": event.severity.value,
            "kind": event.kind, "host_id": event.host_id, "host_name": event.host_name,
            "operation_id": event.operation_id, "user": event.user, "engine": event.engine,
            "message": event.message, "details": json.dumps(event.details, default=str)}
        insert_event = _INSERT_PG if _dialect(self.s) == "postgresql" else _INSERT
        event_id = self.s.execute(insert_event, values).scalar_one()
        return replace(event, id=event_id, created_at=values["created_at"],
                       details=json.loads(values["details"]))

    def query(self, host_id: int | None = None, severity: Severity | None = None,
              since: datetime | None = None, operation_id: int | None = None,
              kind: str | None = None, user: str | None = None,
              limit: int = 500) -> list[Event]:
        q = select(EventRow)
        if host_id is not None:
            q = q.where(EventRow.host_id == host_id)
        if severity is not None:
            # A severity filter means "at least this severe".
            levels = [s.value for s in Severity][list(Severity).index(severity):]
            q = q.where(EventRow.severity.in_(levels))
        if since is not None:
            # Stored in UTC; SQLite compares the text, so the bound must be UTC too.
            q = q.where(EventRow.created_at >= since.astimezone(UTC))
        if operation_id is not None:
            q = q.where(EventRow.operation_id == operation_id)
        if kind is not None:
            q = q.where(EventRow.kind == kind)
        if user is not None:
            q = q.where(EventRow.user == user)
        rows = self.s.scalars(q.order_by(EventRow.id.desc()).limit(limit)).all()
        return [_event(r) for r in reversed(rows)]


def _dialect(db: Session | Connection) -> str:
    return (db.dialect if isinstance(db, Connection) else db.get_bind().dialect).name


def writing_transaction():  # type: ignore[no-untyped-def]
    """PostgreSQL: the id of the current (top-level) transaction, as a bigint."""
    return cast(cast(func.pg_current_xact_id(), Text), BigInteger)


# PostgreSQL: with the writing transaction, for notifications (store/notifycursor.py).
_INSERT_PG = _INSERT.values(txid=writing_transaction())


def as_event(row: EventRow) -> Event:
    return _event(row)


def _event(row: EventRow) -> Event:
    created = row.created_at if row.created_at.tzinfo else row.created_at.replace(tzinfo=UTC)
    return Event(
        id=row.id, created_at=created, severity=Severity(row.severity), kind=row.kind,
        host_id=row.host_id, host_name=row.host_name, operation_id=row.operation_id,
        message=row.message, details=json.loads(row.details or "{}"), user=row.user,
        engine=row.engine,
    )
