"""Where each notifier's delivery stands, shared by every engine on the
database (table `notifier_state`); every change is one conditional
statement.

**Who delivers.** One engine at a time holds a notifier: a lease on the
database's clock (`claim`), renewed by its holder, taken by another engine
only once it expired (or was released by a clean stop). Each new holder
increments the notifier's `token`, and every change of the position states
the token it holds: a holder that lost the notifier (paused past its
lease) cannot move the position, and stops.

**Which events.** A notifier passes events in `(txid, id)` order. On
PostgreSQL ids are taken from a sequence when a row is inserted, but the
transactions commit in any order: reading "id > last id seen" would skip an
event whose transaction took a lower id and committed after a higher one.
So each event carries the id of the transaction that wrote it (`txid`,
store/events.py), and a notifier reads only events of transactions below
the oldest transaction still running (`pg_snapshot_xmin` of the reading
statement's own snapshot): those have all ended, so no event can ever
appear below that bound again; every later transaction gets a larger id.
An event is therefore delivered once its transaction and every older one
have ended. On SQLite one writer at a time holds the database from its
first write to its commit, so ids commit in order: txid is 0 and the order
is the id's.
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import BigInteger, Text, and_, case, cast, func, or_, select, update
from sqlalchemy.orm import Session
from sqlalchemy.sql.elements import ColumnElement

from hostpower.model.events import Event, Severity
from hostpower.store.engines import db_clock
from hostpower.store.events import Events, as_event
from hostpower.store.tables import EventRow, NotifierStateRow

Position = tuple[int, int]  # (txid, event id): everything up to it is passed


def _postgres(s: Session) -> bool:
    return s.get_bind().dialect.name == "postgresql"


def visible_bound() -> ColumnElement[int]:
    """PostgreSQL: the oldest transaction still running, as seen by the
    statement that reads (every transaction below it has ended)."""
    return cast(cast(func.pg_snapshot_xmin(func.pg_current_snapshot()), Text), BigInteger)


def start_position(s: Session) -> Position:
    """Where a new notifier starts: after every event already committed, so
    it delivers what is written from now on (with what transactions still
    open will write)."""
    if _postgres(s):
        return int(s.scalar(select(visible_bound()))), 0
    return 0, int(s.scalar(select(func.max(EventRow.id))) or 0)


def events_after(s: Session, position: Position, limit: int) -> list[tuple[Position, Event]]:
    """The next events after `position` that no running transaction can
    still precede, in delivery order, each with its own position."""
    txid, event_id = position
    q = select(EventRow).where(or_(EventRow.txid > txid,
                                   and_(EventRow.txid == txid, EventRow.id > event_id)))
    if _postgres(s):
        q = q.where(EventRow.txid < visible_bound())
    rows = s.scalars(q.order_by(EventRow.txid, EventRow.id).limit(limit)).all()
    return [((r.txid, r.id), as_event(r)) for r in rows]


class DeliveryCursor:
    """One notifier's shared state, changed by the engine holding it."""

    def __init__(self, session: Session, notifier_id: int) -> None:
        self.s = session
        self.id = notifier_id
        self._c = NotifierStateRow.__table__.c

    # -- holding -----------------------------------------------------------------------------

    def claim(self, holder: str, instance: str, lease: float) -> int | None:
        """Take or renew the notifier for `lease` seconds: the token held, or
        None while another deliverer's lease runs."""
        c = self._c
        now = db_clock(self.s)
        result = self.s.execute(update(NotifierStateRow).where(
            c.notifier_id == self.id,
            or_(c.instance == instance, c.instance.is_(None), c.lease_expires_at <= now),
        ).values(
            holder=holder, instance=instance, lease_expires_at=db_clock(self.s, lease),
            token=case((c.instance == instance, c.token), else_=c.token + 1),
        ))
        if not result.rowcount:
            return None
        return int(self.s.scalar(select(c.token).where(c.notifier_id == self.id)))

    def release(self, instance: str) -> bool:
        """A clean stop: another engine may take the notifier at once."""
        result = self.s.execute(update(NotifierStateRow).where(
            self._c.notifier_id == self.id, self._c.instance == instance,
        ).values(holder=None, instance=None, lease_expires_at=db_clock(self.s)))
        return bool(result.rowcount)

    def position(self) -> Position | None:
        row = self.s.get(NotifierStateRow, self.id)
        return (row.cursor_txid, row.cursor_id) if row is not None else None

    # -- progress (each states the token it holds) -------------------------------------------

    def _mine(self, token: int) -> ColumnElement[bool]:
        return and_(self._c.notifier_id == self.id, self._c.token == token)

    def passed(self, token: int, to: Position) -> bool:
        """Events up to `to` need nothing (not wanted by the notifier)."""
        result = self.s.execute(update(NotifierStateRow).where(self._mine(token)).values(
            cursor_txid=to[0], cursor_id=to[1]))
        return bool(result.rowcount)

    def delivered(self, token: int, to: Position, event_id: int, name: str,
                  engine: str) -> bool:
        """The event at `to` was delivered; a notifier that was failing has
        recovered (one INFO event, in the same transaction)."""
        c = self._c
        result = self.s.execute(update(NotifierStateRow).where(self._mine(token)).values(
            cursor_txid=to[0], cursor_id=to[1], delivered=c.delivered + 1,
            last_delivered_event=event_id, last_delivered_at=db_clock(self.s), attempts=0))
        if not result.rowcount:
            return False
        since = self._end_failing()
        if since is not None:
            Events(self.s).add(Event(
                Severity.INFO, "notifier.recovered",
                f"notifier {name} delivers again (failing since {since:%Y-%m-%d %H:%M:%S} UTC)",
                engine=engine, details={"notifier_id": self.id, "notifier": name}))
        return True

    def attempt_failed(self, token: int, error: str) -> bool:
        c = self._c
        result = self.s.execute(update(NotifierStateRow).where(self._mine(token)).values(
            attempts=c.attempts + 1, last_error=error[:2000], last_error_at=db_clock(self.s)))
        return bool(result.rowcount)

    def gave_up(self, token: int, to: Position, event_id: int, name: str, engine: str,
                error: str, attempts: int) -> bool:
        """Every attempt for the event at `to` failed: it is dropped and the
        notifier goes on. The first drop of a failing spell writes one
        WARNING event (in the same transaction); later ones write none."""
        c = self._c
        result = self.s.execute(update(NotifierStateRow).where(self._mine(token)).values(
            cursor_txid=to[0], cursor_id=to[1], dropped=c.dropped + 1))
        if not result.rowcount:
            return False
        started = self.s.execute(update(NotifierStateRow).where(
            c.notifier_id == self.id, c.failing_since.is_(None),
        ).values(failing_since=db_clock(self.s)))
        if started.rowcount:
            Events(self.s).add(Event(
                Severity.WARNING, "notifier.failing",
                f"notifier {name} is failing: event {event_id} given up after {attempts} "
                f"attempt(s): {error}", engine=engine,
                details={"notifier_id": self.id, "notifier": name, "event_id": event_id,
                         "attempts": attempts, "error": error[:500]}))
        return True

    def _end_failing(self) -> datetime | None:
        c = self._c
        since = self.s.scalar(select(c.failing_since).where(c.notifier_id == self.id))
        if since is None:
            return None
        done = self.s.execute(update(NotifierStateRow).where(
            c.notifier_id == self.id, c.failing_since.is_not(None)).values(failing_since=None))
        return since if done.rowcount else None
