"""Store revisions: what tells a cache that the inventory changed.

Every transaction that writes the inventory or the configuration moves the
"inventory" revision, and one that only changes host statuses moves the
"status" revision, in the same transaction as the write (a before-flush
hook on every session of the Database, so no write can forget it). A cache
reads both (one small query) and reloads what moved: an edit made anywhere —
this engine, another engine, the CLI — applies to the very next command.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from sqlalchemy import Connection, event, inspect, select, update
from sqlalchemy.orm import Session, sessionmaker

from hostpower.store.tables import (
    ClusterRow,
    ConfigRow,
    DataCenterRow,
    FenceAgentRow,
    HostRow,
    RevisionRow,
)

INVENTORY = "inventory"
STATUS = "status"
_INVENTORY_ROWS = (DataCenterRow, ClusterRow, HostRow, FenceAgentRow, ConfigRow)
_STATUS_COLUMNS = frozenset({"status", "non_operational_reason"})
_MOVED = "hostpower.revisions"   # session.info key: {name: value after this transaction}


@dataclass(frozen=True)
class Revisions:
    inventory: int
    status: int


_READ = select(RevisionRow.__table__.c.name, RevisionRow.__table__.c.value)  # built once: read per flow step


def current(session: Session | Connection) -> Revisions:
    values = {name: value for name, value in session.execute(_READ)}
    return Revisions(values.get(INVENTORY, 0), values.get(STATUS, 0))


def moved_by(session: Session) -> dict[str, int]:
    """The revisions this session's transaction moved, with their new values."""
    return dict(session.info.get(_MOVED, {}))


def track(sessions: sessionmaker[Session]) -> None:
    """Move the revisions with every write made through these sessions."""
    event.listen(sessions, "before_flush", _before_flush)
    event.listen(sessions, "after_begin", _forget)


def _forget(session: Session, *_: Any) -> None:
    session.info.pop(_MOVED, None)


def _before_flush(session: Session, *_: Any) -> None:
    moved = session.info.setdefault(_MOVED, {})
    for name in _kinds_written(session) - moved.keys():
        # A Core statement on the session's connection: inside the flush's
        # own transaction, without triggering another flush.
        moved[name] = session.connection().execute(
            update(RevisionRow).where(RevisionRow.name == name)
            .values(value=RevisionRow.value + 1).returning(RevisionRow.value)).scalar_one()


def _kinds_written(session: Session) -> set[str]:
    kinds: set[str] = set()
    for obj in (*session.new, *session.deleted):
        if isinstance(obj, _INVENTORY_ROWS):
            kinds.add(INVENTORY)
    for obj in session.dirty:
        if not isinstance(obj, _INVENTORY_ROWS):
            continue
        changed = {a.key for a in inspect(obj).attrs if a.history.has_changes()}
        if not changed:
            continue
        kinds.add(STATUS if isinstance(obj, HostRow) and changed <= _STATUS_COLUMNS
                  else INVENTORY)
    return kinds
