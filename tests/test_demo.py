"""`hostpower demo` (what `make demo` runs): the lab's hosts in the engine,
an admin who can log in, and Ctrl-C leaving nothing behind."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from helpers import free_port
from hostpower.lab import netns
from hostpower.lab.identity import LabInstance
from labkit import require_lab_tools

pytestmark = pytest.mark.lab
HOSTPOWER = str(Path(sys.executable).with_name("hostpower"))


def test_demo_serves_the_lab_inventory_and_stops_cleanly(tmp_path: Path) -> None:
    require_lab_tools()
    port = free_port()
    env = {**os.environ, "HOSTPOWER_HOME": str(tmp_path / "demo")}
    env.pop("HOSTPOWER_DB_URL", None)
    proc = subprocess.Popen([HOSTPOWER, "demo", "--bind", f"127.0.0.1:{port}"], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    lines: list[str] = []
    try:
        assert proc.stdout is not None
        for line in proc.stdout:  # bounded: start-up prints a few dozen lines
            lines.append(line)
            if "listening on" in line or "Traceback" in line:
                break
        text = "".join(lines)
        assert "9 hosts with virtual BMCs on network namespaces" in text, text
        assert "loaded the lab into the inventory: 2 data center(s), 3 cluster(s), 9 host(s)" in text
        password = re.search(r"log in as admin / (\S+)", text).group(1)  # type: ignore[union-attr]
        base = f"http://127.0.0.1:{port}"
        token = httpx.post(f"{base}/api/auth/token",
                           json={"username": "admin", "password": password}).json()["access_token"]
        hdr = {"Authorization": f"Bearer {token}"}
        hosts = {h["name"]: h for h in httpx.get(f"{base}/api/hosts", headers=hdr).json()}
        assert len(hosts) == 9
        r = httpx.post(f"{base}/api/hosts/{hosts['c1-h1']['id']}/fence", headers=hdr,
                       json={"fence_type": "status"}, timeout=30).json()
        # A cluster peer (c1-h2 unless the start-up readiness check still loads it).
        assert (r["power_state"], r["proxy"] in ("c1-h2", "c1-h3")) == ("on", True), r
        assert "c1-h3 has a redfish BMC and two power supplies on two PDUs" in text
        # the engine trusts the lab's Redfish BMCs: the lab's device CA
        bundle = httpx.get(f"{base}/api/config/RedfishCaBundle", headers=hdr).json()["value"]
        assert bundle.endswith("/device-ca/ca.crt") and Path(bundle).is_file(), bundle
        r3 = httpx.post(f"{base}/api/hosts/{hosts['c1-h3']['id']}/fence", headers=hdr,
                        json={"fence_type": "status"}, timeout=30).json()
        assert r3["power_state"] == "on", r3   # its Redfish BMC, certificate verified
        status = subprocess.run([HOSTPOWER, "lab", "status"], env=env, capture_output=True,
                                text=True, timeout=30)
        assert "c1-h1" in status.stdout
        state = json.loads((tmp_path / "demo" / "lab" / "lab.json").read_text())
        inst = LabInstance(state["instance"])
        assert netns.leftovers(inst)[0]  # the lab's namespaces, named for its instance
        proc.send_signal(signal.SIGINT)
        rest = proc.communicate(timeout=60)[0]
    finally:
        if proc.poll() is None:  # a failed assertion: still let the demo stop its lab
            proc.send_signal(signal.SIGINT)
            try:
                proc.communicate(timeout=60)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
    assert proc.returncode == 0, rest
    assert "demo: stopped, nothing left behind" in rest
    assert netns.leftovers(inst) == ([], [])
    assert netns.guard_routes(inst) == []
