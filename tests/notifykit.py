"""Real receivers for the notification tests, and deliverers to run beside them.

* `WebhookReceiver`: an HTTP(S) server on 127.0.0.1 (a free port) that checks
  each request's signature like a real receiver would, records it, and can
  answer 500 to the first N requests or hang every request until released.
* `SmtpReceiver`: aiosmtpd's SMTP server on 127.0.0.1, recording each mail.
* `DelivererThread`: a `notify.deliverer.Deliverer` on an event loop of its
  own thread (what an engine runs), with its own database connections.
* Run as a program (`python tests/notifykit.py DB_URL HOME NAME`), a
  deliverer in a process of its own: the test that kills an engine mid
  delivery kills that process.

Every server and thread is stopped by the test that starts it.
"""

from __future__ import annotations

import asyncio
import json
import ssl
import sys
import threading
import time
from collections.abc import Coroutine
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, TypeVar

from hostpower.model.notification import (
    EVENT_HEADER, SIGNATURE_HEADER, TIMESTAMP_HEADER, verify,
)

T = TypeVar("T")
HANG_LIMIT = 120.0   # a hanging request is answered at the latest after this


@dataclass
class Received:
    """One request as the receiver saw it."""

    at: float
    headers: dict[str, str]
    body: bytes
    signed: bool              # the signature verified with the receiver's key
    status: int = 0           # what the receiver answered (0: it hung, then dropped)

    @property
    def event(self) -> dict[str, Any]:
        return json.loads(self.body)


@dataclass
class WebhookReceiver:
    key: str
    fail_first: int = 0               # answer 500 to this many requests first
    answer_status: int = 0            # answer this status to every request (0: 200)
    tls: tuple[Path, Path] | None = None   # (certificate, key): serve HTTPS
    received: list[Received] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.lock = threading.Lock()
        self.hanging = threading.Event()   # set: every request hangs until released
        self.release = threading.Event()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_POST(self) -> None:  # noqa: N802 (http.server's name)
                body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
                headers = {k.lower(): v for k, v in self.headers.items()}
                signed = verify(receiver.key, headers.get(TIMESTAMP_HEADER.lower(), ""), body,
                                headers.get(SIGNATURE_HEADER.lower(), ""), time.time())
                got = Received(time.time(), headers, body, signed)
                with receiver.lock:
                    receiver.received.append(got)
                    failing = len(receiver.received) <= receiver.fail_first
                if receiver.hanging.is_set():
                    receiver.release.wait(HANG_LIMIT)
                    self.close_connection = True
                    return  # no answer at all: the sender times out
                got.status = (401 if not signed else 500 if failing
                              else receiver.answer_status or 200)
                self.send_response(got.status)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        if self.tls is not None:
            context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
            context.load_cert_chain(str(self.tls[0]), str(self.tls[1]))
            self.server.socket = context.wrap_socket(self.server.socket, server_side=True)
        scheme = "https" if self.tls else "http"
        self.url = f"{scheme}://127.0.0.1:{self.server.server_address[1]}/hook"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def __enter__(self) -> "WebhookReceiver":
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.release.set()
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(10)

    def delivered(self) -> list[Received]:
        """Requests answered 200 (signed, not failed on purpose)."""
        with self.lock:
            return [r for r in self.received if r.status == 200]

    def delivered_ids(self) -> list[int]:
        return [r.event["id"] for r in self.delivered()]

    def event_header(self, r: Received) -> str:
        return r.headers[EVENT_HEADER.lower()]


class SmtpReceiver:
    """aiosmtpd on 127.0.0.1; `messages` holds each mail received (parsed).
    With `login=(user, password)` it requires that login (over TLS), and
    `logins` records every login tried (user, whether it was right)."""

    def __init__(self, login: tuple[str, str] | None = None, **controller: Any) -> None:
        from aiosmtpd.controller import Controller

        from helpers import free_port

        self.messages: list[Any] = []
        self.envelopes: list[tuple[str, list[str]]] = []
        receiver = self

        class Handler:
            async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:  # noqa: N802
                from email import message_from_bytes
                from email.policy import default

                receiver.messages.append(message_from_bytes(envelope.content, policy=default))
                receiver.envelopes.append((envelope.mail_from, list(envelope.rcpt_tos)))
                return "250 OK"

        self.logins: list[tuple[str, bool]] = []
        if login is not None:
            from aiosmtpd.smtp import AuthResult, LoginPassword

            def authenticate(server: Any, session: Any, envelope: Any, mechanism: str,
                             data: Any) -> AuthResult:
                if not isinstance(data, LoginPassword):
                    return AuthResult(success=False, handled=False)
                user, right = data.login.decode(), (data.login.decode(),
                                                     data.password.decode()) == login
                self.logins.append((user, right))
                return AuthResult(success=right)

            controller.update(authenticator=authenticate, auth_required=True)
        self.port = free_port()
        self.controller = Controller(Handler(), hostname="127.0.0.1", port=self.port,
                                     **controller)

    def __enter__(self) -> "SmtpReceiver":
        self.controller.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.controller.stop()


class DelivererThread:
    """A Deliverer of engine `name` on its own event loop and database connections."""

    def __init__(self, db_url: str, home: Path, name: str, poll: float = 0.2) -> None:
        from hostpower.context import EngineContext
        from hostpower.notify.deliverer import Deliverer
        from hostpower.settings import Settings

        self.ctx = EngineContext.open(Settings(home=home, db_url=db_url))
        self.deliverer = Deliverer(self.ctx.db, self.ctx.box, name, poll=poll)
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)

    def __enter__(self) -> "DelivererThread":
        self.thread.start()
        self.call(self._start())
        return self

    async def _start(self) -> None:
        self.deliverer.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def stop(self) -> None:
        if not self.thread.is_alive():
            return
        self.call(self.deliverer.stop())
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)
        self.loop.close()
        self.ctx.close()

    def call(self, coro: Coroutine[Any, Any, T], timeout: float = 60) -> T:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)


async def _serve(db_url: str, home: str, name: str) -> None:
    from hostpower.context import EngineContext
    from hostpower.notify.deliverer import Deliverer
    from hostpower.settings import Settings

    ctx = EngineContext.open(Settings(home=Path(home), db_url=db_url))
    deliverer = Deliverer(ctx.db, ctx.box, name, poll=0.2)
    deliverer.start()
    print("delivering", flush=True)
    await asyncio.Event().wait()   # until killed


if __name__ == "__main__":
    asyncio.run(_serve(*sys.argv[1:4]))
