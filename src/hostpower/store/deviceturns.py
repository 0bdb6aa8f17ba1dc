"""Turns at PM devices, claimed in the database (table `device_turns`) so
that engines sharing it never send one device two commands at once.

One row per device (`DeviceKey.text`). `free_at` is the one time that
matters: the next command may start once the database's clock passes it.
A claim sets it to the claim's expiry (a crashed holder's claim frees the
device then); a release sets it to the end of the command plus the spacing
interval. Each change is one conditional statement, every time is the
database's (store/engines.py `db_clock`), so two engines racing for one
device cannot both win, whatever their clocks say.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime

from sqlalchemy import select, text, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session

from hostpower.store.engines import db_clock
from hostpower.store.tables import DeviceTurnRow


def _utc(value: datetime) -> datetime:
    return value if value.tzinfo else value.replace(tzinfo=UTC)


@dataclass(frozen=True)
class TurnState:
    """A device's row as a waiter sees it."""

    holder: str          # who claimed it last
    held: bool           # claimed and not released (it may have expired: see free_in)
    free_in: float       # seconds until the next command may start (<= 0: now)


class DeviceTurns:
    def __init__(self, session: Session) -> None:
        self.s = session
        self._dialect = postgresql if session.get_bind().dialect.name != "sqlite" else sqlite

    def claim(self, device: str, holder: str, token: str, ttl: float) -> datetime | None:
        """Take the device's turn for `ttl` seconds if it is free (never
        claimed, released and spaced, or its claim expired): the claim's
        start on the database's clock, or None when it is not free."""
        row = DeviceTurnRow.__table__.c
        now, expires = db_clock(self.s), db_clock(self.s, ttl)
        statement = self._dialect.insert(DeviceTurnRow.__table__).values(
            device=device, holder=holder, token=token, claimed_at=now, ended_at=None,
            free_at=expires,
        ).on_conflict_do_update(
            index_elements=[row.device],
            set_={"holder": holder, "token": token, "claimed_at": now, "ended_at": None,
                  "free_at": expires},
            where=row.free_at <= now,
        ).returning(row.claimed_at)
        claimed = self.s.execute(statement).scalar_one_or_none()
        return _utc(claimed) if claimed is not None else None

    def release(self, device: str, token: str, interval: float) -> datetime | None:
        """End the turn claimed with `token`: the next command may start
        `interval` seconds from now. The end on the database's clock, or None
        when the claim is no longer this one (it expired and another took it)."""
        row = DeviceTurnRow.__table__.c
        if self._dialect is postgresql:
            # Not waited for on disk: lost only if the database server itself
            # crashes in the next fraction of a second, and then the claim
            # merely expires (claim_ttl) instead of being released. A claim
            # is always durable before its command is sent.
            self.s.execute(text("SET LOCAL synchronous_commit TO OFF"))
        ended = self.s.execute(
            update(DeviceTurnRow.__table__).where(row.device == device, row.token == token)
            .values(token=None, ended_at=db_clock(self.s), free_at=db_clock(self.s, interval))
            .returning(row.ended_at)).scalar_one_or_none()
        return _utc(ended) if ended is not None else None

    def state(self, device: str) -> TurnState | None:
        found = self.s.execute(select(DeviceTurnRow.holder, DeviceTurnRow.token,
                                      DeviceTurnRow.free_at, db_clock(self.s))
                               .where(DeviceTurnRow.device == device)).first()
        if found is None:
            return None
        holder, token, free_at, now = found
        return TurnState(holder, token is not None,
                         (_utc(free_at) - _utc(now)).total_seconds())
