"""Failed-login counts per user name and per client address, shared by every
engine on the database.

Each change is one atomic statement (an INSERT ... ON CONFLICT DO UPDATE that
computes the new count from the stored one, and sets the wait from it in the
same statement), so concurrent failures, on one engine or several, are never
lost; and `claim` refuses, in that same statement, to count an attempt while
the subject must still wait.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime

from sqlalchemy import DateTime, case, delete, literal, null, or_, select
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session
from sqlalchemy.sql.elements import ColumnElement

from hostpower.model.throttle import LoginPolicy, Subject
from hostpower.store.tables import LoginFailureRow

SUBJECT_LENGTH = 255  # LoginFailureRow.subject


@dataclass(frozen=True)
class Count:
    failures: int                  # in a row, this one included
    blocked_until: datetime | None


def _utc(value: datetime | None) -> datetime | None:
    if value is None:
        return None
    return value if value.tzinfo else value.replace(tzinfo=UTC)


def _at(value: datetime) -> ColumnElement[datetime]:
    return literal(value, DateTime(timezone=True))


class LoginFailures:
    def __init__(self, session: Session) -> None:
        self.s = session

    def blocked_until(self, subject: Subject, name: str, now: datetime) -> datetime | None:
        """Until when the subject must wait, or None if it may try now."""
        until = _utc(self.s.scalar(select(LoginFailureRow.blocked_until).where(
            LoginFailureRow.kind == subject.value,
            LoginFailureRow.subject == name[:SUBJECT_LENGTH])))
        return until if until is not None and until > now else None

    def failures(self, subject: Subject, name: str) -> int:
        """The stored count (for operators and tests)."""
        return self.s.scalar(select(LoginFailureRow.failures).where(
            LoginFailureRow.kind == subject.value,
            LoginFailureRow.subject == name[:SUBJECT_LENGTH])) or 0

    def claim(self, subject: Subject, name: str, now: datetime, policy: LoginPolicy) -> Count | None:
        """Count an attempt before its password is checked, unless the subject
        must still wait (None then). However many attempts arrive at once, only
        as many as the policy allows are counted, so only those are checked."""
        return self._count(subject, name, now, policy, only_if_free=True)

    def record(self, subject: Subject, name: str, now: datetime, policy: LoginPolicy) -> Count:
        """Count a failure that already happened."""
        count = self._count(subject, name, now, policy, only_if_free=False)
        assert count is not None
        return count

    def clear(self, subject: Subject, name: str) -> None:
        """A successful login: the count starts again from zero."""
        self.s.execute(delete(LoginFailureRow).where(
            LoginFailureRow.kind == subject.value,
            LoginFailureRow.subject == name[:SUBJECT_LENGTH]))

    def forget_old(self, now: datetime, policy: LoginPolicy) -> None:
        """Drop the counts nobody remembers any more (each name ever tried has a row)."""
        self.s.execute(delete(LoginFailureRow).where(
            LoginFailureRow.last_failure_at <= now - policy.lockout,
            or_(LoginFailureRow.blocked_until.is_(None), LoginFailureRow.blocked_until <= now)))

    def _count(self, subject: Subject, name: str, now: datetime, policy: LoginPolicy,
               only_if_free: bool) -> Count | None:
        row = LoginFailureRow.__table__.c
        # Failures further apart than the lockout are forgotten: start again at 1.
        failures = case((row.last_failure_at <= _at(now - policy.lockout), 1),
                        else_=row.failures + 1)
        steps = policy.backoff_steps(subject)
        lockout = _at(now + policy.lockout)
        # Past the last growing step the wait stays at its maximum.
        backoff = (case({n: _at(now + wait) for n, wait in steps.items()}, value=failures,
                        else_=_at(now + policy.max_backoff)) if steps else null())
        blocked_until = case((failures >= policy.lockout_failures(subject), lockout),
                             else_=backoff)
        first_wait = policy.wait_after(subject, 1)
        values = {"kind": subject.value, "subject": name[:SUBJECT_LENGTH], "failures": 1,
                  "last_failure_at": now,
                  "blocked_until": now + first_wait if first_wait is not None else None}
        insert = (postgresql.insert if self.s.get_bind().dialect.name == "postgresql"
                  else sqlite.insert)(LoginFailureRow.__table__).values(**values)
        free = or_(row.blocked_until.is_(None), row.blocked_until <= _at(now))
        statement = insert.on_conflict_do_update(
            index_elements=[row.kind, row.subject],
            set_={"failures": failures, "last_failure_at": now, "blocked_until": blocked_until},
            where=free if only_if_free else None,
        ).returning(row.failures, row.blocked_until)
        counted = self.s.execute(statement).one_or_none()
        if counted is None:
            return None
        return Count(counted.failures, _utc(counted.blocked_until))
