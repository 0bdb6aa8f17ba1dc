"""Power operations on an open IPMI session: the chassis commands the native
driver sends, and how it verifies that the device reached the wanted state.

Same answers as fence_ipmilan with method=onoff (`ipmitool chassis power`):
status reads the chassis power state; off/on switch and then poll the
status until the device is verified in the wanted state; reboot is off,
verified off, on, verified on. Like fence_ipmilan, a device already in the
wanted state is not switched again.

`command` is a pyghmi `Command` (an open session); `target` names the BMC
in messages.
"""

from __future__ import annotations

import time

from hostpower.drivers.ipmilan_options import NativeSettings
from hostpower.model.errors import HostpowerError
from hostpower.model.power import FenceAction, Outcome

# Stop polling this long before the caller's deadline, to answer in time.
_DEADLINE_MARGIN = 0.1
# IPMI chassis commands (netfn chassis = 0).
_NETFN_CHASSIS = 0
_CMD_CHASSIS_STATUS = 1
_CMD_CHASSIS_CONTROL = 2
_CONTROL = {"off": 0, "on": 1}
_OUTCOME = {"on": Outcome.ON, "off": Outcome.OFF}


class BmcFailure(HostpowerError):
    """The BMC refused or failed a command; the message is for the operator."""


def perform(command: object, action: FenceAction, settings: NativeSettings, deadline: float,
            target: str, poll_interval: float) -> tuple[Outcome, str]:
    """One fence action; BmcFailure when the BMC fails a command."""
    if action is FenceAction.STATUS:
        state = power_state(command, target)
        return _OUTCOME[state], f"Status: {state.upper()}"
    if action in (FenceAction.ON, FenceAction.OFF):
        return switch(command, action.value, settings, deadline, target, poll_interval)
    # reboot, as fence_ipmilan's onoff method: off, verified, then on, verified.
    outcome, message = switch(command, "off", settings, deadline, target, poll_interval)
    if outcome is not Outcome.OFF:
        return outcome, message
    outcome, message = switch(command, "on", settings, deadline, target, poll_interval)
    if outcome is not Outcome.ON:
        return Outcome.ERROR, f"powered off, but not back on: {message}"
    return Outcome.ON, "Success: Rebooted"


def power_state(command: object, target: str) -> str:
    """"on" or "off", as the chassis status reports it."""
    response = _raw(command, _CMD_CHASSIS_STATUS, (), target)
    data = response.get("data") or b""
    if not data:
        raise BmcFailure(f"BMC {target}: empty chassis status")
    return "on" if data[0] & 1 else "off"


def switch(command: object, want: str, settings: NativeSettings, deadline: float,
           target: str, poll_interval: float) -> tuple[Outcome, str]:
    """Set the power state unless already there, then poll until verified."""
    if power_state(command, target) == want:
        return _OUTCOME[want], f"Success: Already {want.upper()}"
    if time.monotonic() >= deadline:
        # The caller already answered ERROR: a late power command would
        # surprise it (e.g. an "off" landing after it moved on).
        raise BmcFailure(f"BMC {target}: gave up before powering {want}")
    _raw(command, _CMD_CHASSIS_CONTROL, (_CONTROL[want],), target)
    limit = deadline - _DEADLINE_MARGIN
    if settings.power_wait:
        time.sleep(max(0.0, min(settings.power_wait, limit - time.monotonic())))
    limit = min(limit, time.monotonic() + settings.power_timeout)
    while True:
        if power_state(command, target) == want:
            return _OUTCOME[want], f"Success: Powered {want.upper()}"
        if time.monotonic() + poll_interval > limit:
            return Outcome.ERROR, f"BMC {target}: timed out waiting to power {want.upper()}"
        time.sleep(poll_interval)


def describe(exc: BaseException) -> str:
    """A pyghmi exception in words; pyghmi often raises without a message."""
    text = str(exc).strip()
    if not text or text == "None":
        return "no answer" if type(exc).__name__ == "IpmiException" else type(exc).__name__
    return text


def _raw(command: object, cmd: int, data: tuple[int, ...], target: str) -> dict:
    try:
        response = command.raw_command(netfn=_NETFN_CHASSIS, command=cmd,  # type: ignore[attr-defined]
                                       data=data)
    except Exception as exc:
        raise BmcFailure(f"BMC {target}: {describe(exc)}") from None
    if not isinstance(response, dict):
        raise BmcFailure(f"BMC {target}: no answer")
    if response.get("error"):
        raise BmcFailure(f"BMC {target}: {response['error']}")
    return response
