"""The native Redfish driver: Redfish over HTTPS in-process with httpx.

Why: fence_redfish starts a Python process per command and authenticates
every request with the password (HTTP basic), which BMCs check slowly and
log one by one. Here one Redfish session per BMC (redfish_session.py) serves
every command, over one kept-open HTTPS connection.

It gives the same answers as fence_redfish (the power operations are in
redfish_power.py); which specs it takes is decided by redfish_options.py
(`validate`), the engine runs the others with the script driver.

Sessions, per (address, port, user name):
* opened at the first command, reused by every later one (never one per
  command: BMCs allow few sessions, and leaked ones exhaust them);
* logged out (DELETE) once unused for `session_idle_limit` seconds, by a
  reaper thread, and on `close()`; re-opened when the password or the TLS
  setting of the spec changes;
* a 401 on a pooled session (the BMC restarted) logs in again once per command.
The ComputerSystem is discovered once (or taken from `systems_uri`) and
cached per BMC.

A refused login is remembered for `auth_failure_hold` seconds for that user
and password: commands meanwhile answer the same error without asking the
BMC. BMCs lock an account after a few failed logins (often 3 to 5 within a
minute or so), and a locked account also locks out the right password; the
commands that would repeat a wrong password are the status polls of a flow,
the PM health check and the steps of a chain walk run by the same process.
Changing the password (a new spec) is tried at once.

Commands to one BMC are serialized; different BMCs run in parallel. Each
command runs in a worker thread, and `run` stops waiting at its timeout
(every request is also bounded by the command's deadline).
"""

from __future__ import annotations

import hashlib
import logging
import os
import threading
import time
from concurrent.futures import Future
from concurrent.futures import TimeoutError as FutureTimeout
from dataclasses import dataclass

from hostpower.drivers.base import FenceDriver
from hostpower.drivers.errors import UnsupportedSpec, UnsupportedType
from hostpower.drivers.redfish_options import (
    NATIVE_TYPES,
    REDFISH_PORT,
    RedfishSettings,
    redfish_settings,
    split_address,
)
from hostpower.drivers.redfish_power import discover_system, perform
from hostpower.drivers.redfish_session import (
    AuthFailed,
    RedfishFailure,
    RedfishSession,
    tls_verify,
)
from hostpower.model.power import AgentSpec, FenceAction, FenceResult, Outcome

log = logging.getLogger(__name__)

SESSION_IDLE_LIMIT = 60.0
AUTH_FAILURE_HOLD = 60.0


@dataclass(eq=False)
class _Bmc:
    """One BMC's session, its cached system, and the lock that serializes commands to it."""

    busy: threading.Lock
    session: RedfishSession | None = None
    credentials: tuple[bytes, bool] | None = None   # password digest, insecure
    systems: dict[str, str] | None = None           # redfish_uri -> discovered system URI
    last_used: float = 0.0
    logins: int = 0


class NativeRedfishDriver(FenceDriver):
    """Redfish via httpx, in-process, one pooled session per BMC.

    `ca_bundle`: the PEM file BMC certificates are verified against (the
    engine's RedfishCaBundle, a host agent's --redfish-ca-bundle); None or
    empty: the system trust store."""

    name = "native-redfish"
    native = True

    def __init__(self, ca_bundle: str | None = None, poll_interval: float = 0.25,
                 session_idle_limit: float = SESSION_IDLE_LIMIT,
                 auth_failure_hold: float = AUTH_FAILURE_HOLD) -> None:
        self.ca_bundle = ca_bundle or None
        self.poll_interval = poll_interval
        self.session_idle_limit = session_idle_limit
        self.auth_failure_hold = auth_failure_hold
        self._salt = os.urandom(16)
        self._bmcs: dict[tuple[str, int, str], _Bmc] = {}
        self._refused: dict[tuple[str, int, str, bytes], float] = {}
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._reaper: threading.Thread | None = None

    def agent_types(self) -> frozenset[str]:
        return NATIVE_TYPES

    def validate(self, spec: AgentSpec) -> None:
        self.settings(spec)

    def settings(self, spec: AgentSpec) -> RedfishSettings:
        """What this spec asks of the native path; UnsupportedSpec if it cannot honour it."""
        if spec.type not in NATIVE_TYPES:
            raise UnsupportedType(f"native Redfish cannot run this agent: agent type "
                                  f"{spec.type!r} is not Redfish")
        try:
            return redfish_settings(spec)
        except ValueError as exc:
            raise UnsupportedSpec(f"native Redfish cannot run this agent: {exc}") from None

    def logins(self, address: str, port: int = REDFISH_PORT, username: str = "") -> int:
        """Sessions this driver opened to that BMC (for diagnostics and tests)."""
        with self._lock:
            bmc = self._bmcs.get((address, port, username))
        return bmc.logins if bmc is not None else 0

    # -- running an action -------------------------------------------------------

    def run(self, spec: AgentSpec, action: FenceAction, timeout: float) -> FenceResult:
        """Run one action within `timeout`.

        UnsupportedSpec, and nothing sent, if `validate` refuses the spec."""
        action = FenceAction(action)
        started = time.monotonic()
        deadline = started + timeout
        settings = self.settings(spec)
        address = split_address(spec.address)[0]
        target = f"{address}:{settings.port}"
        digest = hashlib.sha256(self._salt + spec.password.reveal().encode("utf-8")).digest()
        refusal = self._recent_refusal((address, settings.port, spec.username, digest))
        if refusal is not None:
            return _result(action, Outcome.ERROR, started,
                           f"authentication failed for user {spec.username} at BMC {target} "
                           f"{refusal:.0f} s ago; not tried again for "
                           f"{self.auth_failure_hold:g} s unless the password changes")
        bmc = self._bmc((address, settings.port, spec.username))
        if not bmc.busy.acquire(timeout=max(0.0, timeout)):
            return _result(action, Outcome.ERROR, started,
                           f"BMC {target} still busy with a previous command after {timeout:g} s")
        done: Future[tuple[Outcome, str]] = Future()
        worker = threading.Thread(
            target=self._work, args=(bmc, spec, address, settings, digest, action, deadline, done),
            name=f"native-redfish-{target}", daemon=True)
        try:
            worker.start()
        except BaseException:
            bmc.busy.release()
            raise
        try:
            outcome, message = done.result(timeout=max(0.0, deadline - time.monotonic()))
        except FutureTimeout:
            outcome, message = Outcome.ERROR, f"BMC {target} did not answer within {timeout:g} s"
        return _result(action, outcome, started, message)

    def _work(self, bmc: _Bmc, spec: AgentSpec, address: str, settings: RedfishSettings,
              digest: bytes, action: FenceAction, deadline: float,
              done: Future[tuple[Outcome, str]]) -> None:
        """Worker thread: perform the action, then free the BMC for the next command."""
        target = f"{address}:{settings.port}"
        result = (Outcome.ERROR, f"BMC {target}: command interrupted")
        try:
            session = self._session(bmc, spec, address, settings, digest)
            session.begin_command()
            logins_before = session.logins
            try:
                system = self._system(bmc, session, settings, deadline)
                result = perform(session, system, action, settings, deadline, self.poll_interval)
            finally:
                bmc.logins += session.logins - logins_before
        except AuthFailed as exc:
            with self._lock:
                self._refused[(address, settings.port, spec.username, digest)] = time.monotonic()
            result = (Outcome.ERROR, str(exc))
        except RedfishFailure as exc:
            result = (Outcome.ERROR, str(exc))
        except Exception as exc:  # nothing may escape a driver
            log.exception("native Redfish: unexpected failure with BMC %s", target)
            self._drop(bmc)
            result = (Outcome.ERROR, f"BMC {target}: {type(exc).__name__}: {exc}")
        finally:
            bmc.last_used = time.monotonic()
            bmc.busy.release()
        done.set_result(result)

    def _session(self, bmc: _Bmc, spec: AgentSpec, address: str, settings: RedfishSettings,
                 digest: bytes) -> RedfishSession:
        """The BMC's session object (logged in lazily by its first request),
        replaced when the password or the TLS setting changed."""
        credentials = (digest, settings.insecure)
        if bmc.session is not None and bmc.credentials == credentials:
            return bmc.session
        self._drop(bmc)
        trust = ("nothing (ssl_insecure)" if settings.insecure
                 else f"CA bundle {self.ca_bundle}" if self.ca_bundle
                 else "the system trust store")
        host = f"[{address}]" if ":" in address else address
        bmc.session = RedfishSession(
            f"https://{host}:{settings.port}", f"{address}:{settings.port}", spec.username,
            spec.password, tls_verify(self.ca_bundle, settings.insecure), trust,
            settings.redfish_uri)
        bmc.credentials = credentials
        self._start_reaper()
        return bmc.session

    def _system(self, bmc: _Bmc, session: RedfishSession, settings: RedfishSettings,
                deadline: float) -> str:
        if settings.systems_uri:
            return settings.systems_uri
        systems = bmc.systems if bmc.systems is not None else {}
        if settings.redfish_uri not in systems:
            systems[settings.redfish_uri] = discover_system(session, settings, deadline)
            bmc.systems = systems
        return systems[settings.redfish_uri]

    def _recent_refusal(self, key: tuple[str, int, str, bytes]) -> float | None:
        """Seconds since this user and password were refused by this BMC, if recently."""
        now = time.monotonic()
        with self._lock:
            for old in [k for k, t in self._refused.items() if now - t >= self.auth_failure_hold]:
                del self._refused[old]
            refused = self._refused.get(key)
        return None if refused is None else now - refused

    def _bmc(self, key: tuple[str, int, str]) -> _Bmc:
        with self._lock:
            bmc = self._bmcs.get(key)
            if bmc is None:
                bmc = self._bmcs[key] = _Bmc(busy=threading.Lock())
            return bmc

    @staticmethod
    def _drop(bmc: _Bmc) -> None:
        """Log out and forget the BMC's session (the caller holds its lock)."""
        session, bmc.session, bmc.credentials = bmc.session, None, None
        if session is not None:
            session.close()

    # -- idle sessions and shutdown ------------------------------------------------

    def _start_reaper(self) -> None:
        with self._lock:
            if self._reaper is not None or self._stop.is_set():
                return
            self._reaper = threading.Thread(target=self._reap, name="native-redfish-reaper",
                                            daemon=True)
            self._reaper.start()

    def _reap(self) -> None:
        """Log out (and disconnect) sessions unused for the idle limit, until close()."""
        step = min(max(self.session_idle_limit / 4, 0.05), 5.0)
        while not self._stop.wait(step):
            now = time.monotonic()
            with self._lock:
                bmcs = list(self._bmcs.values())
            for bmc in bmcs:
                if bmc.session is None or not bmc.session.open:
                    continue
                if now - bmc.last_used < self.session_idle_limit:
                    continue
                if not bmc.busy.acquire(blocking=False):
                    continue  # in use: not idle
                try:
                    # Log out, and close the connection too: with many BMCs,
                    # idle ones should hold no socket.
                    self._drop(bmc)
                finally:
                    bmc.busy.release()

    def close(self) -> None:
        """Log out every session; a BMC still busy is left to finish on its own."""
        self._stop.set()
        with self._lock:
            bmcs = list(self._bmcs.values())
            self._bmcs.clear()
            reaper, self._reaper = self._reaper, None
        if reaper is not None:
            reaper.join(timeout=5)
        self._stop.clear()  # a command after close() opens a session, and reaps it, anew
        for bmc in bmcs:
            if not bmc.busy.acquire(timeout=1.0):
                continue
            try:
                self._drop(bmc)
            finally:
                bmc.busy.release()


def _result(action: FenceAction, outcome: Outcome, started: float, message: str) -> FenceResult:
    return FenceResult(action, outcome, message, duration=time.monotonic() - started)
