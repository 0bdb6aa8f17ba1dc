"""Notifiers managed through the API and the CLI: admins write (audited),
everybody reads, bad input names its field, the test message arrives, and
the secrets (a webhook's key, an SMTP password) appear in no answer, log
line, event, command line or unencrypted column."""

from __future__ import annotations

import logging
import os
import subprocess
import sys
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import text

from helpers import bearer, wait_until
from hostpower.api.app import create_app
from hostpower.context import EngineContext
from hostpower.model.events import Event, Severity
from hostpower.runtime import EngineRuntime
from hostpower.store.events import Events
from hostpower.store.users import Users
from notifykit import DelivererThread, SmtpReceiver, WebhookReceiver

KEY = "webhook-signing-key-Xq7-0123456789"
SMTP_PASSWORD = "smtp-Password-Zr9-secret"
HOSTPOWER = [str(Path(sys.executable).with_name("hostpower"))]


@pytest.fixture
def api(ctx: EngineContext):  # type: ignore[no-untyped-def]
    with ctx.db.session() as s:
        Users(s).add("root", "admin", "admin-password")
        Users(s).add("watcher", "viewer", "viewer-password")
    with TestClient(create_app(ctx)) as client:
        yield client


def webhook_body(url: str, **extra: object) -> dict[str, object]:
    return {"name": "ops-hook", "type": "webhook", "webhook": {"url": url}, "secret": KEY,
            "min_severity": "warning", "kinds": ["fence.*"], **extra}


def smtp_body(port: int, **extra: object) -> dict[str, object]:
    return {"name": "ops-mail", "type": "smtp", "password": SMTP_PASSWORD,
            "smtp": {"host": "127.0.0.1", "port": port, "security": "none",
                     "sender": "hostpower@example.org", "recipients": ["ops@example.org"],
                     "username": "mailer"}, **extra}


def test_notify_api_admin_writes_everyone_reads_secrets_write_only(
        api: TestClient, ctx: EngineContext, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    admin = bearer(api, "root", "admin-password")
    viewer = bearer(api, "watcher", "viewer-password")
    answers = []
    assert api.post("/api/notifiers", json=webhook_body("https://hooks.example.org/x"),
                    headers=viewer).status_code == 403
    r = api.post("/api/notifiers", json=webhook_body("https://hooks.example.org/x"),
                 headers=admin)
    assert r.status_code == 201, r.text
    answers.append(r.text)
    hook = r.json()
    assert hook["secret_set"] is True and "secret" not in hook
    assert hook["webhook"] == {"url": "https://hooks.example.org/x", "ca_file": None}
    assert hook["smtp"] is None and hook["kinds"] == ["fence.*"]
    assert hook["state"]["delivered"] == 0 and hook["state"]["failing"] is False
    r = api.post("/api/notifiers", json=smtp_body(2525), headers=admin)
    assert r.status_code == 201, r.text
    answers.append(r.text)
    mail = r.json()
    assert mail["smtp"]["username"] == "mailer" and mail["secret_set"] is True
    listed = api.get("/api/notifiers", headers=viewer)
    assert [n["name"] for n in listed.json()] == ["ops-hook", "ops-mail"]
    answers.append(listed.text)
    # A partial update merges; the key is kept unless given.
    r = api.put(f"/api/notifiers/{hook['id']}", headers=admin,
                json={"kinds": ["fence.*", "treatment.*"], "webhook": {"ca_file": "/etc/ca.pem"},
                      "min_severity": "error"})
    assert r.status_code == 200, r.text
    answers.append(r.text)
    assert r.json()["webhook"] == {"url": "https://hooks.example.org/x", "ca_file": "/etc/ca.pem"}
    assert r.json()["secret_set"] is True and r.json()["min_severity"] == "error"
    r = api.put(f"/api/notifiers/{hook['id']}", headers=admin, json={"secret": KEY + "-rotated"})
    assert r.status_code == 200 and r.json()["secret_set"]
    assert api.put(f"/api/notifiers/{hook['id']}", headers=viewer,
                   json={"enabled": False}).status_code == 403
    got = api.get(f"/api/notifiers/{mail['id']}", headers=viewer)
    answers.append(got.text)
    assert got.json()["name"] == "ops-mail"
    assert api.delete(f"/api/notifiers/{mail['id']}", headers=viewer).status_code == 403
    assert api.delete(f"/api/notifiers/{mail['id']}", headers=admin).status_code == 204
    assert api.get(f"/api/notifiers/{mail['id']}", headers=admin).status_code == 404
    with ctx.db.session() as s:
        audit = [e.message for e in Events(s).query(kind="audit.write")]
        everything = Events(s).query(limit=5000)
    assert audit == ["root added webhook notifier ops-hook", "root added smtp notifier ops-mail",
                     "root updated notifier ops-hook", "root updated notifier ops-hook",
                     "root removed notifier ops-mail"]
    for secret in (KEY, SMTP_PASSWORD):
        for answer in answers:
            assert secret not in answer
        assert secret not in caplog.text
        for e in everything:
            assert secret not in e.message and secret not in str(e.details)
        assert secret not in dump(ctx)


def dump(ctx: EngineContext) -> str:
    """Every column of every table as text: what a copy of the database holds."""
    with ctx.db.engine.connect() as conn:
        tables = [t for t in ctx.db.engine.dialect.get_table_names(conn)]
        return "\n".join(str(row) for t in tables
                         for row in conn.execute(text(f'SELECT * FROM "{t}"')))


@pytest.mark.parametrize("body, status, field", [
    (webhook_body("ftp://example.org/x"), 400, "webhook.url"),
    (webhook_body("https://user:pw@example.org/x"), 400, "webhook.url"),
    (webhook_body("https://exa mple.org/x"), 400, "webhook.url"),
    (webhook_body("https://example.org/x", min_severity="critical"), 422, "min_severity"),
    (webhook_body("https://example.org/x", kinds=["fence.*", "Fence!"]), 400, "kinds[1]"),
    (webhook_body("https://example.org/x", secret="short"), 400, "secret"),
    ({**webhook_body("https://example.org/x"), "secret": None}, 400, "secret"),
    (webhook_body("https://example.org/x", webhook=None), 400, "webhook"),
    (webhook_body("https://example.org/x", smtp={"host": "h", "sender": "a@b",
                                                 "recipients": ["c@d"]}), 400, "smtp"),
    (webhook_body("https://example.org/x", name="bad name"), 400, "name"),
    (smtp_body(25, smtp={"host": "127.0.0.1", "sender": "a@example.org", "recipients": []}),
     400, "smtp.recipients"),
    (smtp_body(25, smtp={"host": "127.0.0.1", "sender": "a@example.org",
                         "recipients": ["ops@example.org", "not-an-address"]}),
     400, "smtp.recipients[1]"),
    (smtp_body(25, smtp={"host": "127.0.0.1", "sender": "nobody", "recipients": ["a@b.c"]}),
     400, "smtp.sender"),
    (smtp_body(25, smtp={"host": "127.0.0.1", "security": "tls", "sender": "a@b.c",
                         "recipients": ["a@b.c"]}), 422, "smtp.security"),
    (smtp_body(25, smtp={"host": "127.0.0.1", "sender": "a@b.c", "recipients": ["a@b.c"],
                         "username": "u"}, password=None), 400, "password"),
], ids=["scheme", "credentials-in-url", "space-in-url", "unknown-severity", "bad-pattern",
        "short-key", "no-key", "no-settings", "other-type-settings", "bad-name",
        "no-recipients", "bad-recipient", "bad-sender", "unknown-security", "login-no-password"])
def test_notify_api_refuses_bad_input_naming_the_field(
        api: TestClient, ctx: EngineContext, body: dict[str, object], status: int,
        field: str) -> None:
    admin = bearer(api, "root", "admin-password")
    r = api.post("/api/notifiers", json=body, headers=admin)
    assert (r.status_code, r.json()["field"]) == (status, field), r.text
    assert api.get("/api/notifiers", headers=admin).json() == []
    assert KEY not in r.text and SMTP_PASSWORD not in r.text


def test_notify_api_test_message_arrives_signed(sqlite_ctx: EngineContext) -> None:
    ctx = sqlite_ctx
    with ctx.db.session() as s:
        Users(s).add("root", "admin", "admin-password")
    with WebhookReceiver(KEY) as hook:
        with TestClient(create_app(ctx)) as bare:
            admin = bearer(bare, "root", "admin-password")
            r = bare.post("/api/notifiers", json=webhook_body(hook.url), headers=admin)
            notifier = r.json()["id"]
            # Without the engine's background services (inventory-only use): 503.
            assert bare.post(f"/api/notifiers/{notifier}/test",
                             headers=admin).status_code == 503
        with TestClient(create_app(ctx, EngineRuntime(ctx, monitor=False))) as api:
            admin = bearer(api, "root", "admin-password")
            r = api.post(f"/api/notifiers/{notifier}/test", headers=admin)
            assert r.status_code == 200 and r.json() == {"delivered": True,
                                                         "detail": "delivered"}, r.text
            hook.answer_status = 503
            r = api.post(f"/api/notifiers/{notifier}/test", headers=admin)
            assert r.json()["delivered"] is False and "503" in r.json()["detail"]
    [probe, _] = hook.received
    assert probe.signed
    assert probe.event["kind"] == "notifier.test" and probe.event["user"] == "root"
    assert "test message for notifier ops-hook" in probe.event["message"]
    with ctx.db.session() as s:
        audit = [e.message for e in Events(s).query(kind="audit.write")]
    assert audit[-2:] == ["root tested notifier ops-hook: delivered",
                          "root tested notifier ops-hook: not delivered"]


def test_notify_cli_add_list_test_remove_with_the_key_on_stdin(tmp_path: Path) -> None:
    env = {**os.environ, "HOSTPOWER_HOME": str(tmp_path / "home"),
           "HOSTPOWER_DB_URL": f"sqlite:///{tmp_path / 'hp.db'}"}

    def hp(*args: str, stdin: str = "") -> subprocess.CompletedProcess[str]:
        return subprocess.run([*HOSTPOWER, "notifier", *args], input=stdin, env=env,
                              capture_output=True, text=True, timeout=60)

    with WebhookReceiver(KEY) as hook, SmtpReceiver() as smtp:
        done = hp("add", "ops-hook", "--webhook", hook.url, "--kind", "fence.*", "--kind",
                  "treatment.*", "--min-severity", "info", stdin=KEY + "\n")
        assert done.returncode == 0, done.stderr
        assert "webhook notifier ops-hook added" in done.stdout
        done = hp("add", "ops-mail", "--smtp", f"127.0.0.1:{smtp.port}", "--security", "none",
                  "--from", "hostpower@example.org", "--to", "ops@example.org")
        assert done.returncode == 0, done.stderr
        bad = hp("add", "x", "--webhook", "https://example.org", "--min-severity", "loud",
                 stdin=KEY + "\n")
        assert bad.returncode == 2 and "min_severity: 'loud' is not a severity" in bad.stderr
        bad = hp("add", "y", "--smtp", "127.0.0.1", "--from", "a@example.org")
        assert bad.returncode == 2 and "smtp.recipients" in bad.stderr
        for name in ("ops-hook", "ops-mail"):
            done = hp("test", name)
            assert done.returncode == 0, done.stderr
        listed = hp("list")
        assert listed.returncode == 0
        lines = listed.stdout.splitlines()
        assert lines[0].split()[:4] == ["NAME", "TYPE", "ENABLED", "MIN"]
        assert lines[1].startswith("ops-hook") and "fence.*,treatment.*" in lines[1]
        assert lines[2].startswith("ops-mail") and "ops@example.org via 127.0.0.1" in lines[2]
        changed = hp("set", "ops-hook", "--disable", "--kind", "fence.*", "--new-secret",
                     stdin=KEY + "-rotated\n")
        assert changed.returncode == 0, changed.stderr
        assert "ops-hook: disabled, info and above, kinds fence.*, new secret stored" in \
            changed.stdout
        # Sent although disabled (a test ignores `enabled` and the filters), signed with
        # the new key: the receiver, still on the old one, refuses it.
        refused = hp("test", "ops-hook")
        assert refused.returncode == 1 and "answered 401" in refused.stderr
        assert not hook.received[-1].signed
        hook.key = KEY + "-rotated"
        assert hp("set", "ops-hook", "--enable", "--all-kinds").returncode == 0
        assert hp("test", "ops-hook").returncode == 0 and hook.received[-1].signed
        hook.answer_status = 500
        failed = hp("test", "ops-hook")
        assert failed.returncode == 1 and "answered 500" in failed.stderr
        assert hp("remove", "ops-mail").returncode == 0
        assert "ops-mail" not in hp("list").stdout
    assert hook.received[0].signed and hook.received[0].event["kind"] == "notifier.test"
    assert smtp.messages[0]["Subject"].startswith("[hostpower] INFO notifier.test")
    assert KEY not in listed.stdout + listed.stderr


def test_notify_secrets_stay_out_of_the_deliverers_log_and_events(
        ctx: EngineContext, caplog: pytest.LogCaptureFixture) -> None:
    """A delivery that succeeds and one whose login fails: neither the key
    nor the SMTP password is logged, stored in clear or put in an event."""
    caplog.set_level(logging.DEBUG)
    from hostpower.store.notifiers import Notifiers

    from hostpower.store.configstore import ConfigStore

    with ctx.db.session() as s:
        ConfigStore(s).set("NotificationAttempts", "1")
        ConfigStore(s).set("NotificationRetryDelayInMs", "100")
    with WebhookReceiver(KEY) as hook, SmtpReceiver() as smtp, \
            DelivererThread(ctx.db.url, ctx.settings.home, "e1"):
        with ctx.db.session() as s:
            store = Notifiers(s, ctx.box)
            store.add("hook", "webhook", {"url": hook.url}, secret=KEY)
            # The server offers no AUTH: the login fails, naming no password.
            store.add("mail", "smtp", {"host": "127.0.0.1", "port": smtp.port,
                                       "security": "none", "sender": "a@example.org",
                                       "recipients": ["b@example.org"], "username": "mailer"},
                      secret=SMTP_PASSWORD)
        with ctx.db.session() as s:
            Events(s).add(Event(Severity.ERROR, "fence.failed", "restart failed"))
        wait_until(lambda: hook.delivered(), 60, "the webhook delivery")
        wait_until(lambda: _failing(ctx), 60, "the mail notifier to fail")
    with ctx.db.session() as s:
        everything = Events(s).query(limit=5000)
    assert any(e.kind == "notifier.failing" for e in everything)
    for secret in (KEY, SMTP_PASSWORD):
        assert secret not in caplog.text
        assert all(secret not in e.message and secret not in str(e.details) for e in everything)
        assert secret not in dump(ctx)
        assert secret.encode() not in hook.received[0].body


def _failing(ctx: EngineContext) -> bool:
    with ctx.db.session() as s:
        return any(e.kind == "notifier.failing" for e in Events(s).query(limit=5000))
