"""Failed-login counts per user name and per client address, shared by every
engine on the database.

Each change is one atomic statement: the count is raised by an INSERT ... ON
CONFLICT DO UPDATE that computes it from the stored one, and a wait is only
ever extended by an UPDATE that keeps the later time. So concurrent failures,
on one engine or several, are never lost, and a wait is never shortened.
"""

from __future__ import annotations

from datetime import UTC, datetime

from sqlalchemy import DateTime, case, delete, literal, or_, select, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session
from sqlalchemy.sql.elements import ColumnElement

from hostpower.model.throttle import LoginPolicy, Subject
from hostpower.store.tables import LoginFailureRow

SUBJECT_LENGTH = 255  # LoginFailureRow.subject


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
        until = _utc(self.s.scalar(select(LoginFailureRow.blocked_until)
                                   .where(*self._key(subject, name))))
        return until if until is not None and until > now else None

    def failures(self, subject: Subject, name: str) -> int:
        """The stored count (for operators and tests)."""
        return self.s.scalar(select(LoginFailureRow.failures)
                             .where(*self._key(subject, name))) or 0

    def claim(self, subject: Subject, name: str, now: datetime,
              policy: LoginPolicy) -> int | None:
        """Count an attempt before its password is checked: its number in the
        row of failures, or None if the subject must still wait. The attempt
        that reaches the lockout threshold locks the subject in the same
        statement, so however many attempts arrive at once, no more than the
        threshold are counted, hence checked. (A success clears the count.)"""
        return self._count(subject, name, now, policy, only_if_free=True)

    def record(self, subject: Subject, name: str, now: datetime, policy: LoginPolicy) -> int:
        """Count a failure that already happened: its number in the row."""
        count = self._count(subject, name, now, policy, only_if_free=False)
        assert count is not None
        return count

    def wait(self, subject: Subject, name: str, until: datetime) -> None:
        """The subject may not try again before `until` (a later wait stays)."""
        row = LoginFailureRow
        self.s.execute(update(row).where(
            *self._key(subject, name),
            or_(row.blocked_until.is_(None), row.blocked_until < _at(until)),
        ).values(blocked_until=until))

    def clear(self, subject: Subject, name: str) -> None:
        """A successful login: the count starts again from zero."""
        self.s.execute(delete(LoginFailureRow).where(*self._key(subject, name)))

    def forget_old(self, now: datetime, policy: LoginPolicy) -> None:
        """Drop the counts nobody remembers any more (each name ever tried has a row)."""
        self.s.execute(delete(LoginFailureRow).where(
            LoginFailureRow.last_failure_at <= now - policy.lockout,
            or_(LoginFailureRow.blocked_until.is_(None), LoginFailureRow.blocked_until <= now)))

    @staticmethod
    def _key(subject: Subject, name: str) -> tuple[ColumnElement[bool], ...]:
        return (LoginFailureRow.kind == subject.value,
                LoginFailureRow.subject == name[:SUBJECT_LENGTH])

    def _count(self, subject: Subject, name: str, now: datetime, policy: LoginPolicy,
               only_if_free: bool) -> int | None:
        row = LoginFailureRow.__table__.c
        threshold = policy.lockout_failures(subject)
        lock = now + policy.lockout
        # Failures further apart than the lockout are forgotten: start again at 1.
        failures = case((row.last_failure_at <= _at(now - policy.lockout), 1),
                        else_=row.failures + 1)
        blocked_until = case((failures >= threshold, _at(lock)), else_=row.blocked_until)
        dialect = postgresql if self.s.get_bind().dialect.name == "postgresql" else sqlite
        statement = dialect.insert(LoginFailureRow.__table__).values(
            kind=subject.value, subject=name[:SUBJECT_LENGTH], failures=1, last_failure_at=now,
            blocked_until=lock if threshold <= 1 else None,
        ).on_conflict_do_update(
            index_elements=[row.kind, row.subject],
            set_={"failures": failures, "last_failure_at": now, "blocked_until": blocked_until},
            where=(or_(row.blocked_until.is_(None), row.blocked_until <= _at(now))
                   if only_if_free else None),
        ).returning(row.failures)
        return self.s.execute(statement).scalar_one_or_none()
