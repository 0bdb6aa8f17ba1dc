"""The host agent daemon: heartbeats and fence commands over mutual TLS.

Every managed host runs one. The engine heartbeats it to know the host is
alive, and sends it fence commands when the host serves as a proxy for
another host's PM device; it also asks it how another host's lease on the
shared storage looks (storagelease.py).

Security model, in order:
1. TLS with a client certificate required and the engine CA as the only
   trust anchor (`server_ssl_context`). OpenSSL also refuses client
   certificates whose extended key usage lacks clientAuth - agent
   certificates - so one agent cannot even finish a handshake with another.
2. `ClientGate` then checks that the client holds the *engine* role (see
   `pki.role_of`); any other CA-signed certificate gets 403 to every request.
3. Input is validated field by field; errors name the field, never echo a
   value. The password is never logged: there is no access log, and the one
   log line per fence command holds host, type, action, outcome, duration.

Why a thread per connection (stdlib socketserver + http.server) rather than
an asyncio server: asyncio's TLS server drops the TLS alert when it refuses
a client certificate (the connection is just closed), so a misconfigured
engine would only see "connection closed" and the agent could not log why.
A blocking handshake sends the alert and lets us log the reason. Before the
handshake nobody reaches the HTTP parser, and the engine keeps only a few
pooled connections per agent, so threads are cheap here. A fence run
occupies its connection's thread (and a worker of a bounded pool); other
connections, heartbeats included, are served meanwhile.

Its command line is daemon.py (``python -m hostpower.hostagent.daemon --bind
ADDR:PORT ...``); in tests, `AgentServer(HostAgent(...)).start()` runs one
in background threads of the current process.
"""

from __future__ import annotations

import ipaddress
import json
import logging
import os
import socket
import socketserver
import ssl
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler
from pathlib import Path
from typing import Any

from cryptography import x509

from hostpower import __version__
from hostpower.hostagent import pki
from hostpower.hostagent.agent import AgentStartError, HostAgent
from hostpower.hostagent.wire import (
    FENCE_PATH, HEARTBEAT_PATH, STORAGE_LEASE_PATH, error_body,
)

log = logging.getLogger("hostpower.hostagent")

MAX_BODY_BYTES = 64 * 1024
HANDSHAKE_TIMEOUT = 10.0
LINGER_SECONDS = 1.0
# An early answer (403, 404, 413, ...) first reads and drops a body up to
# this size, so that closing the connection does not reset it under the answer.
DRAIN_LIMIT = 1024 * 1024


def server_ssl_context(cert_file: str | Path, key_file: str | Path,
                       ca_file: str | Path) -> ssl.SSLContext:
    """TLS for the agent: its agent certificate; client certificates required, engine CA only."""
    own = x509.load_pem_x509_certificate(Path(cert_file).read_bytes())
    if pki.role_of(own) != pki.ROLE_AGENT:
        raise AgentStartError(f"{cert_file} is not an agent certificate "
                              f"(subject {own.subject.rfc4514_string()})")
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    ctx.load_cert_chain(str(cert_file), str(key_file))
    ctx.load_verify_locations(cafile=str(ca_file))  # the only trust anchor: no system CAs
    ctx.verify_mode = ssl.CERT_REQUIRED
    return ctx


# --------------------------------------------------------------------------- HTTP


class _Handler(BaseHTTPRequestHandler):
    """HTTP/1.1 with keep-alive on one authenticated TLS connection. JSON only."""

    protocol_version = "HTTP/1.1"
    # Answers go out in one write (_send), but requests may be answered in
    # parts elsewhere (send_error); with Nagle's algorithm a second part would
    # wait for the client's delayed ACK (40 ms on Linux).
    disable_nagle_algorithm = True
    server_version = f"hostpower-agent/{__version__}"
    sys_version = ""
    server: "_AgentHTTPServer"

    def __init__(self, request: Any, client_address: Any, server: "_AgentHTTPServer",
                 refusal: str | None = None) -> None:
        # Set before super().__init__, which serves the whole connection.
        self.refusal = refusal
        self.timeout = server.agent.config.keepalive_timeout
        super().__init__(request, client_address, server)

    def do_GET(self) -> None:
        if self._refused():
            return
        if self.path != HEARTBEAT_PATH:
            self._send(404, error_body(f"no such resource: {self.path[:100]}"))
            return
        agent = self.server.agent
        agent.faults.pass_through()
        self._send(200, agent.heartbeat().to_body())

    def do_POST(self) -> None:
        if self._refused():
            return
        agent = self.server.agent
        handlers = {FENCE_PATH: agent.fence_request,
                    STORAGE_LEASE_PATH: agent.storage_lease_request}
        handler = handlers.get(self.path)
        if handler is None:
            self._answer_early(404, error_body(f"no such resource: {self.path[:100]}"))
            return
        body = self._read_body()
        if body is None:
            return
        agent.faults.pass_through()
        status, answer = handler(body)
        self._send(status, answer)

    def _method_not_allowed(self) -> None:
        if self._refused():
            return
        self._answer_early(405, error_body(f"method {self.command} not allowed"))

    do_PUT = do_DELETE = do_PATCH = _method_not_allowed

    def _refused(self) -> bool:
        if self.refusal is None:
            return False
        self._answer_early(403, error_body(self.refusal))
        return True

    def _answer_early(self, status: int, payload: dict[str, Any]) -> None:
        """Answer without using the body, then close the connection."""
        self.close_connection = True
        try:
            left = int(self.headers.get("Content-Length", "0"))
        except ValueError:
            left = 0
        if 0 < left <= DRAIN_LIMIT:
            while left > 0:
                chunk = self.rfile.read(min(left, 65536))
                if not chunk:
                    break
                left -= len(chunk)
        self._send(status, payload)

    def _read_body(self) -> bytes | None:
        if "chunked" in self.headers.get("Transfer-Encoding", "").lower():
            self._answer_early(411, error_body("body: send a Content-Length", "body"))
            return None
        try:
            length = int(self.headers.get("Content-Length", "0"))
        except ValueError:
            length = -1
        if length < 0:
            self._answer_early(400, error_body("body: bad Content-Length", "body"))
            return None
        if length > MAX_BODY_BYTES:
            self._answer_early(413, error_body(f"body: larger than {MAX_BODY_BYTES} bytes",
                                               "body"))
            return None
        return self.rfile.read(length)

    def _send(self, status: int, payload: dict[str, Any]) -> None:
        body = json.dumps(payload).encode("utf-8")
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        if self.close_connection:
            self.send_header("Connection", "close")
        # end_headers() without its flush, then the body: the whole answer in
        # one write, one TLS record and one segment rather than two.
        if self.request_version == "HTTP/0.9":  # no headers to send (nor a buffer of them)
            self.wfile.write(body)
            return
        self._headers_buffer.append(b"\r\n")
        self._headers_buffer.append(body)
        self.flush_headers()

    # No access log: request lines are harmless, but an agent logs only what it decided.
    def log_request(self, code: int | str = "-", size: int | str = "-") -> None:
        pass

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - stdlib signature
        log.debug("http host=%s: %s", self.server.agent.config.host_name, format % args)


class ClientGate:
    """Who got in: counts TLS connections admitted and refused, and logs every refusal.

    The counters also let tests prove that the engine's client keeps its
    connections open (one admitted connection for many requests).
    """

    def __init__(self, host_name: str) -> None:
        self.host_name = host_name
        self.accepted = 0
        self.refused = 0
        self._lock = threading.Lock()

    def handshake_failed(self, peer: str, exc: BaseException) -> None:
        with self._lock:
            self.refused += 1
        reason = (getattr(exc, "verify_message", None) or getattr(exc, "reason", None)
                  or str(exc) or type(exc).__name__)
        log.warning("refused connection host=%s from %s: TLS handshake failed (%s)",
                    self.host_name, peer, reason)

    def check(self, peer: str, tls: ssl.SSLSocket) -> str | None:
        """None if the client is the engine, else why it is refused."""
        der = tls.getpeercert(binary_form=True)
        role = pki.role_of_der(der)
        with self._lock:
            if role == pki.ROLE_ENGINE:
                self.accepted += 1
                return None
            self.refused += 1
        refusal = (f"client certificate ({pki.describe_der(der)}) is not an engine certificate "
                   f"(role: {role or 'none'})")
        log.warning("refused connection host=%s from %s: %s", self.host_name, peer, refusal)
        return refusal


def _linger(sock: socket.socket) -> None:
    """Close after a refused handshake so that the client still reads our TLS alert.

    The client has usually sent its request already; closing a socket with
    unread data makes the kernel send a reset, which can destroy the alert
    before the client reads it. So: send FIN, read until the client closes
    (at most a second), then close.
    """
    # The TLS session is dead: talk to the TCP socket underneath it.
    try:
        socket.socket.shutdown(sock, socket.SHUT_WR)
        sock.settimeout(LINGER_SECONDS)
        deadline = time.monotonic() + LINGER_SECONDS
        while time.monotonic() < deadline and socket.socket.recv(sock, 4096):
            pass
    except OSError:
        pass


class _AgentHTTPServer(socketserver.ThreadingTCPServer):
    """Accepts TCP, then does the TLS handshake and the role check in the connection's thread."""

    daemon_threads = True
    block_on_close = False  # AgentServer.stop joins with a bound instead
    allow_reuse_address = True
    request_queue_size = 128

    def __init__(self, address: tuple[str, int], agent: HostAgent, context: ssl.SSLContext,
                 gate: ClientGate) -> None:
        self.address_family = (socket.AF_INET6 if ipaddress.ip_address(address[0]).version == 6
                               else socket.AF_INET)
        self.agent = agent
        self.context = context
        self.gate = gate
        self._lock = threading.Lock()
        self._open: dict[threading.Thread, socket.socket] = {}
        self.closing = False
        super().__init__(address, _Handler)

    def finish_request(self, request: socket.socket, client_address: Any) -> None:
        peer = str(client_address[0])
        me = threading.current_thread()
        with self._lock:
            if self.closing:
                return
            self._open[me] = request
        tls: ssl.SSLSocket | None = None
        try:
            request.settimeout(HANDSHAKE_TIMEOUT)
            tls = self.context.wrap_socket(request, server_side=True,
                                           do_handshake_on_connect=False)
            with self._lock:
                self._open[me] = tls
            try:
                tls.do_handshake()
            except (ssl.SSLError, OSError) as exc:
                self.gate.handshake_failed(peer, exc)
                _linger(tls)
                return
            refusal = self.gate.check(peer, tls)
            _Handler(tls, client_address, self, refusal)
        except (ConnectionError, TimeoutError, ssl.SSLError):
            pass  # the client went away; nothing to answer
        finally:
            with self._lock:  # forget it before closing, so wake_all never sees a reused fd
                self._open.pop(me, None)
            if tls is not None:
                tls.close()

    def wake_all(self) -> None:
        """Shut the read side of every open connection.

        Idle keep-alive connections then see end-of-file and end at once;
        a connection busy with a request still writes its answer, then ends.
        A duplicate descriptor is used so that the TLS layer is left alone.
        """
        with self._lock:
            self.closing = True
            for sock in self._open.values():
                try:
                    with socket.socket(fileno=os.dup(sock.fileno())) as dup:
                        dup.shutdown(socket.SHUT_RD)
                except OSError:
                    pass

    def open_threads(self) -> list[threading.Thread]:
        with self._lock:
            return list(self._open)

    def handle_error(self, request: Any, client_address: Any) -> None:
        exc = sys.exc_info()[1]
        log.error("agent host=%s: error serving %s: %s", self.agent.config.host_name,
                  client_address[0] if client_address else "?", type(exc).__name__)


class AgentServer:
    """Serves one HostAgent over mutual TLS in background threads of this process.

    Used by `run_agent` (the daemon), by tests and by the lab, which runs many
    agents in one process, each bound to its own 127.x.y.z address.
    """

    def __init__(self, agent: HostAgent, ssl_context: ssl.SSLContext | None = None,
                 bind_address: str | None = None, port: int | None = None) -> None:
        self.agent = agent
        self._bind_address = agent.config.bind_address if bind_address is None else bind_address
        self._port = agent.config.port if port is None else port
        self._ssl_context = ssl_context
        self.gate = ClientGate(agent.config.host_name)
        self._httpd: _AgentHTTPServer | None = None
        self._thread: threading.Thread | None = None
        self._stopped = False
        self.address: tuple[str, int] | None = None

    @property
    def running(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    @property
    def url(self) -> str:
        assert self.address is not None, "not started"
        host, port = self.address
        return f"https://[{host}]:{port}" if ":" in host else f"https://{host}:{port}"

    def start(self) -> "AgentServer":
        """Bind and serve; returns once the agent accepts connections."""
        if self._httpd is not None:
            raise AgentStartError("already started")
        config = self.agent.config
        try:
            context = self._ssl_context or server_ssl_context(
                config.cert_file, config.key_file, config.ca_file)
        except (OSError, ssl.SSLError, ValueError) as exc:
            raise AgentStartError(f"TLS setup from {config.cert_dir} failed: {exc}") from exc
        try:
            self._httpd = _AgentHTTPServer((self._bind_address, self._port), self.agent,
                                           context, self.gate)
        except (OSError, ValueError) as exc:
            raise AgentStartError(
                f"cannot listen on {self._bind_address}:{self._port}: {exc}") from exc
        # Listening from here on: the kernel queues connections until serve_forever runs.
        self.address = self._httpd.server_address[:2]
        self._thread = threading.Thread(target=self._httpd.serve_forever, kwargs={
            "poll_interval": 0.05}, daemon=True, name=f"hostagent-{config.host_name}")
        self._thread.start()
        log.info("agent host=%s listening on %s", config.host_name, self.url)
        return self

    def stop(self, timeout: float | None = None) -> bool:
        """Stop serving within `timeout` seconds; returns whether every thread ended.

        Held (hung) requests are released first; requests in progress may
        finish and answer; idle connections are closed.
        """
        if self._httpd is None or self._thread is None:
            return True
        if self._stopped:
            return not self._thread.is_alive() and not self._httpd.open_threads()
        self._stopped = True
        if timeout is None:
            timeout = self.agent.config.shutdown_grace
        deadline = time.monotonic() + timeout
        self.agent.faults.release()
        self._httpd.shutdown()      # the accept loop ends within its poll interval
        self._httpd.server_close()  # no new connections
        self._httpd.wake_all()
        self._thread.join(max(0.0, deadline - time.monotonic()))
        for thread in self._httpd.open_threads():
            thread.join(max(0.0, deadline - time.monotonic()))
        left = [t for t in self._httpd.open_threads() if t.is_alive()]
        stopped = not self._thread.is_alive() and not left
        if not stopped:
            log.error("agent host=%s: %d connection(s) still busy after %.1fs",
                      self.agent.config.host_name, len(left), timeout)
        return stopped

    def __enter__(self) -> "AgentServer":
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()
