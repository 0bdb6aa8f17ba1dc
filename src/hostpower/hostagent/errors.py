"""Why the engine got no answer from a host agent: one hierarchy for every
channel (client.py for fence commands, heartbeat.py for heartbeats)."""

from __future__ import annotations

import os
import ssl
from collections.abc import Iterator

from hostpower.model.errors import HostpowerError


def endpoint(address: str, port: int) -> str:
    return f"[{address}]:{port}" if ":" in address else f"{address}:{port}"


class AgentError(HostpowerError):
    """Any failure to get an answer from a host agent."""

    def __init__(self, message: str, address: str, port: int) -> None:
        super().__init__(f"agent {endpoint(address, port)}: {message}")
        self.address = address
        self.port = port
        self.reason = message


class AgentUnreachable(AgentError):
    """No connection could be made: refused, no route, or connect timed out. Nothing was sent."""


class AgentTimeout(AgentError):
    """Connected, but no complete answer in time. The command may have been delivered."""


class AgentTLSError(AgentError):
    """The TLS handshake failed: untrusted or mismatched agent certificate, or we were refused."""


class AgentProtocolError(AgentError):
    """The agent answered, but not as expected: an HTTP error, a refused request, bad JSON."""

    def __init__(self, message: str, address: str, port: int, status: int | None = None,
                 field: str | None = None) -> None:
        super().__init__(message, address, port)
        self.status = status
        self.field = field



def causes(exc: BaseException) -> Iterator[BaseException]:
    """The exception and the ones it wraps, outermost first (httpx wraps two levels deep)."""
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        yield current
        current = current.__cause__ or current.__context__


def find_ssl_error(exc: BaseException) -> ssl.SSLError | None:
    return next((e for e in causes(exc) if isinstance(e, ssl.SSLError)), None)


def connect_reason(exc: BaseException) -> str:
    """The system's word for a failed connect ("Connection refused"), not httpx's summary."""
    errnos = [e.errno for e in causes(exc) if isinstance(e, OSError) and e.errno]
    return os.strerror(errnos[-1]) if errnos else (str(exc) or type(exc).__name__)


def describe_ssl_error(err: ssl.SSLError) -> str:
    if isinstance(err, ssl.SSLCertVerificationError) and err.verify_message:
        return f"agent certificate rejected: {err.verify_message}"
    reason = err.reason or str(err)
    if "alert" in str(reason).lower():
        return f"the agent refused our TLS handshake ({reason}); is the engine certificate " \
               f"issued by the agent's CA?"
    return f"TLS error: {reason}"
