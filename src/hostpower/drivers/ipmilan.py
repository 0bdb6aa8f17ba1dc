"""The native IPMI driver: IPMI 2.0 (RMCP+) in-process with pyghmi.

Why: spawning fence_ipmilan costs a Python start-up and an ipmitool process
per command (about 0.1 s for a status) and puts the password on ipmitool's
command line. An in-process session answers a status in about a millisecond
and keeps the password in this process.

Same answers as fence_ipmilan with method=onoff (`ipmitool chassis power`):
status reads the chassis power state; off/on switch and then poll the
status until the device is verified in the wanted state; reboot is off,
verified off, on, verified on. Like fence_ipmilan, a device already in the
wanted state is not switched again.

Sessions are kept per (address, port, username) and re-created when broken,
when the credentials change, or after SESSION_IDLE_LIMIT seconds unused
(BMCs drop idle sessions; logging in again costs about 10 ms, healing a
dropped session costs seconds of retries). Commands to one BMC are
serialized; different BMCs run in parallel. pyghmi calls cannot be
interrupted, so each command runs in a worker thread and `run` stops waiting
at its timeout; the BMC stays busy until pyghmi itself gives up.

Options honoured (anything else, or a value outside these, makes `handles`
False, and the engine then uses the script driver):
* lanplus: absent or true. An explicit false asks for IPMI 1.5, which this
  driver cannot force.
* cipher: 3 or 17 (pyghmi negotiates 17, else 3).
* privlvl: callback, user, operator, administrator. Absent: administrator,
  falling back to operator if the BMC refuses it.
* method: onoff. (cycle reports success before the host is verified on.)
* power_wait: seconds to wait after switching before the first status poll
  (default 0 here; fence_ipmilan's default of 2 s only delays the same
  verification).
* power_timeout: seconds to wait for the verified state (default 20).
* hexadecimal_kg: the BMC key Kg, in hex.
The plug field is not used by IPMI: a spec with a plug goes to the script.
"""

from __future__ import annotations

import logging
import struct
import threading
import time
from concurrent.futures import Future
from concurrent.futures import TimeoutError as FutureTimeout
from dataclasses import dataclass

from hostpower.drivers.base import DriverError, FenceDriver
from hostpower.model.errors import HostpowerError
from hostpower.model.power import AgentSpec, FenceAction, FenceResult, Outcome

try:
    from pyghmi.ipmi.command import Command as _IpmiCommand
except ImportError:  # the driver then reports that it cannot run
    _IpmiCommand = None

log = logging.getLogger(__name__)

NATIVE_TYPES = frozenset({"ipmilan", "ipmilanplus"})
IPMI_PORT = 623
SESSION_IDLE_LIMIT = 25.0
DEFAULT_POWER_TIMEOUT = 20.0
# Stop polling this long before the caller's deadline, to answer in time.
_DEADLINE_MARGIN = 0.1
_TRUE = {"1", "yes", "on", "true"}
_FALSE = {"0", "no", "off", "false"}
_PRIVILEGES = {"callback": 1, "user": 2, "operator": 3, "administrator": 4}
# IPMI chassis commands (netfn chassis = 0).
_NETFN_CHASSIS = 0
_CMD_CHASSIS_STATUS = 1
_CMD_CHASSIS_CONTROL = 2
_CONTROL = {"off": 0, "on": 1}


@dataclass(frozen=True)
class NativeSettings:
    """What the native path takes from a spec's options."""

    port: int = IPMI_PORT
    privlevel: int | None = None
    kg: bytes | None = None
    power_wait: float = 0.0
    power_timeout: float = DEFAULT_POWER_TIMEOUT


def native_settings(spec: AgentSpec) -> NativeSettings:
    """The settings for this spec; ValueError saying why the native path cannot honour it."""
    if spec.type not in NATIVE_TYPES:
        raise ValueError(f"agent type {spec.type!r} is not IPMI")
    if spec.plug:
        raise ValueError("IPMI has no plug")
    values: dict[str, object] = {}
    if spec.port is not None:
        values["port"] = int(spec.port)
    for key, raw in spec.options:
        value = raw.strip().lower()
        if key == "lanplus":
            if value in _FALSE:
                raise ValueError("lanplus=0 asks for IPMI 1.5")
            if value not in _TRUE:
                raise ValueError(f"lanplus={raw!r} is not a boolean")
        elif key == "cipher":
            if value not in {"3", "17"}:
                raise ValueError(f"cipher suite {raw!r} is not supported (3 or 17)")
        elif key == "privlvl":
            if value not in _PRIVILEGES:
                raise ValueError(f"unknown privilege level {raw!r}")
            values["privlevel"] = _PRIVILEGES[value]
        elif key == "method":
            if value != "onoff":
                raise ValueError(f"method {raw!r} is not supported (onoff)")
        elif key in ("power_wait", "power_timeout"):
            values[key] = _seconds(key, raw)
        elif key == "hexadecimal_kg":
            try:
                values["kg"] = bytes.fromhex(raw.strip())
            except ValueError:
                raise ValueError("hexadecimal_kg is not hexadecimal") from None
        else:
            raise ValueError(f"option {key!r} is not supported natively")
    return NativeSettings(**values)  # type: ignore[arg-type]


def _seconds(key: str, raw: str) -> float:
    try:
        seconds = float(raw)
    except ValueError:
        raise ValueError(f"{key}={raw!r} is not a number of seconds") from None
    if not 0 <= seconds <= 3600:
        raise ValueError(f"{key}={raw!r} is out of range")
    return seconds


class _Failure(HostpowerError):
    """The BMC refused or failed a command; the message is for the operator."""


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

    def __init__(self, poll_interval: float = 0.25,
                 session_idle_limit: float = SESSION_IDLE_LIMIT) -> None:
        self.poll_interval = poll_interval
        self.session_idle_limit = session_idle_limit
        self._bmcs: dict[tuple[str, int, str], _Bmc] = {}
        self._lock = threading.Lock()

    def can_run(self, agent_type: str) -> bool:
        return _IpmiCommand is not None and agent_type in NATIVE_TYPES

    def available_types(self) -> list[str]:
        return sorted(NATIVE_TYPES) if _IpmiCommand is not None else []

    def handles(self, spec: AgentSpec) -> bool:
        if not self.can_run(spec.type):
            return False
        try:
            native_settings(spec)
        except ValueError:
            return False
        return True

    def logins(self, address: str, port: int = IPMI_PORT, username: str = "") -> int:
        """Sessions this driver opened to that BMC (for diagnostics and tests)."""
        with self._lock:
            bmc = self._bmcs.get((address, port, username))
        return bmc.logins if bmc is not None else 0

    # -- running an action -------------------------------------------------------

    def run(self, spec: AgentSpec, action: FenceAction, timeout: float) -> FenceResult:
        """Run one action within `timeout`; DriverError if this spec is not for this driver."""
        action = FenceAction(action)
        started = time.monotonic()
        deadline = started + timeout
        if _IpmiCommand is None:
            raise DriverError("pyghmi is not installed")
        try:
            settings = native_settings(spec)
        except ValueError as exc:
            raise DriverError(f"native IPMI cannot run this agent: {exc}") from exc
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
            result = self._perform(bmc, spec, settings, action, deadline)
        except _Failure as exc:
            result = (Outcome.ERROR, str(exc))
        except Exception as exc:  # pyghmi raises many kinds; none may escape a driver
            bmc.command = None  # the session is in an unknown state: log in anew next time
            result = (Outcome.ERROR, f"BMC {target}: {_describe(exc)}")
        finally:
            bmc.last_used = time.monotonic()
            bmc.busy.release()
        done.set_result(result)

    def _perform(self, bmc: _Bmc, spec: AgentSpec, settings: NativeSettings,
                 action: FenceAction, deadline: float) -> tuple[Outcome, str]:
        command = self._session(bmc, spec, settings)
        target = f"{spec.address}:{settings.port}"
        if action is FenceAction.STATUS:
            state = self._power_state(command, target)
            return _OUTCOME[state], f"Status: {state.upper()}"
        if action in (FenceAction.ON, FenceAction.OFF):
            return self._switch(command, action.value, settings, deadline, target)
        # reboot, as fence_ipmilan's onoff method: off, verified, then on, verified.
        outcome, message = self._switch(command, "off", settings, deadline, target)
        if outcome is not Outcome.OFF:
            return outcome, message
        outcome, message = self._switch(command, "on", settings, deadline, target)
        if outcome is not Outcome.ON:
            return Outcome.ERROR, f"powered off, but not back on: {message}"
        return Outcome.ON, "Success: Rebooted"

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
            raise _Failure(f"login to BMC {target} failed: the BMC accepted SHA-256 but "
                           "answered with SHA-1; use the script driver for it") from None
        except Exception as exc:
            raise _Failure(f"login to BMC {target} failed: {_describe(exc)}") from None
        bmc.command = command
        bmc.credentials = credentials
        bmc.logins += 1
        return command

    def _raw(self, command: object, cmd: int, data: tuple[int, ...], target: str) -> dict:
        try:
            response = command.raw_command(netfn=_NETFN_CHASSIS, command=cmd,  # type: ignore[attr-defined]
                                           data=data)
        except Exception as exc:
            raise _Failure(f"BMC {target}: {_describe(exc)}") from None
        if not isinstance(response, dict):
            raise _Failure(f"BMC {target}: no answer")
        if response.get("error"):
            raise _Failure(f"BMC {target}: {response['error']}")
        return response

    def _power_state(self, command: object, target: str) -> str:
        response = self._raw(command, _CMD_CHASSIS_STATUS, (), target)
        data = response.get("data") or b""
        if not data:
            raise _Failure(f"BMC {target}: empty chassis status")
        return "on" if data[0] & 1 else "off"

    def _switch(self, command: object, want: str, settings: NativeSettings,
                deadline: float, target: str) -> tuple[Outcome, str]:
        """Set the power state unless already there, then poll until verified."""
        if self._power_state(command, target) == want:
            return _OUTCOME[want], f"Success: Already {want.upper()}"
        if time.monotonic() >= deadline:
            # The caller already answered ERROR: a late power command would
            # surprise it (e.g. an "off" landing after it moved on).
            raise _Failure(f"BMC {target}: gave up before powering {want}")
        self._raw(command, _CMD_CHASSIS_CONTROL, (_CONTROL[want],), target)
        limit = deadline - _DEADLINE_MARGIN
        if settings.power_wait:
            time.sleep(max(0.0, min(settings.power_wait, limit - time.monotonic())))
        limit = min(limit, time.monotonic() + settings.power_timeout)
        while True:
            if self._power_state(command, target) == want:
                return _OUTCOME[want], f"Success: Powered {want.upper()}"
            if time.monotonic() + self.poll_interval > limit:
                return Outcome.ERROR, f"BMC {target}: timed out waiting to power {want.upper()}"
            time.sleep(self.poll_interval)

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


_OUTCOME = {"on": Outcome.ON, "off": Outcome.OFF}


def _result(action: FenceAction, outcome: Outcome, started: float, message: str) -> FenceResult:
    return FenceResult(action, outcome, message, duration=time.monotonic() - started)


def _logout(command: object) -> None:
    """Close the session; the BMC may be gone, so never wait for or fail on its answer."""
    try:
        command.ipmi_session.logout()  # type: ignore[attr-defined]
    except Exception as exc:
        log.debug("IPMI logout failed: %s", _describe(exc))


def _describe(exc: BaseException) -> str:
    text = str(exc).strip()
    if not text or text == "None":
        return "no answer" if type(exc).__name__ == "IpmiException" else type(exc).__name__
    return text
