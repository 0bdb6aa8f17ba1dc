"""The command channel: fence commands and storage lease questions to host
agents, as minimal HTTP/1.1 POSTs on pooled mutual-TLS connections.

It replaced httpx for these calls (issue 15): httpx cost about 1 ms of
engine CPU per command against a lab agent, most of a proxied command's
overhead outside the BMC, and a restart sends five. The exchange itself is
heartbeat.py's (same TLS context, same certificate checks, same connect);
what this adds is a bounded pool per agent, because fence commands to one
agent may run side by side while heartbeats go one at a time:
* at most `max_connections` connections per agent; a call that finds them
  all busy waits for one within its own deadline, so a hung agent can only
  exhaust its own pool;
* an idle connection is reused only while the agent has not closed it and
  it was used less than `keepalive_expiry` seconds ago (shorter than the
  agent's own keep-alive, so the engine retires it, not a race with the agent);
* a connection whose call did not end with a whole 200 answer (timeout,
  cancellation, error, a refusal after which the agent closes) is aborted,
  never reused: a late answer would be taken for the next call's;
* an idle connection the agent has closed is noticed before it is reused
  (it is readable), even when the event loop has not yet seen its end.
"""

from __future__ import annotations

import asyncio
import select
import ssl
from collections import deque
import time
from dataclasses import dataclass, field

from hostpower.hostagent.errors import (
    AgentProtocolError, AgentTimeout, AgentTLSError, AgentUnreachable, describe_ssl_error,
    find_ssl_error,
)
from hostpower.hostagent.heartbeat import _Exchange, connect


@dataclass
class _Pool:
    idle: list[tuple[_Exchange, float]] = field(default_factory=list)  # (connection, last used)
    busy: int = 0
    waiters: deque[asyncio.Future[None]] = field(default_factory=deque)  # calls awaiting a slot
    retired: bool = False  # forgotten: connections coming back are closed, not kept

    def wake_one(self) -> None:
        while self.waiters:
            waiter = self.waiters.popleft()
            if not waiter.done():
                waiter.set_result(None)
                return


class CommandChannel:
    """POST a JSON body to an agent; (HTTP status, body bytes) of its answer, else an AgentError."""

    def __init__(self, ssl_context: ssl.SSLContext, connect_timeout: float,
                 max_connections: int, keepalive_expiry: float) -> None:
        self._ssl = ssl_context
        self.connect_timeout = connect_timeout
        self.max_connections = max_connections
        self.keepalive_expiry = keepalive_expiry
        self._pools: dict[tuple[str, int], _Pool] = {}

    async def post(self, address: str, port: int, path: str, body: bytes,
                   deadline: float) -> tuple[int, bytes]:
        loop = asyncio.get_running_loop()
        ends = loop.time() + deadline
        key = (address, port)
        pool = self._pools.get(key)
        if pool is None:
            pool = self._pools[key] = _Pool()
        conn = await self._acquire(pool, address, port, deadline, ends)
        host = f"[{address}]" if ":" in address else address
        head = (f"POST {path} HTTP/1.1\r\nHost: {host}:{port}\r\n"
                f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n"
                f"Accept: application/json\r\nUser-Agent: hostpower-engine\r\n\r\n").encode()
        done = False
        try:
            conn.waiter = loop.create_future()
            assert conn.transport is not None
            conn.transport.write(head + body)
            try:
                async with asyncio.timeout(max(0.0, ends - loop.time())):
                    answer = await conn.waiter
            except TimeoutError:
                raise AgentTimeout(f"no answer within {deadline:g}s", address, port) from None
            except ValueError as exc:  # _Exchange: malformed or oversized answer
                raise AgentProtocolError(f"bad HTTP answer: {exc}", address, port) from None
            except OSError as exc:  # ssl.SSLError included: the agent's alert, e.g.
                ssl_error = find_ssl_error(exc)
                if ssl_error is not None:
                    raise AgentTLSError(describe_ssl_error(ssl_error), address, port) from None
                raise AgentProtocolError("connection closed without an answer", address,
                                         port) from None
            # Reuse only after a 200: the agent closes the connection after its
            # early refusals (403, 404, 413, ...), and its FIN may not be read yet.
            done = answer[0] == 200
            return answer
        finally:
            conn.waiter = None
            self._release(pool, conn, reuse=done)

    async def _acquire(self, pool: _Pool, address: str, port: int, deadline: float,
                       ends: float) -> _Exchange:
        loop = asyncio.get_running_loop()
        now = time.monotonic()
        while pool.idle:
            conn, used = pool.idle.pop()
            if conn.usable and now - used < self.keepalive_expiry and not _stale(conn):
                pool.busy += 1
                return conn
            _abort(conn)
        if pool.busy >= self.max_connections:
            waiter = loop.create_future()
            pool.waiters.append(waiter)
            try:
                async with asyncio.timeout(max(0.0, ends - loop.time())):
                    await waiter
            except TimeoutError:
                raise AgentTimeout(f"every connection to it stayed busy for {deadline:g}s",
                                   address, port) from None
            except BaseException:
                if waiter.done() and not waiter.cancelled():
                    pool.wake_one()  # woken but leaving: pass the slot on
                raise
            return await self._acquire(pool, address, port, deadline, ends)
        pool.busy += 1
        try:
            return await connect(self._ssl, address, port,
                                 max(0.001, min(self.connect_timeout, ends - loop.time())),
                                 handshake_timeout=AgentUnreachable)
        except BaseException:
            pool.busy -= 1
            pool.wake_one()
            raise

    def _release(self, pool: _Pool, conn: _Exchange, reuse: bool) -> None:
        pool.busy -= 1
        if reuse and conn.usable and not pool.retired:
            pool.idle.append((conn, time.monotonic()))
        else:
            _abort(conn)
        pool.wake_one()

    def forget(self, address: str, port: int) -> None:
        """Close the idle connections to one agent; busy ones end with their calls."""
        pool = self._pools.pop((address, port), None)
        if pool is not None:
            pool.retired = True
            for conn, _ in pool.idle:
                _abort(conn)
            pool.idle.clear()

    def close(self) -> None:
        for key in list(self._pools):
            self.forget(*key)


def _stale(conn: _Exchange) -> bool:
    """An idle connection with something to read has been closed by the agent
    (or carries bytes nobody asked for), though the loop may not have seen it
    yet, e.g. the agent just restarted: a command sent on it would be lost."""
    sock = conn.transport.get_extra_info("socket") if conn.transport is not None else None
    if sock is None:
        return True
    try:
        readable, _, _ = select.select([sock.fileno()], [], [], 0)
    except (OSError, ValueError):
        return True
    return bool(readable)


def _abort(conn: _Exchange) -> None:
    if conn.transport is not None:
        conn.transport.abort()


__all__ = ["CommandChannel"]
