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

This module holds the BMC's state and behaviour (`RedfishBmc`);
redfishweb.py serves it: the emulator's app, the session layer, HTTPS. Run
by the lab supervisor as `python -m hostpower.lab.redfishserver`.
"""

from __future__ import annotations

import secrets
import socket
import tempfile
import threading
import time
import uuid
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

import bcrypt
from sushy_tools import error as sushy_error
from sushy_tools.emulator import auth_basic

# bcrypt's lowest cost: the emulator checks the htpasswd file on every
# request with basic auth (FIELD-NOTES: the default cost makes each slow).
HTPASSWD_COST = 4
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
class Session:
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
        self._sessions: dict[str, Session] = {}
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

    def login(self, username: str, password: str) -> Session | None:
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
            session = Session(uuid.uuid4().hex[:16], secrets.token_hex(16), username,
                               time.monotonic())
            self._sessions[session.token] = session
        self.count("login")
        return session

    def session_of(self, token: str) -> Session | None:
        with self._lock:
            self._expire()
            session = self._sessions.get(token)
            if session is not None:
                session.last_used = time.monotonic()
            return session

    def sessions(self) -> list[Session]:
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


def _shut(sock: socket.socket) -> None:
    try:
        sock.shutdown(socket.SHUT_RDWR)
    except OSError:
        pass
