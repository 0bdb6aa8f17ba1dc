"""The engine's API served for real (uvicorn on a loopback port, in a thread
of the test process), for tests that need concurrency or a real client such
as schemathesis. Stopped by the test that starts it."""

from __future__ import annotations

import socket
import threading
from typing import Any

import httpx
import uvicorn

from helpers import wait_until
from hostpower.api.app import create_app
from hostpower.context import EngineContext
from hostpower.runtime import EngineRuntime
from hostpower.store.users import Users

ADMIN, ADMIN_PASSWORD = "root", "admin-password"


class ServedApp:
    """`with ServedApp(ctx) as app:` serves `create_app(ctx)` at `app.url`,
    on `port` when given (an engine whose membership names its address joins
    before it is served), else on a port the system picks."""

    def __init__(self, ctx: EngineContext, runtime: EngineRuntime | None = None,
                 port: int = 0) -> None:
        self.ctx = ctx
        self.url = ""
        self.port = port
        self._app = create_app(ctx, runtime)
        self._server: uvicorn.Server | None = None
        self._thread: threading.Thread | None = None

    def __enter__(self) -> "ServedApp":
        # Bound here, before uvicorn starts: no other process can take the port.
        self._socket = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self._socket.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._socket.bind(("127.0.0.1", self.port))
        self.url = f"http://127.0.0.1:{self._socket.getsockname()[1]}"
        self._server = uvicorn.Server(uvicorn.Config(self._app, log_level="warning",
                                                     lifespan="on"))
        self._thread = threading.Thread(target=self._server.run,
                                        kwargs={"sockets": [self._socket]}, daemon=True)
        self._thread.start()
        server = self._server
        wait_until(lambda: server.started or not self._thread.is_alive(), 30, "uvicorn to start")
        assert server.started, "the API server did not start"
        return self

    def __exit__(self, *exc: object) -> None:
        assert self._server is not None and self._thread is not None
        self._server.should_exit = True
        self._thread.join(30)
        self._socket.close()

    def admin_headers(self) -> dict[str, str]:
        """A bearer token of an admin (created on first use)."""
        with self.ctx.db.session() as s:
            users = Users(s)
            if not any(u.name == ADMIN for u in users.list()):
                users.add(ADMIN, "admin", ADMIN_PASSWORD)
        r = httpx.post(f"{self.url}/api/auth/token",
                       json={"username": ADMIN, "password": ADMIN_PASSWORD}, timeout=30)
        assert r.status_code == 200, r.text
        return {"Authorization": f"Bearer {r.json()['access_token']}"}

    def request(self, method: str, path: str, headers: dict[str, str],
                **kwargs: Any) -> httpx.Response:
        return httpx.request(method, f"{self.url}{path}", headers=headers, timeout=30, **kwargs)
