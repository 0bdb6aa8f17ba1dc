"""The host agent itself: what it answers to a heartbeat and how it runs a
fence command, independent of how requests reach it (server.py).

Input is validated field by field; errors name the field, never echo a
value. The password is never logged: the one log line per fence command
holds host, type, action, outcome, duration.
"""

from __future__ import annotations

import concurrent.futures
import json
import logging
import threading
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from hostpower import __version__
from hostpower.drivers.base import DriverError, FenceDriver
from hostpower.hostagent import pki
from hostpower.model import validate
from hostpower.model.agenttypes import TYPE_RE
from hostpower.model.errors import HostpowerError, ValidationError
from hostpower.model.power import AgentSpec, FenceAction, FenceResult, Outcome
from hostpower.model.secret import Secret

log = logging.getLogger("hostpower.hostagent")

DEFAULT_PORT = 54321
DEFAULT_CERT_DIR = Path("/etc/hostpower/agent")
DEFAULT_FENCE_AGENTS_PATH = "/usr/sbin"
HEARTBEAT_PATH = "/v1/heartbeat"
FENCE_PATH = "/v1/fence"
MAX_FENCE_TIMEOUT = 600.0
DEFAULT_FENCE_TIMEOUT = 60.0
# How long past its own timeout a driver may take before the agent gives up
# waiting for it and answers "error" (the driver thread is left to finish).
DRIVER_GRACE = 5.0
AGENT_TYPES_TTL = 60.0
_AGENT_FIELDS = frozenset({"type", "address", "port", "username", "password", "plug", "options"})


class AgentStartError(HostpowerError):
    """The agent could not start serving (bad certificates, address in use, ...)."""


# --------------------------------------------------------------------------- configuration


@dataclass(frozen=True)
class AgentConfig:
    """What one agent is: its identity, where it listens, where its certificates are."""

    host_name: str
    bind_address: str = "0.0.0.0"
    port: int = DEFAULT_PORT
    cert_dir: Path = DEFAULT_CERT_DIR
    boot_id: str | None = None
    fence_agents_path: str = DEFAULT_FENCE_AGENTS_PATH
    prefer_native: bool = True
    max_parallel_fence: int = 8
    # Longer than the engine's pooled-connection expiry (30 s), so that it is
    # always the engine that retires an idle connection, never a race with us.
    keepalive_timeout: float = 75.0
    # How long stopping waits for requests in progress (a fence run) to answer.
    shutdown_grace: float = 10.0

    @property
    def cert_file(self) -> Path:
        return Path(self.cert_dir) / "agent.crt"

    @property
    def key_file(self) -> Path:
        return Path(self.cert_dir) / "agent.key"

    @property
    def ca_file(self) -> Path:
        return Path(self.cert_dir) / pki.CA_CERT_FILE


# --------------------------------------------------------------------------- lab hooks


class Faults:
    """Switches the lab flips to make an agent misbehave on purpose.

    `hang()` makes every heartbeat and fence request wait, without answering,
    until `release()`: the agent looks alive at the TCP/TLS level but does not
    answer, like a host stuck in I/O.
    """

    def __init__(self) -> None:
        self._released = threading.Event()
        self._released.set()
        self._lock = threading.Lock()
        self._waiting = 0

    def hang(self) -> None:
        self._released.clear()

    def release(self) -> None:
        self._released.set()

    @property
    def hung(self) -> bool:
        return not self._released.is_set()

    @property
    def waiting(self) -> int:
        """Requests currently held by `hang` (for tests to poll on)."""
        return self._waiting

    def pass_through(self) -> None:
        """Return at once, or once released if the agent is hung."""
        if self._released.is_set():
            return
        with self._lock:
            self._waiting += 1
        try:
            self._released.wait()
        finally:
            with self._lock:
                self._waiting -= 1


# --------------------------------------------------------------------------- the agent


def parse_fence_request(body: object) -> tuple[AgentSpec, FenceAction, float]:
    """Validate a /v1/fence body; raises ValidationError naming the field, never a value."""
    if not isinstance(body, dict):
        raise ValidationError("body", "must be a JSON object")
    unknown = set(body) - {"agent", "action", "timeout", "prefer_native"}
    if not isinstance(body.get("prefer_native", True), bool):
        raise ValidationError("prefer_native", "must be true or false")
    if unknown:
        raise ValidationError(sorted(unknown)[0], "unknown field")
    agent = body.get("agent")
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
        raise ValidationError("timeout", f"{timeout!r} is out of range (0-{MAX_FENCE_TIMEOUT:g}]")

    spec = AgentSpec(type=agent_type, address=address, username=username,
                     password=Secret(password), port=port, plug=plug, options=options)
    return spec, action, float(timeout)


def _scrub(text: str, spec: AgentSpec) -> str:
    """Belt and braces: a driver must not echo the password, but never let it through."""
    secret = spec.password.reveal()
    return text.replace(secret, "********") if secret else text


def _error_body(exc: ValidationError) -> dict[str, Any]:
    return {"detail": str(exc), "field": exc.field}


class HostAgent:
    """What the agent does, independent of HTTP and TLS (`AgentServer` serves it)."""

    def __init__(self, config: AgentConfig, drivers: Sequence[FenceDriver]) -> None:
        self.config = config
        self.drivers = list(drivers)
        self.boot_id = config.boot_id or str(uuid.uuid4())
        self.faults = Faults()
        self._started = time.monotonic()
        self._pool = concurrent.futures.ThreadPoolExecutor(
            max_workers=config.max_parallel_fence, thread_name_prefix=f"fence-{config.host_name}")
        self._types_lock = threading.Lock()
        self._types: tuple[float, list[str]] | None = None

    # ---- heartbeat

    def fence_agent_types(self) -> list[str]:
        """Agent types this host can run; cached, it only changes when packages are installed."""
        from hostpower.drivers.registry import local_agent_types

        with self._types_lock:
            now = time.monotonic()
            if self._types is None or now - self._types[0] > AGENT_TYPES_TTL:
                self._types = (now, sorted(local_agent_types(self.drivers)))
            return self._types[1]

    def heartbeat(self) -> dict[str, Any]:
        """Identity and liveness; `uptime` counts from the start of this agent."""
        return {
            "host": self.config.host_name,
            "boot_id": self.boot_id,
            "uptime": round(time.monotonic() - self._started, 3),
            "agent_version": __version__,
            "fence_agent_types": self.fence_agent_types(),
        }

    # ---- fence

    def select_driver(self, spec: AgentSpec, prefer_native: bool | None = None) -> FenceDriver | None:
        from hostpower.drivers.registry import select_driver

        if prefer_native is None:
            prefer_native = self.config.prefer_native
        return select_driver(spec, self.drivers, prefer_native)

    def fence(self, spec: AgentSpec, action: FenceAction, timeout: float,
              prefer_native: bool | None = None) -> FenceResult:
        """Run one action with the driver for its type; always returns a result.

        `prefer_native` is the engine's PreferNativeFenceDrivers, sent with each
        request so that every proxy follows the engine's configuration."""
        started = time.monotonic()

        def failed(message: str) -> FenceResult:
            return FenceResult(action, Outcome.ERROR, _scrub(message, spec),
                               duration=time.monotonic() - started)

        driver = self.select_driver(spec, prefer_native)
        if driver is None:
            return failed(f"no driver for agent type {spec.type} on this host")
        name = driver.name or type(driver).__name__
        try:
            # The pool bounds how many fence agents run at once; the wait is
            # bounded too, so a driver that breaks its timeout contract still
            # gets the engine an answer.
            future = self._pool.submit(driver.run, spec, action, timeout)
            result = future.result(timeout + DRIVER_GRACE)
        except DriverError as exc:  # the driver refused the spec; nothing was started
            return failed(str(exc))
        except concurrent.futures.TimeoutError:
            return failed(f"driver {name} did not return within {timeout + DRIVER_GRACE:g}s")
        except Exception as exc:  # a driver bug must still produce an answer
            return failed(f"driver {name} failed: {type(exc).__name__}: {exc}")
        if _scrub(result.message, spec) != result.message:
            result = FenceResult(result.action, result.outcome, _scrub(result.message, spec),
                                 result.exit_code, result.duration)
        return result

    def fence_request(self, body: bytes) -> tuple[int, dict[str, Any]]:
        """A /v1/fence request body in, (HTTP status, JSON answer) out."""
        try:
            data = json.loads(body)
        except (ValueError, UnicodeDecodeError):
            return 400, _error_body(ValidationError("body", "is not valid JSON"))
        try:
            spec, action, timeout = parse_fence_request(data)
        except ValidationError as exc:
            log.warning("fence refused host=%s: %s", self.config.host_name, exc)
            return 400, _error_body(exc)
        result = self.fence(spec, action, timeout, data.get("prefer_native"))
        log.info("fence host=%s type=%s action=%s outcome=%s duration=%.3fs",
                 self.config.host_name, spec.type, action.value, result.outcome.value,
                 result.duration)
        return 200, result.to_dict()

    def close(self) -> None:
        """Stop the worker pool; a fence run in progress finishes in the background."""
        self._pool.shutdown(wait=False, cancel_futures=True)
