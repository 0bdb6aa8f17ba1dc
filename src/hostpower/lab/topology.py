"""Lab topologies: data centers, clusters, simulated hosts, their BMCs and
management networks, with every address assigned.

Two address plans, one shape, both inside the lab instance's ranges
(identity.py): with instance N and cluster n,
* namespace mode (root): hosts on 198.18.(32N+n).x (engine 198.18.32N.1),
  cluster n's management network 198.19.(32N+n).0/24;
* loopback mode: the same numbers under 127.18 and 127.19, with no
  confinement at all.
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from importlib import resources
from typing import TYPE_CHECKING, Any

import yaml

from hostpower.lab.feeds import (
    PDU_PORTS,
    LabOutlet,
    LabPdu,
    check_outlets_unshared,
    parse_outlets,
    parse_pdus,
)
from hostpower.lab.identity import FIRST_INSTANCE, MAX_CLUSTERS, LabInstance
from hostpower.model import validate
from hostpower.model.errors import ValidationError

if TYPE_CHECKING:
    from hostpower.lab.instances import InstanceLease

AGENT_PORT = 54321
BMC_KINDS = ("ipmi", "redfish")
# Device ports: the standard ones in namespace mode (root), high ones on loopback.
IPMI_PORTS = (623, 16230)
REDFISH_PORTS = (443, 16443)


@dataclass(frozen=True)
class LabBmc:
    name: str          # "<host>-bmc"
    host: str
    network: str       # management network (cluster) name
    address: str
    port: int
    kind: str = "ipmi"  # ipmi | redfish
    system: str = ""    # redfish: the ComputerSystem's id

    @property
    def systems_uri(self) -> str:
        return f"/redfish/v1/Systems/{self.system}"


@dataclass(frozen=True)
class RedfishOptions:
    """How the lab's Redfish BMCs behave (topology key `redfish`)."""
    power_delay: float = 0.0      # seconds between a Reset action and the power change
    max_sessions: int = 8         # sessions at once; then a login gets 503 SessionLimitExceeded
    session_timeout: float = 600.0  # an idle session is forgotten after this many seconds


@dataclass(frozen=True)
class LabHost:
    name: str
    index: int         # 1-based, across the whole lab
    cluster: str
    data_center: str
    front_address: str
    agent_port: int
    bmcs: tuple[LabBmc, ...]    # one BMC
    networks: tuple[str, ...]   # management networks the host is attached to
    outlets: tuple[LabOutlet, ...] = ()  # PDU outlets feeding its power supplies (none: mains)


@dataclass(frozen=True)
class MgmtNetwork:
    name: str          # the cluster's name
    index: int         # n: the cluster's network within its lab instance, 1..31
    engine_access: bool
    subnet_prefix: str  # e.g. "198.19.33" (instance 1, n = 1) or "127.19.33"

    def host_address(self, slot: int) -> str:
        return f"{self.subnet_prefix}.{200 + slot}"

    @property
    def engine_address(self) -> str:
        return f"{self.subnet_prefix}.1"


@dataclass(frozen=True)
class LabCluster:
    name: str
    data_center: str
    network: MgmtNetwork


@dataclass(frozen=True)
class Topology:
    name: str
    namespaced: bool
    data_centers: tuple[str, ...]
    clusters: tuple[LabCluster, ...]
    hosts: tuple[LabHost, ...]
    bmc_username: str
    bmc_password: str
    boot_delay: float
    instance: LabInstance = FIRST_INSTANCE
    redfish: RedfishOptions = RedfishOptions()
    pdus: tuple[LabPdu, ...] = ()
    pdu_community: str = "private"   # SNMP v1/v2c community of every PDU (fence_apc_snmp's default)
    # The claim on the instance (runner.load_topology takes it, stopping the
    # lab gives it back); not part of what a topology is.
    lease: InstanceLease | None = field(default=None, compare=False, repr=False)

    @property
    def networks(self) -> tuple[MgmtNetwork, ...]:
        return tuple(c.network for c in self.clusters)

    @property
    def engine_front_address(self) -> str:
        return self.instance.engine_front_address(self.namespaced)

    @property
    def bmcs(self) -> tuple[LabBmc, ...]:
        return tuple(b for h in self.hosts for b in h.bmcs)

    def pdu(self, name: str) -> LabPdu:
        for p in self.pdus:
            if p.name == name:
                return p
        raise KeyError(name)

    def host(self, name: str) -> LabHost:
        for h in self.hosts:
            if h.name == name:
                return h
        raise KeyError(name)

    def network(self, name: str) -> MgmtNetwork:
        for c in self.clusters:
            if c.name == name:
                return c.network
        raise KeyError(name)

    def inventory_document(self) -> dict[str, Any]:
        """The topology as an inventory file (docs/inventory-file.md)."""
        dcs = []
        for dc in self.data_centers:
            clusters = []
            for c in (c for c in self.clusters if c.data_center == dc):
                hosts = []
                for h in (h for h in self.hosts if h.cluster == c.name):
                    agents = [self._bmc_agent(b) for b in h.bmcs] + [
                        self._outlet_agent(o) for o in h.outlets]
                    hosts.append({"name": h.name, "address": h.front_address,
                                  "agent_port": h.agent_port, "status": "up",
                                  "power_management": {"enabled": True, "agents": agents}})
                clusters.append({"name": c.name, "hosts": hosts})
            dcs.append({"name": dc, "clusters": clusters})
        return {"data_centers": dcs}

    def _bmc_agent(self, b: LabBmc) -> dict[str, Any]:
        agent: dict[str, Any] = {"address": b.address, "port": b.port,
                                 "username": self.bmc_username, "password": self.bmc_password,
                                 "order": 1}
        if b.kind == "redfish":
            # No ssl_insecure: clients verify the BMC against the lab's
            # device CA (RunningLab.redfish_ca_bundle).
            return {"type": "redfish", **agent, "options": {"systems_uri": b.systems_uri}}
        return {"type": "ipmilan", **agent, "options": {"lanplus": "1"}}

    def _outlet_agent(self, outlet: LabOutlet) -> dict[str, Any]:
        """fence_apc_snmp switching one outlet; every outlet of a host has
        order 2, so they form one group switched together (off all, then on
        all) after the BMC (order 1). The community is fence_apc_snmp's
        `community` option, encrypted like a password (encrypt_options)."""
        pdu = self.pdu(outlet.pdu)
        return {"type": "apc_snmp", "address": pdu.address, "port": pdu.port,
                "options": {"plug": str(outlet.outlet), "community": self.pdu_community},
                "encrypt_options": True, "order": 2}


def _field(data: Mapping[str, Any], key: str, path: str, kind: type, default: Any = None) -> Any:
    value = data.get(key, default)
    if value is None or not isinstance(value, kind) or isinstance(value, bool) and kind is not bool:
        raise ValidationError(f"{path}.{key}", f"must be a {kind.__name__}")
    return value


def parse(doc: Any, namespaced: bool, bmc_port: int | None = None,
          instance: LabInstance = FIRST_INSTANCE) -> Topology:
    """Build a topology from its YAML document, addressed inside the lab
    instance's ranges; errors name the path."""
    if not isinstance(doc, Mapping):
        raise ValidationError("topology", "must be a mapping")
    bmc_port = bmc_port or IPMI_PORTS[0 if namespaced else 1]
    redfish_port = REDFISH_PORTS[0 if namespaced else 1]
    redfish = _redfish_options(doc.get("redfish"))
    creds = doc.get("bmc_credentials") or {}
    dcs: list[str] = []
    clusters: list[LabCluster] = []
    hosts: list[LabHost] = []
    extra: dict[str, list[str]] = {}
    seen: set[str] = set()
    pdus: list[LabPdu] = []
    fed: list[tuple[str, str, tuple[LabOutlet, ...]]] = []
    pdu_port = PDU_PORTS[0 if namespaced else 1]
    for i, dc in enumerate(_field(doc, "data_centers", "topology", list)):
        dpath = f"data_centers[{i}]"
        dc_name = validate.name(_field(dc, "name", dpath, str), f"{dpath}.name")
        dcs.append(dc_name)
        for j, cl in enumerate(_field(dc, "clusters", dpath, list)):
            cpath = f"{dpath}.clusters[{j}]"
            c_name = validate.name(_field(cl, "name", cpath, str), f"{cpath}.name")
            mgmt = cl.get("management") or {}
            n = len(clusters) + 1
            if n > MAX_CLUSTERS:
                raise ValidationError(cpath, f"at most {MAX_CLUSTERS} clusters (the management "
                                             f"networks of one lab instance)")
            net = MgmtNetwork(c_name, n, bool(mgmt.get("engine_access", False)),
                              instance.mgmt_subnet(n, namespaced))
            clusters.append(LabCluster(c_name, dc_name, net))
            extra[c_name] = list(mgmt.get("extra_hosts") or [])
            host_docs = _field(cl, "hosts", cpath, list)
            cluster_pdus = parse_pdus(
                cl, cpath, c_name, net.subnet_prefix, pdu_port, len(host_docs),
                needs_default=any(isinstance(h, Mapping) and h.get("power_supplies") == 2
                                  and "outlets" not in h for h in host_docs))
            pdus.extend(cluster_pdus)
            for k, h in enumerate(host_docs):
                hpath = f"{cpath}.hosts[{k}]"
                if not isinstance(h, Mapping):
                    raise ValidationError(hpath, "must be a mapping")
                h_name = validate.host_name(_field(h, "name", hpath, str), f"{hpath}.name")
                if h_name in seen:
                    raise ValidationError(f"{hpath}.name", f"{h_name!r} is used twice")
                seen.add(h_name)
                psus = h.get("power_supplies", 1)
                if psus not in (1, 2) or isinstance(psus, bool):
                    raise ValidationError(f"{hpath}.power_supplies", "must be 1 or 2")
                idx = len(hosts) + 1
                slot = k + 1
                if slot > 99:
                    raise ValidationError(cpath, "at most 99 hosts per cluster")
                kind = h.get("bmc", "ipmi")
                if kind not in BMC_KINDS:
                    raise ValidationError(f"{hpath}.bmc", f"must be one of {', '.join(BMC_KINDS)}, "
                                                          f"not {kind!r}")
                bmc = LabBmc(f"{h_name}-bmc", h_name, c_name, f"{net.subnet_prefix}.{10 + slot}",
                             redfish_port if kind == "redfish" else bmc_port, kind,
                             system_id(h_name) if kind == "redfish" else "")
                outlets = parse_outlets(h, hpath, psus, slot, cluster_pdus)
                fed.append((hpath, h_name, outlets))
                hosts.append(LabHost(h_name, idx, c_name, dc_name,
                                     f"{instance.front_subnet(n, namespaced)}.{10 + slot}",
                                     AGENT_PORT, (bmc,), (c_name,), outlets))
    # Hosts a topology attaches to other clusters' management networks.
    by_name = {h.name: h for h in hosts}
    for c_name, names in extra.items():
        for name in names:
            if name not in by_name:
                raise ValidationError(f"management.extra_hosts of {c_name}", f"no host {name!r}")
            h = by_name[name]
            if c_name not in h.networks:
                by_name[name] = LabHost(**{**h.__dict__, "networks": h.networks + (c_name,)})
    hosts = [by_name[h.name] for h in hosts]
    if not hosts:
        raise ValidationError("topology", "has no hosts")
    check_outlets_unshared(fed)
    names = [h.name for h in hosts] + [p.name for p in pdus]
    twice = next((n for n in names if names.count(n) > 1), None)
    if twice is not None:
        raise ValidationError("pdus", f"{twice!r} names a host and a PDU, or two PDUs")
    community = (doc.get("pdu_credentials") or {}).get("community", "private")
    if not isinstance(community, str) or not community or any(c in community for c in "\n\r\0"):
        raise ValidationError("pdu_credentials.community", "must be a non-empty string")
    return Topology(
        name=str(doc.get("name", "lab")), namespaced=namespaced, data_centers=tuple(dcs),
        clusters=tuple(clusters), hosts=tuple(hosts),
        bmc_username=str(creds.get("username", "admin")),
        bmc_password=str(creds.get("password", "lab-bmc-password")),
        boot_delay=float(doc.get("boot_delay", 1.0)), instance=instance, redfish=redfish,
        pdus=tuple(pdus), pdu_community=community,
    )


def system_id(host_name: str) -> str:
    """A Redfish ComputerSystem's id: a UUID, the same for a host name every time."""
    return str(uuid.uuid5(uuid.NAMESPACE_DNS, f"{host_name}.lab.hostpower"))


def _redfish_options(data: Any) -> RedfishOptions:
    if data is None:
        return RedfishOptions()
    if not isinstance(data, Mapping):
        raise ValidationError("redfish", "must be a mapping")
    unknown = set(data) - set(RedfishOptions.__dataclass_fields__)
    if unknown:
        raise ValidationError(f"redfish.{min(unknown)}", "is not a Redfish option "
                              f"({', '.join(RedfishOptions.__dataclass_fields__)})")
    values: dict[str, Any] = {}
    for key, value in data.items():
        if isinstance(value, bool) or not isinstance(value, (int, float)) or value < 0:
            raise ValidationError(f"redfish.{key}", "must be a number, 0 or more")
        values[key] = int(value) if key == "max_sessions" else float(value)
    if values.get("max_sessions", 1) < 1:
        raise ValidationError("redfish.max_sessions", "must be 1 or more")
    return RedfishOptions(**values)


def default_document() -> dict[str, Any]:
    return yaml.safe_load(resources.files("hostpower.lab").joinpath("default.yaml").read_text())
