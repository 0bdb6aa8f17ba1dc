"""What a notification says and how it is signed: the webhook's JSON body and
its HMAC signature, the mail's subject and text, and the retry policy. Pure.

Signature (docs/notifications.md): the receiver recomputes
``HMAC-SHA256(key, "<X-Hostpower-Timestamp>." + body)`` over the raw body
bytes, compares it in constant time with the hex after ``sha256=`` in
``X-Hostpower-Signature``, and refuses a timestamp too far from its clock
(a replayed request carries an old one, and changing it breaks the
signature).
"""

from __future__ import annotations

import hashlib
import hmac
import json
from dataclasses import dataclass
from datetime import UTC
from typing import Any

from hostpower.model.events import Event

SIGNATURE_HEADER = "X-Hostpower-Signature"
TIMESTAMP_HEADER = "X-Hostpower-Timestamp"
EVENT_HEADER = "X-Hostpower-Event"          # the event id: a receiver may drop a repeat
SUBJECT_LENGTH = 120


def payload(event: Event, notifier: str) -> dict[str, Any]:
    """The event as a webhook receives it: everything the event has."""
    created = event.created_at.astimezone(UTC) if event.created_at else None
    return {
        "id": event.id,
        "time": created.isoformat().replace("+00:00", "Z") if created else None,
        "severity": event.severity.value,
        "kind": event.kind,
        "host": event.host_name,
        "host_id": event.host_id,
        "operation_id": event.operation_id,
        "user": event.user,
        "engine": event.engine,
        "message": event.message,
        "details": event.details,
        "notifier": notifier,
    }


def body_of(data: dict[str, Any]) -> bytes:
    """The exact bytes sent (and signed): compact JSON, keys sorted, UTF-8."""
    return json.dumps(data, separators=(",", ":"), sort_keys=True, default=str,
                      ensure_ascii=False).encode()


def signature(key: str, timestamp: str, body: bytes) -> str:
    """The value of X-Hostpower-Signature for `body` sent at `timestamp`."""
    mac = hmac.new(key.encode(), timestamp.encode() + b"." + body, hashlib.sha256)
    return f"sha256={mac.hexdigest()}"


def verify(key: str, timestamp: str, body: bytes, header: str, now: float,
           tolerance: float = 300.0) -> bool:
    """What a receiver does (the tests' receiver uses it; docs show it too)."""
    try:
        fresh = abs(now - int(timestamp)) <= tolerance
    except ValueError:
        return False
    return fresh and hmac.compare_digest(signature(key, timestamp, body), header)


def subject(event: Event) -> str:
    """One line: severity, kind, host and the start of the message."""
    about = f" {event.host_name}" if event.host_name else ""
    text = " ".join(event.message.split())
    line = f"[hostpower] {event.severity.value.upper()} {event.kind}{about}: {text}"
    return line if len(line) <= SUBJECT_LENGTH else line[:SUBJECT_LENGTH - 1] + "…"


def mail_text(event: Event, notifier: str) -> str:
    """The mail's body: the message, then the event's fields one per line."""
    data = payload(event, notifier)
    lines = [event.message, ""]
    for label, key in (("Time", "time"), ("Severity", "severity"), ("Kind", "kind"),
                       ("Host", "host"), ("Operation", "operation_id"), ("User", "user"),
                       ("Engine", "engine"), ("Event id", "id")):
        if data[key] is not None:
            lines.append(f"{label + ':':<11} {data[key]}")
    if event.details:
        lines += ["", "Details:"]
        lines += [f"  {k}: {json.dumps(v, default=str, ensure_ascii=False)}"
                  for k, v in sorted(event.details.items())]
    lines += ["", f"-- sent by hostpower notifier {notifier}"]
    return "\n".join(lines) + "\n"


@dataclass(frozen=True)
class RetryPolicy:
    """`attempts` tries per event, waiting base, 2·base, 4·base ... (at most
    `cap`) between them; then the event is given up (counted as dropped)."""

    attempts: int
    base: float
    cap: float

    def delay(self, failed: int) -> float:
        """Seconds to wait after the `failed`-th failed attempt (1, 2, ...)."""
        return min(self.cap, self.base * 2 ** (failed - 1))


PERMANENT_STATUSES = frozenset(range(400, 500)) - {408, 425, 429}


def retry_after_status(status: int) -> bool:
    """Whether an HTTP answer is worth another attempt: a server error, a
    timeout or "too many requests" are; a refusal (400, 401, 404 ...) would
    be repeated identically, so the event is given up at once."""
    return status not in PERMANENT_STATUSES
