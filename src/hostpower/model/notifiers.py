"""Notifiers: where operators hear about events (a webhook, SMTP mail), which
events each one wants, and the checks on what a user configures.

Pure: no I/O. The secrets (a webhook's signing key, an SMTP password) are
not part of a `Notifier`; the store keeps them encrypted and hands them to
the sender only (`model/secret.Secret`).
"""

from __future__ import annotations

import ipaddress
import os.path
import re
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from fnmatch import fnmatchcase
from typing import Any
from urllib.parse import urlsplit

from hostpower.model.errors import ValidationError
from hostpower.model.events import Event, Severity

NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
KIND_PATTERN = re.compile(r"^[a-z0-9_.*?-]{1,64}$")
# Deliberately plain: one @, no spaces, no angle brackets, no line breaks
# (which would let a value add a header to a mail).
ADDRESS = re.compile(r"^[^@\s<>,;\"]{1,64}@[A-Za-z0-9.-]{1,253}$")
HOSTNAME = re.compile(r"^[A-Za-z0-9]([A-Za-z0-9-]{0,62})(\.[A-Za-z0-9]([A-Za-z0-9-]{0,62}))*\.?$")
MAX_RECIPIENTS = 50
MAX_URL = 2048
MIN_SECRET = 16
MAX_SECRET = 1024
# Events about a notifier (its failure, its recovery) carry its id in details.
NOTIFIER_KINDS = "notifier."


class NotifierType(StrEnum):
    WEBHOOK = "webhook"
    SMTP = "smtp"


class SmtpSecurity(StrEnum):
    STARTTLS = "starttls"   # plain connection upgraded with STARTTLS (port 587)
    SSL = "ssl"             # TLS from the first byte (port 465)
    NONE = "none"           # no TLS: only for a relay on the same machine or network

    @property
    def default_port(self) -> int:
        return {"starttls": 587, "ssl": 465, "none": 25}[self.value]


SEVERITY_ORDER = {s: n for n, s in enumerate(Severity)}


@dataclass(frozen=True)
class WebhookSettings:
    url: str
    ca_file: str | None = None   # None: the system's trust store


@dataclass(frozen=True)
class SmtpSettings:
    host: str
    port: int
    security: SmtpSecurity
    sender: str
    recipients: tuple[str, ...]
    username: str = ""          # "" : no login
    ca_file: str | None = None


@dataclass(frozen=True)
class Notifier:
    name: str
    type: NotifierType
    settings: WebhookSettings | SmtpSettings
    min_severity: Severity = Severity.WARNING
    kinds: tuple[str, ...] = ()   # glob patterns; none: every kind
    enabled: bool = True
    id: int | None = None
    secret_set: bool = False      # whether a key / password is stored (never the value)

    def wants(self, event: Event) -> bool:
        """Whether this notifier delivers `event`: severe enough, of a kind it
        names, and not about this notifier itself (its own failure is told
        by the other notifiers, never through itself)."""
        if (event.kind.startswith(NOTIFIER_KINDS) and self.id is not None
                and event.details.get("notifier_id") == self.id):
            return False
        if SEVERITY_ORDER[event.severity] < SEVERITY_ORDER[self.min_severity]:
            return False
        return not self.kinds or any(fnmatchcase(event.kind, p) for p in self.kinds)


@dataclass(frozen=True)
class DeliveryState:
    """How a notifier's deliveries go, as the engines record them."""

    notifier_id: int
    holder: str | None = None            # the engine delivering for it now
    delivered: int = 0                   # events delivered since it was created
    dropped: int = 0                     # events given up after every attempt failed
    last_delivered_event: int | None = None
    last_delivered_at: datetime | None = None
    last_error: str = ""
    last_error_at: datetime | None = None
    attempts: int = 0                    # failed attempts in a row (0: healthy)
    failing_since: datetime | None = None

    @property
    def failing(self) -> bool:
        return self.failing_since is not None


# -- validation -----------------------------------------------------------------------------

def check_name(name: object, where: str = "name") -> str:
    if not isinstance(name, str) or not NAME.match(name):
        raise ValidationError(where, f"{name!r} is not a notifier name (letters, digits, "
                                     f"'.', '_', '-'; at most 64, starting with a letter or "
                                     f"digit)")
    return name


def check_severity(value: object, where: str = "min_severity") -> Severity:
    try:
        return Severity(str(value).lower())
    except ValueError:
        raise ValidationError(where, f"{value!r} is not a severity (one of "
                                     f"{', '.join(s.value for s in Severity)})") from None


def check_kinds(patterns: object, where: str = "kinds") -> tuple[str, ...]:
    if patterns is None:
        return ()
    if isinstance(patterns, str) or not isinstance(patterns, (list, tuple)):
        raise ValidationError(where, "must be a list of kind patterns such as 'fence.*'")
    out = []
    for n, p in enumerate(patterns):
        if not isinstance(p, str) or not KIND_PATTERN.match(p):
            raise ValidationError(f"{where}[{n}]", f"{p!r} is not a kind pattern (lower-case "
                                                   f"letters, digits, '.', '_', '-', and the "
                                                   f"wildcards * and ?; e.g. 'fence.*')")
        if p not in out:
            out.append(p)
    return tuple(out)


def check_url(url: object, where: str = "url") -> str:
    if not isinstance(url, str) or not url or len(url) > MAX_URL:
        raise ValidationError(where, "an http:// or https:// URL is needed")
    if any(c.isspace() or ord(c) < 32 for c in url):
        raise ValidationError(where, f"{url!r} contains spaces or control characters")
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError as exc:
        raise ValidationError(where, f"{url!r} is not a valid URL: {exc}") from None
    if parts.scheme not in ("http", "https"):
        raise ValidationError(where, f"{url!r} is not an http:// or https:// URL")
    if not parts.hostname:
        raise ValidationError(where, f"{url!r} names no host")
    if parts.username is not None or parts.password is not None:
        raise ValidationError(where, "must not hold credentials (they would be shown in "
                                     "every answer): the signature authenticates the engine")
    if port == 0:
        raise ValidationError(where, f"{url!r}: port 0 is not a port")
    _check_host(parts.hostname, where)
    return url


def _check_host(host: str, where: str) -> str:
    try:
        ipaddress.ip_address(host)
        return host
    except ValueError:
        pass
    if len(host) > 253 or not HOSTNAME.match(host):
        raise ValidationError(where, f"{host!r} is not a host name or an IP address")
    return host


def check_ca_file(path: object, where: str = "ca_file") -> str | None:
    if path in (None, ""):
        return None
    if not isinstance(path, str) or not os.path.isabs(path) or "\x00" in path or "\n" in path:
        raise ValidationError(where, f"{path!r} is not an absolute path")
    return os.path.normpath(path)


def check_address(value: object, where: str) -> str:
    if not isinstance(value, str) or not ADDRESS.match(value):
        raise ValidationError(where, f"{value!r} is not a mail address (user@domain)")
    return value


def check_recipients(values: object, where: str = "recipients") -> tuple[str, ...]:
    if isinstance(values, str) or not isinstance(values, (list, tuple)) or not values:
        raise ValidationError(where, "at least one recipient address is needed")
    if len(values) > MAX_RECIPIENTS:
        raise ValidationError(where, f"at most {MAX_RECIPIENTS} recipients")
    out: list[str] = []
    for n, v in enumerate(values):
        address = check_address(v, f"{where}[{n}]")
        if address not in out:
            out.append(address)
    return tuple(out)


def check_secret(value: str, where: str) -> str:
    if len(value) < MIN_SECRET:
        raise ValidationError(where, f"must be at least {MIN_SECRET} characters "
                                     f"(e.g. `openssl rand -hex 32`)")
    if len(value) > MAX_SECRET or "\x00" in value:
        raise ValidationError(where, f"must be at most {MAX_SECRET} characters, without NUL")
    return value


def webhook_settings(url: object, ca_file: object = None, where: str = "") -> WebhookSettings:
    return WebhookSettings(check_url(url, f"{where}url"), check_ca_file(ca_file, f"{where}ca_file"))


def smtp_settings(host: object, port: object = None, security: object = "starttls",
                  sender: object = None, recipients: object = None, username: object = "",
                  ca_file: object = None, where: str = "") -> SmtpSettings:
    if not isinstance(host, str) or not host:
        raise ValidationError(f"{where}host", "the SMTP server's host name or address is needed")
    _check_host(host, f"{where}host")
    try:
        sec = SmtpSecurity(str(security).lower())
    except ValueError:
        raise ValidationError(f"{where}security", f"{security!r} is not one of starttls, ssl, "
                                                  f"none") from None
    if port is None:
        port = sec.default_port
    if not isinstance(port, int) or isinstance(port, bool) or not 1 <= port <= 65535:
        raise ValidationError(f"{where}port", f"{port!r} is not a port (1-65535)")
    user = username or ""
    if not isinstance(user, str) or len(user) > 255 or any(ord(c) < 32 for c in user):
        raise ValidationError(f"{where}username", "must be one line of at most 255 characters")
    return SmtpSettings(host=host, port=port, security=sec,
                        sender=check_address(sender, f"{where}sender"),
                        recipients=check_recipients(recipients, f"{where}recipients"),
                        username=user, ca_file=check_ca_file(ca_file, f"{where}ca_file"))


def settings_as_dict(settings: WebhookSettings | SmtpSettings) -> dict[str, Any]:
    if isinstance(settings, WebhookSettings):
        return {"url": settings.url, "ca_file": settings.ca_file}
    return {"host": settings.host, "port": settings.port, "security": settings.security.value,
            "sender": settings.sender, "recipients": list(settings.recipients),
            "username": settings.username, "ca_file": settings.ca_file}


def settings_from_dict(kind: NotifierType, data: dict[str, Any]) -> WebhookSettings | SmtpSettings:
    """Settings as stored (already checked when they were written)."""
    if kind is NotifierType.WEBHOOK:
        return WebhookSettings(data["url"], data.get("ca_file"))
    return SmtpSettings(host=data["host"], port=int(data["port"]),
                        security=SmtpSecurity(data["security"]), sender=data["sender"],
                        recipients=tuple(data["recipients"]), username=data.get("username", ""),
                        ca_file=data.get("ca_file"))


_WEBHOOK_FIELDS = ("url", "ca_file")
_SMTP_FIELDS = ("host", "port", "security", "sender", "recipients", "username", "ca_file")


def settings_from_input(kind: NotifierType, data: dict[str, Any],
                        where: str = "") -> WebhookSettings | SmtpSettings:
    """A notifier's settings from what a user gave (API body, CLI options),
    every field checked; an unknown field is refused by name."""
    known = _WEBHOOK_FIELDS if kind is NotifierType.WEBHOOK else _SMTP_FIELDS
    for key in data:
        if key not in known:
            raise ValidationError(f"{where}{key}", f"is not a setting of a {kind.value} notifier "
                                                   f"(those are: {', '.join(known)})")
    if kind is NotifierType.WEBHOOK:
        return webhook_settings(data.get("url"), data.get("ca_file"), where)
    return smtp_settings(data.get("host"), data.get("port"), data.get("security", "starttls"),
                         data.get("sender"), data.get("recipients"), data.get("username", ""),
                         data.get("ca_file"), where)


def check_type(value: object, where: str = "type") -> NotifierType:
    try:
        return NotifierType(str(value).lower())
    except ValueError:
        raise ValidationError(where, f"{value!r} is not a notifier type (webhook or "
                                     f"smtp)") from None


def secret_field(kind: NotifierType) -> str:
    """What the secret of a notifier of this type is called (API field, CLI prompt)."""
    return "secret" if kind is NotifierType.WEBHOOK else "password"


def check_secret_rules(kind: NotifierType, settings: WebhookSettings | SmtpSettings,
                       secret_stored: bool) -> None:
    """A webhook signs with a key: one must be stored. An SMTP login needs
    its password, and a password without a user name would never be used."""
    if kind is NotifierType.WEBHOOK and not secret_stored:
        raise ValidationError("secret", "a webhook needs a signing key (at least "
                                        f"{MIN_SECRET} characters)")
    if isinstance(settings, SmtpSettings):
        if settings.username and not secret_stored:
            raise ValidationError("password", "a login (username) needs a password")
        if secret_stored and not settings.username:
            raise ValidationError("username", "a password is stored but no user name to log in "
                                              "with")
