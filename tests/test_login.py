"""The front door under attack: login throttling per user name and per client
address (back-off, then a lockout), the same answer for unknown users and
wrong passwords, the audit events of logins and logouts, and counts that stay
exact with concurrent attempts on several engines sharing PostgreSQL.

Thresholds are made small through the configuration; every wait is bounded and
read from the stored state, not guessed."""

from __future__ import annotations

import json
import logging
import statistics
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import text

import hostpower.store.users as users_module
from hostpower.api.app import create_app
from hostpower.context import EngineContext
from hostpower.model.throttle import Subject
from hostpower.settings import Settings
from hostpower.store.events import Events
from hostpower.store.logins import LoginFailures
from hostpower.store.users import Users
from test_api import NO_BACKOFF, api, configure  # noqa: F401  (api is a fixture)

PASSWORD = "admin-password"      # root's, from the api fixture
WRONG = "Wrong-Guess-4711"       # must never be stored or logged anywhere
TOKEN = "/api/auth/token"


def ctx_of(api: TestClient) -> EngineContext:
    return api.app.state.ctx  # type: ignore[attr-defined,no-any-return]


def from_address(api: TestClient, address: str) -> TestClient:
    """The same engine, seen from another client address."""
    return TestClient(api.app, client=(address, 50000))


def login(client: TestClient, user: str = "root", password: str = WRONG,
          path: str = TOKEN) -> Any:
    return client.post(path, json={"username": user, "password": password})


def failures(ctx: EngineContext, subject: Subject, name: str) -> int:
    with ctx.db.session() as s:
        return LoginFailures(s).failures(subject, name)


def wait_until_free(ctx: EngineContext, subject: Subject, name: str,
                    limit: float = 5.0) -> None:
    """Sleep until the stored wait of `name` has passed (bounded)."""
    with ctx.db.session() as s:
        until = LoginFailures(s).blocked_until(subject, name, datetime.now(UTC))
    if until is not None:
        pause = (until - datetime.now(UTC)).total_seconds() + 0.05
        assert pause <= limit, f"{subject} {name} waits {pause:.1f} s"
        time.sleep(max(pause, 0))


def stored_wait(ctx: EngineContext, subject: Subject, name: str) -> float:
    """Seconds between the last failure and the end of its wait, as stored."""
    with ctx.db.session() as s:
        row = s.execute(text("SELECT last_failure_at, blocked_until FROM login_failures "
                             "WHERE kind = :k AND subject = :n"),
                        {"k": subject.value, "n": name}).one()
    last, until = (datetime.fromisoformat(v) if isinstance(v, str) else v for v in row)
    return (until - last).total_seconds()


def events(ctx: EngineContext, kind: str | None = None, user: str | None = None) -> list[Any]:
    with ctx.db.session() as s:
        return Events(s).query(kind=kind, user=user)


def assert_throttled(r: Any, at_most: int) -> None:
    assert r.status_code == 429, r.text
    retry_after = int(r.headers["retry-after"])
    assert 1 <= retry_after <= at_most
    assert r.json() == {"detail": f"too many failed logins: try again in {retry_after} s",
                        "field": None}
    assert "set-cookie" not in r.headers


@pytest.fixture
def password_checks(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Every password check the engine makes (to prove a refused attempt makes none)."""
    checked: list[str] = []
    lock = threading.Lock()
    real = users_module.check_password

    def counting(password: str, stored: str) -> bool:
        with lock:
            checked.append(password)
        return real(password, stored)

    monkeypatch.setattr(users_module, "check_password", counting)
    return checked


# -- back-off ------------------------------------------------------------------------------

def test_failures_for_one_user_name_back_off_exponentially(api: TestClient,
                                                           password_checks: list[str]) -> None:
    """Each attempt from another address: only the user name's back-off applies. It
    doubles with each failure; while it runs even the right password gets 429 and
    is not checked; a success starts again from zero."""
    ctx = ctx_of(api)
    configure(ctx, LoginFailureBackoffInMs=300, LoginFailureBackoffMaxInSec=60)
    for n, wait in enumerate((0.3, 0.6, 1.2), start=1):
        assert login(from_address(api, f"10.1.0.{n}")).status_code == 401
        assert stored_wait(ctx, Subject.USER, "root") == pytest.approx(wait)
        checks = len(password_checks)
        assert_throttled(login(from_address(api, f"10.2.0.{n}"), password=PASSWORD), 2)
        assert len(password_checks) == checks  # refused without looking at the password
        wait_until_free(ctx, Subject.USER, "root")
    assert failures(ctx, Subject.USER, "root") == 3
    assert login(from_address(api, "10.3.0.1"), password=PASSWORD).status_code == 200
    assert failures(ctx, Subject.USER, "root") == 0
    assert login(from_address(api, "10.3.0.2")).status_code == 401
    assert stored_wait(ctx, Subject.USER, "root") == pytest.approx(0.3)


def test_failures_from_one_address_back_off_for_every_user_name(api: TestClient) -> None:
    """An address trying many names waits too; another address does not."""
    ctx = ctx_of(api)
    configure(ctx, LoginFailureBackoffInMs=400)
    attacker = from_address(api, "192.0.2.66")
    assert login(attacker, "alice").status_code == 401
    assert_throttled(login(attacker, "bob"), 1)
    assert_throttled(login(attacker, "root", PASSWORD), 1)
    assert login(from_address(api, "192.0.2.1"), "root", PASSWORD).status_code == 200
    wait_until_free(ctx, Subject.ADDRESS, "192.0.2.66")
    assert login(attacker, "bob").status_code == 401
    assert stored_wait(ctx, Subject.ADDRESS, "192.0.2.66") == pytest.approx(0.8)
    # Only failures count for an address: its successful logins cost nobody anything.
    assert failures(ctx, Subject.ADDRESS, "192.0.2.1") == 0


# -- lockout -------------------------------------------------------------------------------

def test_a_locked_user_name_refuses_the_right_password_until_the_lockout_ends(
        api: TestClient, password_checks: list[str]) -> None:
    ctx = ctx_of(api)
    configure(ctx, **NO_BACKOFF, LoginLockoutFailuresPerUser=3, LoginLockoutInSec=2)
    for n in range(3):
        assert login(from_address(api, f"10.4.0.{n}")).status_code == 401
    assert len(password_checks) == 3
    for n in range(3):  # from anywhere, through either door, right password or not
        assert_throttled(login(from_address(api, f"10.5.0.{n}"), password=PASSWORD), 2)
    assert_throttled(login(from_address(api, "10.5.0.9"), path="/api/session"), 2)
    assert len(password_checks) == 3
    [lockout] = events(ctx, "auth.lockout")
    assert (lockout.severity.value, lockout.user) == ("warning", "root")
    assert lockout.details["subject"] == "user" and lockout.details["failures"] == 3
    assert "user name 'root' locked out for 2 s after 3 failed logins" in lockout.message
    wait_until_free(ctx, Subject.USER, "root")
    assert login(from_address(api, "10.5.0.1"), password=PASSWORD).status_code == 200
    assert failures(ctx, Subject.USER, "root") == 0


def test_a_locked_address_is_refused_for_every_user_name(api: TestClient) -> None:
    ctx = ctx_of(api)
    configure(ctx, **NO_BACKOFF, LoginLockoutFailuresPerAddress=3, LoginLockoutInSec=60)
    attacker = from_address(api, "198.51.100.7")
    for name in ("alice", "bob", "carol"):
        assert login(attacker, name).status_code == 401
    assert_throttled(login(attacker, "root", PASSWORD), 60)
    assert_throttled(login(attacker, "watcher", "viewer-password", "/api/session"), 60)
    # The users themselves are not locked: from elsewhere they log in.
    assert login(from_address(api, "198.51.100.8"), "root", PASSWORD).status_code == 200
    [lockout] = events(ctx, "auth.lockout")
    assert lockout.user is None
    assert lockout.details == {**lockout.details, "subject": "address",
                               "address": "198.51.100.7", "last_user": "carol"}
    assert lockout.message.startswith("address 198.51.100.7 locked out for 1 min after 3 failed")


def test_failures_far_apart_are_forgotten(api: TestClient) -> None:
    ctx = ctx_of(api)
    configure(ctx, **NO_BACKOFF, LoginLockoutFailuresPerUser=2, LoginLockoutInSec=1)
    assert login(from_address(api, "10.6.0.1")).status_code == 401
    time.sleep(1.1)  # longer than the lockout: the failure is forgotten
    assert login(from_address(api, "10.6.0.2")).status_code == 401
    assert failures(ctx, Subject.USER, "root") == 1
    assert events(ctx, "auth.lockout") == []


# -- unknown users look like wrong passwords ---------------------------------------------------

def answer(r: Any) -> tuple[int, str, dict[str, str]]:
    # Everything but what differs per answer anyway: the date and the request id.
    headers = {k: v for k, v in r.headers.items()
               if k not in ("date", "content-length", "x-request-id")}
    return r.status_code, r.text, headers


def test_unknown_users_and_wrong_passwords_get_identical_answers(api: TestClient) -> None:
    ctx = ctx_of(api)
    configure(ctx, **NO_BACKOFF, LoginLockoutFailuresPerUser=2, LoginLockoutInSec=60)
    for path in (TOKEN, "/api/session"):
        known = [answer(login(from_address(api, f"10.7.{n}.1"), "root", path=path))
                 for n in range(3)]
        unknown = [answer(login(from_address(api, f"10.7.{n}.2"), "nobody", path=path))
                   for n in range(3)]
        assert known == unknown
        assert [a[0] for a in known] == [401, 401, 429]
        with ctx.db.session() as s:
            s.execute(text("DELETE FROM login_failures"))
    assert {e.user for e in events(ctx, "auth.lockout")} == {"root", "nobody"}


def test_unknown_users_cost_the_same_password_work(ctx: EngineContext) -> None:
    """One scrypt either way (medians of a few, loosely bounded: a timing test)."""
    with ctx.db.session() as s:
        Users(s).add("root", "admin", PASSWORD)

    def median(name: str) -> float:
        times = []
        for _ in range(5):
            with ctx.db.session() as s:
                start = time.perf_counter()
                assert Users(s).authenticate(name, WRONG) is None
                times.append(time.perf_counter() - start)
        return statistics.median(times)

    median("nobody")  # warm up (the dummy hash is made once)
    ratio = median("nobody") / median("root")
    assert 0.6 < ratio < 1.6, ratio


# -- audit events ----------------------------------------------------------------------------

def everything_stored(ctx: EngineContext) -> str:
    """Every row of every table, as text."""
    with ctx.db.session() as s:
        tables = ("events", "login_failures", "users", "api_tokens", "config")
        return json.dumps({t: [list(map(str, r)) for r in s.execute(text(f"SELECT * FROM {t}"))]
                           for t in tables})


def test_logins_logouts_failures_and_lockouts_are_audited_without_the_password(
        api: TestClient, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    ctx = ctx_of(api)
    configure(ctx, **NO_BACKOFF, LoginLockoutFailuresPerUser=2)
    client = from_address(api, "203.0.113.5")
    bearer = {"Authorization": f"Bearer {login(client, password=PASSWORD).json()['access_token']}"}
    assert client.delete(TOKEN, headers=bearer).status_code == 204
    session = login(client, "watcher", "viewer-password", "/api/session").json()
    assert client.delete("/api/session",
                         headers={"X-CSRF-Token": session["csrf_token"]}).status_code == 204
    assert login(client, "ghost").status_code == 401
    assert login(client, "ghost", path="/api/session").status_code == 401  # lockout
    assert login(client, "ghost").status_code == 429  # not an event: it checked nothing

    got = [(e.kind, e.severity.value, e.user, e.details["address"], e.details["via"])
           for e in events(ctx) if e.kind.startswith("auth.")]
    assert got == [
        ("auth.login", "info", "root", "203.0.113.5", "token"),
        ("auth.logout", "info", "root", "203.0.113.5", "token"),
        ("auth.login", "info", "watcher", "203.0.113.5", "session"),
        ("auth.logout", "info", "watcher", "203.0.113.5", "session"),
        ("auth.login_failed", "warning", "ghost", "203.0.113.5", "token"),
        ("auth.login_failed", "warning", "ghost", "203.0.113.5", "session"),
        ("auth.lockout", "warning", "ghost", "203.0.113.5", "session"),
    ]
    messages = [e.message for e in events(ctx)]
    assert "root logged in (token) from 203.0.113.5" in messages
    assert "failed login as 'ghost' (token) from 203.0.113.5" in messages
    # The user filter of the API.
    mine = client.get("/api/events", params={"user": "ghost"},
                      headers=bearer_of(client, "root", PASSWORD)).json()
    assert [e["kind"] for e in mine] == ["auth.login_failed", "auth.login_failed", "auth.lockout"]
    assert {e["user"] for e in mine} == {"ghost"}
    # No password (nor token) in the database or the log.
    stored, logged = everything_stored(ctx), caplog.text
    for secret in (WRONG, PASSWORD, "viewer-password", bearer["Authorization"][7:]):
        assert secret not in stored and secret not in logged
    assert "failed login as 'ghost'" in logged


def bearer_of(client: TestClient, user: str, password: str) -> dict[str, str]:
    r = login(client, user, password)
    assert r.status_code == 200, r.text
    return {"Authorization": f"Bearer {r.json()['access_token']}"}


def test_a_user_name_too_long_to_exist_is_refused_before_any_count(api: TestClient) -> None:
    r = login(api, "x" * 129)
    assert (r.status_code, r.json()["field"]) == (422, "username")
    assert WRONG not in r.text
    assert failures(ctx_of(api), Subject.ADDRESS, "testclient") == 0


# -- several engines, concurrent attempts (PostgreSQL) ------------------------------------------

@pytest.fixture
def two_engines(pg_url: str, tmp_path: Path) -> Iterator[list[TestClient]]:
    """Two engines sharing one PostgreSQL database, each with its own API."""
    contexts = [EngineContext.open(Settings(home=tmp_path / f"engine{n}", db_url=pg_url))
                for n in (1, 2)]
    with contexts[0].db.session() as s:
        Users(s).add("root", "admin", PASSWORD)
    try:
        yield [TestClient(create_app(c), client=("192.0.2.99", 50000)) for c in contexts]
    finally:
        for c in contexts:
            c.close()


def storm(engines: list[TestClient], attempts: int, password: str = WRONG) -> list[int]:
    """`attempts` logins for root at the same moment, spread over the engines;
    their status codes."""
    start = threading.Barrier(attempts)
    codes: list[int] = [0] * attempts

    def attempt(n: int) -> None:
        start.wait(timeout=30)
        codes[n] = login(engines[n % len(engines)], password=password).status_code

    threads = [threading.Thread(target=attempt, args=(n,)) for n in range(attempts)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    return codes


def test_concurrent_failures_on_two_engines_are_all_counted(two_engines: list[TestClient]) -> None:
    ctx = ctx_of(two_engines[0])
    configure(ctx, **NO_BACKOFF, LoginLockoutFailuresPerUser=1000,
              LoginLockoutFailuresPerAddress=1000)
    assert storm(two_engines, 20) == [401] * 20
    assert failures(ctx, Subject.USER, "root") == 20
    assert failures(ctx, Subject.ADDRESS, "192.0.2.99") == 20
    assert len(events(ctx, "auth.login_failed")) == 20


def test_concurrent_attempts_on_two_engines_never_check_more_than_the_threshold(
        two_engines: list[TestClient], password_checks: list[str]) -> None:
    """Each attempt is claimed atomically before its password is checked: of 20 at
    once, exactly 5 are checked, and exactly one lockout is reported."""
    ctx = ctx_of(two_engines[0])
    configure(ctx, **NO_BACKOFF, LoginLockoutFailuresPerUser=5)
    codes = storm(two_engines, 20)
    assert sorted(codes) == [401] * 5 + [429] * 15
    assert len(password_checks) == 5
    assert failures(ctx, Subject.USER, "root") == 5
    assert len(events(ctx, "auth.lockout")) == 1
    # Both engines see the lockout.
    for engine in two_engines:
        assert_throttled(login(engine, password=PASSWORD), 900)


def test_simultaneous_right_logins_of_one_user_all_succeed(two_engines: list[TestClient]) -> None:
    """An attempt is counted before its password is checked, but the back-off only
    follows a failure: the console and a few scripts logging in at once as one
    user never stop each other."""
    ctx = ctx_of(two_engines[0])
    assert storm(two_engines, 8, PASSWORD) == [200] * 8
    assert failures(ctx, Subject.USER, "root") == 0
