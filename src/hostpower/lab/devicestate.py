"""What the lab supervisor knows of its devices, from their events: each
BMC's chassis power and reachability, each PDU outlet's power, command
counts; and how a host's power follows from them.

A host is on while its chassis is on (its BMC's power state) and at least
one of its power supplies is powered (a supply on a PDU outlet is powered
while the outlet is on; a host without outlets is on mains). With every
supply unpowered the host is off and its BMC, which has no standby power
left, does not answer. When power returns the BMC answers again and the
chassis comes back in the state it was in: the power-restore policy
"last state" (IPMI "previous"), so a server that was running runs again.

Also the starting specs of the device processes (devices.py).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from hostpower.lab.topology import LabBmc, LabHost, LabPdu, Topology

IPMI_COUNTS = ("on", "off", "reset", "cycle", "status")
# What a Redfish BMC counts (redfish.RedfishCounters), without importing the emulator here.
REDFISH_COUNTS = ("status", "on", "off", "reset", "login", "logout", "refused", "dropped")
OUTLET_COUNTS = ("status", "on", "off", "reboot")


@dataclass
class BmcState:
    kind: str = "ipmi"
    power: str = "on"          # the chassis
    unresponsive: bool = False  # fault bmc_unresponsive
    standby: bool = True        # standby power: some supply of the host is powered
    restarts: int = 0           # fault bmc_restart (Redfish)
    counts: dict[str, int] = field(default_factory=dict)

    def __post_init__(self) -> None:
        names = REDFISH_COUNTS if self.kind == "redfish" else IPMI_COUNTS
        self.counts = {**dict.fromkeys(names, 0), **self.counts}

    @property
    def answering(self) -> bool:
        return self.standby and not self.unresponsive


@dataclass
class OutletState:
    power: str = "on"
    counts: dict[str, int] = field(default_factory=lambda: dict.fromkeys(OUTLET_COUNTS, 0))


@dataclass
class PduState:
    pdu: LabPdu
    answering: bool = True      # fault pdu_unresponsive
    dropped: int = 0            # datagrams dropped while not answering
    outlets: dict[int, OutletState] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.outlets = {n: OutletState() for n in range(1, self.pdu.outlets + 1)}


class PowerState:
    """BMCs and PDU outlets of a topology, and the power of its hosts."""

    def __init__(self, topo: Topology) -> None:
        self.topo = topo
        self.bmcs = {b.name: BmcState(b.kind) for b in topo.bmcs}
        self.pdus = {p.name: PduState(p) for p in topo.pdus}
        self._fed_by = {(o.pdu, o.outlet): (h, i + 1) for h in topo.hosts
                        for i, o in enumerate(h.outlets)}

    def supplied(self, host: LabHost) -> bool:
        return not host.outlets or any(
            self.pdus[o.pdu].outlets[o.outlet].power == "on" for o in host.outlets)

    def host_power(self, host: LabHost) -> str:
        chassis = all(self.bmcs[b.name].power == "on" for b in host.bmcs)
        return "on" if chassis and self.supplied(host) else "off"

    def fed_host(self, pdu: str, outlet: int) -> tuple[LabHost, int] | None:
        """The host (and which of its supplies, 1-based) an outlet feeds."""
        return self._fed_by.get((pdu, outlet))

    # -- status ----------------------------------------------------------------------

    def bmc_status(self, b: LabBmc) -> dict[str, Any]:
        s = self.bmcs[b.name]
        status: dict[str, Any] = {"kind": b.kind, "address": b.address, "port": b.port,
                                  "power": s.power, "answering": s.answering,
                                  "standby": s.standby, "counts": dict(s.counts)}
        if b.kind == "redfish":
            status.update(systems_uri=b.systems_uri, restarts=s.restarts)
        return status

    def host_outlets(self, host: LabHost) -> list[dict[str, Any]]:
        return [{"pdu": o.pdu, "outlet": o.outlet, "supply": i + 1,
                 "power": self.pdus[o.pdu].outlets[o.outlet].power,
                 "answering": self.pdus[o.pdu].answering,
                 "counts": dict(self.pdus[o.pdu].outlets[o.outlet].counts)}
                for i, o in enumerate(host.outlets)]

    def pdu_status(self) -> dict[str, Any]:
        result = {}
        for name, s in self.pdus.items():
            outlets = {}
            for n, o in s.outlets.items():
                fed = self.fed_host(name, n)
                outlets[str(n)] = {"power": o.power, "counts": dict(o.counts),
                                   "host": fed[0].name if fed else None,
                                   "supply": fed[1] if fed else None}
            result[name] = {"address": s.pdu.address, "port": s.pdu.port,
                            "network": s.pdu.network, "answering": s.answering,
                            "dropped": s.dropped, "outlets": outlets}
        return result


# -- what each device process is started with (devices.py) ------------------------------


def ipmi_spec(topo: Topology, bmcs: list[LabBmc]) -> dict[str, Any]:
    return {"username": topo.bmc_username, "password": topo.bmc_password,
            "bmcs": [{"name": b.name, "address": b.address, "port": b.port, "power": "on"}
                     for b in bmcs]}


def redfish_spec(topo: Topology, b: LabBmc, cert: Path, key: Path) -> dict[str, Any]:
    return {"name": b.name, "address": b.address, "port": b.port, "system": b.system,
            "username": topo.bmc_username, "password": topo.bmc_password, "power": "on",
            "cert": str(cert), "key": str(key), **dataclasses.asdict(topo.redfish)}


def pdu_spec(topo: Topology, state: PowerState, p: LabPdu) -> dict[str, Any]:
    """Outlet names as fence_apc_snmp lists them: the supply they feed."""
    names = {}
    for n in range(1, p.outlets + 1):
        fed = state.fed_host(p.name, n)
        names[str(n)] = f"{fed[0].name}-psu{fed[1]}" if fed else f"Outlet {n}"
    return {"name": p.name, "address": p.address, "port": p.port,
            "community": topo.pdu_community, "outlets": names}
