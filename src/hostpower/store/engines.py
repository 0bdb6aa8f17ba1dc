"""The engines sharing the database, each with a lease (table `engines`).

Every lease time is computed by the database in the statement that stores
it (`now()` on PostgreSQL, SQLite's 'now'), never sent by an engine: engines
on several machines then never disagree about who is alive because their
clocks differ. Each change is one conditional statement, so two engines that
race for the same name cannot both win.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from sqlalchemy import DateTime, Interval, func, literal, or_, select, type_coerce, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session
from sqlalchemy.sql.elements import ColumnElement

from hostpower.model.lease import EngineMember, EngineState, RowState, engine_state
from hostpower.model.ownership import Ownership
from hostpower.store.tables import EngineRow, HostRow

# SQLite has no date type: SQLAlchemy stores "YYYY-MM-DD HH:MM:SS.ffffff" text
# and compares it as text, so the database's clock is spelt the same way.
_SQLITE_FORMAT = "%Y-%m-%d %H:%M:%f000"


def _utc(value: datetime) -> datetime:
    return value if value.tzinfo else value.replace(tzinfo=UTC)


def db_clock(session: Session, plus: float = 0.0) -> ColumnElement[datetime]:
    """The database's current time plus `plus` seconds, as an SQL expression."""
    if session.get_bind().dialect.name == "sqlite":
        expr = func.strftime(_SQLITE_FORMAT, "now", f"{plus:+.3f} seconds")
    else:
        expr = func.now() + literal(timedelta(seconds=plus), Interval())
    return type_coerce(expr, DateTime(timezone=True))


class Engines:
    def __init__(self, session: Session) -> None:
        self.s = session
        self._sqlite = session.get_bind().dialect.name == "sqlite"

    # -- the database's clock ------------------------------------------------------------

    def _clock(self, plus: float = 0.0) -> ColumnElement[datetime]:
        return db_clock(self.s, plus)

    def now(self) -> datetime:
        """The database's current time (UTC)."""
        return _utc(self.s.scalar(select(self._clock())))

    # -- reads ---------------------------------------------------------------------------

    def list(self) -> list[EngineMember]:
        """Every engine ever registered, by name, judged on the database's clock."""
        now = self.now()
        rows = self.s.scalars(select(EngineRow).order_by(EngineRow.name)).all()
        return [_member(r, now) for r in rows]

    def host_shares(self, members: list[EngineMember]) -> dict[str, int]:
        """How many hosts each of `members` owns (0 unless alive)."""
        ring = Ownership(m.name for m in members if m.state is EngineState.ALIVE)
        shares = ring.shares(self.s.scalars(select(HostRow.id)))
        return {m.name: shares.get(m.name, 0) for m in members}

    def get(self, name: str) -> EngineMember | None:
        row = self.s.get(EngineRow, name)
        return _member(row, self.now()) if row is not None else None

    # -- writes: one conditional statement each -------------------------------------------

    def claim(self, name: str, address: str, lease: float) -> int | None:
        """Register `name` as running with a fresh lease: the new generation,
        or None when the name holds a lease that has not expired (a live
        engine has it, or one that crashed a moment ago)."""
        row = EngineRow.__table__.c
        now, expires = self._clock(), self._clock(lease)
        dialect = sqlite if self._sqlite else postgresql
        statement = dialect.insert(EngineRow.__table__).values(
            name=name, address=address, generation=1, state=RowState.RUNNING.value,
            started_at=now, renewed_at=now, lease_expires_at=expires,
        ).on_conflict_do_update(
            index_elements=[row.name],
            set_={"address": address, "generation": row.generation + 1,
                  "state": RowState.RUNNING.value, "started_at": now, "renewed_at": now,
                  "lease_expires_at": expires},
            where=or_(row.state == RowState.STOPPED.value, row.lease_expires_at <= now),
        ).returning(row.generation)
        return self.s.execute(statement).scalar_one_or_none()

    def renew(self, name: str, generation: int, lease: float) -> bool:
        """Extend the lease of this incarnation, if it has not expired meanwhile
        (after an expiry the engine must claim anew: its peers may have acted
        on its absence)."""
        result = self.s.execute(update(EngineRow).where(
            EngineRow.name == name, EngineRow.generation == generation,
            EngineRow.state == RowState.RUNNING.value, EngineRow.lease_expires_at > self._clock(),
        ).values(renewed_at=self._clock(), lease_expires_at=self._clock(lease)))
        return bool(result.rowcount)

    def expire(self, member: EngineMember) -> bool:
        """End the lease of an engine that nobody renews any more, provided it
        is still exactly as seen (same generation, not renewed since)."""
        result = self.s.execute(update(EngineRow).where(
            EngineRow.name == member.name, EngineRow.generation == member.generation,
            EngineRow.renewed_at == member.renewed_at,
        ).values(lease_expires_at=self._clock()))
        return bool(result.rowcount)

    def leave(self, name: str, generation: int) -> bool:
        """A clean stop: this incarnation is stopped, its lease ends now."""
        result = self.s.execute(update(EngineRow).where(
            EngineRow.name == name, EngineRow.generation == generation,
        ).values(state=RowState.STOPPED.value, lease_expires_at=self._clock()))
        return bool(result.rowcount)


def _member(row: EngineRow, now: datetime) -> EngineMember:
    expires = _utc(row.lease_expires_at)
    return EngineMember(
        name=row.name, address=row.address, generation=row.generation,
        state=engine_state(RowState(row.state), expires, now),
        started_at=_utc(row.started_at), renewed_at=_utc(row.renewed_at),
        lease_expires_at=expires)
