"""Starting a whole lab: topology, certificates, processes, control API.

Shared by `hostpower lab start` and by the tests, so both run the same thing.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from hostpower.hostagent.pki import CertificateAuthority, enroll_host, ensure_engine_certificate
from hostpower.lab import netns
from hostpower.lab.control import ControlServer
from hostpower.lab.supervisor import Lab
from hostpower.lab.topology import Topology, default_document, parse
from hostpower.settings import Settings


@dataclass
class RunningLab:
    lab: Lab
    control: ControlServer
    run_dir: Path
    engine_cert_dir: Path

    @property
    def topo(self) -> Topology:
        return self.lab.topo

    def stop(self) -> None:
        self.control.stop()
        self.lab.stop()
        (self.run_dir / "lab.json").unlink(missing_ok=True)


def load_topology(doc: Any | None, loopback: bool, boot_delay: float | None = None) -> Topology:
    namespaced = not loopback and netns.available()
    topo = parse(doc if doc is not None else default_document(), namespaced=namespaced)
    if boot_delay is not None:
        topo = Topology(**{**topo.__dict__, "boot_delay": boot_delay})
    return topo


def start_lab(settings: Settings, topo: Topology, fence_agents_path: str = "/usr/sbin",
              log: Any = print, on_stop: Any = None) -> RunningLab:
    """Certificates from the engine's CA (so the engine can command the
    agents), then the processes, then the control API."""
    settings.ensure_home()
    run_dir = settings.home / "lab"
    ca = CertificateAuthority.load_or_create(settings.pki_dir)
    engine_cert_dir = settings.pki_dir / "engine"
    ensure_engine_certificate(ca, engine_cert_dir)
    cert_dirs = {}
    for host in topo.hosts:
        cert_dirs[host.name] = run_dir / "certs" / host.name
        enroll_host(ca, host.name, [host.front_address], cert_dirs[host.name])
    lab = Lab(topo, run_dir, cert_dirs, fence_agents_path, log=log)
    lab.start()
    holder: dict[str, RunningLab] = {}
    control = ControlServer(lab, on_stop=lambda: (on_stop or holder["lab"].stop)()).start()
    running = RunningLab(lab, control, run_dir, engine_cert_dir)
    holder["lab"] = running
    (run_dir / "lab.json").write_text(json.dumps({
        "pid": os.getpid(), "control": control.url, "topology": topo.name,
        "namespaced": topo.namespaced}))
    return running
