"""Power states, fence actions and the result of one agent command."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from enum import StrEnum

from hostpower.model.errors import ValidationError
from hostpower.model.secret import Secret


class FenceAction(StrEnum):
    """What a fence agent is asked to do (fence-agents' `action=` values)."""

    STATUS = "status"
    ON = "on"
    OFF = "off"
    REBOOT = "reboot"


class Outcome(StrEnum):
    """What one agent command answered. OFF only when the device verified it."""

    ON = "on"
    OFF = "off"
    UNKNOWN = "unknown"
    ERROR = "error"


OPTION_KEY_RE = re.compile(r"^[a-z0-9_]+$")
# Keys the driver sets itself; a user option may never override them.
RESERVED_OPTION_KEYS = frozenset(
    {"action", "ip", "ipaddr", "ipport", "username", "login", "password", "passwd",
     "port", "nodename", "timeout"}
)


def validate_option(key: str, value: str, field_name: str = "options") -> None:
    """Refuse option keys/values that could inject lines into an agent's stdin."""
    if not isinstance(key, str) or not OPTION_KEY_RE.match(key):
        raise ValidationError(
            field_name, f"option name {key!r} is invalid: use lower-case letters, digits and _"
        )
    if key in RESERVED_OPTION_KEYS:
        raise ValidationError(
            field_name, f"option name {key!r} is reserved: set it through the agent's own fields"
        )
    if not isinstance(value, str):
        raise ValidationError(field_name, f"option {key!r}: value must be a string")
    for bad, what in (("\n", "a newline"), ("\r", "a carriage return"), ("\x00", "a NUL byte"),
                      ("=", "'='")):
        if bad in value:
            raise ValidationError(field_name, f"option {key!r}: value must not contain {what}")


@dataclass(frozen=True)
class AgentSpec:
    """Everything a driver needs to talk to one PM device; the password in clear.

    Built by the engine from a stored fence agent just before a command, and
    sent to a proxy over mutual TLS. `port` is the IP port of the device
    (fence-agents' `ipport`); `plug` is the outlet/plug/system selector some
    agents need (fence-agents' `plug`, e.g. a PDU outlet).
    """

    type: str
    address: str
    username: str = ""
    password: Secret = field(default_factory=lambda: Secret(""))
    port: int | None = None
    plug: str | None = None
    options: tuple[tuple[str, str], ...] = ()

    def option(self, key: str, default: str | None = None) -> str | None:
        for k, v in self.options:
            if k == key:
                return v
        return default


@dataclass(frozen=True)
class FenceResult:
    """The answer to one agent command, as every driver and proxy reports it."""

    action: FenceAction
    outcome: Outcome
    message: str = ""
    exit_code: int | None = None
    duration: float = 0.0

    @property
    def ok(self) -> bool:
        """The command executed: the device answered (on, off, or done)."""
        return self.outcome in (Outcome.ON, Outcome.OFF)
