"""The configuration registry: typed keys with defaults, descriptions and
validation (the engine-config of this product).

Values are stored in the database as text (see store/); this module only
knows the keys, parses and checks values, and offers a typed snapshot.
"""

from __future__ import annotations

import ipaddress
import os.path
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from hostpower.model.errors import NotFoundError, ValidationError
from hostpower.model.proxychain import format_chain, parse_source_list

_TRUE = {"true", "yes", "on", "1"}
_FALSE = {"false", "no", "off", "0"}


@dataclass(frozen=True)
class ConfigKey:
    name: str
    kind: str  # "int" | "bool" | "path" | "optional_path" | "sources" | "command" | "address"
    default: str
    description: str
    minimum: int | None = None
    maximum: int | None = None
    unit: str = ""

    def parse(self, text: str) -> Any:
        """Parse and check a value given as text; raise ValidationError naming the key."""
        if not isinstance(text, str):
            raise ValidationError(self.name, "value must be given as text")
        raw = text.strip()
        return _PARSERS[self.kind](self, raw)

    def canonical(self, text: str) -> str:
        """The value as stored: parsed, checked and spelled one way."""
        value = self.parse(text)
        if self.kind == "bool":
            return "true" if value else "false"
        if self.kind == "sources":
            return format_chain(value)
        return str(value)


def _parse_int(key: ConfigKey, raw: str) -> int:
    try:
        value = int(raw)
    except ValueError:
        raise ValidationError(key.name, f"{raw!r} is not a whole number") from None
    if key.minimum is not None and value < key.minimum:
        raise ValidationError(key.name, f"{value} is below the minimum {key.minimum}")
    if key.maximum is not None and value > key.maximum:
        raise ValidationError(key.name, f"{value} is above the maximum {key.maximum}")
    return value


def _parse_bool(key: ConfigKey, raw: str) -> bool:
    word = raw.lower()
    if word in _TRUE:
        return True
    if word in _FALSE:
        return False
    raise ValidationError(key.name, f"{raw!r} is not true or false")


def _parse_path(key: ConfigKey, raw: str) -> str:
    if not raw or not os.path.isabs(raw) or "\n" in raw or "\x00" in raw:
        raise ValidationError(key.name, f"{raw!r} is not an absolute path")
    return os.path.normpath(raw)


def _parse_optional_path(key: ConfigKey, raw: str) -> str:
    """An absolute path, or empty for "none"."""
    return _parse_path(key, raw) if raw else ""


def _parse_command(key: ConfigKey, raw: str) -> str:
    """A command line a host's shell runs (soft fencing over SSH): one line."""
    if not raw:
        raise ValidationError(key.name, "must not be empty")
    if "\n" in raw or "\r" in raw or "\x00" in raw:
        raise ValidationError(key.name, "must be one line")
    if len(raw) > 1024:
        raise ValidationError(key.name, "is longer than 1024 characters")
    return raw


def _parse_address(key: ConfigKey, raw: str) -> str:
    """An IP address literal, or empty for "every address of this machine"."""
    if not raw:
        return ""
    try:
        return str(ipaddress.ip_address(raw))
    except ValueError:
        raise ValidationError(key.name, f"{raw!r} is not an IP address (empty: every "
                                        f"address)") from None


def _parse_sources(key: ConfigKey, raw: str) -> tuple:
    entries = parse_source_list(raw, key.name)
    if not entries and key.minimum:
        raise ValidationError(key.name, "must name at least one proxy source")
    return entries


_PARSERS: dict[str, Callable[[ConfigKey, str], Any]] = {
    "int": _parse_int, "bool": _parse_bool, "path": _parse_path,
    "optional_path": _parse_optional_path, "sources": _parse_sources,
    "command": _parse_command,
    "address": _parse_address,
}


def _key(*args: Any, **kwargs: Any) -> ConfigKey:
    return ConfigKey(*args, **kwargs)


KEYS: tuple[ConfigKey, ...] = (
    _key("FenceProxyDefaultPreferences", "sources", "cluster,dc",
         "Proxy chain of a host that has none of its own.", minimum=1),
    _key("FenceProxyImplicitPreferences", "sources", "engine,cluster,dc",
         "Sources appended, in this order, to every chain that lacks them; "
         "empty means a chain is exactly what was given."),
    _key("FenceStopStatusRetries", "int", "18",
         "Status polls after a stop besides the first one, before the stop is declared "
         "failed (oVirt's retries: 18 means up to 19 polls).", 0, 1000),
    _key("FenceStopStatusDelayBetweenRetriesInSec", "int", "10",
         "Seconds between status polls after a stop.", 0, 3600, "s"),
    _key("FenceStartStatusRetries", "int", "18",
         "Status polls after a start besides the first one, before the start is sent "
         "once more or declared failed (oVirt's retries: 18 means up to 19 polls).", 0, 1000),
    _key("FenceStartStatusDelayBetweenRetriesInSec", "int", "10",
         "Seconds between status polls after a start.", 0, 3600, "s"),
    _key("FindFenceProxyRetries", "int", "3",
         "Times a source with no eligible proxy is searched again before a "
         "start or stop moves to the next source.", 0, 100),
    _key("FindFenceProxyDelayBetweenRetriesInSec", "int", "30",
         "Seconds between those searches.", 0, 3600, "s"),
    _key("DisableFenceAtStartupInSec", "int", "300",
         "No automatic fencing this long after the engine starts (hosts need "
         "time to be seen).", 0, 86400, "s"),
    _key("FenceQuietTimeBetweenOperationsInSec", "int", "180",
         "No automatic fencing of a host this long after its last power operation.",
         0, 86400, "s"),
    _key("HostHeartbeatIntervalInSec", "int", "3",
         "Seconds between heartbeats to each host agent.", 1, 3600, "s"),
    _key("HostHeartbeatTimeoutInSec", "int", "20",
         "Seconds a heartbeat may take before it counts as missed.", 1, 3600, "s"),
    _key("TimeoutToResetHostInSeconds", "int", "60",
         "Grace period after a host stops answering before it is non_responsive.",
         0, 86400, "s"),
    _key("HostAttemptsToResetCount", "int", "2",
         "Missed heartbeats needed, besides the grace period, before a host is "
         "non_responsive.", 1, 1000),
    _key("FenceCommandTimeoutInSec", "int", "60",
         "Seconds one fence agent command may take on one proxy before the next proxy "
         "is tried.", 1, 3600, "s"),
    _key("DeviceCommandIntervalInMs", "int", "0",
         "Least time between the end of one command to a PM device (its address and "
         "port) and the start of the next, over every flow, health check and engine; "
         "commands to one device never overlap whatever this is (0: back to back).",
         0, 60000, "ms"),
    _key("FenceConcurrencyLimit", "int", "10",
         "Fence flows the engine runs at once; more wait their turn (one flow per host "
         "at most, always).", 1, 1000),
    _key("FenceAgentsPath", "path", "/usr/sbin",
         "Directory holding the fence_<type> agents of the fence-agents package."),
    _key("PreferNativeFenceDrivers", "bool", "true",
         "Use the in-process native driver (ipmilan, redfish) instead of spawning the "
         "fence agent script where the agent's options allow it."),
    _key("RedfishCaBundle", "optional_path", "",
         "PEM file of the CA certificates the engine trusts for Redfish BMCs (the native "
         "driver, and fence_redfish through REQUESTS_CA_BUNDLE); empty: the system trust "
         "store. Read when the engine starts. An agent option ssl_insecure=1 skips the "
         "verification (warned about in an event)."),
    _key("SshSoftFencingCommand", "command", "systemctl restart hostpower-agent",
         "Soft fencing: the command run over SSH on a non-responsive host that has SSH "
         "access, before any power action (restarts the host agent's service)."),
    _key("SshSoftFencingTimeoutInSec", "int", "30",
         "Seconds connecting over SSH and running SshSoftFencingCommand may take together.",
         1, 3600, "s"),
    _key("HostStorageLeaseAliveCheckingInterval", "int", "90",
         "With a cluster's skip_if_sd_active policy: a non-responsive host whose storage "
         "lease a proxy saw renewed within this many seconds is alive, only cut off from "
         "the engine, and is not power-cycled; a proxy must have watched the lease this "
         "long without seeing a renewal to call it stale.", 1, 3600, "s"),
    # kdump detection (docs/fencing.md): oVirt's keys keep oVirt's meaning.
    _key("FenceKdumpDestinationAddress", "address", "",
         "Address on which the engine listens for fence_kdump messages (hosts' "
         "fence_kdump_send sends to it); empty: every address of the engine machine."),
    _key("FenceKdumpDestinationPort", "int", "7410",
         "UDP port of the engine's fence_kdump listener.", 1, 65535),
    _key("FenceKdumpMessageInterval", "int", "5",
         "Seconds between the messages hosts send (fence_kdump_send -i); kdump detection "
         "looks for new messages this often.", 1, 3600, "s"),
    _key("FenceKdumpListenerTimeout", "int", "90",
         "A fence_kdump listener that has not reported for this long counts as down: "
         "kdump detection then goes straight on to the next step.", 3, 86400, "s"),
    _key("KdumpStartedTimeout", "int", "30",
         "Seconds kdump detection waits for a first fence_kdump message from a "
         "non-responsive host before it goes on.", 0, 86400, "s"),
    _key("KdumpFinishedTimeout", "int", "30",
         "Seconds without a fence_kdump message after which a host's crash dump counts "
         "as finished.", 1, 86400, "s"),
    _key("KdumpRebootTimeout", "int", "600",
         "Seconds a host has to answer again after its crash dump finished before the "
         "treatment goes on (hard fencing).", 0, 86400, "s"),
    _key("LoginFailureBackoffInMs", "int", "500",
         "Wait imposed on a user name and on a client address after a failed login; it "
         "doubles with each further failure in a row (0: no back-off).", 0, 60000, "ms"),
    _key("LoginFailureBackoffMaxInSec", "int", "60",
         "Longest back-off wait after failed logins.", 1, 3600, "s"),
    _key("LoginLockoutFailuresPerUser", "int", "10",
         "Failed logins in a row for one user name (existing or not) that lock it out.",
         1, 1000),
    _key("LoginLockoutFailuresPerAddress", "int", "50",
         "Failed logins in a row from one client address (any user names) that lock it out.",
         1, 100000),
    _key("LoginLockoutInSec", "int", "900",
         "How long a lockout lasts; failed logins further apart than this are forgotten.",
         1, 86400, "s"),
    _key("EngineLeaseInSec", "int", "10",
         "Lease of each engine in the database, renewed every third of it; an engine "
         "that could not renew stops starting external actions a quarter of it before "
         "the lease ends, and its peers see it expired when it ends.", 2, 600, "s"),
    _key("PMHealthCheckEnabled", "bool", "false",
         "Check periodically that every PM-enabled host can be fenced: a status of each "
         "fence agent through each candidate proxy of its chain (docs/readiness.md)."),
    _key("PMHealthCheckIntervalInSec", "int", "3600",
         "Seconds between the end of one PM health check round and the start of the next.",
         10, 86400, "s"),
    # Notifications (docs/notifications.md).
    _key("NotificationAttempts", "int", "6",
         "Attempts to deliver one event to one notifier before it is given up (counted as "
         "dropped, and the notifier reported failing).", 1, 100),
    _key("NotificationRetryDelayInMs", "int", "2000",
         "Wait after a notifier's first failed attempt; it doubles after each further "
         "failure of the same event.", 0, 600000, "ms"),
    _key("NotificationRetryDelayMaxInSec", "int", "60",
         "Longest wait between two attempts to deliver one event.", 1, 3600, "s"),
    _key("NotificationTimeoutInSec", "int", "10",
         "Seconds one delivery attempt (a webhook's request, a mail's SMTP session) may take.",
         1, 300, "s"),
)

REGISTRY: dict[str, ConfigKey] = {k.name: k for k in KEYS}
_BY_LOWER = {k.lower(): k for k in REGISTRY}


def lookup(name: str) -> ConfigKey:
    """The key of that name (case-insensitive), or NotFoundError."""
    key = _BY_LOWER.get(name.lower()) if isinstance(name, str) else None
    if key is None:
        raise NotFoundError("configuration key", name)
    return REGISTRY[key]


class Config:
    """A typed, immutable snapshot: defaults overlaid with stored values."""

    def __init__(self, stored: Mapping[str, str] | None = None) -> None:
        values: dict[str, Any] = {}
        for key in KEYS:
            text = (stored or {}).get(key.name, key.default)
            try:
                values[key.name] = key.parse(text)
            except ValidationError:
                # A value stored by an older release that no longer passes
                # validation must not stop the engine: the default applies.
                values[key.name] = key.parse(key.default)
        self._values = values

    def __getitem__(self, name: str) -> Any:
        return self._values[lookup(name).name]

    def as_text(self) -> dict[str, str]:
        return {k.name: (format_chain(v) if k.kind == "sources" else
                         ("true" if v is True else "false" if v is False else str(v)))
                for k in KEYS for v in [self._values[k.name]]}
