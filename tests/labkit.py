"""Starting labs and talking to their agents from tests."""

from __future__ import annotations

import asyncio
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, TypeVar

import yaml

from helpers import wait_until
from conftest import require
from hostpower.hostagent.client import AgentClient
from hostpower.lab import netns
from hostpower.lab.bmc import VirtualBmc
from hostpower.lab.identity import LabInstance
from hostpower.lab.runner import RunningLab, load_topology, start_lab
from hostpower.lab.feeds import LabOutlet
from hostpower.lab.topology import LabBmc, Topology
from hostpower.model.power import AgentSpec, FenceAction, FenceResult
from hostpower.model.secret import Secret
from hostpower.settings import Settings

T = TypeVar("T")
HOSTPOWER = str(Path(sys.executable).with_name("hostpower"))
SMALL = """
name: small
boot_delay: 0.2
data_centers:
  - name: d1
    clusters:
      - name: k1
        hosts: [{name: k1-a}, {name: k1-b}]
"""


def require_lab_tools(namespaces: bool = True) -> None:
    for tool in ("fence_ipmilan", "ipmitool", "fence_redfish", "fence_apc_snmp", "snmpget"):
        require(shutil.which(tool) is not None or Path(f"/usr/sbin/{tool}").exists(),
                f"{tool} is not installed (make test installs fence-agents, ipmitool and snmp "
                f"as root)")
    if namespaces:
        require(netns.available(), "network namespaces need root")


def start(tmp: Path, doc: dict[str, Any] | None = None, loopback: bool = False,
          boot_delay: float = 0.3, db_url: str | None = None) -> tuple[RunningLab, Settings]:
    """A lab whose home is tmp/home; the returned settings name that home and
    `db_url` (default an SQLite file under tmp) for the engine beside it."""
    settings = Settings(home=tmp / "home", db_url=db_url or f"sqlite:///{tmp / 'engine.db'}")
    topo = load_topology(doc, loopback=loopback, boot_delay=boot_delay)
    return start_lab(settings, topo, log=lambda m: None), settings


def host_ns(lab: RunningLab, host: str) -> str:
    """The network namespace of a lab host (named for the lab's instance)."""
    return lab.instance.host_ns(lab.topo.host(host).index)


def client(lab: RunningLab) -> AgentClient:
    d = lab.engine_cert_dir
    return AgentClient(d / "ca.crt", d / "engine.crt", d / "engine.key")


def run(coro_factory: Callable[[AgentClient], Any], lab: RunningLab) -> Any:
    """Run one coroutine with a fresh client (closed afterwards)."""
    async def main() -> Any:
        async with client(lab) as c:
            return await coro_factory(c)
    return asyncio.run(main())


def bmc_spec(topo: Topology, bmc: LabBmc, **options: str) -> AgentSpec:
    opts = {"lanplus": "1", **options}
    return AgentSpec(type="ipmilan", address=bmc.address, port=bmc.port,
                     username=topo.bmc_username, password=Secret(topo.bmc_password),
                     options=tuple(opts.items()))


def fence_via(lab: RunningLab, proxy: str, bmc: LabBmc, action: str, timeout: float = 20,
              prefer_native: bool = True, **options: str) -> FenceResult:
    p = lab.topo.host(proxy)
    spec = bmc_spec(lab.topo, bmc, **options)
    return run(lambda c: c.fence(p.front_address, p.agent_port, spec, FenceAction(action),
                                 timeout, prefer_native=prefer_native), lab)


def counts(lab: RunningLab, bmc: str) -> dict[str, int]:
    return dict(lab.lab.status()["hosts"][bmc.rsplit("-", 1)[0]]["bmcs"][bmc]["counts"])


# -- Redfish BMCs --------------------------------------------------------------------------

REDFISH_LAB = """
name: redfish
boot_delay: 0.2
data_centers:
  - name: d1
    clusters:
      - name: k1
        management: {engine_access: true}
        hosts: [{name: k1-r, bmc: redfish}, {name: k1-i}]
"""


def fence_redfish(lab: RunningLab, bmc: LabBmc, action: str, password: str | None = None,
                  ns: str | None = None, timeout: float = 60,
                  **options: str) -> subprocess.CompletedProcess[str]:
    """The real fence_redfish against a lab Redfish BMC, parameters on stdin,
    the BMC's certificate verified against the lab's device CA (requests
    reads REQUESTS_CA_BUNDLE); in the namespace `ns` if given."""
    topo = lab.topo
    params = {"ip": bmc.address, "ipport": str(bmc.port), "username": topo.bmc_username,
              "password": topo.bmc_password if password is None else password,
              "systems_uri": bmc.systems_uri, **options, "action": action}
    cmd = (["ip", "netns", "exec", ns] if ns else []) + ["/usr/sbin/fence_redfish"]
    return subprocess.run(cmd, input="".join(f"{k}={v}\n" for k, v in params.items()),
                          capture_output=True, text=True, timeout=timeout,
                          env={"PATH": "/usr/sbin:/usr/bin:/bin", "PYTHONWARNINGS": "ignore",
                               "REQUESTS_CA_BUNDLE": str(lab.redfish_ca_bundle)})


def redfish_client(lab: RunningLab, bmc: LabBmc, timeout: float = 5) -> Any:
    """An httpx client for a lab Redfish BMC, verifying it against the lab's device CA."""
    import ssl

    import httpx
    return httpx.Client(base_url=f"https://{bmc.address}:{bmc.port}", timeout=timeout,
                        verify=ssl.create_default_context(cafile=str(lab.redfish_ca_bundle)))


def redfish_login(client: Any, lab: RunningLab, password: str | None = None) -> Any:
    """POST a session; the response (201 with X-Auth-Token and Location, or the refusal)."""
    return client.post("/redfish/v1/SessionService/Sessions", json={
        "UserName": lab.topo.bmc_username,
        "Password": lab.topo.bmc_password if password is None else password})




# -- PDUs -------------------------------------------------------------------------------------

def fence_apc_snmp(lab: RunningLab, outlet: LabOutlet, action: str, ns: str | None = None,
                   community: str | None = None, timeout: float = 60,
                   **options: str) -> subprocess.CompletedProcess[str]:
    """The real fence_apc_snmp switching a lab PDU outlet (parameters on stdin),
    in the namespace `ns` if given."""
    pdu = lab.topo.pdu(outlet.pdu)
    params = {"ip": pdu.address, "ipport": str(pdu.port), "plug": str(outlet.outlet),
              "community": lab.topo.pdu_community if community is None else community,
              **options, "action": action}
    cmd = (["ip", "netns", "exec", ns] if ns else []) + ["/usr/sbin/fence_apc_snmp"]
    return subprocess.run(cmd, input="".join(f"{k}={v}\n" for k, v in params.items()),
                          capture_output=True, text=True, timeout=timeout,
                          env={"PATH": "/usr/sbin:/usr/bin:/bin", "PYTHONWARNINGS": "ignore"})


def outlet_counts(lab: RunningLab, outlet: LabOutlet) -> dict[str, int]:
    status = lab.lab.status()["pdus"][outlet.pdu]["outlets"][str(outlet.outlet)]
    return dict(status["counts"])


def wait_outlet_counts(lab: RunningLab, outlet: LabOutlet, base: dict[str, int],
                       timeout: float = 5, **at_least: int) -> dict[str, int]:
    def grown() -> dict[str, int] | None:
        now = outlet_counts(lab, outlet)
        return now if all(now[k] - base[k] >= n for k, n in at_least.items()) else None
    return wait_until(grown, timeout, f"outlet {outlet} to report {at_least}")


def restore_power(lab: RunningLab) -> None:
    """Every device answering, every PDU outlet and every chassis on (by hand:
    nothing counted), every agent up: what a test leaves for the next."""
    for host in lab.topo.hosts:
        for fault in ("bmc_unresponsive", "pdu_unresponsive", "agent_crash"):
            if fault != "pdu_unresponsive" or host.outlets:
                lab.lab.fault(host.name, fault, clear=True)
    for pdu in lab.topo.pdus:
        for n in range(1, pdu.outlets + 1):
            lab.lab.set_outlet(pdu.name, n, "on")
    for host in lab.topo.hosts:
        wait_until(lambda h=host: all(lab.lab.bmcs[b.name].answering for b in h.bmcs), 5,
                   f"the BMC of {host.name} to answer")
        for bmc in host.bmcs:
            if lab.lab.bmcs[bmc.name].power == "off":
                lab.lab.set_chassis(bmc.name, "on")
    wait_all_agents(lab)


def tcp_reachable_from(ns: str | None, address: str, port: int) -> bool:
    code = (f"import socket\ns=socket.socket();s.settimeout(1)\n"
            f"try:\n s.connect(({address!r},{port}));print('yes')\nexcept OSError:\n print('no')")
    cmd = (["ip", "netns", "exec", ns] if ns else []) + ["python3", "-c", code]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=10).stdout.strip() == "yes"


def load_yaml(text: str) -> dict[str, Any]:
    return yaml.safe_load(text)




def wait_counts(lab: RunningLab, bmc: str, base: dict[str, int], timeout: float = 5,
                **at_least: int) -> dict[str, int]:
    """Counts are reported asynchronously: wait until each grew by at least that much."""
    def grown() -> dict[str, int] | None:
        now = counts(lab, bmc)
        return now if all(now[k] - base[k] >= n for k, n in at_least.items()) else None
    return wait_until(grown, timeout, f"{bmc} to report {at_least}")


def wait_all_agents(lab: RunningLab, timeout: float = 15) -> None:
    """Every agent process running and accepting connections."""
    def ready() -> bool:
        hosts = lab.lab.status()["hosts"].values()
        if not all(h["agent"] == "running" for h in hosts):
            return False
        for h in lab.topo.hosts:
            try:
                with socket.create_connection((h.front_address, h.agent_port), timeout=0.5):
                    pass
            except OSError:
                return False
        return True
    wait_until(ready, timeout, "every agent to listen", step=0.1)


# -- `hostpower lab start` as a separate process ---------------------------------------------

def launch(tmp: Path, *args: str, home: str = "home", topology: str = SMALL
           ) -> tuple[subprocess.Popen[str], dict[str, str]]:
    """`hostpower lab start` with its own HOSTPOWER_HOME under tmp."""
    (tmp / f"{home}.yaml").write_text(topology)
    env = {**os.environ, "HOSTPOWER_HOME": str(tmp / home)}
    proc = subprocess.Popen([HOSTPOWER, "lab", "start", "--topology", str(tmp / f"{home}.yaml"),
                             *args], env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True)
    return proc, env


def wait_started(proc: subprocess.Popen[str]) -> str:
    out = []
    assert proc.stdout is not None
    for line in proc.stdout:  # bounded: the process prints a few dozen lines, then waits
        out.append(line)
        if "Ctrl-C stops" in line or "Traceback" in line:
            break
    return "".join(out)


def interrupt(proc: subprocess.Popen[str]) -> str:
    """Ctrl-C a launched lab (killed if it does not stop); the rest of its output."""
    if proc.poll() is not None:
        return proc.communicate(timeout=30)[0] or ""
    proc.send_signal(signal.SIGINT)
    try:
        return proc.communicate(timeout=30)[0]
    except subprocess.TimeoutExpired:
        proc.kill()
        return proc.communicate(timeout=30)[0]


def announced_instance(start_output: str) -> LabInstance:
    """The lab instance `hostpower lab start` announced."""
    found = re.search(r"lab: instance (\d): names hpl(\d)-\*", start_output)
    assert found and found.group(1) == found.group(2), start_output
    return LabInstance(int(found.group(1)))


def unreachable_routes() -> str:
    return subprocess.run(["ip", "route", "show", "type", "unreachable"], capture_output=True,
                          text=True, timeout=10).stdout


@contextmanager
def virtual_bmcs(**defaults: Any) -> Iterator[Callable[..., VirtualBmc]]:
    """`start(address, **options)` runs a virtual IPMI BMC on a free port of
    `address` (options over `defaults`); every one started is stopped on exit."""
    started: list[VirtualBmc] = []

    def start(address: str, **options: Any) -> VirtualBmc:
        bmc = VirtualBmc(address, 0, **{**defaults, **options}).start()
        started.append(bmc)
        return bmc

    try:
        yield start
    finally:
        for bmc in started:
            bmc.stop()
