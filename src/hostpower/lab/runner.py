"""Starting a whole lab: instance, topology, certificates, processes,
control API.

Shared by `hostpower lab start`, `hostpower demo`, the benchmarks and the
tests, so all run the same thing.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from hostpower.fencing.sshaccess import engine_key
from hostpower.hostagent.pki import CertificateAuthority, enroll_host, ensure_engine_certificate
from hostpower.lab import netns, ssh
from hostpower.lab.control import ControlServer
from hostpower.lab.errors import LabError
from hostpower.lab.identity import LabInstance
from hostpower.lab.instances import InstanceLease, InstancePool
from hostpower.lab.ssh import LabSsh
from hostpower.lab.supervisor import Lab
from hostpower.lab.topology import Topology, default_document, parse
from hostpower.settings import Settings

STATE_FILE = "lab.json"   # under $HOSTPOWER_HOME/lab: how the lab commands find the running lab


@dataclass
class RunningLab:
    lab: Lab
    control: ControlServer
    run_dir: Path
    engine_cert_dir: Path
    lease: InstanceLease
    ssh: LabSsh | None = None   # None when openssh-server is not installed

    @property
    def topo(self) -> Topology:
        return self.lab.topo

    @property
    def redfish_ca_bundle(self) -> Path:
        """The lab's device CA certificate (PEM): what a Redfish client verifies
        the lab's BMCs against (not the engine's agent CA)."""
        return self.lab.redfish_ca_bundle

    @property
    def instance(self) -> LabInstance:
        return self.lease.instance

    def inventory_document(self, ssh_access: bool = True) -> dict[str, Any]:
        """The topology as an inventory file; with `ssh_access` (and SSH
        servers running) each host has SSH access with its host key pinned."""
        doc = self.topo.inventory_document()
        if ssh_access and self.ssh is not None:
            for dc in doc["data_centers"]:
                for cluster in dc["clusters"]:
                    for host in cluster["hosts"]:
                        host["ssh"] = self.ssh.access(host["name"])
        return doc

    def stop(self) -> None:
        self.control.stop()
        if self.ssh is not None:
            self.ssh.stop()
        self.lab.stop()
        (self.run_dir / STATE_FILE).unlink(missing_ok=True)
        self.lease.release()  # last: the instance is free only once nothing of it is left


def load_topology(doc: Any | None, loopback: bool, boot_delay: float | None = None,
                  pool: InstancePool | None = None) -> Topology:
    """Parse the topology and claim a lab instance for it: names and
    addresses depend on the instance, so the topology is final (its
    inventory document can be loaded) before the lab starts. start_lab runs
    it and the lab's stop gives the instance back; a topology never started
    gives it back when garbage-collected (its lock file closes)."""
    namespaced = not loopback and netns.available()
    doc = doc if doc is not None else default_document()
    parse(doc, namespaced=namespaced)  # refuse an invalid document before claiming anything
    lease = (pool or InstancePool()).reserve(namespaced)
    try:
        topo = parse(doc, namespaced=namespaced, instance=lease.instance)
    except BaseException:
        lease.release()
        raise
    return Topology(**{**topo.__dict__, "lease": lease,
                       **({"boot_delay": boot_delay} if boot_delay is not None else {})})


def running_lab_state(home: Path) -> dict[str, Any] | None:
    """What the lab started from this home recorded, if it still runs; None
    when no lab was started from it or the one that was has died."""
    path = home / "lab" / STATE_FILE
    try:
        state = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    pool = InstancePool(Path(state["runtime"])) if state.get("runtime") else None
    if pool is None or "instance" not in state:
        return state  # written by an older hostpower: trust it as before
    owner = pool.running().get(LabInstance(int(state["instance"])))
    return state if owner and owner.get("pid") == state.get("pid") else None


def start_lab(settings: Settings, topo: Topology, fence_agents_path: str = "/usr/sbin",
              log: Any = print, on_stop: Any = None) -> RunningLab:
    """Certificates from the engine's CA (so the engine can command the
    agents), then the processes, then the control API. One lab per home:
    the lab commands find it through the home."""
    lease = topo.lease
    if lease is None or not lease.held:
        raise LabError("the topology holds no lab instance (load it with load_topology)")
    try:
        running = _start(settings, topo, lease, fence_agents_path, log, on_stop)
    except BaseException:
        lease.release()
        raise
    return running


def _start(settings: Settings, topo: Topology, lease: InstanceLease, fence_agents_path: str,
           log: Any, on_stop: Any) -> RunningLab:
    settings.ensure_home()
    run_dir = settings.home / "lab"
    other = running_lab_state(settings.home)
    if other is not None:
        raise LabError(f"a lab started from {settings.home} is running (pid {other.get('pid')}, "
                       f"instance {other.get('instance')}): stop it first")
    lease.record(namespaced=topo.namespaced, home=str(settings.home))
    if lease.removed:
        log(f"lab: removed {len(lease.removed)} leftovers of an earlier lab")
    ca = CertificateAuthority.load_or_create(settings.pki_dir)
    engine_cert_dir = settings.pki_dir / "engine"
    ensure_engine_certificate(ca, engine_cert_dir)
    cert_dirs = {}
    for host in topo.hosts:
        cert_dirs[host.name] = run_dir / "certs" / host.name
        enroll_host(ca, host.name, [host.front_address], cert_dirs[host.name])
    lab = Lab(topo, run_dir, cert_dirs, fence_agents_path, log=log, child_env=lease.child_env())
    lab.start()
    lab_ssh = None
    holder: dict[str, RunningLab] = {}
    try:
        if ssh.available():
            # The engine's key (same home, like the CA) is what each host lets in.
            lab_ssh = LabSsh(lab, engine_key(settings.ssh_dir).public,
                             lease.pool.instance_dir(lease.instance) / "ssh.sock", log=log).start()
        else:
            log(f"lab: {ssh.SSHD} is missing (install openssh-server): the hosts run no SSH "
                f"server, soft fencing cannot be tried")
        control = ControlServer(lab, on_stop=lambda: (on_stop or holder["lab"].stop)()).start()
    except BaseException:
        if lab_ssh is not None:
            lab_ssh.stop()
        lab.stop()
        raise
    running = RunningLab(lab, control, run_dir, engine_cert_dir, lease, lab_ssh)
    holder["lab"] = running
    inst = lease.instance
    (run_dir / STATE_FILE).write_text(json.dumps({
        "pid": os.getpid(), "control": control.url, "topology": topo.name,
        "namespaced": topo.namespaced, "instance": inst.number, "runtime": str(lease.pool.dir),
        "prefix": inst.prefix, "ranges": list(inst.ranges(topo.namespaced)),
        "redfish_ca_bundle": str(lab.redfish_ca_bundle)}))
    return running
