"""The pure rules of notifications (model/notifiers.py, model/notification.py):
which events a notifier wants, the checks on its settings, the signature, the
retry delays."""

from __future__ import annotations

import pytest

from hostpower.model.errors import ValidationError
from hostpower.model.events import Event, Severity
from hostpower.model.notification import RetryPolicy, retry_after_status, signature, verify
from hostpower.model.notifiers import (
    Notifier, NotifierType, WebhookSettings, check_kinds, check_url, smtp_settings,
)

HOOK = Notifier("n", NotifierType.WEBHOOK, WebhookSettings("https://x.example/"),
                min_severity=Severity.WARNING, kinds=("fence.*", "treatment.skip?ed"), id=3)


@pytest.mark.parametrize("severity, kind, details, wanted", [
    (Severity.WARNING, "fence.failed", {}, True),
    (Severity.ERROR, "fence.attempt", {}, True),
    (Severity.INFO, "fence.started", {}, False),           # not severe enough
    (Severity.ERROR, "auth.lockout", {}, False),            # another kind
    (Severity.WARNING, "treatment.skipped", {}, True),      # ? matches one character
    (Severity.WARNING, "treatment.skiped", {}, False),
    (Severity.WARNING, "fence", {}, False),                 # fence.* needs the dot
], ids=["warning", "error", "info", "other-kind", "question-mark", "too-short", "no-dot"])
def test_notify_rules_wants_by_severity_and_kind(severity: Severity, kind: str,
                                                 details: dict, wanted: bool) -> None:
    assert HOOK.wants(Event(severity, kind, "m", details=details)) is wanted


def test_notify_rules_a_notifier_never_carries_its_own_failure() -> None:
    everything = Notifier("all", NotifierType.WEBHOOK, WebhookSettings("https://x.example/"),
                          min_severity=Severity.INFO, id=3)
    own = Event(Severity.WARNING, "notifier.failing", "m", details={"notifier_id": 3})
    other = Event(Severity.WARNING, "notifier.failing", "m", details={"notifier_id": 4})
    assert not everything.wants(own) and everything.wants(other)


@pytest.mark.parametrize("url, problem", [
    ("", "URL is needed"), ("ftp://h/x", "not an http"), ("https:///x", "names no host"),
    ("https://u:p@h/x", "credentials"), ("https://h:0/x", "port 0"),
    ("https://h:99999/x", "not a valid URL"), ("https://h x/", "spaces"),
    ("https://bad_host!/", "not a host name"),
], ids=["empty", "scheme", "no-host", "credentials", "port-0", "port-range", "space", "host"])
def test_notify_rules_bad_urls_are_refused_naming_the_problem(url: str, problem: str) -> None:
    with pytest.raises(ValidationError) as caught:
        check_url(url, "webhook.url")
    assert caught.value.field == "webhook.url" and problem in caught.value.message


def test_notify_rules_good_urls_pass() -> None:
    for url in ("https://hooks.example.org/x?a=1", "http://127.0.0.1:8080/h", "https://[::1]/h"):
        assert check_url(url) == url


def test_notify_rules_kinds_and_smtp_defaults() -> None:
    assert check_kinds(["fence.*", "fence.*", "auth.login"]) == ("fence.*", "auth.login")
    with pytest.raises(ValidationError, match=r"kinds\[0\]"):
        check_kinds(["Fence.*"])
    with pytest.raises(ValidationError, match="kinds: must be a list"):
        check_kinds("fence.*")
    s = smtp_settings("mail.example.org", None, "ssl", "a@example.org", ["b@example.org"])
    assert (s.port, s.username) == (465, "")
    with pytest.raises(ValidationError, match=r"recipients\[0\]"):
        smtp_settings("h", None, "none", "a@example.org", ["b@example.org\r\nBcc: x@y.z"])


def test_notify_rules_signature_and_its_verification() -> None:
    body = b'{"id":1}'
    header = signature("key-0123456789abcdef", "1700000000", body)
    assert header.startswith("sha256=") and len(header) == 7 + 64
    assert verify("key-0123456789abcdef", "1700000000", body, header, now=1700000100)
    assert not verify("key-0123456789abcdef", "1700000000", body + b" ", header, now=1700000100)
    assert not verify("another-key-0123456", "1700000000", body, header, now=1700000100)
    assert not verify("key-0123456789abcdef", "1700000000", body, header, now=1700001000)  # old
    assert not verify("key-0123456789abcdef", "1700000001", body, header, now=1700000100)


def test_notify_rules_retry_delays_double_up_to_the_cap() -> None:
    policy = RetryPolicy(attempts=6, base=2.0, cap=20.0)
    assert [policy.delay(n) for n in range(1, 6)] == [2.0, 4.0, 8.0, 16.0, 20.0]
    assert [s for s in (400, 401, 404, 408, 425, 429, 500, 503) if retry_after_status(s)] == \
        [408, 425, 429, 500, 503]
