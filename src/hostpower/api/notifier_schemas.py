"""Request and response bodies of /api/notifiers (api/routes_notifiers.py).
Secrets (a webhook's signing key, an SMTP password) are write-only: an
answer says only whether one is stored."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BaseModel, Field

from hostpower.api.schemas import Port, Strict, Text
from hostpower.model.events import Severity
from hostpower.model.notifiers import MAX_RECIPIENTS, SmtpSecurity

Pattern = Annotated[str, Field(pattern=r"^[^\x00]*$", max_length=64)]
Secret = Annotated[str, Field(pattern=r"^[^\x00]*$", max_length=1024)]


class WebhookIn(Strict):
    url: Text = Field(description="http:// or https:// URL the events are POSTed to")
    ca_file: Text | None = Field(None, description="PEM file of the CAs to trust for an "
                                                   "https URL (default: the system's)")


class WebhookPatch(Strict):
    url: Text | None = None
    ca_file: Text | None = None


class SmtpIn(Strict):
    host: Text
    port: Port | None = Field(None, description="default: 587 (starttls), 465 (ssl), 25 (none)")
    security: SmtpSecurity = SmtpSecurity.STARTTLS
    sender: Text = Field(description="the From address")
    recipients: list[Text] = Field(max_length=MAX_RECIPIENTS)
    username: Text = Field("", description="log in as this user (with `password`); "
                                           "empty: no login")
    ca_file: Text | None = None


class SmtpPatch(Strict):
    host: Text | None = None
    port: Port | None = None
    security: SmtpSecurity | None = None
    sender: Text | None = None
    recipients: list[Text] | None = Field(None, max_length=MAX_RECIPIENTS)
    username: Text | None = None
    ca_file: Text | None = None


class NotifierIn(Strict):
    name: Text
    type: Literal["webhook", "smtp"]
    enabled: bool = True
    min_severity: Severity = Field(Severity.WARNING, description="deliver events at least "
                                                                 "this severe")
    kinds: list[Pattern] = Field([], max_length=100,
                                 description="glob patterns of event kinds, e.g. fence.*; "
                                             "empty: every kind")
    webhook: WebhookIn | None = Field(None, description="for type webhook")
    smtp: SmtpIn | None = Field(None, description="for type smtp")
    secret: Secret | None = Field(None, description="webhook: the HMAC signing key, at least "
                                                    "16 characters; write-only")
    password: Secret | None = Field(None, description="smtp: the login's password; write-only")


class NotifierPatch(Strict):
    name: Text | None = None
    enabled: bool | None = None
    min_severity: Severity | None = None
    kinds: list[Pattern] | None = Field(None, max_length=100)
    webhook: WebhookPatch | None = None
    smtp: SmtpPatch | None = None
    secret: Secret | None = Field(None, description="write-only; omit to keep the stored key")
    password: Secret | None = Field(None, description="write-only; omit to keep it, empty to "
                                                      "remove it")


class DeliveryStateOut(BaseModel):
    holder: str | None = Field(description="the engine delivering for this notifier now")
    delivered: int
    dropped: int = Field(description="events given up after every attempt failed")
    last_delivered_event: int | None
    last_delivered_at: str | None
    last_error: str
    last_error_at: str | None
    attempts: int = Field(description="failed attempts in a row (0: the last one succeeded)")
    failing: bool
    failing_since: str | None


class NotifierOut(BaseModel):
    id: int
    name: str
    type: str
    enabled: bool
    min_severity: Severity
    kinds: list[str]
    webhook: WebhookIn | None
    smtp: SmtpIn | None
    secret_set: bool = Field(description="a signing key (webhook) or password (smtp) is stored")
    state: DeliveryStateOut
    href: str


class NotifierTestOut(BaseModel):
    delivered: bool
    detail: str
