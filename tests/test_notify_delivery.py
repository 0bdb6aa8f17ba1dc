"""Notifications delivered to real receivers started by the test: a webhook
server that checks each signature, and an SMTP server (aiosmtpd). Filters,
retries with back-off, a failing notifier made visible without a storm, and
TLS verification. On SQLite and PostgreSQL."""

from __future__ import annotations

from pathlib import Path

import pytest

from helpers import wait_until
from hostpower.context import EngineContext
from hostpower.hostagent.pki import ROLE_WEB, CertificateAuthority, write_bundle
from hostpower.model.events import Event, Severity
from hostpower.store.configstore import ConfigStore
from hostpower.store.events import Events
from hostpower.store.notifiers import Notifiers
from notifykit import DelivererThread, SmtpReceiver, WebhookReceiver

KEY = "receiver-key-0123456789abcdef"


def add_event(ctx: EngineContext, severity: Severity, kind: str, message: str,
              **fields: object) -> int:
    with ctx.db.session() as s:
        stored = Events(s).add(Event(severity, kind, message, **fields))  # type: ignore[arg-type]
    assert stored.id is not None
    return stored.id


def fast(ctx: EngineContext, attempts: int = 4, delay_ms: int = 200) -> None:
    with ctx.db.session() as s:
        store = ConfigStore(s)
        store.set("NotificationAttempts", str(attempts))
        store.set("NotificationRetryDelayInMs", str(delay_ms))
        store.set("NotificationTimeoutInSec", "10")  # generous: two test files share 2 cores


def add_webhook(ctx: EngineContext, name: str, url: str, **kw: object) -> int:
    with ctx.db.session() as s:
        n = Notifiers(s, ctx.box).add(name, "webhook", {"url": url, **kw.pop("settings", {})},
                                      secret=KEY, **kw)  # type: ignore[arg-type]
    assert n.id is not None
    return n.id


def state(ctx: EngineContext, notifier_id: int):  # type: ignore[no-untyped-def]
    with ctx.db.session() as s:
        return Notifiers(s, ctx.box).state(notifier_id)


def events_of(ctx: EngineContext, kind: str) -> list[Event]:
    with ctx.db.session() as s:
        return Events(s).query(kind=kind)


def test_notify_webhook_gets_signed_events_filtered_by_severity_and_kind(
        ctx: EngineContext, tmp_path: Path) -> None:
    fast(ctx)
    with WebhookReceiver(KEY) as hook, DelivererThread(ctx.db.url, ctx.settings.home, "e1"):
        add_webhook(ctx, "fences", hook.url, min_severity="warning",
                    kinds=["fence.*", "treatment.skip?ed"])
        wanted = [
            add_event(ctx, Severity.ERROR, "fence.failed", "restart of h1 failed",
                      host_id=1, host_name="h1", operation_id=7, user="alice",
                      engine="engine-a", details={"phase": "stop"}),
            add_event(ctx, Severity.WARNING, "treatment.skipped", "h2 not fenced"),
        ]
        add_event(ctx, Severity.INFO, "fence.started", "too mild")
        add_event(ctx, Severity.ERROR, "auth.lockout", "another kind")
        wanted.append(add_event(ctx, Severity.WARNING, "fence.attempt", "last one"))
        wait_until(lambda: len(hook.delivered()) >= 3, 30, "three deliveries")
        wait_until(lambda: state(ctx, 1).delivered == 3, 10, "the state to count them")
    assert hook.delivered_ids() == wanted
    assert all(r.signed for r in hook.received)
    first = hook.delivered()[0]
    assert first.event == {
        "id": wanted[0], "time": first.event["time"], "severity": "error",
        "kind": "fence.failed", "host": "h1", "host_id": 1, "operation_id": 7, "user": "alice",
        "engine": "engine-a", "message": "restart of h1 failed", "details": {"phase": "stop"},
        "notifier": "fences"}
    assert first.event["time"].endswith("Z")
    assert hook.event_header(first) == str(wanted[0])
    st = state(ctx, 1)
    assert (st.delivered, st.dropped, st.attempts, st.last_delivered_event) == (3, 0, 0,
                                                                                wanted[-1])


def test_notify_webhook_retries_with_exponential_backoff(ctx: EngineContext) -> None:
    fast(ctx, attempts=5, delay_ms=300)
    with WebhookReceiver(KEY, fail_first=3) as hook, \
            DelivererThread(ctx.db.url, ctx.settings.home, "e1"):
        add_webhook(ctx, "flaky", hook.url)
        event_id = add_event(ctx, Severity.WARNING, "fence.attempt", "retried")
        wait_until(lambda: hook.delivered(), 30, "the delivery after three 500s")
        wait_until(lambda: state(ctx, 1).delivered == 1, 10, "the delivery to be recorded")
    assert [r.status for r in hook.received] == [500, 500, 500, 200]
    assert {r.event["id"] for r in hook.received} == {event_id}
    gaps = [b.at - a.at for a, b in zip(hook.received, hook.received[1:])]
    # 0.3, 0.6, 1.2 s (plus the request's own time)
    for gap, wait in zip(gaps, (0.3, 0.6, 1.2)):
        assert wait <= gap < wait + 3, gaps
    st = state(ctx, 1)
    assert (st.delivered, st.attempts, st.failing) == (1, 0, False)
    assert "500" in st.last_error
    assert events_of(ctx, "notifier.failing") == []


def test_notify_failing_notifier_warns_once_never_through_itself_and_recovers(
        ctx: EngineContext) -> None:
    fast(ctx, attempts=2, delay_ms=50)
    with WebhookReceiver(KEY, fail_first=10**6) as dead, WebhookReceiver(KEY) as other, \
            DelivererThread(ctx.db.url, ctx.settings.home, "e1"):
        dead_id = add_webhook(ctx, "dead", dead.url, min_severity="info")
        add_webhook(ctx, "other", other.url, min_severity="info", kinds=["notifier.*"])
        first = [add_event(ctx, Severity.WARNING, "fence.attempt", f"lost {n}") for n in range(3)]
        wait_until(lambda: state(ctx, dead_id).dropped == 3, 30, "three events given up")
        failing = events_of(ctx, "notifier.failing")
        assert len(failing) == 1, failing   # one warning for the spell, not one per event
        assert failing[0].severity is Severity.WARNING
        assert failing[0].details["notifier_id"] == dead_id and failing[0].engine == "e1"
        st = state(ctx, dead_id)
        assert st.failing and "500" in st.last_error and st.attempts >= 4
        # Told by the other notifier, never by the failing one itself.
        wait_until(lambda: other.delivered(), 10, "the other notifier to tell")
        assert [r.event["kind"] for r in other.delivered()] == ["notifier.failing"]
        assert "notifier.failing" not in {r.event["kind"] for r in dead.received}
        # While failing, one attempt per event (the first three had two each).
        assert len(dead.received) == 2 + 1 + 1
        dead.fail_first = 0
        back = add_event(ctx, Severity.WARNING, "fence.attempt", "arrives")
        wait_until(lambda: dead.delivered_ids() == [back], 20, "the delivery after recovery")
        wait_until(lambda: events_of(ctx, "notifier.recovered"), 10, "notifier.recovered")
        wait_until(lambda: len(other.delivered()) == 2, 10, "the other to tell the recovery")
    st = state(ctx, dead_id)
    assert (st.failing, st.dropped, st.delivered) == (False, 3, 1)
    assert {r.event["id"] for r in dead.received} >= set(first)
    recovered = events_of(ctx, "notifier.recovered")
    assert len(recovered) == 1 and recovered[0].severity is Severity.INFO


def test_notify_smtp_mail_reaches_every_recipient(ctx: EngineContext) -> None:
    fast(ctx)
    with SmtpReceiver() as smtp, DelivererThread(ctx.db.url, ctx.settings.home, "e1"):
        with ctx.db.session() as s:
            Notifiers(s, ctx.box).add("ops-mail", "smtp", {
                "host": "127.0.0.1", "port": smtp.port, "security": "none",
                "sender": "hostpower@example.org",
                "recipients": ["ops@example.org", "oncall@example.org"]},
                min_severity="error")
        add_event(ctx, Severity.WARNING, "fence.attempt", "not severe enough")
        event_id = add_event(ctx, Severity.ERROR, "fence.failed",
                             "restart of c1-h2 failed: no proxy reached its BMC",
                             host_name="c1-h2", engine="engine-a", details={"phase": "start"})
        wait_until(lambda: smtp.messages, 30, "the mail")
        wait_until(lambda: state(ctx, 1).delivered == 1, 10, "the state")
    [mail] = smtp.messages
    assert smtp.envelopes == [("hostpower@example.org", ["ops@example.org",
                                                         "oncall@example.org"])]
    assert mail["Subject"] == ("[hostpower] ERROR fence.failed c1-h2: restart of c1-h2 failed: "
                               "no proxy reached its BMC")
    assert mail["To"] == "ops@example.org, oncall@example.org"
    assert mail["X-Hostpower-Event"] == str(event_id)
    text = mail.get_content().replace("\r\n", "\n")
    assert text.startswith("restart of c1-h2 failed: no proxy reached its BMC\n")
    for line in ("Severity:   error", "Host:       c1-h2", "Engine:     engine-a",
                 f"Event id:   {event_id}", '  phase: "start"'):
        assert line in text, text


def test_notify_webhook_over_tls_is_verified_against_the_ca_file(
        sqlite_ctx: EngineContext, tmp_path: Path) -> None:
    ctx = sqlite_ctx
    fast(ctx, attempts=3, delay_ms=50)
    ca = CertificateAuthority.create("receiver test CA")
    paths = write_bundle(ca.issue("receiver", ["127.0.0.1"], ROLE_WEB), tmp_path / "tls")
    with WebhookReceiver(KEY, tls=(paths.cert, paths.key)) as hook, \
            DelivererThread(ctx.db.url, ctx.settings.home, "e1"):
        assert hook.url.startswith("https://")
        untrusted = add_webhook(ctx, "untrusted", hook.url)
        add_webhook(ctx, "trusted", hook.url, settings={"ca_file": str(paths.ca)})
        add_event(ctx, Severity.WARNING, "fence.attempt", "over TLS")
        wait_until(lambda: state(ctx, untrusted).dropped == 1, 30, "the untrusted one to fail")
        wait_until(lambda: len(hook.delivered()) == 1, 30, "the trusted one to deliver")
    assert "CERTIFICATE_VERIFY_FAILED" in state(ctx, untrusted).last_error
    assert [r.event["notifier"] for r in hook.delivered()] == ["trusted"]


@pytest.mark.parametrize("status, attempts", [(404, 1), (429, 3)], ids=["refused", "throttled"])
def test_notify_a_refusal_is_not_retried_a_throttle_is(sqlite_ctx: EngineContext,
                                                       status: int, attempts: int) -> None:
    ctx = sqlite_ctx
    fast(ctx, attempts=3, delay_ms=50)
    with WebhookReceiver(KEY) as hook, DelivererThread(ctx.db.url, ctx.settings.home, "e1"):
        add_webhook(ctx, "hook", hook.url.replace("/hook", f"/status/{status}"))
        hook.answer_status = status
        add_event(ctx, Severity.WARNING, "fence.attempt", "refused")
        wait_until(lambda: state(ctx, 1).dropped == 1, 30, "the event given up")
    assert len(hook.received) == attempts


@pytest.mark.parametrize("security", ["starttls", "ssl"])
def test_notify_smtp_over_tls_with_a_login(sqlite_ctx: EngineContext, tmp_path: Path,
                                           security: str) -> None:
    import ssl

    ctx = sqlite_ctx
    fast(ctx, attempts=1)
    with ctx.db.session() as s:   # the refused session is left hanging by aiosmtpd
        ConfigStore(s).set("NotificationTimeoutInSec", "5")
    ca = CertificateAuthority.create("mail test CA")
    paths = write_bundle(ca.issue("mail", ["127.0.0.1"], ROLE_WEB), tmp_path / "tls")
    server_tls = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    server_tls.load_cert_chain(str(paths.cert), str(paths.key))
    tls = ({"tls_context": server_tls, "require_starttls": True} if security == "starttls"
           else {"ssl_context": server_tls, "auth_require_tls": False})  # TLS from the start
    with SmtpReceiver(login=("mailer", "smtp-Password-1234"), **tls) as smtp, \
            DelivererThread(ctx.db.url, ctx.settings.home, "e1"):
        with ctx.db.session() as s:
            store = Notifiers(s, ctx.box)
            for name, password in (("right", "smtp-Password-1234"), ("wrong", "not-the-one")):
                store.add(name, "smtp", {
                    "host": "127.0.0.1", "port": smtp.port, "security": security,
                    "sender": "hostpower@example.org", "recipients": ["ops@example.org"],
                    "username": "mailer", "ca_file": str(paths.ca)}, secret=password)
        add_event(ctx, Severity.ERROR, "fence.failed", "over TLS, logged in")
        wait_until(lambda: state(ctx, 1).delivered == 1 and state(ctx, 2).dropped == 1, 30,
                   "one delivery and one refusal")
    assert len(smtp.messages) == 1
    assert sorted(smtp.logins) == [("mailer", False), ("mailer", True)]
    wrong = state(ctx, 2)   # refused (aiosmtpd then stops answering that session)
    assert wrong.failing and "not-the-one" not in wrong.last_error
