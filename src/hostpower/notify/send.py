"""One event to one notifier, one attempt: the webhook or the mail."""

from __future__ import annotations

import asyncio

from hostpower.model.events import Event, Severity
from hostpower.model.notifiers import Notifier, NotifierType
from hostpower.model.secret import Secret
from hostpower.notify import mail, webhook


async def send_once(notifier: Notifier, secret: Secret | None, event: Event,
                    timeout: float) -> None:
    """DeliveryError when it did not arrive."""
    if notifier.type is NotifierType.WEBHOOK:
        await webhook.post(notifier, secret, event, timeout)
    else:
        # smtplib blocks: a thread of its own; every socket call is bounded by `timeout`.
        await asyncio.to_thread(mail.send, notifier, secret, event, timeout)


def probe_event(notifier: Notifier, engine: str | None, user: str | None) -> Event:
    """What `POST /api/notifiers/{id}/test` and `hostpower notifier test` send
    (not stored: it is no event of the engine's)."""
    from datetime import UTC, datetime

    who = f" by {user}" if user else ""
    return Event(Severity.INFO, "notifier.test",
                 f"test message for notifier {notifier.name}, sent{who} from hostpower"
                 f"{f' engine {engine}' if engine else ''}",
                 created_at=datetime.now(UTC), user=user, engine=engine,
                 details={"notifier_id": notifier.id, "notifier": notifier.name})
