"""The native IPMI driver: IPMI 2.0 (RMCP+) in-process with pyghmi.

Why: spawning fence_ipmilan costs a Python start-up and an ipmitool process
per command (about 0.1 s for a status) and puts the password on ipmitool's
command line. An in-process session answers a status in about a millisecond
and keeps the password in this process.

It gives the same answers as fence_ipmilan with method=onoff (the chassis
commands and their verification are in ipmi_chassis.py).

Sessions are kept per (address, port, username) and re-created when broken,
when the credentials change, or after SESSION_IDLE_LIMIT seconds unused
(BMCs drop idle sessions; logging in again costs about 10 ms, healing a
dropped session costs seconds of retries). Commands to one BMC are
serialized; different BMCs run in parallel. pyghmi calls cannot be
interrupted, so each command runs in a worker thread and `run` stops waiting
at its timeout; the BMC stays busy until pyghmi itself gives up.

Which specs it takes is decided by ipmilan_options.py (`validate`); the
engine runs the others with the script driver.
"""

from __future__ import annotations

import logging
import struct
import threading
import time
from concurrent.futures import Future
from concurrent.futures import TimeoutError as FutureTimeout
from dataclasses import dataclass

from hostpower.drivers import pyghmi_wakeup
from hostpower.drivers.base import FenceDriver
from hostpower.drivers.ipmi_chassis import BmcFailure, describe, perform
from hostpower.drivers.errors import UnsupportedSpec, UnsupportedType
from hostpower.drivers.ipmilan_options import (
    IPMI_PORT, NATIVE_TYPES, NativeSettings, native_settings,
)
from hostpower.model.power import AgentSpec, FenceAction, FenceResult, Outcome

try:
    from pyghmi.ipmi.command import Command as _IpmiCommand
except ImportError:  # the driver then reports that it cannot run
    _IpmiCommand = None
else:
    # A fast answer could wait for pyghmi's retransmission (0.5-1.5 s).
    pyghmi_wakeup.install()

log = logging.getLogger(__name__)

SESSION_IDLE_LIMIT = 25.0


@dataclass(eq=False)
class _Bmc:
    """One BMC's session and the lock that serializes commands to it."""

    busy: threading.Lock
    command: object | None = None
    credentials: tuple[bytes, bytes | None, int | None] | None = None
    last_used: float = 0.0
    logins: int = 0


class NativeIpmiDriver(FenceDriver):
    """IPMI 2.0 via pyghmi, in-process, with pooled sessions."""

    name = "native-ipmilan"
    native = True

    def __init__(self, poll_interval: float = 0.25,
                 session_idle_limit: float = SESSION_IDLE_LIMIT) -> None:
        self.poll_interval = poll_interval
        self.session_idle_limit = session_idle_limit
        self._bmcs: dict[tuple[str, int, str], _Bmc] = {}
        self._lock = threading.Lock()

    def agent_types(self) -> frozenset[str]:
        return NATIVE_TYPES if _IpmiCommand is not None else frozenset()

    def validate(self, spec: AgentSpec) -> None:
        self.settings(spec)

    def settings(self, spec: AgentSpec) -> NativeSettings:
        """What this spec asks of the native path; UnsupportedSpec if it cannot honour it."""
        if _IpmiCommand is None:
            raise UnsupportedType("native IPMI cannot run this agent: pyghmi is not installed")
        if spec.type not in NATIVE_TYPES:
            raise UnsupportedType(f"native IPMI cannot run this agent: agent type "
                                  f"{spec.type!r} is not IPMI")
        try:
            return native_settings(spec)
        except ValueError as exc:
            raise UnsupportedSpec(f"native IPMI cannot run this agent: {exc}") from None

    def logins(self, address: str, port: int = IPMI_PORT, username: str = "") -> int:
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
        target = f"{spec.address}:{settings.port}"
        bmc = self._bmc((spec.address, settings.port, spec.username))

        if not bmc.busy.acquire(timeout=max(0.0, timeout)):
            return _result(action, Outcome.ERROR, started,
                           f"BMC {target} still busy with a previous command after {timeout:g} s")
        done: Future[tuple[Outcome, str]] = Future()
        worker = threading.Thread(
            target=self._work, args=(bmc, spec, settings, action, deadline, done),
            name=f"native-ipmi-{target}", daemon=True)
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

    def _work(self, bmc: _Bmc, spec: AgentSpec, settings: NativeSettings,
              action: FenceAction, deadline: float, done: Future[tuple[Outcome, str]]) -> None:
        """Worker thread: perform the action, then free the BMC for the next command."""
        target = f"{spec.address}:{settings.port}"
        result = (Outcome.ERROR, f"BMC {target}: command interrupted")
        try:
            command = self._session(bmc, spec, settings)
            result = perform(command, action, settings, deadline, target, self.poll_interval)
        except BmcFailure as exc:
            result = (Outcome.ERROR, str(exc))
        except Exception as exc:  # pyghmi raises many kinds; none may escape a driver
            bmc.command = None  # the session is in an unknown state: log in anew next time
            result = (Outcome.ERROR, f"BMC {target}: {describe(exc)}")
        finally:
            bmc.last_used = time.monotonic()
            bmc.busy.release()
        done.set_result(result)

    def _session(self, bmc: _Bmc, spec: AgentSpec, settings: NativeSettings) -> object:
        """The BMC's open session, or a new one (login) when there is none usable."""
        credentials = (spec.password.reveal().encode("utf-8"), settings.kg, settings.privlevel)
        command = bmc.command
        usable = (
            command is not None
            and not getattr(command.ipmi_session, "broken", True)  # type: ignore[attr-defined]
            and bmc.credentials == credentials
            and time.monotonic() - bmc.last_used < self.session_idle_limit
        )
        if usable:
            return command
        if command is not None:
            _logout(command)
            bmc.command = None
        assert _IpmiCommand is not None
        target = f"{spec.address}:{settings.port}"
        try:
            # Bytes, not str: pyghmi's session cache compares them with bytes
            # and would hang on a second session (FIELD-NOTES pitfall 2).
            command = _IpmiCommand(bmc=spec.address, userid=spec.username.encode("utf-8"),
                                   password=credentials[0], port=settings.port,
                                   kg=settings.kg, privlevel=settings.privlevel)
        except struct.error:
            # FIELD-NOTES pitfall 1, seen from the client: the BMC accepted the
            # SHA-256 proposal but answered with SHA-1, and pyghmi cannot cope.
            raise BmcFailure(f"login to BMC {target} failed: the BMC accepted SHA-256 but "
                           "answered with SHA-1; use the script driver for it") from None
        except Exception as exc:
            raise BmcFailure(f"login to BMC {target} failed: {describe(exc)}") from None
        bmc.command = command
        bmc.credentials = credentials
        bmc.logins += 1
        return command

    def _bmc(self, key: tuple[str, int, str]) -> _Bmc:
        with self._lock:
            bmc = self._bmcs.get(key)
            if bmc is None:
                bmc = self._bmcs[key] = _Bmc(busy=threading.Lock())
            return bmc

    def close(self) -> None:
        """Log out every idle session; a BMC still busy is left to finish on its own."""
        with self._lock:
            bmcs = list(self._bmcs.values())
            self._bmcs.clear()
        for bmc in bmcs:
            if not bmc.busy.acquire(timeout=1.0):
                continue
            try:
                if bmc.command is not None:
                    _logout(bmc.command)
                    bmc.command = None
            finally:
                bmc.busy.release()


def _result(action: FenceAction, outcome: Outcome, started: float, message: str) -> FenceResult:
    return FenceResult(action, outcome, message, duration=time.monotonic() - started)


def _logout(command: object) -> None:
    """Close the session; the BMC may be gone, so never wait for or fail on its answer."""
    try:
        command.ipmi_session.logout()  # type: ignore[attr-defined]
    except Exception as exc:
        log.debug("IPMI logout failed: %s", describe(exc))
