"""Which driver runs an agent: the native one where it can, else the script.

The engine and the host agent build their drivers once with
`default_drivers` and pick one per command with `driver_for`; a driver only
takes a spec its `validate` accepts, so a native driver never gets options it
cannot honour.
"""

from __future__ import annotations

from collections.abc import Iterable

from hostpower.drivers.base import FenceDriver
from hostpower.drivers.errors import NoDriver, UnsupportedSpec
from hostpower.drivers.ipmilan import NativeIpmiDriver
from hostpower.drivers.redfish import NativeRedfishDriver
from hostpower.drivers.script import ScriptDriver
from hostpower.model.power import AgentSpec


def default_drivers(fence_agents_path: str = "/usr/sbin",
                    prefer_native: bool = True,
                    redfish_ca_bundle: str | None = None) -> list[FenceDriver]:
    """Every driver of this machine, the preferred kind first.

    `redfish_ca_bundle` (a PEM file; None or empty: the system trust store)
    is what both Redfish paths verify BMC certificates against: the native
    driver, and fence_redfish through the script driver."""
    native: list[FenceDriver] = [NativeIpmiDriver(),
                                 NativeRedfishDriver(ca_bundle=redfish_ca_bundle)]
    script: list[FenceDriver] = [ScriptDriver(fence_agents_path, ca_bundle=redfish_ca_bundle)]
    return native + script if prefer_native else script + native


def driver_for(spec: AgentSpec, drivers: Iterable[FenceDriver],
               prefer_native: bool) -> FenceDriver:
    """The driver to run this spec; NoDriver, with every driver's reason, when none can.

    Among the drivers that accept the spec, native ones come first when
    `prefer_native`, script ones first otherwise; the list order decides
    within a kind. So a native driver is still used when no script agent is
    installed, and the script when the native path cannot honour an option.
    """
    able: list[FenceDriver] = []
    refusals: list[UnsupportedSpec] = []
    for driver in drivers:
        try:
            driver.validate(spec)
        except UnsupportedSpec as refusal:
            refusals.append(refusal)
        else:
            able.append(driver)
    if not able:
        raise NoDriver(spec.type, refusals)
    preferred = [d for d in able if d.native == prefer_native]
    return (preferred or able)[0]


def select_driver(spec: AgentSpec, drivers: Iterable[FenceDriver],
                  prefer_native: bool) -> FenceDriver | None:
    """`driver_for`, with None instead of NoDriver for callers that only ask whether."""
    try:
        return driver_for(spec, drivers, prefer_native)
    except NoDriver:
        return None


def local_agent_types(drivers: Iterable[FenceDriver]) -> frozenset[str]:
    """Agent types this machine can run: those of every driver (installed scripts, native types)."""
    types: set[str] = set()
    for driver in drivers:
        types.update(driver.agent_types())
    return frozenset(types)
