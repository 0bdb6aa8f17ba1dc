"""Power operations on a Redfish ComputerSystem, as fence_redfish performs them.

Same answers as fence_redfish (with fence-agents' default onoff reboot):
* status: GET the system; PowerState "Off" is off, any other state is on
  (so "PoweringOff" is still on: "off" only once the BMC says Off).
* on / off: a system already in the wanted state is not reset again
  ("Success: Already ON/OFF"); otherwise POST ComputerSystem.Reset with
  ResetType "On" or "ForceOff" to the target the system names, then poll
  until the state is verified.
* reboot: off (unless already off), verified off, then on, verified on.

`session` is a RedfishSession (redfish_session.py); `target` names the BMC
in messages.
"""

from __future__ import annotations

import time
from typing import Any

from hostpower.drivers.redfish_options import RedfishSettings
from hostpower.drivers.redfish_session import RedfishFailure, RedfishSession
from hostpower.model.power import FenceAction, Outcome

RESET_TYPES = {"on": "On", "off": "ForceOff"}
# Stop polling this long before the caller's deadline, to answer in time.
_DEADLINE_MARGIN = 0.1
_OUTCOME = {"on": Outcome.ON, "off": Outcome.OFF}


def discover_system(session: RedfishSession, settings: RedfishSettings, deadline: float) -> str:
    """The ComputerSystem's URI: the Systems collection of the service root,
    its last member (fence_redfish's choice when there are several)."""
    root = session.get(settings.redfish_uri, deadline)
    try:
        collection = root["Systems"]["@odata.id"]
    except (KeyError, TypeError):
        raise RedfishFailure(f"BMC {session.target}: its service root lists no Systems") from None
    members = session.get(collection, deadline).get("Members") or []
    uris = [m.get("@odata.id") for m in members if isinstance(m, dict) and m.get("@odata.id")]
    if not uris:
        raise RedfishFailure(f"BMC {session.target}: no ComputerSystem in {collection}")
    return str(uris[-1])


def perform(session: RedfishSession, system: str, action: FenceAction,
            settings: RedfishSettings, deadline: float,
            poll_interval: float) -> tuple[Outcome, str]:
    """One fence action on the system at URI `system`; RedfishFailure when the BMC fails."""
    if action is FenceAction.STATUS:
        state = power_state(read(session, system, deadline), session.target, system)
        return _OUTCOME[state], f"Status: {state.upper()}"
    if action in (FenceAction.ON, FenceAction.OFF):
        return switch(session, system, action.value, settings, deadline, poll_interval)
    outcome, message = switch(session, system, "off", settings, deadline, poll_interval)
    if outcome is not Outcome.OFF:
        return outcome, message
    outcome, message = switch(session, system, "on", settings, deadline, poll_interval)
    if outcome is not Outcome.ON:
        return Outcome.ERROR, f"powered off, but not back on: {message}"
    return Outcome.ON, "Success: Rebooted"


def read(session: RedfishSession, system: str, deadline: float) -> dict[str, Any]:
    return session.get(system, deadline)


def power_state(data: dict[str, Any], target: str, system: str) -> str:
    """"on" or "off" from a ComputerSystem resource, read as fence_redfish reads it."""
    state = data.get("PowerState")
    if not isinstance(state, str):
        raise RedfishFailure(f"BMC {target}: no PowerState in {system}")
    return "off" if state.strip() == "Off" else "on"


def reset_target(data: dict[str, Any], target: str, system: str) -> str:
    try:
        return str(data["Actions"]["#ComputerSystem.Reset"]["target"])
    except (KeyError, TypeError):
        raise RedfishFailure(f"BMC {target}: {system} offers no ComputerSystem.Reset "
                             "action") from None


def switch(session: RedfishSession, system: str, want: str, settings: RedfishSettings,
           deadline: float, poll_interval: float) -> tuple[Outcome, str]:
    """Reset to the wanted state unless already there, then poll until verified."""
    data = read(session, system, deadline)
    if power_state(data, session.target, system) == want:
        return _OUTCOME[want], f"Success: Already {want.upper()}"
    action_uri = reset_target(data, session.target, system)
    if time.monotonic() >= deadline:
        # The caller already answered ERROR: a late reset would surprise it.
        raise RedfishFailure(f"BMC {session.target}: gave up before powering {want}")
    session.post(action_uri, {"ResetType": RESET_TYPES[want]}, deadline)
    limit = deadline - _DEADLINE_MARGIN
    if settings.power_wait:
        time.sleep(max(0.0, min(settings.power_wait, limit - time.monotonic())))
    limit = min(limit, time.monotonic() + settings.power_timeout)
    while True:
        if power_state(read(session, system, deadline), session.target, system) == want:
            return _OUTCOME[want], f"Success: Powered {want.upper()}"
        if time.monotonic() + poll_interval > limit:
            return Outcome.ERROR, f"BMC {session.target}: timed out waiting to power {want.upper()}"
        time.sleep(poll_interval)
