"""fence_kdump messages per host and the engines' listeners (tables
`kdump_sessions`, `kdump_listeners`).

Every engine's listener records what it hears here, so the engine that owns
a host sees the messages whichever engine the host sent them to. Times are
the database's (the clock leases use, store/engines.py), and ages are
computed against it, so engines on several machines agree on them. A
message is recorded by one statement that also decides whether it continues
the host's session or starts a new one (model/kdump.same_session).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime

from sqlalchemy import case, delete, select
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session

from hostpower.store.engines import Engines, db_clock
from hostpower.store.tables import KdumpListenerRow, KdumpSessionRow

SOURCE_LENGTH = 64


def _utc(value: datetime) -> datetime:
    return value if value.tzinfo else value.replace(tzinfo=UTC)


@dataclass(frozen=True)
class KdumpSession:
    host_id: int
    source: str           # the address the last message came from
    engine: str           # the engine that received it
    messages: int
    first_at: datetime
    last_at: datetime
    since_first: float    # seconds before now, on the database's clock
    since_last: float


@dataclass(frozen=True)
class ListenerCounts:
    received: int = 0     # datagrams
    accepted: int = 0     # valid, from a known host
    unknown: int = 0      # valid, from an address that is no host's
    malformed: int = 0    # not a fence_kdump message
    last_unknown: str = ""


@dataclass(frozen=True)
class KdumpListenerState:
    engine: str
    address: str
    state: str            # listening | failed | stopped
    detail: str
    heartbeat_at: datetime
    since_heartbeat: float
    counts: ListenerCounts


class KdumpStore:
    def __init__(self, session: Session) -> None:
        self.s = session
        self._dialect = postgresql if session.get_bind().dialect.name == "postgresql" else sqlite

    def now(self) -> datetime:
        return Engines(self.s).now()

    # -- messages --------------------------------------------------------------------------

    def record(self, host_id: int, source: str, engine: str, count: int,
               finished_after: float) -> None:
        """`count` messages from the host just now: they continue its session
        if its last message is less than `finished_after` seconds old, else
        they start a new one."""
        row = KdumpSessionRow.__table__.c
        now = db_clock(self.s)
        continues = row.last_at > db_clock(self.s, -finished_after)
        source = source[:SOURCE_LENGTH]
        self.s.execute(self._dialect.insert(KdumpSessionRow.__table__).values(
            host_id=host_id, source=source, engine=engine, messages=count,
            first_at=now, last_at=now,
        ).on_conflict_do_update(index_elements=[row.host_id], set_={
            "source": source, "engine": engine,
            "messages": case((continues, row.messages + count), else_=count),
            "first_at": case((continues, row.first_at), else_=now),
            "last_at": now,
        }))

    def session(self, host_id: int) -> KdumpSession | None:
        found = self.s.get(KdumpSessionRow, host_id)
        return _session(found, self.now()) if found is not None else None

    def sessions(self) -> list[KdumpSession]:
        now = self.now()
        rows = self.s.scalars(select(KdumpSessionRow).order_by(KdumpSessionRow.host_id)).all()
        return [_session(r, now) for r in rows]

    def clear(self, host_id: int, older_than: float | None = None) -> bool:
        """Forget the host's session (only if its last message is at least
        `older_than` seconds old, when given: a finished dump)."""
        statement = delete(KdumpSessionRow).where(KdumpSessionRow.host_id == host_id)
        if older_than is not None:
            statement = statement.where(KdumpSessionRow.last_at <= db_clock(self.s, -older_than))
        return bool(self.s.execute(statement).rowcount)

    # -- listeners -------------------------------------------------------------------------

    def report(self, engine: str, address: str, state: str, detail: str,
               counts: ListenerCounts) -> None:
        """An engine's listener says where it stands (its heartbeat)."""
        row = KdumpListenerRow.__table__.c
        values = {"address": address[:255], "state": state, "detail": detail,
                  "heartbeat_at": db_clock(self.s), "received": counts.received,
                  "accepted": counts.accepted, "unknown": counts.unknown,
                  "malformed": counts.malformed, "last_unknown": counts.last_unknown[:64]}
        self.s.execute(self._dialect.insert(KdumpListenerRow.__table__)
                       .values(engine=engine, **values)
                       .on_conflict_do_update(index_elements=[row.engine], set_=values))

    def listeners(self) -> list[KdumpListenerState]:
        now = self.now()
        rows = self.s.scalars(select(KdumpListenerRow).order_by(KdumpListenerRow.engine)).all()
        return [KdumpListenerState(
            engine=r.engine, address=r.address, state=r.state, detail=r.detail,
            heartbeat_at=_utc(r.heartbeat_at),
            since_heartbeat=(now - _utc(r.heartbeat_at)).total_seconds(),
            counts=ListenerCounts(r.received, r.accepted, r.unknown, r.malformed, r.last_unknown),
        ) for r in rows]


def _session(row: KdumpSessionRow, now: datetime) -> KdumpSession:
    first, last = _utc(row.first_at), _utc(row.last_at)
    return KdumpSession(host_id=row.host_id, source=row.source, engine=row.engine,
                        messages=row.messages, first_at=first, last_at=last,
                        since_first=(now - first).total_seconds(),
                        since_last=(now - last).total_seconds())
