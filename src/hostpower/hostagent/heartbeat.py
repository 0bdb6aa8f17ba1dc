"""The heartbeat channel: one persistent mutual-TLS connection per agent and
a minimal HTTP/1.1 exchange on it, for the one request the engine sends to
every host every few seconds.

httpx costs about ten times the CPU of the exchange itself; at 10,000 hosts
that is the difference between a fraction of a core and two cores. Fence
commands and storage lease questions use the same exchange and `connect` on
a pool of connections per agent (commandchannel.py). Same TLS context, same
certificate checks, same error classes.
"""

from __future__ import annotations

import asyncio
import json
import socket
import ssl
from typing import Any

from hostpower.hostagent.errors import (
    AgentError, AgentProtocolError, AgentTimeout, AgentTLSError, AgentUnreachable,
    connect_reason, describe_ssl_error, find_ssl_error,
)
from hostpower.hostagent.wire import read_error_body

MAX_ANSWER = 64 * 1024


class _Exchange(asyncio.Protocol):
    """One connection; at most one request in flight (the monitor asks one at a time)."""

    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self.buffer = bytearray()
        self.waiter: asyncio.Future[tuple[int, bytes]] | None = None
        self.lost: BaseException | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        if len(self.buffer) > MAX_ANSWER:
            self._fail(ValueError("answer too large"))
            return
        end = self.buffer.find(b"\r\n\r\n")
        if end < 0:
            return
        head = bytes(self.buffer[:end]).decode("latin-1").split("\r\n")
        try:
            status = int(head[0].split(" ", 2)[1])
            headers = dict(line.split(":", 1) for line in head[1:] if ":" in line)
            length = int(next(v for k, v in headers.items() if k.strip().lower() == "content-length"))
        except (IndexError, ValueError, StopIteration):
            self._fail(ValueError("malformed HTTP answer"))
            return
        if len(self.buffer) < end + 4 + length:
            return
        body = bytes(self.buffer[end + 4:end + 4 + length])
        del self.buffer[:end + 4 + length]
        if self.waiter is not None and not self.waiter.done():
            self.waiter.set_result((status, body))

    def connection_lost(self, exc: BaseException | None) -> None:
        self.lost = exc or ConnectionResetError("the agent closed the connection")
        if self.waiter is not None and not self.waiter.done():
            self.waiter.set_exception(self.lost)

    def _fail(self, exc: BaseException) -> None:
        if self.waiter is not None and not self.waiter.done():
            self.waiter.set_exception(exc)
        if self.transport is not None:
            self.transport.abort()

    @property
    def usable(self) -> bool:
        return self.lost is None and self.transport is not None and not self.transport.is_closing()


class HeartbeatChannel:
    def __init__(self, ssl_context: ssl.SSLContext, connect_timeout: float) -> None:
        self._ssl = ssl_context
        self.connect_timeout = connect_timeout
        self._conns: dict[tuple[str, int], _Exchange] = {}

    async def get(self, address: str, port: int, path: str, timeout: float) -> dict[str, Any]:
        """GET path from the agent; the JSON object of a 200 answer, else an AgentError."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        key = (address, port)
        conn = self._conns.get(key)
        if conn is None or not conn.usable:
            conn = await self._connect(address, port, min(self.connect_timeout, timeout))
            self._conns[key] = conn
        host = f"[{address}]" if ":" in address else address
        conn.waiter = loop.create_future()
        assert conn.transport is not None
        conn.transport.write(f"GET {path} HTTP/1.1\r\nHost: {host}:{port}\r\n"
                             f"Accept: application/json\r\nUser-Agent: hostpower-engine\r\n\r\n"
                             .encode())
        try:
            async with asyncio.timeout(max(0.0, deadline - loop.time())):
                status, body = await conn.waiter
        except TimeoutError:
            self._drop(key, conn)  # a late answer would be taken for the next one
            raise AgentTimeout(f"no answer within {timeout:g}s", address, port) from None
        except ssl.SSLError as exc:
            self._drop(key, conn)
            raise AgentTLSError(describe_ssl_error(exc), address, port) from None
        except (OSError, ValueError) as exc:
            self._drop(key, conn)
            raise AgentProtocolError(f"connection failed mid-answer: {connect_reason(exc)}",
                                     address, port) from None
        try:
            data = json.loads(body)
        except ValueError:
            raise AgentProtocolError("answer is not JSON", address, port, status=status) from None
        if status != 200:
            refusal = read_error_body(data)
            detail = refusal[0] if refusal is not None else ""
            raise AgentProtocolError(f"answered HTTP {status}: {detail}", address, port,
                                     status=status)
        if not isinstance(data, dict):
            raise AgentProtocolError("answer is not a JSON object", address, port, status=status)
        return data

    async def _connect(self, address: str, port: int, timeout: float) -> _Exchange:
        return await connect(self._ssl, address, port, timeout)

    def forget(self, address: str, port: int) -> None:
        conn = self._conns.pop((address, port), None)
        if conn is not None and conn.transport is not None:
            conn.transport.abort()

    def close(self) -> None:
        for key in list(self._conns):
            self.forget(*key)

    def _drop(self, key: tuple[str, int], conn: _Exchange) -> None:
        if self._conns.get(key) is conn:
            del self._conns[key]
        if conn.transport is not None:
            conn.transport.abort()


__all__ = ["HeartbeatChannel", "AgentError", "connect"]


async def connect(ssl_context: ssl.SSLContext, address: str, port: int, timeout: float,
                  handshake_timeout: type[AgentError] = AgentTimeout) -> _Exchange:
    """TCP first, then TLS, so that a hung agent (the kernel accepts, the
    process never answers) is told apart from an unreachable one.
    `handshake_timeout`: the error for a TLS handshake that did not finish in
    time (nothing was sent yet; a fence command's channel calls that
    unreachable, as httpx did)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    family = socket.AF_INET6 if ":" in address else socket.AF_INET
    # IPPROTO_TCP named: asyncio then turns Nagle's algorithm off (a request
    # written in parts is not held back waiting for the agent's delayed ACK).
    sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.setblocking(False)
    try:
        async with asyncio.timeout(timeout):
            await loop.sock_connect(sock, (address, port))
    except TimeoutError:
        sock.close()
        raise AgentUnreachable(f"no connection within {timeout:g}s", address, port) from None
    except OSError as exc:
        sock.close()
        raise AgentUnreachable(f"cannot connect: {connect_reason(exc)}", address, port) from None
    left = max(0.001, deadline - loop.time())
    made: list[_Exchange] = []

    def exchange() -> _Exchange:
        made.append(_Exchange())
        return made[-1]
    try:
        async with asyncio.timeout(left):
            _, conn = await loop.create_connection(
                exchange, sock=sock, ssl=ssl_context, server_hostname=address,
                ssl_handshake_timeout=left)
    except TimeoutError:
        _discard(sock, made)
        raise handshake_timeout(f"connected, but no TLS handshake within {timeout:g}s",
                                address, port) from None
    except (OSError, ssl.SSLError) as exc:
        _discard(sock, made)
        ssl_error = find_ssl_error(exc)
        if ssl_error is not None:
            raise AgentTLSError(describe_ssl_error(ssl_error), address, port) from None
        raise AgentProtocolError(f"connection failed during the TLS handshake: "
                                 f"{connect_reason(exc)}", address, port) from None
    return conn


def _discard(sock: socket.socket, made: list[_Exchange]) -> None:
    """Let go of a connection attempt that failed or ran out of time. When the
    handshake had just completed, a live transport owns the socket: abort it
    (it closes the socket). Closing the socket under it would free its file
    descriptor while asyncio still maps that number to the transport, and the
    next connection given the same number would fail ("is used by transport")."""
    live = [p.transport for p in made if p.transport is not None]
    for transport in live:
        transport.abort()
    if not live:
        sock.close()
