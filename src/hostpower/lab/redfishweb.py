"""HTTPS for a virtual Redfish BMC (redfish.py): sushy-tools' emulator app
with the lab's system driver, the session layer around it, and the server.

The emulator's modules configure a module-level Flask app at import, so one
process serves one BMC (redfishserver.py).
"""

from __future__ import annotations

import json
import ssl
from collections.abc import Callable
from pathlib import Path
from typing import Any

from sushy_tools import error as sushy_error
from sushy_tools.emulator import auth_basic
from sushy_tools.emulator import main as emulator
from sushy_tools.emulator.resources.systems import fakedriver
from werkzeug.serving import ThreadedWSGIServer, WSGIRequestHandler

from hostpower.lab.redfish import RedfishBmc, Session, SessionLimit

SESSIONS = "/redfish/v1/SessionService/Sessions"
# An open connection idle this long is closed (clients reconnect).
KEEPALIVE_IDLE = 30.0
HANDSHAKE_TIMEOUT = 10.0


class _Dropped(ConnectionError):
    """The request was held and its connection closed: nothing to answer
    (a ConnectionError, which the HTTP server takes quietly)."""


# -- the emulator's system driver, replaced ------------------------------------------------


class LabSystems(fakedriver.FakeDriver):
    """sushy's fake driver with the power state kept by the lab's RedfishBmc
    (applied after the configured delay, reported, counted) instead of
    applied after a random delay on the next read."""

    bmc: RedfishBmc  # set by make_app before the emulator first asks for its driver

    def get_power_state(self, identity: str) -> str:
        self._get(identity)  # 404 for another system
        self.bmc.count("status")
        return "On" if self.bmc.power == "on" else "Off"

    def set_power_state(self, identity: str, state: str) -> None:
        self._get(identity)
        self.bmc.reset(state)


def make_app(bmc: RedfishBmc) -> SessionLayer:
    """The emulator's app (one per process: a module-level Flask app) with
    one fake system, the lab's driver, and the session layer around it."""
    LabSystems.bmc = bmc
    fakedriver.FakeDriver = LabSystems  # the name the emulator looks up for its fake driver
    emulator.app.configure(extra_config={
        "SUSHY_EMULATOR_FAKE_DRIVER": True,
        "SUSHY_EMULATOR_FAKE_SYSTEMS": [{
            "uuid": bmc.system, "name": bmc.name, "power_state": "On",
            "nics": [{"mac": "52:54:00:00:00:01", "ip": "192.0.2.1"}]}],
        "SUSHY_EMULATOR_AUTH_FILE": bmc.auth_file,
        # The emulator keeps state in SQLite files, by default under /tmp
        # shared by every emulator of the machine: this BMC's are its own.
        "SUSHY_EMULATOR_STATE_DIR": bmc.state_dir,
    })
    # The emulator checks basic auth itself (RedfishAuthMiddleware, added by
    # configure); the session layer goes around it and lets a session's
    # requests past it.
    return SessionLayer(emulator.app.wsgi_app, emulator.app.wsgi_app.app, bmc)


def _json(start_response: Callable[..., Any], status: str, body: Any,
          headers: list[tuple[str, str]] | None = None) -> list[bytes]:
    data = json.dumps(body).encode() if body is not None else b""
    start_response(status, [("Content-Type", "application/json"),
                            ("Content-Length", str(len(data))), ("OData-Version", "4.0"),
                            *(headers or [])])
    return [data]


def _error(code: str, message: str) -> dict[str, Any]:
    return {"error": {"code": f"Base.1.0.{code}", "message": message,
                      "@Message.ExtendedInfo": [{"MessageId": f"Base.1.0.{code}",
                                                 "Message": message}]}}


def _session_body(s: Session) -> dict[str, Any]:
    return {"@odata.id": f"{SESSIONS}/{s.id}", "@odata.type": "#Session.v1_0_0.Session",
            "Id": s.id, "Name": "User Session", "UserName": s.username}


class SessionLayer:
    """The SessionService the emulator lacks, and the faults, around its app.

    `authed_app` is the emulator behind its basic-auth middleware,
    `inner_app` the emulator itself (for requests carrying a session token).
    """

    def __init__(self, authed_app: Callable[..., Any], inner_app: Callable[..., Any],
                 bmc: RedfishBmc) -> None:
        self.authed_app = authed_app
        self.inner_app = inner_app
        self.bmc = bmc

    def __call__(self, environ: dict[str, Any], start_response: Callable[..., Any]) -> Any:
        bmc = self.bmc
        if not bmc.answering:
            bmc.hold(environ["werkzeug.socket"])
            raise _Dropped()
        environ["wsgi.url_scheme"] = "https"
        path = "/" + environ.get("PATH_INFO", "").strip("/")
        method = environ.get("REQUEST_METHOD", "GET")
        if path == "/redfish/v1":
            return self._root(environ, start_response)
        if path == SESSIONS and method == "POST":
            return self._login(environ, start_response)
        token = environ.get("HTTP_X_AUTH_TOKEN")
        if token is not None:
            session = bmc.session_of(token)
            if session is None:
                bmc.count("refused")
                return _json(start_response, "401 Unauthorized",
                             _error("NoValidSession", "no valid session for this token"))
            environ.pop("HTTP_AUTHORIZATION", None)
            environ["HTTP_X_USER"] = environ["HTTP_X_USER_NAME"] = session.username
            app = self.inner_app
        else:
            app = self.authed_app
        if path.startswith("/redfish/v1/SessionService"):
            return self._session_service(environ, start_response, path, method,
                                         authed=token is not None)
        return self._counting_refusals(app, environ, start_response)

    def _counting_refusals(self, app: Callable[..., Any], environ: dict[str, Any],
                           start_response: Callable[..., Any]) -> Any:
        def start(status: str, headers: list[tuple[str, str]], exc_info: Any = None) -> Any:
            if status.startswith("401"):
                self.bmc.count("refused")
            return start_response(status, headers, exc_info)
        return app(environ, start)

    def _root(self, environ: dict[str, Any], start_response: Callable[..., Any]) -> Any:
        captured: dict[str, Any] = {}

        def start(status: str, headers: list[tuple[str, str]], exc_info: Any = None) -> Any:
            captured["status"] = status
            return lambda data: None

        body = b"".join(self.inner_app(environ, start))
        root = json.loads(body)
        root["SessionService"] = {"@odata.id": "/redfish/v1/SessionService"}
        root["Links"] = {**root.get("Links", {}), "Sessions": {"@odata.id": SESSIONS}}
        return _json(start_response, captured["status"], root)

    def _login(self, environ: dict[str, Any], start_response: Callable[..., Any]) -> Any:
        try:
            length = int(environ.get("CONTENT_LENGTH") or 0)
            body = json.loads(environ["wsgi.input"].read(length) or b"{}")
            username, password = str(body["UserName"]), str(body["Password"])
        except (ValueError, KeyError, TypeError):
            return _json(start_response, "400 Bad Request",
                         _error("PropertyMissing", "UserName and Password are required"))
        try:
            session = self.bmc.login(username, password)
        except SessionLimit as exc:
            return _json(start_response, "503 Service Unavailable",
                         _error("SessionLimitExceeded", str(exc)))
        if session is None:
            return _json(start_response, "401 Unauthorized",
                         _error("NoValidSession", "Incorrect username or password"))
        return _json(start_response, "201 Created", _session_body(session),
                     [("X-Auth-Token", session.token),
                      ("Location", f"{SESSIONS}/{session.id}")])

    def _session_service(self, environ: dict[str, Any], start_response: Callable[..., Any],
                         path: str, method: str, authed: bool) -> Any:
        if not authed:
            # Basic auth: checked by the emulator's own middleware code.
            try:
                token = auth_basic.parse_header(dict(environ))
                username, password = auth_basic.parse_token(token)
                auth_basic.authenticate(self.bmc.auth_file, username, password)
            except sushy_error.FishyError as exc:
                self.bmc.count("refused")
                return _json(start_response, "401 Unauthorized", _error("NoValidSession",
                                                                         str(exc)),
                             [("WWW-Authenticate", 'Basic realm="Redfish"')])
        if path == "/redfish/v1/SessionService" and method == "GET":
            return _json(start_response, "200 OK", {
                "@odata.id": "/redfish/v1/SessionService",
                "@odata.type": "#SessionService.v1_1_8.SessionService",
                "Id": "SessionService", "Name": "Session Service", "ServiceEnabled": True,
                "SessionTimeout": int(self.bmc.session_timeout),
                "Sessions": {"@odata.id": SESSIONS}})
        if path == SESSIONS and method == "GET":
            members = [{"@odata.id": f"{SESSIONS}/{s.id}"} for s in self.bmc.sessions()]
            return _json(start_response, "200 OK", {
                "@odata.id": SESSIONS, "@odata.type": "#SessionCollection.SessionCollection",
                "Name": "Session Collection", "Members": members,
                "Members@odata.count": len(members)})
        if path.startswith(SESSIONS + "/"):
            session_id = path[len(SESSIONS) + 1:]
            if method == "DELETE":
                if self.bmc.logout(session_id):
                    return _json(start_response, "204 No Content", None)
            elif method == "GET":
                for s in self.bmc.sessions():
                    if s.id == session_id:
                        return _json(start_response, "200 OK", _session_body(s))
            else:
                return _json(start_response, "405 Method Not Allowed",
                             _error("ActionNotSupported", f"{method} of a session"))
            return _json(start_response, "404 Not Found",
                         _error("ResourceMissingAtURI", f"no session {session_id}"))
        return _json(start_response, "405 Method Not Allowed",
                     _error("ActionNotSupported", f"{method} {path}"))


# -- HTTPS --------------------------------------------------------------------------------------


class _Handler(WSGIRequestHandler):
    timeout = KEEPALIVE_IDLE  # read timeout of a kept-alive connection

    def log_request(self, *args: Any, **kwargs: Any) -> None:
        pass  # counts and events say what was asked


class RedfishServer(ThreadedWSGIServer):
    """HTTPS on (address, port). TLS is set up in each connection's thread,
    not in the accept loop, so a connection to a BMC that does not answer can
    be held without a handshake."""

    daemon_threads = True

    def __init__(self, address: str, port: int, bmc: RedfishBmc, cert: Path, key: Path) -> None:
        super().__init__(address, port, make_app(bmc), handler=_Handler)
        self.bmc = bmc
        self.tls = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        self.tls.minimum_version = ssl.TLSVersion.TLSv1_2
        self.tls.load_cert_chain(cert, key)

    def process_request_thread(self, request: Any, client_address: Any) -> None:
        conn: ssl.SSLSocket | None = None
        try:
            if not self.bmc.answering:
                self.bmc.hold(request)
                return
            request.settimeout(HANDSHAKE_TIMEOUT)
            conn = self.tls.wrap_socket(request, server_side=True)
            self.bmc.track(conn, True)
            self.RequestHandlerClass(conn, client_address, self)
        except (OSError, _Dropped):
            pass
        finally:
            if conn is not None:
                self.bmc.track(conn, False)
                conn.close()
            request.close()
