"""Real, confined lab networks out of Linux network namespaces (root only).

    root ns (engine) --veth hpl-f0 198.18.0.1/16-- [hpl-front: bridge] --veth-- [hpl-hN: host N, eth0]
    [hpl-hN] --veth mN 198.19.n.2xx/24-- [hpl-mN: bridge, BMC addresses 198.19.n.x/24]
    root ns --veth hpl-eN 198.19.n.1/24-- [hpl-mN]     (only where the topology grants engine access)

A BMC is reachable only from namespaces with a leg on its management
network; everything the lab creates is named hpl-* so that a later start can
remove what a crashed one left behind.
"""

from __future__ import annotations

import os
import signal
import subprocess
import time

from hostpower.lab.topology import Topology

PREFIX = "hpl-"
FRONT_NS = "hpl-front"
# The whole benchmark range the lab uses. While the lab exists, the root
# namespace gets an `unreachable` route for it, so traffic to a lab address
# without a lab link (a BMC network the engine has no leg on) fails at once
# instead of leaving the machine by the default route. The lab's own links
# are more specific routes and win.
LAB_RANGE = "198.18.0.0/15"


class NetnsError(Exception):
    """An `ip` command failed; the message carries its stderr."""


def ip(*args: str, ns: str | None = None) -> str:
    cmd = ["ip", *(("-n", ns) if ns else ()), *args]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=30)
    if proc.returncode != 0:
        raise NetnsError(f"{' '.join(cmd)}: {proc.stderr.strip()}")
    return proc.stdout


def host_ns(index: int) -> str:
    return f"hpl-h{index}"


def mgmt_ns(index: int) -> str:
    return f"hpl-m{index}"


def available() -> bool:
    """Namespace mode needs root and a working `ip netns`."""
    if os.geteuid() != 0:
        return False
    try:
        ip("netns", "list")
        return True
    except (NetnsError, OSError):
        return False


def _veth(a: str, a_ns: str | None, b: str, b_ns: str) -> None:
    args = ["link", "add", a]
    if a_ns:
        args += ["netns", a_ns]
    ip(*args, "type", "veth", "peer", "name", b, "netns", b_ns)


def _bridge_ns(ns: str) -> None:
    ip("netns", "add", ns)
    ip("link", "set", "lo", "up", ns=ns)
    ip("link", "add", "br0", "type", "bridge", ns=ns)
    ip("link", "set", "br0", "up", ns=ns)


def _enslave(ns: str, link: str) -> None:
    ip("link", "set", link, "master", "br0", ns=ns)
    ip("link", "set", link, "up", ns=ns)


def build(topo: Topology) -> None:
    """Create every namespace, bridge, link and address of the topology."""
    ip("route", "replace", "unreachable", LAB_RANGE)
    _bridge_ns(FRONT_NS)
    _veth("hpl-f0", None, "up0", FRONT_NS)
    _enslave(FRONT_NS, "up0")
    ip("addr", "add", f"{topo.engine_front_address}/16", "dev", "hpl-f0")
    ip("link", "set", "hpl-f0", "up")

    for net in topo.networks:
        ns = mgmt_ns(net.index)
        _bridge_ns(ns)
        for bmc in (b for b in topo.bmcs if b.network == net.name):
            ip("addr", "add", f"{bmc.address}/24", "dev", "br0", ns=ns)
        if net.engine_access:
            _veth(f"hpl-e{net.index}", None, "eng", ns)
            _enslave(ns, "eng")
            ip("addr", "add", f"{net.engine_address}/24", "dev", f"hpl-e{net.index}")
            ip("link", "set", f"hpl-e{net.index}", "up")

    slots: dict[str, int] = {}
    for host in topo.hosts:
        ns = host_ns(host.index)
        ip("netns", "add", ns)
        ip("link", "set", "lo", "up", ns=ns)
        _veth("eth0", ns, f"h{host.index}", FRONT_NS)
        _enslave(FRONT_NS, f"h{host.index}")
        ip("addr", "add", f"{host.front_address}/16", "dev", "eth0", ns=ns)
        ip("link", "set", "eth0", "up", ns=ns)
        for net_name in host.networks:
            net = topo.network(net_name)
            slots[net_name] = slots.get(net_name, 0) + 1
            _veth(f"m{net.index}", ns, f"h{host.index}", mgmt_ns(net.index))
            _enslave(mgmt_ns(net.index), f"h{host.index}")
            ip("addr", "add", f"{net.host_address(slots[net_name])}/24", "dev", f"m{net.index}",
               ns=ns)
            ip("link", "set", f"m{net.index}", "up", ns=ns)


def isolate_from_engine(topo: Topology, host_index: int, isolated: bool) -> None:
    """Cut (or restore) the host's path to the engine only: a blackhole route
    for the engine's address, so its peers still reach it."""
    verb = "add" if isolated else "del"
    ip("route", verb, "blackhole", f"{topo.engine_front_address}/32", ns=host_ns(host_index))


def leftovers() -> tuple[list[str], list[str]]:
    namespaces = [line.split()[0] for line in ip("netns", "list").splitlines()
                  if line.startswith(PREFIX)]
    links = [line.split(":")[1].strip().split("@")[0]
             for line in ip("-o", "link", "show").splitlines()
             if line.split(":")[1].strip().startswith(PREFIX)]
    return namespaces, links


def teardown() -> list[str]:
    """Kill whatever still runs in hpl-* namespaces, then delete them and the
    root-side links. Returns what was removed."""
    removed = []
    namespaces, links = leftovers()
    for ns in namespaces:
        pids = [int(p) for p in ip("netns", "pids", ns).split()]
        for pid in pids:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        deadline = time.monotonic() + 5
        while pids and time.monotonic() < deadline:
            pids = [p for p in pids if os.path.exists(f"/proc/{p}")]
            time.sleep(0.02)
    for ns in namespaces:
        ip("netns", "del", ns)
        removed.append(f"netns {ns}")
    for link in leftovers()[1]:
        try:
            ip("link", "del", link)
        except NetnsError:
            pass  # gone with its peer's namespace
        removed.append(f"link {link}")
    if f"unreachable {LAB_RANGE}" in ip("route", "show", "type", "unreachable"):
        ip("route", "del", "unreachable", LAB_RANGE)
        removed.append(f"route unreachable {LAB_RANGE}")
    return removed
