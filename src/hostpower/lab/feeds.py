"""Power feeds of a lab topology: the switched PDUs of a cluster and the
outlets that feed its hosts' power supplies.

In a topology document:

    clusters:
      - name: c1
        pdus: [{name: c1-pdu-a, outlets: 8}, {name: c1-pdu-b}]   # default: see below
        hosts:
          - {name: c1-h3, power_supplies: 2, outlets: [c1-pdu-a:3, c1-pdu-b:3]}
          - {name: c1-h4, power_supplies: 2}   # outlet = its place in the cluster, on the first two PDUs

A host with `power_supplies: 2` and no `outlets` is fed by the cluster's
first two PDUs, on the outlet numbered as its place in the cluster (c1-h4
above: outlet 4 of each). A cluster that names no PDUs but has such a host
gets two, `<cluster>-pdu1` and `<cluster>-pdu2`. A host without `outlets`
and with one supply is on mains: no PDU can switch it off.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from hostpower.model import validate
from hostpower.model.errors import ValidationError

DEFAULT_OUTLETS = 8
MAX_OUTLETS = 48
MAX_PDUS = 20          # per cluster: addresses .111 to .130 of its management network
PDU_PORTS = (161, 16161)  # SNMP: the standard port in namespace mode, a high one on loopback


@dataclass(frozen=True)
class LabPdu:
    name: str
    network: str        # the cluster's management network
    address: str
    port: int
    outlets: int        # numbered 1..outlets


@dataclass(frozen=True)
class LabOutlet:
    """One outlet of a PDU, feeding one power supply of a host."""
    pdu: str
    outlet: int

    def __str__(self) -> str:
        return f"{self.pdu}:{self.outlet}"


def parse_pdus(cluster: Mapping[str, Any], cpath: str, network: str, subnet_prefix: str,
               port: int, host_count: int, needs_default: bool) -> tuple[LabPdu, ...]:
    """The cluster's PDUs; two default ones if it names none and a host needs them."""
    data = cluster.get("pdus")
    if data is None:
        if not needs_default:
            return ()
        outlets = max(DEFAULT_OUTLETS, host_count)
        data = [{"name": f"{cluster['name']}-pdu{i}", "outlets": outlets} for i in (1, 2)]
    if not isinstance(data, Sequence) or isinstance(data, str):
        raise ValidationError(f"{cpath}.pdus", "must be a list")
    if len(data) > MAX_PDUS:
        raise ValidationError(f"{cpath}.pdus", f"at most {MAX_PDUS} PDUs per cluster")
    pdus = []
    for i, p in enumerate(data):
        ppath = f"{cpath}.pdus[{i}]"
        if not isinstance(p, Mapping):
            raise ValidationError(ppath, "must be a mapping")
        name = p.get("name")
        if not isinstance(name, str):
            raise ValidationError(f"{ppath}.name", "must be a str")
        validate.host_name(name, f"{ppath}.name")
        outlets = p.get("outlets", DEFAULT_OUTLETS)
        if isinstance(outlets, bool) or not isinstance(outlets, int) or not (
                1 <= outlets <= MAX_OUTLETS):
            raise ValidationError(f"{ppath}.outlets", f"must be a number of outlets, 1 to "
                                                      f"{MAX_OUTLETS}")
        pdus.append(LabPdu(name, network, f"{subnet_prefix}.{111 + i}", port, outlets))
    return tuple(pdus)


def parse_outlets(host: Mapping[str, Any], hpath: str, supplies: int, slot: int,
                  pdus: Sequence[LabPdu]) -> tuple[LabOutlet, ...]:
    """The outlets feeding the host's supplies (none: the host is on mains)."""
    data = host.get("outlets")
    if data is None:
        if supplies == 1:
            return ()
        if len(pdus) < 2:
            raise ValidationError(f"{hpath}.outlets", "a host with two power supplies needs "
                                  "two PDUs in its cluster (or name its outlets)")
        data = [f"{p.name}:{slot}" for p in pdus[:2]]
    if not isinstance(data, Sequence) or isinstance(data, str):
        raise ValidationError(f"{hpath}.outlets", "must be a list of PDU:OUTLET")
    if len(data) != supplies:
        raise ValidationError(f"{hpath}.outlets", f"must name one outlet per power supply "
                                                  f"({supplies}), not {len(data)}")
    by_name = {p.name: p for p in pdus}
    outlets = []
    for item in data:
        pdu_name, _, number = str(item).rpartition(":")
        pdu = by_name.get(pdu_name)
        if pdu is None:
            raise ValidationError(f"{hpath}.outlets", f"{item!r}: no PDU {pdu_name!r} in the "
                                  f"host's cluster (PDU:OUTLET, e.g. {pdus[0].name}:1)"
                                  if pdus else f"{item!r}: the host's cluster has no PDUs")
        if not number.isdigit() or not 1 <= int(number) <= pdu.outlets:
            raise ValidationError(f"{hpath}.outlets", f"{item!r}: {pdu.name} has outlets 1 "
                                                      f"to {pdu.outlets}")
        outlets.append(LabOutlet(pdu.name, int(number)))
    return tuple(outlets)


def check_outlets_unshared(hosts: Sequence[tuple[str, str, tuple[LabOutlet, ...]]]) -> None:
    """An outlet feeds one power supply. `hosts`: (path, name, outlets)."""
    used: dict[LabOutlet, str] = {}
    for path, name, outlets in hosts:
        for o in outlets:
            if o in used:
                raise ValidationError(f"{path}.outlets", f"{o} already feeds {used[o]}")
            used[o] = name
