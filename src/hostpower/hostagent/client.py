"""The engine's client for host agents: heartbeats, fence commands and storage
lease questions over mutual TLS.

Why it looks like this:
* Two lean channels of minimal HTTP/1.1 on asyncio transports, no HTTP
  library: heartbeats on one persistent connection per agent (heartbeat.py),
  fence commands and storage lease questions on a small pool of connections
  per agent (commandchannel.py). Connections stay open between calls (a TLS
  handshake per call would dominate its cost), and a hung agent can only
  exhaust its own pool: a call to another agent never waits behind it.
  httpx, used before, cost about 1 ms of engine CPU per fence command.
* Every call has a hard deadline (`asyncio.timeout`) over all its phases
  (waiting for a free connection, connecting, the answer), so a slow agent
  costs exactly its own timeout.
* The agent's certificate is checked against the engine CA (the only trust
  anchor) and against the address used to reach it (hostname/IP SAN), and it
  must be an agent certificate: OpenSSL refuses server certificates whose
  extended key usage lacks serverAuth, which excludes engine certificates.
* Every failure becomes one of a few typed errors. The distinction matters
  to fencing: `AgentUnreachable` means the command certainly did not reach
  the agent (safe to try another proxy at once); `AgentTimeout` means it
  may have been delivered and may still be running.
* No message ever contains the device password.
"""

from __future__ import annotations

import json
import os
import ssl
import time
from dataclasses import dataclass
from typing import Any

from hostpower.hostagent.commandchannel import CommandChannel
from hostpower.hostagent.errors import (
    AgentError, AgentProtocolError, AgentTimeout, AgentTLSError, AgentUnreachable,
)
from hostpower.hostagent.heartbeat import HeartbeatChannel
from hostpower.hostagent.wire import (
    FENCE_PATH, HEARTBEAT_PATH, STORAGE_LEASE_PATH, FenceRequest, HeartbeatAnswer,
    StorageLeaseAnswer, StorageLeaseRequest, read_error_body, read_fence_answer,
)
from hostpower.model.power import AgentSpec, FenceAction, FenceResult


@dataclass(frozen=True)
class Heartbeat(HeartbeatAnswer):
    """An agent's answer to a heartbeat, and how long the round trip took."""

    round_trip: float


# --------------------------------------------------------------------------- the client


def client_ssl_context(ca_pem_path: str | os.PathLike[str],
                       engine_cert_path: str | os.PathLike[str],
                       engine_key_path: str | os.PathLike[str]) -> ssl.SSLContext:
    """TLS for the engine: present the engine certificate, trust only the engine CA."""
    ctx = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=os.fspath(ca_pem_path))
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    ctx.check_hostname = True  # the agent's certificate must name the address we dialled
    ctx.verify_mode = ssl.CERT_REQUIRED
    ctx.load_cert_chain(os.fspath(engine_cert_path), os.fspath(engine_key_path))
    return ctx


class AgentClient:
    """Async client for many host agents, one connection pool per agent endpoint.

    Use from one event loop; call `aclose()` (or use `async with`) when done.
    Constructing it reads the certificate files and raises OSError or
    ssl.SSLError if they are missing or do not match.
    """

    def __init__(self, ca_pem_path: str | os.PathLike[str],
                 engine_cert_path: str | os.PathLike[str],
                 engine_key_path: str | os.PathLike[str],
                 connect_timeout: float = 5.0, *,
                 max_connections_per_agent: int = 4,
                 keepalive_expiry: float = 30.0,
                 fence_margin: float = 7.0) -> None:
        """`fence_margin`: extra seconds granted past a fence command's own timeout for
        the agent to report (it allows its driver 5 s of grace itself)."""
        self._ssl = client_ssl_context(ca_pem_path, engine_cert_path, engine_key_path)
        self._heartbeats = HeartbeatChannel(self._ssl, connect_timeout)
        self.connect_timeout = connect_timeout
        self.fence_margin = fence_margin
        self._commands = CommandChannel(self._ssl, connect_timeout, max_connections_per_agent,
                                        keepalive_expiry)
        self._closed = False

    # ---- public calls

    async def heartbeat(self, address: str, port: int, timeout: float) -> Heartbeat:
        """Ask one agent whether it is alive; raises an AgentError subclass if not."""
        if self._closed:
            raise RuntimeError("AgentClient is closed")
        started = time.monotonic()
        data = await self._heartbeats.get(address, port, HEARTBEAT_PATH, timeout)
        round_trip = time.monotonic() - started
        try:
            answer = HeartbeatAnswer.from_body(data)
        except ValueError as exc:
            raise AgentProtocolError(f"malformed heartbeat answer ({exc})", address, port) \
                from None
        return Heartbeat(**vars(answer), round_trip=round_trip)

    async def fence(self, address: str, port: int, spec: AgentSpec, action: FenceAction,
                    timeout: float, prefer_native: bool | None = None) -> FenceResult:
        """Have the agent run one fence action; the device's answer is in the result.

        A device failure is a FenceResult with outcome ERROR, not an exception;
        exceptions mean the agent itself could not be used.
        """
        body = FenceRequest(spec, FenceAction(action), timeout, prefer_native).to_body()
        data = await self._call("POST", address, port, FENCE_PATH, timeout + self.fence_margin,
                                body=body, secret=spec.password.reveal())
        try:
            return read_fence_answer(data)
        except ValueError as exc:
            raise AgentProtocolError(
                _scrub(f"malformed fence answer ({exc})", spec.password.reveal()),
                address, port) from None

    async def storage_lease(self, address: str, port: int, host: str,
                            timeout: float) -> StorageLeaseAnswer:
        """Ask one agent what it saw of `host`'s lease on the shared storage."""
        data = await self._call("POST", address, port, STORAGE_LEASE_PATH, timeout,
                                body=StorageLeaseRequest(host).to_body())
        try:
            return StorageLeaseAnswer.from_body(data)
        except ValueError as exc:
            raise AgentProtocolError(f"malformed storage lease answer ({exc})", address, port) \
                from None

    async def forget(self, address: str, port: int) -> None:
        """Close the pooled connections to one agent (e.g. its host was removed)."""
        self._heartbeats.forget(address, port)
        self._commands.forget(address, port)

    async def aclose(self) -> None:
        self._closed = True
        self._heartbeats.close()
        self._commands.close()

    async def __aenter__(self) -> "AgentClient":
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()

    # ---- plumbing

    async def _call(self, method: str, address: str, port: int, path: str, deadline: float,
                    body: dict[str, Any] | None = None, secret: str = "") -> dict[str, Any]:
        """One request with a hard deadline; returns the JSON object of a 200 answer."""
        if self._closed:
            raise RuntimeError("AgentClient is closed")
        assert method == "POST", method  # GET (heartbeats) has its own channel
        payload = json.dumps(body).encode("utf-8")
        try:
            # The channel bounds every phase (a free connection, connecting, the
            # answer) by the one deadline: a hard bound that names the phase.
            status, raw = await self._commands.post(address, port, path, payload, deadline)
        except AgentError as exc:
            if secret and secret in exc.reason:
                raise type(exc)(_scrub(exc.reason, secret), address, port) from None
            raise

        if status != 200:
            detail, field = _error_detail(raw, status)
            if status == 400:
                message = f"refused the request: {detail}"
            else:
                message = f"answered HTTP {status}: {detail}"
            raise AgentProtocolError(_scrub(message, secret), address, port,
                                     status=status, field=field)
        try:
            data = json.loads(raw)
        except ValueError:
            raise AgentProtocolError("answer is not JSON", address, port, status=status) from None
        if not isinstance(data, dict):
            raise AgentProtocolError("answer is not a JSON object", address, port, status=status)
        return data


def _error_detail(raw: bytes, status: int) -> tuple[str, str | None]:
    """The agent's own error text and field (wire.error_body), or a trimmed raw body."""
    try:
        data = json.loads(raw)
    except ValueError:
        return raw[:200].decode("utf-8", "replace").strip() or f"HTTP {status}", None
    refusal = read_error_body(data)
    if refusal is not None:
        detail, field = refusal
        return detail[:500], field
    return str(data)[:200], None


__all__ = ["AgentClient", "Heartbeat", "client_ssl_context", "AgentError", "AgentProtocolError",
           "AgentTimeout", "AgentTLSError", "AgentUnreachable"]  # the errors: for callers


def _scrub(text: str, secret: str) -> str:
    return text.replace(secret, "********") if secret else text
