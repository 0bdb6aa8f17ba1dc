"""The front door: a user name and a password checked with login throttling.

Both ways in (POST /api/auth/token and the console's POST /api/session) call
`log_in`, which

1. refuses the attempt if the client address must still wait;
2. claims the attempt for the user name: counted, in one atomic statement,
   before the password is checked, and refused while the name must still
   wait; the attempt that reaches the lockout threshold locks the name in
   that same statement. So however many attempts arrive at once, on however
   many engines, no more are checked than the threshold allows;
3. only then checks the password;
4. on success clears the name's count; on failure makes the name wait (the
   back-off: only after a failure, so that simultaneous right logins of one
   user never stop each other), counts the address too (after the fact: a
   successful login must cost the other users behind the same address
   nothing), and records a lockout when one starts.

A refused attempt (429 with Retry-After) checks no password, so a locked name
cannot be probed. Unknown names and wrong passwords are counted, throttled,
answered and timed alike (Users.authenticate does the same scrypt work for
both). The waits come from the configuration (model/throttle.py).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import UTC, datetime

from fastapi import HTTPException, Request
from sqlalchemy.orm import Session

from hostpower.api.audit import auth_event, client_address, log_events
from hostpower.model.events import Event, Severity
from hostpower.model.throttle import LoginPolicy, Subject
from hostpower.store.configstore import ConfigStore
from hostpower.store.events import Events
from hostpower.store.logins import LoginFailures
from hostpower.store.users import Users

WRONG_CREDENTIALS = "wrong user name or password"


class TooManyLoginAttempts(Exception):
    """Answered 429 with Retry-After (see app.py)."""

    def __init__(self, retry_after: int) -> None:
        super().__init__(f"too many failed logins: try again in {retry_after} s")
        self.retry_after = retry_after


@dataclass(frozen=True)
class LoggedIn:
    name: str
    role: str
    token: str
    expires: datetime


def log_in(request: Request, username: str, password: str, via: str) -> LoggedIn:
    """A new token for the user, or TooManyLoginAttempts / 401. `via`: token or session."""
    db = request.app.state.ctx.db
    address = client_address(request)
    now = datetime.now(UTC)
    with db.session() as s:
        policy = LoginPolicy.from_config(ConfigStore(s).load())
        counts = LoginFailures(s)
        waiting = counts.blocked_until(Subject.ADDRESS, address, now)
        # This attempt's number in the name's row of failures, if it may be made.
        attempt = None if waiting else counts.claim(Subject.USER, username, now, policy)
        if attempt is None:
            waiting = waiting or counts.blocked_until(Subject.USER, username, now)
    if attempt is None:
        # A wait that ended between the claim and the read: one second is right.
        seconds = (waiting - now).total_seconds() if waiting else 1
        raise TooManyLoginAttempts(max(1, math.ceil(seconds)))
    # The claim is committed: every engine counts it while the password is checked.
    with db.session() as s:
        users = Users(s)
        user = users.authenticate(username, password)
        if user is not None:
            LoginFailures(s).clear(Subject.USER, username)
            token, expires = users.issue_token(user)
            logged_in = LoggedIn(user.name, user.role, token, expires)
            events = [auth_event(request, Severity.INFO, "auth.login",
                                 f"{user.name} logged in ({via}) from {address}",
                                 user.name, via)]
        else:
            logged_in = None
            events = _failed(request, s, now, username, via, attempt, policy)
        for event in events:
            Events(s).add(event)
    log_events(events)
    if logged_in is None:
        raise HTTPException(401, WRONG_CREDENTIALS)
    return logged_in


def _failed(request: Request, s: Session, now: datetime, username: str, via: str,
            user_failures: int, policy: LoginPolicy) -> list[Event]:
    """Make the name and the address wait; the events of a failed login. Waits
    count from the attempt (`now`). The name is shown quoted (repr): it is
    whatever the client sent."""
    address = client_address(request)
    counts = LoginFailures(s)
    address_failures = counts.record(Subject.ADDRESS, address, now, policy)
    for subject, name, failures in ((Subject.USER, username, user_failures),
                                    (Subject.ADDRESS, address, address_failures)):
        wait = policy.wait_after(subject, failures)
        if wait is not None:
            counts.wait(subject, name, now + wait)
    counts.forget_old(now, policy)
    events = [auth_event(request, Severity.WARNING, "auth.login_failed",
                         f"failed login as {username!r} ({via}) from {address}", username, via,
                         user_failures=user_failures, address_failures=address_failures)]
    lockout, until = _duration(policy), (now + policy.lockout).isoformat()
    # Exactly one attempt reaches a threshold (the counts are atomic): one event.
    if user_failures == policy.lockout_failures(Subject.USER):
        events.append(auth_event(
            request, Severity.WARNING, "auth.lockout",
            f"user name {username!r} locked out for {lockout} after {user_failures} failed "
            f"logins in a row (the last from {address})", username, via,
            subject="user", failures=user_failures, until=until))
    if address_failures == policy.lockout_failures(Subject.ADDRESS):
        events.append(auth_event(
            request, Severity.WARNING, "auth.lockout",
            f"address {address} locked out for {lockout} after {address_failures} failed "
            f"logins in a row (the last as {username!r})", None, via,
            subject="address", failures=address_failures, until=until, last_user=username))
    return events


def _duration(policy: LoginPolicy) -> str:
    seconds = int(policy.lockout.total_seconds())
    return f"{seconds // 60} min" if seconds % 60 == 0 else f"{seconds} s"
