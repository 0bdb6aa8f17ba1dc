"""The host agent itself: what it answers to a heartbeat and how it runs a
fence command, independent of how requests reach it (server.py).

Requests and answers are read and written with wire.py, which validates
input field by field; errors name the field, never echo a value. The
password is never logged: the one log line per fence command holds host,
type, action, outcome, duration.
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
from hostpower.drivers.base import FenceDriver
from hostpower.drivers.errors import DriverError, NoDriver
from hostpower.drivers.registry import driver_for, local_agent_types
from hostpower.hostagent import pki
from hostpower.hostagent.storagelease import DEFAULT_INTERVAL as DEFAULT_LEASE_INTERVAL
from hostpower.hostagent.storagelease import StorageLease
from hostpower.hostagent.wire import (
    FenceRequest, HeartbeatAnswer, StorageLeaseAnswer, StorageLeaseRequest, fence_answer,
    validation_error_body,
)
from hostpower.model.errors import HostpowerError, ValidationError
from hostpower.model.power import AgentSpec, FenceAction, FenceResult, Outcome

log = logging.getLogger("hostpower.hostagent")

DEFAULT_PORT = 54321
DEFAULT_CERT_DIR = Path("/etc/hostpower/agent")
DEFAULT_FENCE_AGENTS_PATH = "/usr/sbin"
# How long past its own timeout a driver may take before the agent gives up
# waiting for it and answers "error" (the driver thread is left to finish).
DRIVER_GRACE = 5.0
AGENT_TYPES_TTL = 60.0


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
    # The shared storage: renew this host's lease there and watch the others'
    # (storagelease.py). None: the host is on no shared storage.
    storage_lease_dir: Path | None = None
    storage_lease_interval: float = DEFAULT_LEASE_INTERVAL

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


def _scrub(text: str, spec: AgentSpec) -> str:
    """Belt and braces: a driver must not echo the password, but never let it through."""
    secret = spec.password.reveal()
    return text.replace(secret, "********") if secret else text


KERNEL_BOOT_ID = Path("/proc/sys/kernel/random/boot_id")


def kernel_boot_id(path: Path = KERNEL_BOOT_ID) -> str | None:
    """The kernel's id of this boot (Linux): the same for every agent process
    of one boot, so an agent restarted by its service manager (or by soft
    fencing) is not taken for a rebooted host; None where there is none."""
    try:
        return str(uuid.UUID(path.read_text().strip()))
    except (OSError, ValueError):
        return None


class HostAgent:
    """What the agent does, independent of HTTP and TLS (`AgentServer` serves it)."""

    def __init__(self, config: AgentConfig, drivers: Sequence[FenceDriver]) -> None:
        self.config = config
        self.drivers = list(drivers)
        self.boot_id = config.boot_id or kernel_boot_id() or str(uuid.uuid4())
        self.faults = Faults()
        self._started = time.monotonic()
        self._pool = concurrent.futures.ThreadPoolExecutor(
            max_workers=config.max_parallel_fence, thread_name_prefix=f"fence-{config.host_name}")
        self._types_lock = threading.Lock()
        self._types: tuple[float, frozenset[str]] | None = None
        # Renewing starts with the agent and stops with it (close(), or the process's end).
        self.storage_lease = (None if config.storage_lease_dir is None else StorageLease(
            Path(config.storage_lease_dir), config.host_name, self.boot_id,
            config.storage_lease_interval).start())

    # ---- heartbeat

    def fence_agent_types(self) -> frozenset[str]:
        """Agent types this host can run; cached, it only changes when packages are installed."""
        with self._types_lock:
            now = time.monotonic()
            if self._types is None or now - self._types[0] > AGENT_TYPES_TTL:
                self._types = (now, local_agent_types(self.drivers))
            return self._types[1]

    def heartbeat(self) -> HeartbeatAnswer:
        """Identity and liveness; `uptime` counts from the start of this agent."""
        return HeartbeatAnswer(host=self.config.host_name, boot_id=self.boot_id,
                               uptime=time.monotonic() - self._started,
                               agent_version=__version__,
                               fence_agent_types=self.fence_agent_types())

    # ---- fence

    def fence(self, spec: AgentSpec, action: FenceAction, timeout: float,
              prefer_native: bool | None = None) -> FenceResult:
        """Run one action with the driver for its type; always returns a result.

        `prefer_native` is the engine's PreferNativeFenceDrivers, sent with each
        request so that every proxy follows the engine's configuration."""
        started = time.monotonic()

        def failed(message: str) -> FenceResult:
            return FenceResult(action, Outcome.ERROR, _scrub(message, spec),
                               duration=time.monotonic() - started)

        if prefer_native is None:
            prefer_native = self.config.prefer_native
        try:
            driver = driver_for(spec, self.drivers, prefer_native)
        except NoDriver as exc:
            return failed(exc.describe(f"no driver for agent type {spec.type} on this host"))
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
        """A fence request body in, (HTTP status, JSON answer) out."""
        try:
            data = json.loads(body)
        except (ValueError, UnicodeDecodeError):
            return 400, validation_error_body(ValidationError("body", "is not valid JSON"))
        try:
            request = FenceRequest.from_body(data)
        except ValidationError as exc:
            log.warning("fence refused host=%s: %s", self.config.host_name, exc)
            return 400, validation_error_body(exc)
        spec, action = request.spec, request.action
        result = self.fence(spec, action, request.timeout, request.prefer_native)
        log.info("fence host=%s type=%s action=%s outcome=%s duration=%.3fs",
                 self.config.host_name, spec.type, action.value, result.outcome.value,
                 result.duration)
        return 200, fence_answer(result)

    # ---- storage lease

    def storage_lease_request(self, body: bytes) -> tuple[int, dict[str, Any]]:
        """A storage lease request body in, (HTTP status, JSON answer) out."""
        try:
            request = StorageLeaseRequest.from_body(json.loads(body))
        except (ValueError, UnicodeDecodeError):
            return 400, validation_error_body(ValidationError("body", "is not valid JSON"))
        except ValidationError as exc:
            return 400, validation_error_body(exc)
        if self.storage_lease is None:
            answer = StorageLeaseAnswer(request.host, False,
                                        detail="this host is on no shared storage")
        else:
            answer = self.storage_lease.observe(request.host)
        log.debug("storage lease of host=%s asked: watching=%s exists=%s renewed_ago=%s "
                  "watched_for=%.1fs", request.host, answer.watching, answer.exists,
                  "-" if answer.renewed_ago is None else f"{answer.renewed_ago:.1f}s",
                  answer.watched_for)
        return 200, answer.to_body()

    def close(self) -> None:
        """Stop renewing the storage lease and the worker pool; a fence run in
        progress finishes in the background."""
        if self.storage_lease is not None:
            self.storage_lease.stop()
        self._pool.shutdown(wait=False, cancel_futures=True)
