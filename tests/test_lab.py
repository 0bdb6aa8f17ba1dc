"""The lab against real tools: fence_ipmilan and native IPMI through host
agents over mutual TLS, confined management networks, power driving hosts,
and every fault."""

from __future__ import annotations

import subprocess
import time
from collections.abc import Iterator

import pytest

from helpers import wait_until
from hostpower.hostagent.client import AgentError, AgentTimeout
from hostpower.lab import netns
from hostpower.lab.runner import RunningLab
from hostpower.model.power import Outcome
from labkit import (
    counts, fence_apc_snmp, fence_redfish, fence_via, host_ns, require_lab_tools, restore_power, run, start,
    tcp_reachable_from, wait_all_agents, wait_counts,
)

pytestmark = pytest.mark.lab


@pytest.fixture(scope="module")
def lab(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningLab]:
    require_lab_tools()
    running, _ = start(tmp_path_factory.mktemp("lab"))
    yield running
    running.stop()
    assert netns.leftovers(running.instance) == ([], [])
    assert netns.guard_routes(running.instance) == []


@pytest.fixture(autouse=True)
def powered_on(lab: RunningLab) -> Iterator[None]:
    """Every test starts and ends with every host on and no fault."""
    yield
    for name, state in lab.lab.status()["hosts"].items():
        for fault in ("agent_hang", "isolate"):
            if fault != "isolate" or state["isolated"]:
                lab.lab.fault(name, fault, clear=True)
    restore_power(lab)


def _peer(lab: RunningLab, name: str) -> str:
    host = lab.topo.host(name)
    return next(h.name for h in lab.topo.hosts if h.cluster == host.cluster and h.name != name)


def heartbeat(lab: RunningLab, name: str, timeout: float = 2.0):  # type: ignore[no-untyped-def]
    h = lab.topo.host(name)
    return run(lambda c: c.heartbeat(h.front_address, h.agent_port, timeout), lab)


def fence_ipmilan_in(ns: str, bmc_address: str, action: str = "status") -> subprocess.CompletedProcess[str]:
    # Parameters on stdin, as hostpower's script driver passes them.
    params = (f"ip={bmc_address}\nipport=623\nusername=admin\npassword=lab-bmc-password\n"
              f"lanplus=1\naction={action}\n")
    return subprocess.run(["ip", "netns", "exec", ns, "/usr/sbin/fence_ipmilan"], input=params,
                          capture_output=True, text=True, timeout=60,
                          env={"PATH": "/usr/sbin:/usr/bin:/bin", "PYTHONWARNINGS": "ignore"})


def test_fence_ipmilan_works_from_a_host_on_the_bmcs_management_network(lab: RunningLab) -> None:
    r = fence_ipmilan_in(host_ns(lab, "c1-h2"), lab.topo.host("c1-h1").bmcs[0].address)
    assert r.returncode == 0, r.stderr
    assert "Status: ON" in r.stdout


def test_fence_ipmilan_fails_from_a_host_of_another_cluster(lab: RunningLab) -> None:
    r = fence_ipmilan_in(host_ns(lab, "c2-h1"), lab.topo.host("c1-h1").bmcs[0].address)
    assert r.returncode == 1
    assert "Status: ON" not in r.stdout


def test_pdus_and_redfish_bmcs_sit_on_their_clusters_management_network(lab: RunningLab) -> None:
    c1h3 = lab.topo.host("c1-h3")
    inside, outside = host_ns(lab, "c1-h1"), host_ns(lab, "c2-h1")
    outlet, bmc = c1h3.outlets[0], c1h3.bmcs[0]
    assert fence_apc_snmp(lab, outlet, "status", ns=inside).returncode == 0
    assert fence_redfish(lab, bmc, "status", ns=inside).returncode == 0
    assert fence_apc_snmp(lab, outlet, "status", ns=outside, login_timeout="1",
                          shell_timeout="1").returncode == 1
    assert fence_redfish(lab, bmc, "status", ns=outside, timeout=20).returncode == 1


def test_the_engine_reaches_only_the_management_network_the_topology_grants(lab: RunningLab) -> None:
    c1_bmc, c3_bmc = lab.topo.host("c1-h1").bmcs[0], lab.topo.host("c3-h1").bmcs[0]
    assert subprocess.run(["/usr/sbin/fence_ipmilan", "-P", "-a", c3_bmc.address, "-l", "admin",
                           "-p", "lab-bmc-password", "-o", "status"], capture_output=True,
                          text=True, timeout=60).returncode == 0
    r = subprocess.run(["ipmitool", "-I", "lanplus", "-H", c1_bmc.address, "-U", "admin",
                        "-P", "lab-bmc-password", "-R", "1", "-N", "1", "chassis", "power", "status"],
                       capture_output=True, text=True, timeout=60)
    assert r.returncode != 0


@pytest.mark.parametrize("prefer_native", [False, True], ids=["fence_ipmilan", "native"])
def test_status_off_on_reboot_through_a_host_agent_over_mtls(lab: RunningLab, prefer_native: bool) -> None:
    bmc = lab.topo.host("c1-h1").bmcs[0]
    before = counts(lab, bmc.name)
    status = fence_via(lab, "c1-h2", bmc, "status", prefer_native=prefer_native, power_wait="0")
    assert status.outcome is Outcome.ON, status.message
    if not prefer_native:
        assert status.exit_code == 0  # the real fence_ipmilan answered
    off = fence_via(lab, "c1-h2", bmc, "off", prefer_native=prefer_native, power_wait="0")
    assert off.outcome is Outcome.OFF, off.message
    assert lab.lab.status()["hosts"]["c1-h1"]["power"] == "off"
    assert fence_via(lab, "c1-h2", bmc, "status", prefer_native=prefer_native).outcome is Outcome.OFF
    on = fence_via(lab, "c1-h2", bmc, "on", prefer_native=prefer_native, power_wait="0")
    assert on.outcome is Outcome.ON, on.message
    reboot = fence_via(lab, "c1-h2", bmc, "reboot", prefer_native=prefer_native, power_wait="0")
    assert reboot.outcome is Outcome.ON, reboot.message
    wait_counts(lab, bmc.name, before, off=2, on=2)


def test_native_and_script_drivers_agree_on_every_power_state(lab: RunningLab) -> None:
    bmc = lab.topo.host("c2-h2").bmcs[0]
    for state in ("off", "on"):
        assert fence_via(lab, "c2-h1", bmc, state, power_wait="0").ok
        native = fence_via(lab, "c2-h1", bmc, "status", prefer_native=True)
        script = fence_via(lab, "c2-h1", bmc, "status", prefer_native=False)
        assert native.outcome is script.outcome is Outcome(state)


def test_a_proxy_outside_the_management_network_gets_an_error(lab: RunningLab) -> None:
    bmc = lab.topo.host("c1-h1").bmcs[0]
    result = fence_via(lab, "c2-h1", bmc, "status", timeout=5)
    assert result.outcome is Outcome.ERROR
    assert counts(lab, bmc.name)["status"] >= 0  # the BMC was never asked by c2-h1


def test_bmc_power_drives_the_host(lab: RunningLab) -> None:
    first = heartbeat(lab, "c3-h1")
    bmc = lab.topo.host("c3-h1").bmcs[0]
    assert fence_via(lab, "c3-h2", bmc, "off").outcome is Outcome.OFF
    with pytest.raises(AgentError):
        heartbeat(lab, "c3-h1", timeout=1)
    assert fence_via(lab, "c3-h2", bmc, "on").outcome is Outcome.ON
    def back() -> object:
        try:
            return heartbeat(lab, "c3-h1", timeout=1)
        except AgentError:
            return None
    second = wait_until(back, 10, "c3-h1 to boot")
    assert second.boot_id != first.boot_id


def test_a_host_with_two_power_supplies_is_off_only_when_both_outlets_are(
        lab: RunningLab) -> None:
    """The default topology's dual-PSU server, switched by the real
    fence_apc_snmp from a host of its cluster."""
    ns = host_ns(lab, "c1-h1")
    outlet1, outlet2 = lab.topo.host("c1-h3").outlets
    assert fence_apc_snmp(lab, outlet1, "off", ns=ns).returncode == 0
    assert lab.lab.status()["hosts"]["c1-h3"]["power"] == "on"
    assert heartbeat(lab, "c1-h3").host == "c1-h3"
    assert fence_apc_snmp(lab, outlet2, "off", ns=ns).returncode == 0
    wait_until(lambda: lab.lab.status()["hosts"]["c1-h3"]["power"] == "off", 5, "c1-h3 off")
    with pytest.raises(AgentError):
        heartbeat(lab, "c1-h3", timeout=1)
    assert fence_apc_snmp(lab, outlet2, "on", ns=ns).returncode == 0
    wait_all_agents(lab)


def test_a_bmc_that_does_not_answer_yields_an_error_within_the_timeout(lab: RunningLab) -> None:
    bmc = lab.topo.host("c2-h3").bmcs[0]
    lab.lab.fault("c2-h3", "bmc_unresponsive")
    for prefer_native in (True, False):
        started = time.monotonic()
        result = fence_via(lab, "c2-h1", bmc, "status", timeout=4, prefer_native=prefer_native)
        elapsed = time.monotonic() - started
        assert result.outcome is Outcome.ERROR
        assert elapsed < 4 + 3, f"took {elapsed:.1f} s for a 4 s timeout"


def test_agent_hang_fault_makes_heartbeats_time_out(lab: RunningLab) -> None:
    lab.lab.fault("c2-h2", "agent_hang")
    with pytest.raises(AgentTimeout):
        heartbeat(lab, "c2-h2", timeout=1)
    lab.lab.fault("c2-h2", "agent_hang", clear=True)
    assert heartbeat(lab, "c2-h2").host == "c2-h2"


def test_agent_crash_fault_leaves_the_power_on(lab: RunningLab) -> None:
    lab.lab.fault("c3-h3", "agent_crash")
    with pytest.raises(AgentError):
        heartbeat(lab, "c3-h3", timeout=1)
    assert lab.lab.status()["hosts"]["c3-h3"]["power"] == "on"
    assert fence_via(lab, "c3-h1", lab.topo.host("c3-h3").bmcs[0], "status").outcome is Outcome.ON


def test_isolated_host_is_cut_off_from_the_engine_but_not_from_its_peers(lab: RunningLab) -> None:
    h = lab.topo.host("c1-h2")
    lab.lab.fault("c1-h2", "isolate")
    with pytest.raises(AgentError):
        heartbeat(lab, "c1-h2", timeout=1)
    assert tcp_reachable_from(host_ns(lab, "c2-h1"), h.front_address, h.agent_port)
    lab.lab.fault("c1-h2", "isolate", clear=True)
    assert heartbeat(lab, "c1-h2").host == "c1-h2"


def test_lab_control_api_reports_power_and_command_counts(lab: RunningLab) -> None:
    import httpx
    status = httpx.get(lab.control.url + "/status", timeout=5).json()
    assert status["namespaced"] is True
    assert set(status["hosts"]) == {h.name for h in lab.topo.hosts}
    c1h3 = status["hosts"]["c1-h3"]
    assert set(c1h3["bmcs"]) == {"c1-h3-bmc"} and c1h3["bmcs"]["c1-h3-bmc"]["kind"] == "redfish"
    assert [(o["pdu"], o["outlet"], o["supply"]) for o in c1h3["outlets"]] == [
        ("c1-pdu1", 3, 1), ("c1-pdu2", 3, 2)]
    assert status["pdus"]["c1-pdu2"]["outlets"]["3"]["host"] == "c1-h3"
    assert set(status["pdus"]["c1-pdu1"]["outlets"]["3"]["counts"]) == {
        "status", "on", "off", "reboot"}
    r = httpx.post(lab.control.url + "/fault", json={"host": "nosuch", "fault": "agent_hang"})
    assert r.status_code == 400 and "no lab host 'nosuch'" in r.json()["detail"]
