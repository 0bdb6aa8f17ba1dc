"""Which driver runs an agent: the native one where it can, else the script.

The engine and the host agent build their drivers once with
`default_drivers` and pick one per command with `select_driver`; a native
driver only takes a spec whose options it fully honours (`handles`).
"""

from __future__ import annotations

from hostpower.drivers.base import FenceDriver
from hostpower.drivers.ipmilan import NATIVE_TYPES, NativeIpmiDriver
from hostpower.drivers.script import ScriptDriver
from hostpower.model.power import AgentSpec

__all__ = ["NATIVE_TYPES", "default_drivers", "local_agent_types", "select_driver"]


def default_drivers(fence_agents_path: str = "/usr/sbin",
                    prefer_native: bool = True) -> list[FenceDriver]:
    """Every driver of this machine, the preferred kind first."""
    native: FenceDriver = NativeIpmiDriver()
    script: FenceDriver = ScriptDriver(fence_agents_path)
    return [native, script] if prefer_native else [script, native]


def _is_native(driver: FenceDriver) -> bool:
    return not isinstance(driver, ScriptDriver)


def select_driver(spec: AgentSpec, drivers: list[FenceDriver],
                  prefer_native: bool) -> FenceDriver | None:
    """The driver to run this spec, or None when no driver here can.

    Among the drivers that handle the spec, native ones come first when
    `prefer_native`, script ones first otherwise; the list order decides
    within a kind. So a native driver is still used when no script agent is
    installed, and the script when the native path cannot honour an option.
    """
    able = [d for d in drivers if d.handles(spec)]
    if not able:
        return None
    preferred = [d for d in able if _is_native(d) == prefer_native]
    return (preferred or able)[0]


def local_agent_types(drivers: list[FenceDriver]) -> set[str]:
    """Agent types this machine can run: installed script agents and native types."""
    types: set[str] = set()
    for driver in drivers:
        available = getattr(driver, "available_types", None)
        if callable(available):
            types.update(available())
    return types
