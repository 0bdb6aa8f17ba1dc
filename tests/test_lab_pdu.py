"""The lab's switched PDUs (snmpsim answering as an APC Master Switch)
against the real fence_apc_snmp: outlets feed power supplies, a host is off
only when every supply is unpowered, its BMC has no standby power then,
counts per outlet, an unreachable PDU, and the topology's PDU keys."""

from __future__ import annotations

import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from helpers import wait_until
from hostpower.lab.errors import LabError
from hostpower.lab.feeds import PDU_PORTS, LabOutlet
from hostpower.lab.runner import RunningLab
from hostpower.lab.topology import parse
from hostpower.model.errors import ValidationError
from hostpower.model.power import Outcome
from labkit import (
    REDFISH_LAB, fence_apc_snmp, fence_redfish, fence_via, outlet_counts, require_lab_tools,
    restore_power, start, wait_all_agents, wait_outlet_counts,
)

pytestmark = pytest.mark.lab

PDU_LAB = """
name: pdus
boot_delay: 0.2
data_centers:
  - name: d1
    clusters:
      - name: k1
        management: {engine_access: true}
        pdus: [{name: k1-pa, outlets: 4}, {name: k1-pb, outlets: 4}]
        hosts:
          - {name: k1-d, power_supplies: 2}
          - {name: k1-s, outlets: ["k1-pa:4"]}
          - {name: k1-m}
"""


@pytest.fixture(scope="module")
def lab(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningLab]:
    require_lab_tools(namespaces=False)
    running, _ = start(tmp_path_factory.mktemp("lab"), yaml.safe_load(PDU_LAB))
    yield running
    running.stop()


@pytest.fixture(autouse=True)
def powered_on(lab: RunningLab) -> Iterator[None]:
    yield
    restore_power(lab)


def _host(lab: RunningLab, name: str) -> dict:
    return lab.lab.status()["hosts"][name]


def _wait_power(lab: RunningLab, name: str, power: str) -> None:
    wait_until(lambda: _host(lab, name)["power"] == power, 5, f"{name} power {power}")


def test_the_topology_feeds_each_supply_from_its_own_pdu(lab: RunningLab) -> None:
    d = lab.topo.host("k1-d")
    assert d.outlets == (LabOutlet("k1-pa", 1), LabOutlet("k1-pb", 1))  # its place: 1
    assert lab.topo.host("k1-s").outlets == (LabOutlet("k1-pa", 4),)
    assert lab.topo.host("k1-m").outlets == ()
    assert [p.port for p in lab.topo.pdus] == [PDU_PORTS[0 if lab.topo.namespaced else 1]] * 2
    listed = fence_apc_snmp(lab, d.outlets[0], "list")
    assert listed.returncode == 0, listed.stderr
    assert listed.stdout.splitlines() == ["1,k1-d-psu1", "2,Outlet 2", "3,Outlet 3",
                                          "4,k1-s-psu1"]


def test_fence_apc_snmp_switches_outlets_and_the_host_is_off_only_when_both_are(
        lab: RunningLab) -> None:
    a, b = lab.topo.host("k1-d").outlets
    before = {o: outlet_counts(lab, o) for o in (a, b)}
    boots = _host(lab, "k1-d")["boots"]
    status = fence_apc_snmp(lab, a, "status")
    assert status.returncode == 0 and "Status: ON" in status.stdout
    assert fence_apc_snmp(lab, a, "off").returncode == 0
    assert fence_apc_snmp(lab, a, "status").returncode == 2  # fence-agents: 2 = off
    host = _host(lab, "k1-d")
    assert host["power"] == "on" and host["agent"] == "running"
    assert [o["power"] for o in host["outlets"]] == ["off", "on"]
    assert fence_apc_snmp(lab, b, "off").returncode == 0
    _wait_power(lab, "k1-d", "off")
    assert _host(lab, "k1-d")["agent"] == "stopped"
    assert fence_apc_snmp(lab, b, "on").returncode == 0
    wait_all_agents(lab)
    assert _host(lab, "k1-d")["boots"] == boots + 1
    wait_outlet_counts(lab, a, before[a], status=3, off=1)
    after = wait_outlet_counts(lab, b, before[b], off=1, on=1)
    assert (after["off"] - before[b]["off"], after["on"] - before[b]["on"]) == (1, 1)


def test_without_power_the_bmc_does_not_answer_and_comes_back_with_it(lab: RunningLab) -> None:
    bmc = lab.topo.host("k1-s").bmcs[0]
    [outlet] = lab.topo.host("k1-s").outlets
    assert fence_apc_snmp(lab, outlet, "off").returncode == 0
    _wait_power(lab, "k1-s", "off")
    state = _host(lab, "k1-s")["bmcs"][bmc.name]
    assert (state["answering"], state["standby"], state["power"]) == (False, False, "on")
    assert fence_via(lab, "k1-m", bmc, "status", timeout=4).outcome is Outcome.ERROR
    assert fence_apc_snmp(lab, outlet, "on").returncode == 0
    wait_all_agents(lab)
    # Power-restore policy "last state": the chassis was on, it runs again.
    assert fence_via(lab, "k1-m", bmc, "status").outcome is Outcome.ON


def test_a_chassis_switched_off_stays_off_when_power_returns(lab: RunningLab) -> None:
    bmc = lab.topo.host("k1-s").bmcs[0]
    [outlet] = lab.topo.host("k1-s").outlets
    assert fence_via(lab, "k1-m", bmc, "off").outcome is Outcome.OFF
    assert fence_apc_snmp(lab, outlet, "off").returncode == 0
    assert fence_apc_snmp(lab, outlet, "on").returncode == 0
    wait_until(lambda: _host(lab, "k1-s")["bmcs"][bmc.name]["answering"], 5, "the BMC back")
    assert fence_via(lab, "k1-m", bmc, "status").outcome is Outcome.OFF
    assert _host(lab, "k1-s")["power"] == "off"


def test_an_outlet_reboot_restarts_a_single_supply_host(lab: RunningLab) -> None:
    [outlet] = lab.topo.host("k1-s").outlets
    before = outlet_counts(lab, outlet)
    boots = _host(lab, "k1-s")["boots"]
    r = fence_apc_snmp(lab, outlet, "reboot")
    assert r.returncode == 0, r.stderr
    wait_all_agents(lab)
    assert _host(lab, "k1-s")["boots"] == boots + 1
    wait_outlet_counts(lab, outlet, before, off=1, on=1)


def test_one_unreachable_pdu_of_a_pair_leaves_the_other_working(lab: RunningLab) -> None:
    a, b = lab.topo.host("k1-d").outlets
    dropped = lab.lab.status()["pdus"]["k1-pb"]["dropped"]
    lab.lab.fault("k1-d", "pdu_unresponsive", options={"pdu": "k1-pb"})
    started = time.monotonic()
    dead = fence_apc_snmp(lab, b, "status", login_timeout="1", shell_timeout="1")
    assert dead.returncode == 1 and "Status" not in dead.stdout
    assert time.monotonic() - started < 15
    assert fence_apc_snmp(lab, a, "status").returncode == 0
    status = lab.lab.status()
    assert [o["answering"] for o in status["hosts"]["k1-d"]["outlets"]] == [True, False]
    assert status["pdus"]["k1-pb"]["dropped"] > dropped
    lab.lab.fault("k1-d", "pdu_unresponsive", clear=True, options={"pdu": "k1-pb"})
    assert fence_apc_snmp(lab, b, "status").returncode == 0


def test_pdu_unresponsive_names_a_pdu_that_feeds_the_host(lab: RunningLab) -> None:
    with pytest.raises(LabError, match=r"PDU 'k1-pb' does not feed k1-s \(its PDUs: k1-pa\)"):
        lab.lab.fault("k1-s", "pdu_unresponsive", options={"pdu": "k1-pb"})
    with pytest.raises(LabError, match="no PDU feeds k1-m"):
        lab.lab.fault("k1-m", "pdu_unresponsive")


def test_a_wrong_community_gets_no_answer_and_switches_nothing(lab: RunningLab) -> None:
    a, _ = lab.topo.host("k1-d").outlets
    before = outlet_counts(lab, a)
    r = fence_apc_snmp(lab, a, "off", community="public", login_timeout="1", shell_timeout="1")
    assert r.returncode == 1
    assert _host(lab, "k1-d")["outlets"][0]["power"] == "on"
    assert outlet_counts(lab, a) == before


def test_the_control_api_switches_an_outlet_by_hand_without_counting(lab: RunningLab) -> None:
    import httpx
    [outlet] = lab.topo.host("k1-s").outlets
    before = outlet_counts(lab, outlet)
    r = httpx.post(lab.control.url + "/power",
                   json={"pdu": outlet.pdu, "outlet": outlet.outlet, "power": "off"}, timeout=5)
    assert r.status_code == 200 and r.json()["detail"] == "outlet 4 of k1-pa switched off by hand"
    _wait_power(lab, "k1-s", "off")
    assert outlet_counts(lab, outlet) == before
    bad = httpx.post(lab.control.url + "/power", json={"pdu": "k1-pa", "outlet": 9,
                                                       "power": "on"}, timeout=5)
    assert bad.status_code == 400 and bad.json()["detail"] == "k1-pa has outlets 1 to 4, not 9"


def test_the_inventory_gives_the_outlets_as_one_group_after_the_bmc(lab: RunningLab) -> None:
    hosts = lab.inventory_document()["data_centers"][0]["clusters"][0]["hosts"]
    agents = next(h for h in hosts if h["name"] == "k1-d")["power_management"]["agents"]
    pa, pb = lab.topo.pdu("k1-pa"), lab.topo.pdu("k1-pb")
    assert [(a["type"], a["order"]) for a in agents] == [
        ("ipmilan", 1), ("apc_snmp", 2), ("apc_snmp", 2)]
    assert agents[1:] == [
        {"type": "apc_snmp", "address": p.address, "port": p.port,
         "options": {"plug": "1", "community": "private"}, "encrypt_options": True, "order": 2}
        for p in (pa, pb)]


def test_fence_agents_work_on_loopback_without_namespaces(tmp_path: Path) -> None:
    """Loopback mode (no root needed): high ports, no confinement."""
    require_lab_tools(namespaces=False)
    doc = yaml.safe_load(REDFISH_LAB)
    doc["data_centers"][0]["clusters"][0]["hosts"][0]["power_supplies"] = 2
    running, _ = start(tmp_path, doc, loopback=True)
    try:
        assert [p.port for p in running.topo.pdus] == [16161, 16161]
        a, b = running.topo.host("k1-r").outlets
        assert fence_apc_snmp(running, a, "off").returncode == 0
        assert fence_apc_snmp(running, b, "off").returncode == 0
        wait_until(lambda: running.lab.status()["hosts"]["k1-r"]["power"] == "off", 5,
                   "k1-r off")
        bmc = running.topo.host("k1-r").bmcs[0]
        # No standby power: the Redfish BMC holds the request (fence_redfish has no timeout).
        with pytest.raises(subprocess.TimeoutExpired):
            fence_redfish(running, bmc, "status", timeout=3)
        assert fence_apc_snmp(running, b, "on").returncode == 0
        wait_until(lambda: running.lab.status()["hosts"]["k1-r"]["agent"] == "running", 5,
                   "k1-r to boot")
        assert fence_redfish(running, bmc, "status").returncode == 0
    finally:
        running.stop()


BASE = """
name: t
data_centers:
  - name: d1
    clusters:
      - name: k1
        hosts: []
"""


@pytest.mark.parametrize(("cluster", "hosts", "field", "problem"), [
    ({}, [{"name": "h1", "power_supplies": 3}], "hosts[0].power_supplies", "must be 1 or 2"),
    ({}, [{"name": "h1", "outlets": ["k1-pdu1:1"]}], "hosts[0].outlets",
     "the host's cluster has no PDUs"),
    ({"pdus": [{"name": "p1"}]}, [{"name": "h1", "power_supplies": 2}], "hosts[0].outlets",
     "needs two PDUs in its cluster"),
    ({"pdus": [{"name": "p1"}, {"name": "p2"}]},
     [{"name": "h1", "power_supplies": 2, "outlets": ["p1:1"]}], "hosts[0].outlets",
     "one outlet per power supply (2), not 1"),
    ({"pdus": [{"name": "p1"}]}, [{"name": "h1", "outlets": ["p9:1"]}], "hosts[0].outlets",
     "no PDU 'p9'"),
    ({"pdus": [{"name": "p1", "outlets": 4}]}, [{"name": "h1", "outlets": ["p1:5"]}],
     "hosts[0].outlets", "p1 has outlets 1 to 4"),
    ({"pdus": [{"name": "p1"}]}, [{"name": "h1", "outlets": ["p1:2"]},
                                  {"name": "h2", "outlets": ["p1:2"]}],
     "hosts[1].outlets", "p1:2 already feeds h1"),
    ({"pdus": [{"name": "p1", "outlets": 0}]}, [{"name": "h1"}], "pdus[0].outlets",
     "1 to 48"),
    ({"pdus": "p1"}, [{"name": "h1"}], "clusters[0].pdus", "must be a list"),
    ({"pdus": [{"name": "h1"}]}, [{"name": "h1"}], "pdus", "names a host and a PDU"),
], ids=["three-supplies", "no-pdus", "one-pdu-for-two-supplies", "too-few-outlets",
        "unknown-pdu", "outlet-out-of-range", "outlet-shared", "no-outlets", "pdus-not-a-list",
        "pdu-named-like-a-host"])
def test_topology_pdu_errors_name_the_field(cluster: dict, hosts: list, field: str,
                                            problem: str) -> None:
    doc = yaml.safe_load(BASE)
    doc["data_centers"][0]["clusters"][0].update(cluster, hosts=hosts)
    with pytest.raises(ValidationError) as err:
        parse(doc, namespaced=False)
    assert field in str(err.value) and problem in str(err.value), str(err.value)
