"""The engine's client for host agents: heartbeats, fence commands and storage
lease questions over mutual TLS.

Why it looks like this:
* One pooled `httpx.AsyncClient` per agent endpoint. Connections stay open
  between heartbeats (a TLS handshake per heartbeat would dominate its cost),
  and a hung agent can only exhaust its own pool: a call to another agent
  never waits behind it.
* Every call has a hard deadline (`asyncio.timeout`) besides httpx's
  per-phase timeouts, so a slow agent costs exactly its own timeout.
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

import asyncio
import os
import ssl
import time
from dataclasses import dataclass
from typing import Any

import httpx

from hostpower.hostagent.errors import (
    AgentError, AgentProtocolError, AgentTimeout, AgentTLSError, AgentUnreachable,
    connect_reason as _connect_reason, describe_ssl_error as _describe_ssl_error,
    endpoint as _endpoint, find_ssl_error as _find_ssl_error,
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
        self._limits = httpx.Limits(max_connections=max_connections_per_agent,
                                    max_keepalive_connections=max_connections_per_agent,
                                    keepalive_expiry=keepalive_expiry)
        self._clients: dict[tuple[str, int], httpx.AsyncClient] = {}
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
        client = self._clients.pop((address, port), None)
        if client is not None:
            await client.aclose()

    async def aclose(self) -> None:
        self._closed = True
        self._heartbeats.close()
        clients, self._clients = list(self._clients.values()), {}
        for client in clients:
            await client.aclose()

    async def __aenter__(self) -> "AgentClient":
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()

    # ---- plumbing

    def _client_for(self, address: str, port: int) -> httpx.AsyncClient:
        if self._closed:
            raise RuntimeError("AgentClient is closed")
        key = (address, port)
        client = self._clients.get(key)
        if client is None:
            client = httpx.AsyncClient(
                base_url=f"https://{_endpoint(address, port)}",
                verify=self._ssl,
                limits=self._limits,
                trust_env=False,  # never route engine-agent traffic through an HTTP proxy
                follow_redirects=False,
            )
            self._clients[key] = client
        return client

    async def _call(self, method: str, address: str, port: int, path: str, deadline: float,
                    body: dict[str, Any] | None = None, secret: str = "") -> dict[str, Any]:
        """One request with a hard deadline; returns the JSON object of a 200 answer."""
        client = self._client_for(address, port)
        timeouts = httpx.Timeout(deadline, connect=min(self.connect_timeout, deadline))
        try:
            async with asyncio.timeout(deadline):
                response = await client.request(method, path, json=body, timeout=timeouts)
        except TimeoutError:
            raise AgentTimeout(f"no answer within {deadline:g}s", address, port) from None
        except (httpx.HTTPError, OSError) as exc:
            # OSError: httpx lets some errors of the TLS layer through unwrapped,
            # e.g. the agent's alert when it refuses our certificate.
            raise self._map_error(exc, address, port, deadline, secret) from None

        if response.status_code != 200:
            detail, field = _error_detail(response)
            if response.status_code == 400:
                message = f"refused the request: {detail}"
            else:
                message = f"answered HTTP {response.status_code}: {detail}"
            raise AgentProtocolError(_scrub(message, secret), address, port,
                                     status=response.status_code, field=field)
        try:
            data = response.json()
        except ValueError:
            raise AgentProtocolError("answer is not JSON", address, port,
                                     status=response.status_code) from None
        if not isinstance(data, dict):
            raise AgentProtocolError("answer is not a JSON object", address, port,
                                     status=response.status_code)
        return data

    def _map_error(self, exc: httpx.HTTPError | OSError, address: str, port: int,
                   deadline: float, secret: str) -> AgentError:
        ssl_error = _find_ssl_error(exc)
        if ssl_error is not None:
            return AgentTLSError(_scrub(_describe_ssl_error(ssl_error), secret), address, port)
        if isinstance(exc, httpx.ConnectTimeout):
            return AgentUnreachable(
                f"no connection within {min(self.connect_timeout, deadline):g}s", address, port)
        if isinstance(exc, httpx.ConnectError):
            return AgentUnreachable(f"cannot connect: {_connect_reason(exc)}", address, port)
        if isinstance(exc, httpx.PoolTimeout):
            return AgentTimeout(f"every connection to it stayed busy for {deadline:g}s",
                                address, port)
        if isinstance(exc, httpx.TimeoutException):
            return AgentTimeout(f"no answer within {deadline:g}s", address, port)
        if isinstance(exc, (httpx.RemoteProtocolError, httpx.ReadError, httpx.WriteError,
                            OSError)):
            return AgentProtocolError("connection closed without an answer", address, port)
        return AgentProtocolError(_scrub(f"{type(exc).__name__}: {exc}", secret), address, port)


def _error_detail(response: httpx.Response) -> tuple[str, str | None]:
    """The agent's own error text and field (wire.error_body), or a trimmed raw body."""
    try:
        data = response.json()
    except ValueError:
        return response.text[:200].strip() or response.reason_phrase, None
    refusal = read_error_body(data)
    if refusal is not None:
        detail, field = refusal
        return detail[:500], field
    return str(data)[:200], None


def _scrub(text: str, secret: str) -> str:
    return text.replace(secret, "********") if secret else text
