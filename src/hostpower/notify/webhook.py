"""A webhook delivery: one signed HTTP POST of the event as JSON.

TLS is verified (the system's trust store, or the notifier's `ca_file`),
redirects are not followed, proxies from the environment are not used, and
the whole request is bounded by the timeout.
"""

from __future__ import annotations

import ssl
import time

import httpx

from hostpower import __version__
from hostpower.model.events import Event
from hostpower.model.notification import (
    EVENT_HEADER, SIGNATURE_HEADER, TIMESTAMP_HEADER, body_of, payload, retry_after_status,
    signature,
)
from hostpower.model.notifiers import Notifier, WebhookSettings
from hostpower.model.secret import Secret
from hostpower.notify.errors import DeliveryError


def tls_context(ca_file: str | None) -> ssl.SSLContext:
    try:
        return ssl.create_default_context(cafile=ca_file)
    except (OSError, ssl.SSLError) as exc:
        raise DeliveryError(f"cannot read the CA file {ca_file}: {exc}", retry=False) from None


def signed_request(notifier: Notifier, key: Secret, event: Event,
                   now: float | None = None) -> tuple[bytes, dict[str, str]]:
    """The body and headers of the POST for `event`."""
    body = body_of(payload(event, notifier.name))
    stamp = str(int(time.time() if now is None else now))
    return body, {
        "Content-Type": "application/json",
        "User-Agent": f"hostpower/{__version__}",
        TIMESTAMP_HEADER: stamp,
        SIGNATURE_HEADER: signature(key.reveal(), stamp, body),
        EVENT_HEADER: str(event.id if event.id is not None else "test"),
    }


async def post(notifier: Notifier, key: Secret | None, event: Event, timeout: float) -> None:
    settings = notifier.settings
    assert isinstance(settings, WebhookSettings)
    if not key:
        raise DeliveryError("no signing key is stored for this webhook", retry=False)
    body, headers = signed_request(notifier, key, event)
    verify: ssl.SSLContext | bool = (tls_context(settings.ca_file)
                                     if settings.url.startswith("https:") else True)
    try:
        async with httpx.AsyncClient(verify=verify, timeout=timeout, trust_env=False,
                                     follow_redirects=False) as client:
            answer = await client.post(settings.url, content=body, headers=headers)
    except httpx.TimeoutException:
        raise DeliveryError(f"{settings.url}: no answer within {timeout:g} s") from None
    except httpx.HTTPError as exc:
        raise DeliveryError(f"{settings.url}: {type(exc).__name__}: {exc}") from None
    if not 200 <= answer.status_code < 300:
        raise DeliveryError(f"{settings.url} answered {answer.status_code} "
                            f"{answer.reason_phrase}".rstrip(),
                            retry=retry_after_status(answer.status_code))
