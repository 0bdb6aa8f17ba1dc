"""The wire format between the engine and a host agent, written once.

Both sides import this module: the engine's client (client.py, heartbeat.py)
builds requests and reads answers with it, the agent (agent.py, server.py)
reads requests and builds answers with it. Bodies are JSON objects; here
they are the dicts that JSON encodes.

    GET  /v1/heartbeat      -> HeartbeatAnswer
    POST /v1/fence          FenceRequest -> a fence answer (a FenceResult)
    POST /v1/storage-lease  StorageLeaseRequest -> StorageLeaseAnswer
    any refusal         -> an error body {"detail": ..., "field": ...}

What comes in is validated on either side: a request by the agent
(ValidationError naming the field, never echoing a value, since a value may
be the password), an answer by the engine (ValueError saying what is wrong).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from hostpower.model import validate
from hostpower.model.agenttypes import TYPE_RE
from hostpower.model.errors import ValidationError
from hostpower.model.power import AgentSpec, FenceAction, FenceResult, Outcome
from hostpower.model.secret import Secret

HEARTBEAT_PATH = "/v1/heartbeat"
FENCE_PATH = "/v1/fence"
STORAGE_LEASE_PATH = "/v1/storage-lease"
DEFAULT_FENCE_TIMEOUT = 60.0
MAX_FENCE_TIMEOUT = 600.0

_REQUEST_FIELDS = frozenset({"agent", "action", "timeout", "prefer_native"})
_AGENT_FIELDS = frozenset({"type", "address", "port", "username", "password", "plug", "options"})


# --------------------------------------------------------------------------- the fence request


@dataclass(frozen=True)
class FenceRequest:
    """One fence command for an agent: the PM device, the action, its time limit.

    `prefer_native` carries the engine's PreferNativeFenceDrivers, so that every
    proxy follows the engine's configuration; None leaves it to the agent.
    """

    spec: AgentSpec
    action: FenceAction
    timeout: float = DEFAULT_FENCE_TIMEOUT
    prefer_native: bool | None = None

    def to_body(self) -> dict[str, Any]:
        """The request body; it holds the device password in clear (sent over mutual TLS)."""
        spec = self.spec
        body: dict[str, Any] = {
            "agent": {
                "type": spec.type,
                "address": spec.address,
                "port": spec.port,
                "username": spec.username,
                "password": spec.password.reveal(),
                "plug": spec.plug,
                "options": [[k, v] for k, v in spec.options],
            },
            "action": FenceAction(self.action).value,
            "timeout": self.timeout,
        }
        if self.prefer_native is not None:
            body["prefer_native"] = self.prefer_native
        return body

    @classmethod
    def from_body(cls, body: object) -> "FenceRequest":
        """Validate a request body; ValidationError naming the field, never a value."""
        if not isinstance(body, dict):
            raise ValidationError("body", "must be a JSON object")
        if not isinstance(body.get("prefer_native", True), bool):
            raise ValidationError("prefer_native", "must be true or false")
        prefer_native = body.get("prefer_native")
        unknown = set(body) - _REQUEST_FIELDS
        if unknown:
            raise ValidationError(sorted(unknown)[0], "unknown field")
        spec = _read_agent(body.get("agent"))

        raw_action = body.get("action")
        try:
            action = FenceAction(raw_action)
        except ValueError:
            raise ValidationError("action", f"{raw_action!r} is not one of "
                                            f"{', '.join(a.value for a in FenceAction)}") from None

        timeout = body.get("timeout", DEFAULT_FENCE_TIMEOUT)
        if isinstance(timeout, bool) or not isinstance(timeout, (int, float)):
            raise ValidationError("timeout", "must be a number of seconds")
        if not 0 < timeout <= MAX_FENCE_TIMEOUT:
            raise ValidationError("timeout",
                                  f"{timeout!r} is out of range (0-{MAX_FENCE_TIMEOUT:g}]")
        return cls(spec, action, float(timeout), prefer_native)


def _read_agent(agent: object) -> AgentSpec:
    """The "agent" object of a fence request, validated field by field."""
    if not isinstance(agent, dict):
        raise ValidationError("agent", "must be an object")
    unknown = set(agent) - _AGENT_FIELDS
    if unknown:
        raise ValidationError(f"agent.{sorted(unknown)[0]}", "unknown field")

    agent_type = agent.get("type")
    if not isinstance(agent_type, str) or not agent_type:
        raise ValidationError("agent.type", "must be a non-empty string")
    agent_type = agent_type.strip().lower().removeprefix("fence_")
    if not TYPE_RE.match(agent_type):
        raise ValidationError("agent.type", f"{agent_type!r} is not a fence agent type")

    address = agent.get("address", "")
    if not isinstance(address, str):
        raise ValidationError("agent.address", "must be a string")
    if address:
        address = validate.address(address, "agent.address")
    port = validate.port(agent.get("port"), "agent.port")
    username = validate.single_line(agent.get("username") or "", "agent.username")
    password = validate.single_line(agent.get("password") or "", "agent.password", secret=True)
    plug = agent.get("plug")
    if plug is not None:
        plug = validate.single_line(plug, "agent.plug") or None

    raw_options = agent.get("options") or []
    if not isinstance(raw_options, list):
        raise ValidationError("agent.options", "must be a list of [name, value] pairs")
    pairs = []
    for i, pair in enumerate(raw_options):
        if (not isinstance(pair, (list, tuple)) or len(pair) != 2
                or not all(isinstance(p, str) for p in pair)):
            raise ValidationError("agent.options",
                                  f"entry {i + 1} is not a [name, value] pair of strings")
        pairs.append((pair[0], pair[1]))
    options = validate.options(pairs, "agent.options")

    return AgentSpec(type=agent_type, address=address, username=username,
                     password=Secret(password), port=port, plug=plug, options=options)


# --------------------------------------------------------------------------- the fence answer


def fence_answer(result: FenceResult) -> dict[str, Any]:
    """The answer body for what the device answered."""
    return {
        "action": result.action.value,
        "outcome": result.outcome.value,
        "message": result.message,
        "exit_code": result.exit_code,
        "duration": round(result.duration, 6),
    }


def read_fence_answer(data: object) -> FenceResult:
    """The FenceResult in an answer body; ValueError saying what is malformed."""
    body = _object(data)
    try:
        action = FenceAction(body.get("action"))
        outcome = Outcome(body.get("outcome"))
    except ValueError as exc:
        raise ValueError(str(exc)) from None
    message = body.get("message") or ""
    if not isinstance(message, str):
        raise ValueError("message is not a string")
    exit_code = body.get("exit_code")
    if exit_code is not None and (isinstance(exit_code, bool) or not isinstance(exit_code, int)):
        raise ValueError("exit_code is not an integer")
    duration = _seconds(body.get("duration") or 0.0, "duration")
    return FenceResult(action, outcome, message, exit_code, duration)


# --------------------------------------------------------------------------- the heartbeat answer


@dataclass(frozen=True)
class HeartbeatAnswer:
    """What an agent says of itself: who it is, since when, what it can run.

    `boot_id` is new after every reboot of the host; `uptime` counts seconds
    since the agent started; `fence_agent_types` are the agent types the host
    can run (the engine does not pick a proxy that cannot run the type).
    """

    host: str
    boot_id: str
    uptime: float
    agent_version: str
    fence_agent_types: frozenset[str]

    def to_body(self) -> dict[str, Any]:
        return {
            "host": self.host,
            "boot_id": self.boot_id,
            "uptime": round(self.uptime, 3),
            "agent_version": self.agent_version,
            "fence_agent_types": sorted(self.fence_agent_types),
        }

    @classmethod
    def from_body(cls, data: object) -> "HeartbeatAnswer":
        """Validate an answer body; ValueError saying what is malformed."""
        body = _object(data)
        for name in ("host", "boot_id", "agent_version"):
            if not isinstance(body.get(name), str):
                raise ValueError(f"{name} is not a string")
        types = body.get("fence_agent_types")
        if not isinstance(types, list) or not all(isinstance(t, str) for t in types):
            raise ValueError("fence_agent_types is not a list of strings")
        return cls(host=body["host"], boot_id=body["boot_id"],
                   uptime=_seconds(body.get("uptime"), "uptime"),
                   agent_version=body["agent_version"], fence_agent_types=frozenset(types))


# --------------------------------------------------------------------------- the storage lease


@dataclass(frozen=True)
class StorageLeaseRequest:
    """"How is the storage lease of host X?", asked of a proxy host's agent.

    `host` names a lease file on the shared storage, so it is held to the
    inventory's name rules (letters, digits, '.', '_', '-', starting with a
    letter or digit): no '/', no '..', nothing that leaves the directory.
    """

    host: str

    def to_body(self) -> dict[str, Any]:
        return {"host": self.host}

    @classmethod
    def from_body(cls, body: object) -> "StorageLeaseRequest":
        """Validate a request body; ValidationError naming the field."""
        if not isinstance(body, dict):
            raise ValidationError("body", "must be a JSON object")
        unknown = set(body) - {"host"}
        if unknown:
            raise ValidationError(sorted(unknown)[0], "unknown field")
        host = body.get("host")
        if not isinstance(host, str) or not validate.NAME_RE.match(host):
            raise ValidationError("host", "must be a host name: letters, digits, '.', '_' and "
                                          "'-', starting with a letter or digit")
        return cls(host)


@dataclass(frozen=True)
class StorageLeaseAnswer:
    """What a proxy's agent saw of a host's lease on the shared storage.

    `watching` is False when the agent is not on the shared storage (it was
    started without --storage-lease-dir); the rest is then empty.
    `renewed_ago` (at most this many seconds ago the agent saw the lease
    renewed, None if it saw no renewal) and `watched_for` (how long it has
    watched that file without a break) are on the agent's own monotonic
    clock: they decide (model/storagelease.py). The record's fields
    (`counter`, `boot_id`, `written_at` on the writer's clock, its renewal
    `interval`) and `mtime_age` (the file's age by the reader's wall clock)
    only inform; `detail` says why a file present could not be read.
    """

    host: str
    watching: bool
    exists: bool = False
    renewed_ago: float | None = None
    watched_for: float = 0.0
    counter: int | None = None
    boot_id: str | None = None
    written_at: float | None = None
    interval: float | None = None
    mtime_age: float | None = None
    detail: str = ""

    def to_body(self) -> dict[str, Any]:
        def r(value: float | None) -> float | None:
            return None if value is None else round(value, 3)
        return {"host": self.host, "watching": self.watching, "exists": self.exists,
                "renewed_ago": r(self.renewed_ago), "watched_for": r(self.watched_for),
                "counter": self.counter, "boot_id": self.boot_id,
                "written_at": self.written_at, "interval": self.interval,
                "mtime_age": r(self.mtime_age), "detail": self.detail}

    @classmethod
    def from_body(cls, data: object) -> "StorageLeaseAnswer":
        """Validate an answer body; ValueError saying what is malformed."""
        body = _object(data)
        host = body.get("host")
        if not isinstance(host, str):
            raise ValueError("host is not a string")
        for name in ("watching", "exists"):
            if not isinstance(body.get(name), bool):
                raise ValueError(f"{name} is not true or false")
        counter = body.get("counter")
        if counter is not None and (isinstance(counter, bool) or not isinstance(counter, int)
                                    or counter < 0):
            raise ValueError("counter is not a whole number")
        boot_id = body.get("boot_id")
        if boot_id is not None and not isinstance(boot_id, str):
            raise ValueError("boot_id is not a string")
        detail = body.get("detail") or ""
        if not isinstance(detail, str):
            raise ValueError("detail is not a string")
        renewed_ago = _optional_seconds(body.get("renewed_ago"), "renewed_ago")
        watched_for = _seconds(body.get("watched_for", 0.0), "watched_for")
        if watched_for < 0 or (renewed_ago is not None and renewed_ago < 0):
            raise ValueError("renewed_ago and watched_for cannot be negative")
        return cls(host=host, watching=body["watching"], exists=body["exists"],
                   renewed_ago=renewed_ago, watched_for=watched_for, counter=counter,
                   boot_id=boot_id,
                   written_at=_optional_seconds(body.get("written_at"), "written_at"),
                   interval=_optional_seconds(body.get("interval"), "interval"),
                   mtime_age=_optional_seconds(body.get("mtime_age"), "mtime_age"),
                   detail=detail)


# --------------------------------------------------------------------------- refusals


def error_body(detail: str, field: str | None = None) -> dict[str, Any]:
    """The body of every refusal: what is wrong and, for bad input, which field."""
    return {"detail": detail, "field": field}


def validation_error_body(exc: ValidationError) -> dict[str, Any]:
    return error_body(str(exc), exc.field)


def read_error_body(data: object) -> tuple[str, str | None] | None:
    """(detail, field) of a refusal body, or None if the body is not one."""
    if not isinstance(data, dict) or "detail" not in data:
        return None
    field = data.get("field")
    return str(data["detail"]), field if isinstance(field, str) else None


# --------------------------------------------------------------------------- helpers


def _object(data: object) -> dict[str, Any]:
    if not isinstance(data, dict):
        raise ValueError("answer is not a JSON object")
    return data


def _optional_seconds(value: object, name: str) -> float | None:
    return None if value is None else _seconds(value, name)


def _seconds(value: object, name: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise ValueError(f"{name} is not a number of seconds")
    return float(value)
