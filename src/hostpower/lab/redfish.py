"""A virtual Redfish BMC: sushy-tools' emulator with its fake driver, one
ComputerSystem, served over HTTPS, with what the emulator lacks added around it.

sushy-tools (PyPI) answers the Redfish resources (service root, Systems,
Managers, the ComputerSystem.Reset action) and checks HTTP basic
authentication against an htpasswd file. What it does not do, and a real BMC
does, is done here:

* Sessions. The emulator has no SessionService: `SessionLayer` (a WSGI layer
  around the emulator's app) adds `/redfish/v1/SessionService` and its
  Sessions collection: POST {UserName, Password} creates a session (201,
  `X-Auth-Token` and `Location` headers), DELETE of the session logs out,
  any request with a valid `X-Auth-Token` is let through. Sessions expire
  after `session_timeout` idle seconds and at most `max_sessions` exist at
  once (then a login is refused with 503 SessionLimitExceeded), as on real
  BMCs, so a client that leaks sessions runs out of them here too.
* Power. The fake driver applies a power change 1 to 11 s (at random) after
  the request; `LabSystems` replaces it in this process: the change is
  applied after `power_delay` seconds (default 0) and reported, so the
  lab's supervisor makes the simulated host follow it.
* Faults. Not answering (every new connection held without a TLS handshake,
  every request on an open connection held, then dropped), and a restart of
  the BMC (every session forgotten, every connection closed, power kept).
* Counts of what was asked (`RedfishCounters`).

Run by the lab supervisor as `python -m hostpower.lab.redfishserver`.
"""

from __future__ import annotations

import json
import secrets
import socket
import ssl
import tempfile
import threading
import time
import uuid
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import bcrypt

# The emulator's modules configure a Flask app at import: import them only here.
from sushy_tools import error as sushy_error
from sushy_tools.emulator import auth_basic
from sushy_tools.emulator import main as emulator
from sushy_tools.emulator.resources.systems import fakedriver
from werkzeug.serving import ThreadedWSGIServer, WSGIRequestHandler

SESSIONS = "/redfish/v1/SessionService/Sessions"
# bcrypt's lowest cost: the emulator checks the htpasswd file on every
# request with basic auth (FIELD-NOTES: the default cost makes each slow).
HTPASSWD_COST = 4
# An open connection idle this long is closed (clients reconnect).
KEEPALIVE_IDLE = 30.0
HANDSHAKE_TIMEOUT = 10.0
# A request to a BMC that does not answer is held at most this long, then dropped.
HOLD_LIMIT = 300.0

Emit = Callable[..., None]


@dataclass(frozen=True)
class RedfishCounters:
    status: int = 0    # GET of the ComputerSystem (its PowerState)
    on: int = 0        # Reset: On, ForceOn
    off: int = 0       # Reset: ForceOff, GracefulShutdown, PushPowerButton while on
    reset: int = 0     # Reset: ForceRestart, GracefulRestart, PowerCycle, Nmi, ...
    login: int = 0     # sessions created
    logout: int = 0    # sessions deleted by a client
    refused: int = 0   # requests answered 401 (bad or missing credentials, unknown token)
    dropped: int = 0   # connections or requests held and dropped while not answering


COMMANDS = tuple(RedfishCounters.__dataclass_fields__)


@dataclass
class _Session:
    id: str
    token: str
    username: str
    last_used: float


class RedfishBmc:
    """One BMC's state: power, sessions, counters, the answering switch."""

    def __init__(self, name: str, system: str, username: str, password: str,
                 power: str = "on", power_delay: float = 0.0, max_sessions: int = 8,
                 session_timeout: float = 600.0, emit: Emit = lambda **e: None) -> None:
        self.name = name
        self.system = system
        self.username = username
        self.power_delay = power_delay
        self.max_sessions = max_sessions
        self.session_timeout = session_timeout
        self.emit = emit
        self._lock = threading.Lock()
        self._changed = threading.Condition(self._lock)
        self._power = power
        self._counts = dict.fromkeys(COMMANDS, 0)
        self._sessions: dict[str, _Session] = {}
        self._connections: set[socket.socket] = set()
        self.answering = True
        self.stopping = False
        self.restarts = 0
        self._dir = tempfile.TemporaryDirectory(prefix="hostpower-redfish-")
        self.state_dir = self._dir.name
        self.auth_file = str(Path(self._dir.name) / "htpasswd")
        digest = bcrypt.hashpw(password.encode(), bcrypt.gensalt(HTPASSWD_COST)).decode()
        Path(self.auth_file).write_text(f"{username}:{digest}\n")
        Path(self.auth_file).chmod(0o600)

    def close(self) -> None:
        with self._lock:
            self.stopping = True
            self._changed.notify_all()
        self._dir.cleanup()

    # -- observation ------------------------------------------------------------

    @property
    def power(self) -> str:
        with self._lock:
            return self._power

    def counters(self) -> RedfishCounters:
        with self._lock:
            return RedfishCounters(**self._counts)

    def session_count(self) -> int:
        with self._lock:
            self._expire()
            return len(self._sessions)

    def count(self, command: str) -> None:
        with self._lock:
            self._counts[command] += 1
        self.emit(event="command", command=command)

    # -- power ------------------------------------------------------------------------

    def reset(self, reset_type: str) -> None:
        """A ComputerSystem.Reset action (raises sushy's NotSupportedError for
        a type the emulator does not list)."""
        current = self.power
        if reset_type in ("On", "ForceOn"):
            command, changes = "on", ["on"]
        elif reset_type in ("ForceOff", "GracefulShutdown"):
            command, changes = "off", ["off"]
        elif reset_type == "PushPowerButton":
            command, changes = ("off", ["off"]) if current == "on" else ("on", ["on"])
        elif reset_type in ("ForceRestart", "GracefulRestart", "PowerCycle"):
            # As the emulator does: a restart of a server that is off turns it on.
            command, changes = "reset", ["off", "on"]
        elif reset_type == "Nmi":
            command, changes = "reset", []
        else:
            raise sushy_error.NotSupportedError(f"Power state {reset_type} is not supported")
        self.count(command)
        if self.power_delay > 0:
            timer = threading.Timer(self.power_delay, self._apply, args=(changes,))
            timer.daemon = True
            timer.start()
        else:
            self._apply(changes)

    def hand(self, power: str) -> None:
        """A hand on the power button: no request, nothing counted."""
        self._apply([power])

    def _apply(self, changes: Iterable[str]) -> None:
        for state in changes:
            with self._lock:
                if self.stopping or self._power == state:
                    continue
                self._power = state
            self.emit(event="power", power=state)

    # -- sessions -----------------------------------------------------------------------

    def login(self, username: str, password: str) -> _Session | None:
        """A new session, or None when the credentials are wrong (counted as refused).
        Raises SessionLimit when every session slot is taken."""
        try:
            auth_basic.authenticate(self.auth_file, username, password.encode())
        except sushy_error.FishyError:
            self.count("refused")
            return None
        with self._lock:
            self._expire()
            if len(self._sessions) >= self.max_sessions:
                raise SessionLimit(self.max_sessions)
            session = _Session(uuid.uuid4().hex[:16], secrets.token_hex(16), username,
                               time.monotonic())
            self._sessions[session.token] = session
        self.count("login")
        return session

    def session_of(self, token: str) -> _Session | None:
        with self._lock:
            self._expire()
            session = self._sessions.get(token)
            if session is not None:
                session.last_used = time.monotonic()
            return session

    def sessions(self) -> list[_Session]:
        with self._lock:
            self._expire()
            return list(self._sessions.values())

    def logout(self, session_id: str) -> bool:
        with self._lock:
            token = next((t for t, s in self._sessions.items() if s.id == session_id), None)
            if token is None:
                return False
            del self._sessions[token]
        self.count("logout")
        return True

    def _expire(self) -> None:
        now = time.monotonic()
        for token, s in list(self._sessions.items()):
            if now - s.last_used > self.session_timeout:
                del self._sessions[token]

    # -- faults -------------------------------------------------------------------------------

    def set_answering(self, answering: bool) -> None:
        with self._lock:
            self.answering = answering
            self._changed.notify_all()

    def restart(self) -> None:
        """The BMC's firmware restarted: sessions forgotten, connections closed, power kept."""
        with self._lock:
            self._sessions.clear()
            connections = list(self._connections)
            self.restarts += 1
        for conn in connections:
            _shut(conn)

    def hold(self, sock: socket.socket) -> None:
        """A dead BMC: the connection (or request) gets no answer until the
        fault is cleared (or HOLD_LIMIT), then it is dropped."""
        self.count("dropped")
        deadline = time.monotonic() + HOLD_LIMIT
        with self._lock:
            while not self.answering and not self.stopping and time.monotonic() < deadline:
                self._changed.wait(0.5)
        _shut(sock)

    def track(self, conn: socket.socket, open_: bool) -> None:
        with self._lock:
            if open_:
                self._connections.add(conn)
            else:
                self._connections.discard(conn)


class SessionLimit(Exception):
    def __init__(self, limit: int) -> None:
        super().__init__(f"at most {limit} sessions")


class _Dropped(ConnectionError):
    """The request was held and its connection closed: nothing to answer
    (a ConnectionError, which the HTTP server takes quietly)."""


def _shut(sock: socket.socket) -> None:
    try:
        sock.shutdown(socket.SHUT_RDWR)
    except OSError:
        pass


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


def _session_body(s: _Session) -> dict[str, Any]:
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
