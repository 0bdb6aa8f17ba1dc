"""The lab supervisor: runs a topology's BMCs and host agents as real
processes (inside network namespaces when root) and makes BMC power drive
the simulated hosts.

* One BMC process per management network (`python -m hostpower.lab.bmcserver`)
  speaks IPMI for every BMC on it and reports, one JSON line each, every
  command it received and every power change.
* One host agent process per powered-on host. Power off (every PSU off)
  kills it, as pulling the plug would; power on starts a new one after the
  boot delay, so the engine sees a new boot id.
* Faults: agent hang (SIGSTOP), agent crash with power on (SIGKILL), BMC not
  answering, host cut off from the engine but not from its peers, host cut
  off from its management networks (it can no longer proxy for its peers),
  SSH server down (lab/ssh.py), kernel crash with a crash dump announced by
  the real fence_kdump_send (kdump.py).
* `restart_agent` is what `systemctl restart hostpower-agent` does on a real
  host: the agent process, hung or not, is killed and a new one started, with
  the same boot id (the host did not reboot). Each host's SSH server
  (lab/ssh.py) runs it for the engine's soft fencing.
"""

from __future__ import annotations

import signal
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from hostpower.lab import devicepki, netns, storage
from hostpower.lab.devices import DeviceProcesses
from hostpower.lab.devicestate import BmcState, PowerState, ipmi_spec, pdu_spec, redfish_spec
from hostpower.lab.errors import LabError
from hostpower.lab.kdump import DUMPED, DUMPING, KdumpFaults
from hostpower.lab.processes import signal_group, stop_groups
from hostpower.lab.topology import LabBmc, LabHost, Topology

if TYPE_CHECKING:
    from hostpower.lab.ssh import LabSsh

__all__ = ["FAULTS", "Lab", "LabError"]

FAULTS = ("agent_hang", "agent_crash", "bmc_unresponsive", "bmc_restart", "pdu_unresponsive",
          "isolate", "mgmt_cut", "ssh_down", "kernel_crash_kdump")


@dataclass
class HostState:
    host: LabHost
    process: subprocess.Popen[bytes] | None = None
    agent: str = "stopped"      # running | hung | crashed | stopped (power off) | booting
    isolated: bool = False
    mgmt_cut: bool = False
    boots: int = 0
    boot_timer: threading.Timer | None = None
    boot_id: str | None = None   # what its agent reports; new with each boot
    agent_restarts: int = 0      # restart_agent: the service restarted, not the host
    power: str = "on"            # as last reported to listeners (event host_power)


class Lab:
    def __init__(self, topo: Topology, run_dir: Path, cert_dirs: dict[str, Path],
                 fence_agents_path: str = "/usr/sbin",
                 log: Callable[[str], None] = lambda msg: None,
                 child_env: dict[str, str] | None = None) -> None:
        """child_env: the environment of every process the lab starts (it
        carries the instance's marker, instances.MARKER)."""
        self.topo = topo
        self.child_env = child_env
        self.run_dir = run_dir
        self.cert_dirs = cert_dirs
        self.fence_agents_path = fence_agents_path
        self.log = log
        self._lock = threading.RLock()
        self.devices = DeviceProcesses(run_dir, child_env, self._on_device_event)
        self.power = PowerState(topo)
        self.bmcs: dict[str, BmcState] = self.power.bmcs
        self.hosts: dict[str, HostState] = {h.name: HostState(h) for h in topo.hosts}
        self._stopping = False
        self._listeners: list[Callable[[dict[str, Any]], None]] = []
        self.ssh: LabSsh | None = None   # the hosts' SSH servers, set by runner.start_lab
        self.kdump = KdumpFaults(run_dir, child_env, self._lock, self._kdump_written)

    # -- life cycle -------------------------------------------------------------

    def start(self, timeout: float = 60.0) -> None:
        self.run_dir.mkdir(parents=True, exist_ok=True)
        if self.topo.namespaced:
            netns.build(self.topo)
        deadline = time.monotonic() + timeout
        try:
            self._start_devices()
            self.devices.wait_ready(deadline)
            for state in self.hosts.values():
                self._start_agent(state)
            for state in self.hosts.values():
                self._wait_agent(state, deadline)
        except BaseException:
            self.stop()
            raise

    def stop(self) -> None:
        with self._lock:
            self._stopping = True
            procs = [s.process for s in self.hosts.values() if s.process] + list(
                self.devices.procs.values())
            for s in self.hosts.values():
                if s.boot_timer:
                    s.boot_timer.cancel()
            self.kdump.stop_all()
        stop_groups(procs)
        if self.topo.namespaced:
            netns.teardown(self.topo.instance)

    # -- processes -----------------------------------------------------------------

    def _in_ns(self, ns: str) -> list[str]:
        return ["ip", "netns", "exec", ns] if self.topo.namespaced else []

    def _start_devices(self) -> None:
        """One process for the IPMI BMCs of each management network, one per
        Redfish BMC (sushy-tools' emulator is one app per process), one per PDU."""
        topo = self.topo
        ca = devicepki.load_or_create(self.run_dir)
        for net in topo.networks:
            ns = self._in_ns(topo.instance.mgmt_ns(net.index))
            ipmi = [b for b in topo.bmcs if b.network == net.name and b.kind == "ipmi"]
            if ipmi:
                self.devices.start(f"bmc-{net.name}", ns, "hostpower.lab.bmcserver",
                                   ipmi_spec(topo, ipmi))
            for b in (b for b in topo.bmcs if b.network == net.name and b.kind == "redfish"):
                cert, key = devicepki.issue_server_certificate(
                    ca, b.name, b.address, self.run_dir / "device-certs")
                self.devices.start(f"redfish-{b.name}", ns, "hostpower.lab.redfishserver",
                                   redfish_spec(topo, b, cert, key))
            for p in (p for p in topo.pdus if p.network == net.name):
                self.devices.start(f"pdu-{p.name}", ns, "hostpower.lab.pduserver",
                                   pdu_spec(topo, self.power, p))

    @property
    def redfish_ca_bundle(self) -> Path:
        """The CA certificate (PEM) the lab's Redfish BMCs' certificates chain to."""
        return devicepki.bundle_path(self.run_dir)

    def _bmc_process(self, bmc: LabBmc) -> str:
        return f"redfish-{bmc.name}" if bmc.kind == "redfish" else f"bmc-{bmc.network}"

    def _on_device_event(self, event: dict[str, Any]) -> None:
        with self._lock:
            if "pdu" in event:
                self._on_pdu_event(event)
            else:
                self._on_bmc_event(event)
        for listener in list(self._listeners):
            listener(event)

    def _on_bmc_event(self, event: dict[str, Any]) -> None:
        bmc = self.bmcs.get(str(event.get("bmc")))
        if bmc is None:
            return
        if event.get("event") == "command":
            command = str(event.get("command"))
            bmc.counts[command] = bmc.counts.get(command, 0) + 1
        elif event.get("event") == "power":
            bmc.power = str(event.get("power"))
            host = next(h for h in self.topo.hosts if any(b.name == event["bmc"] for b in h.bmcs))
            self._power_changed(self.hosts[host.name])

    def _on_pdu_event(self, event: dict[str, Any]) -> None:
        pdu = self.power.pdus.get(str(event.get("pdu")))
        if pdu is None:
            return
        command = str(event.get("command"))
        if event.get("event") == "command" and command == "dropped":
            pdu.dropped += 1
            return
        outlet = pdu.outlets.get(int(event.get("outlet") or 0))
        if outlet is None:
            return
        if event.get("event") == "command":
            outlet.counts[command] = outlet.counts.get(command, 0) + 1
        elif event.get("event") == "outlet":
            outlet.power = str(event.get("power"))
            fed = self.power.fed_host(pdu.pdu.name, int(event["outlet"]))
            if fed is not None:
                self._supply_changed(self.hosts[fed[0].name])

    def _supply_changed(self, state: HostState) -> None:
        """Standby power of the host's BMC follows its supplies: a BMC with
        none does not answer; when power returns it answers again."""
        supplied = self.power.supplied(state.host)
        for b in state.host.bmcs:
            bmc = self.bmcs[b.name]
            if bmc.standby != supplied:
                bmc.standby = supplied
                self._send_answering(b)
        self._power_changed(state)

    def _send_answering(self, b: LabBmc) -> None:
        self.devices.command(self._bmc_process(b), {
            "cmd": "answer", "bmc": b.name, "answering": self.bmcs[b.name].answering})

    def _host_power(self, host: LabHost) -> str:
        return self.power.host_power(host)

    def _power_changed(self, state: HostState) -> None:
        if self._stopping:
            return
        power = self._host_power(state.host)
        if power != state.power:
            state.power = power
            event = {"event": "host_power", "host": state.host.name, "power": power}
            for listener in list(self._listeners):
                listener(event)
        if power == "off" and state.agent != "stopped":
            if state.boot_timer:
                state.boot_timer.cancel()
                state.boot_timer = None
            if state.process:
                signal_group(state.process, signal.SIGCONT)
                signal_group(state.process, signal.SIGKILL)
            self.kdump.stop(state.host.name)  # power off ends a crash dump too
            state.process, state.agent = None, "stopped"
            self.log(f"lab: {state.host.name} lost power")
        elif power == "on" and state.agent == "stopped":
            state.agent = "booting"
            state.boot_timer = threading.Timer(self.topo.boot_delay, self._boot, args=(state,))
            state.boot_timer.daemon = True
            state.boot_timer.start()

    def _boot(self, state: HostState) -> None:
        with self._lock:
            if self._stopping or state.agent != "booting":
                return
            if self._host_power(state.host) == "on":
                self._start_agent(state)
                self.log(f"lab: {state.host.name} booted")

    def _start_agent(self, state: HostState, same_boot: bool = False) -> None:
        h = state.host
        if not same_boot or state.boot_id is None:
            state.boot_id = str(uuid.uuid4())
        log = (self.run_dir / f"agent-{h.name}.log").open("ab")
        cmd = self._in_ns(self.topo.instance.host_ns(h.index)) + [
            sys.executable, "-m", "hostpower.hostagent.daemon",
            "--bind", f"{h.front_address}:{h.agent_port}", "--host-name", h.name,
            "--cert-dir", str(self.cert_dirs[h.name]),
            "--fence-agents-path", self.fence_agents_path, "--boot-id", state.boot_id,
            # The hosts trust the lab's device CA for Redfish BMCs, as a data
            # center's hosts are given their BMCs' CA.
            "--redfish-ca-bundle", str(self.redfish_ca_bundle),
        ] + storage.agent_args(self.run_dir)
        state.process = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=log, stderr=log,
                                         start_new_session=True, env=self.child_env)
        state.agent = "running"
        if not same_boot:
            state.boots += 1

    def restart_agent(self, host_name: str) -> str:
        """`systemctl restart hostpower-agent` on the host: its agent process,
        hung or crashed or fine, is killed and a new one started (same boot)."""
        with self._lock:
            state = self.hosts.get(host_name)
            if state is None:
                raise LabError(f"no lab host {host_name!r}")
            if self._stopping or self._host_power(state.host) != "on" or state.agent in (
                    "stopped", "booting"):
                raise LabError(f"{host_name} is not up (agent {state.agent})")
            old = state.process
            if old is not None:
                signal_group(old, signal.SIGCONT)
                signal_group(old, signal.SIGKILL)
                try:
                    old.wait(timeout=5)
                except subprocess.TimeoutExpired:
                    pass
            self._start_agent(state, same_boot=True)
            state.agent_restarts += 1
        self.log(f"lab: hostpower-agent of {host_name} restarted")
        return f"hostpower-agent of {host_name} restarted"

    def _wait_agent(self, state: HostState, deadline: float) -> None:
        import socket

        h = state.host
        while time.monotonic() < deadline:
            if state.process and state.process.poll() is not None:
                raise LabError(f"agent of {h.name} exited (see {self.run_dir}/agent-{h.name}.log)")
            try:
                with socket.create_connection((h.front_address, h.agent_port), timeout=0.5):
                    return
            except OSError:
                time.sleep(0.05)
        raise LabError(f"agent of {h.name} did not start listening in time")

    # -- faults ---------------------------------------------------------------------

    def fault(self, host_name: str, fault: str, clear: bool = False,
              options: dict[str, Any] | None = None) -> str:
        """`options`: the fault's own (only kernel_crash_kdump has some: kdump.py)."""
        if fault not in FAULTS:
            raise LabError(f"unknown fault {fault!r} (one of {', '.join(FAULTS)})")
        with self._lock:
            state = self.hosts.get(host_name)
            if state is None:
                raise LabError(f"no lab host {host_name!r}")
            if fault == "agent_hang":
                if state.process is None:
                    if clear:  # clearing is idempotent: nothing hangs
                        return f"{fault} cleared on {host_name}"
                    raise LabError(f"{host_name} has no running agent")
                signal_group(state.process, signal.SIGCONT if clear else signal.SIGSTOP)
                state.agent = "running" if clear else "hung"
            elif fault == "agent_crash":
                if clear:
                    if state.agent == "crashed":
                        self._start_agent(state)
                else:
                    if state.process is None:
                        raise LabError(f"{host_name} has no running agent")
                    signal_group(state.process, signal.SIGCONT)
                    signal_group(state.process, signal.SIGKILL)
                    state.process, state.agent = None, "crashed"
            elif fault == "bmc_unresponsive":
                for b in state.host.bmcs:
                    self.bmcs[b.name].unresponsive = not clear
                    self._send_answering(b)
            elif fault == "pdu_unresponsive":
                for name in self._fault_pdus(state.host, options):
                    self.power.pdus[name].answering = clear
                    self.devices.command(f"pdu-{name}", {"cmd": "answer", "answering": clear})
            elif fault == "bmc_restart":
                redfish = [b for b in state.host.bmcs if b.kind == "redfish"]
                if not redfish:
                    raise LabError(f"bmc_restart needs a Redfish BMC ({host_name} has IPMI)")
                if not clear:  # a restart is over once it happened: nothing to clear
                    for b in redfish:
                        self.devices.command(self._bmc_process(b), {"cmd": "restart"})
                        self.bmcs[b.name].restarts += 1
            elif fault == "ssh_down":
                if self.ssh is None:
                    raise LabError("this lab runs no SSH servers (is openssh-server installed?)")
                self.ssh.set_down(host_name, not clear)
            elif fault == "isolate":
                if not self.topo.namespaced:
                    raise LabError("isolate needs namespace mode (run the lab as root)")
                if state.isolated != (not clear):
                    netns.isolate_from_engine(self.topo, state.host.index, not clear)
                    state.isolated = not clear
            elif fault == "mgmt_cut":
                if not self.topo.namespaced:
                    raise LabError("mgmt_cut needs namespace mode (run the lab as root)")
                if state.mgmt_cut != (not clear):
                    netns.cut_management(self.topo, state.host.index, not clear)
                    state.mgmt_cut = not clear
            elif fault == "kernel_crash_kdump":
                self._kernel_crash_kdump(state, clear, options)
        return f"{fault} {'cleared on' if clear else 'injected into'} {host_name}"

    def set_chassis(self, bmc: str, power: str) -> str:
        """Press a chassis's power button by hand (no BMC request, not counted)."""
        if power not in ("on", "off"):
            raise LabError(f"power must be on or off, not {power!r}")
        b = next((b for b in self.topo.bmcs if b.name == bmc), None)
        if b is None:
            raise LabError(f"no lab BMC {bmc!r}")
        with self._lock:
            self.devices.command(self._bmc_process(b), {"cmd": "power", "bmc": bmc,
                                                        "power": power})
        return f"chassis of {bmc} switched {power} by hand"

    def set_outlet(self, pdu: str, outlet: int, power: str) -> str:
        """Switch an outlet by hand (no SNMP, not counted): tests and the
        operator put a lab back in order with it."""
        if power not in ("on", "off"):
            raise LabError(f"power must be on or off, not {power!r}")
        with self._lock:
            state = self.power.pdus.get(pdu)
            if state is None:
                raise LabError(f"no lab PDU {pdu!r}")
            if outlet not in state.outlets:
                raise LabError(f"{pdu} has outlets 1 to {len(state.outlets)}, not {outlet}")
            self.devices.command(f"pdu-{pdu}", {"cmd": "outlet", "outlet": outlet,
                                                "power": power})
        return f"outlet {outlet} of {pdu} switched {power} by hand"

    def _fault_pdus(self, host: LabHost, options: dict[str, Any] | None) -> list[str]:
        """pdu_unresponsive: the PDU named by option `pdu`, or every PDU feeding the host."""
        feeding = list(dict.fromkeys(o.pdu for o in host.outlets))
        if not feeding:
            raise LabError(f"pdu_unresponsive: no PDU feeds {host.name}")
        named = (options or {}).get("pdu")
        if named is None:
            return feeding
        if named not in feeding:
            raise LabError(f"pdu_unresponsive: PDU {named!r} does not feed {host.name} "
                           f"(its PDUs: {', '.join(feeding)})")
        return [str(named)]

    def _kernel_crash_kdump(self, state: HostState, clear: bool,
                            options: dict[str, Any] | None) -> None:
        name = state.host.name
        if clear:
            self.kdump.stop(name)
            if state.agent in (DUMPING, DUMPED):
                self._start_agent(state)  # it reboots: a new agent, a new boot id
            return
        if not self.topo.namespaced:
            raise LabError("kernel_crash_kdump needs namespace mode (run the lab as root): on "
                           "loopback every message would come from 127.0.0.1")
        if state.process is None:
            raise LabError(f"{name} has no running agent")
        self.kdump.start(name, self._in_ns(self.topo.instance.host_ns(state.host.index)),
                         self.topo.engine_front_address, options)
        signal_group(state.process, signal.SIGCONT)
        signal_group(state.process, signal.SIGKILL)
        state.process, state.agent = None, DUMPING

    def _kdump_written(self, host_name: str, reboot: bool) -> None:
        """A host's dump ended by itself: it reboots (kdump's final action) or stays dead."""
        with self._lock:
            state = self.hosts[host_name]
            if self._stopping or state.agent != DUMPING:
                return
            if reboot and self._host_power(state.host) == "on":
                self._start_agent(state)
                self.log(f"lab: {host_name} wrote its crash dump and rebooted")
            else:
                state.agent = DUMPED
                self.log(f"lab: {host_name} wrote its crash dump")

    def status(self) -> dict[str, Any]:
        with self._lock:
            return {
                "topology": self.topo.name, "namespaced": self.topo.namespaced,
                "instance": self.topo.instance.number,
                "redfish_ca_bundle": str(self.redfish_ca_bundle),
                "pdus": self.power.pdu_status(),
                "hosts": {
                    name: {
                        "power": self._host_power(s.host), "agent": s.agent,
                        "address": s.host.front_address, "agent_port": s.host.agent_port,
                        "cluster": s.host.cluster, "isolated": s.isolated,
                        "mgmt_cut": s.mgmt_cut, "boots": s.boots,
                        "agent_restarts": s.agent_restarts,
                        "pid": s.process.pid if s.process else None,
                        "ssh": self.ssh.status(name) if self.ssh is not None else None,
                        "kdump": self.kdump.status(name),
                        "bmcs": {b.name: self.power.bmc_status(b) for b in s.host.bmcs},
                        "outlets": self.power.host_outlets(s.host),
                    } for name, s in self.hosts.items()
                },
            }

    def add_listener(self, listener: Callable[[dict[str, Any]], None]) -> None:
        self._listeners.append(listener)
