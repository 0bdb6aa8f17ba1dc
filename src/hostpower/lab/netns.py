"""Real, confined lab networks out of Linux network namespaces (root only).

For lab instance N (names and ranges: identity.py):

    root ns (engine) --veth hplN-f0 198.18.32N.1/19-- [hplN-front: bridge] --veth-- [hplN-hI: host I, eth0]
    [hplN-hI] --veth mn 198.19.(32N+n).2xx/24-- [hplN-mn: bridge, BMC addresses]
    root ns --veth hplN-en 198.19.(32N+n).1/24-- [hplN-mn]   (only where the topology grants engine access)

A BMC is reachable only from namespaces with a leg on its management
network. Everything an instance creates carries its name prefix (`hplN-`)
or lies in its ranges, so that what a crashed instance left behind can be
removed without touching another instance's lab.
"""

from __future__ import annotations

import os
import subprocess

from hostpower.lab.identity import GUARD_METRIC, MAX_INSTANCES, LabInstance, instance_of
from hostpower.lab.processes import kill_and_wait
from hostpower.lab.topology import Topology


class NetnsError(Exception):
    """An `ip` command failed; the message carries its stderr."""


def ip(*args: str, ns: str | None = None) -> str:
    cmd = ["ip", *(("-n", ns) if ns else ()), *args]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=30)
    if proc.returncode != 0:
        raise NetnsError(f"{' '.join(cmd)}: {proc.stderr.strip()}")
    return proc.stdout


def available() -> bool:
    """Namespace mode needs root and a working `ip netns`."""
    if os.geteuid() != 0:
        return False
    try:
        ip("netns", "list")
        return True
    except (NetnsError, OSError):
        return False


# -- building ---------------------------------------------------------------------------

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


def add_guards(inst: LabInstance) -> None:
    """`unreachable` routes for the instance's two ranges in the root
    namespace, so traffic to a lab address without a lab link (a BMC network
    the engine has no leg on, a link not built yet or already gone) fails at
    once instead of leaving the machine by the default route. The lab's own
    links are more specific (management legs) or have a lower metric (the
    front uplink, same /19) and win."""
    for prefix in inst.ranges():
        ip("route", "replace", "unreachable", prefix, "metric", str(GUARD_METRIC))


def build(topo: Topology) -> None:
    """Create every namespace, bridge, link and address of the topology,
    named and addressed for its lab instance."""
    inst = topo.instance
    add_guards(inst)
    _bridge_ns(inst.front_ns)
    _veth(inst.uplink, None, "up0", inst.front_ns)
    _enslave(inst.front_ns, "up0")
    ip("addr", "add", f"{topo.engine_front_address}/19", "dev", inst.uplink)
    ip("link", "set", inst.uplink, "up")

    for net in topo.networks:
        ns = inst.mgmt_ns(net.index)
        _bridge_ns(ns)
        for device in [*topo.bmcs, *topo.pdus]:
            if device.network == net.name:
                ip("addr", "add", f"{device.address}/24", "dev", "br0", ns=ns)
        if net.engine_access:
            leg = inst.engine_leg(net.index)
            _veth(leg, None, "eng", ns)
            _enslave(ns, "eng")
            ip("addr", "add", f"{net.engine_address}/24", "dev", leg)
            ip("link", "set", leg, "up")

    slots: dict[str, int] = {}
    for host in topo.hosts:
        ns = inst.host_ns(host.index)
        ip("netns", "add", ns)
        ip("link", "set", "lo", "up", ns=ns)
        _veth("eth0", ns, f"h{host.index}", inst.front_ns)
        _enslave(inst.front_ns, f"h{host.index}")
        ip("addr", "add", f"{host.front_address}/19", "dev", "eth0", ns=ns)
        ip("link", "set", "eth0", "up", ns=ns)
        for net_name in host.networks:
            net = topo.network(net_name)
            slots[net_name] = slots.get(net_name, 0) + 1
            _veth(f"m{net.index}", ns, f"h{host.index}", inst.mgmt_ns(net.index))
            _enslave(inst.mgmt_ns(net.index), f"h{host.index}")
            ip("addr", "add", f"{net.host_address(slots[net_name])}/24", "dev", f"m{net.index}",
               ns=ns)
            ip("link", "set", f"m{net.index}", "up", ns=ns)


def isolate_from_engine(topo: Topology, host_index: int, isolated: bool) -> None:
    """Cut (or restore) the host's path to the engine only: a blackhole route
    for the engine's address, so its peers still reach it."""
    verb = "add" if isolated else "del"
    ip("route", verb, "blackhole", f"{topo.engine_front_address}/32",
       ns=topo.instance.host_ns(host_index))


def cut_management(topo: Topology, host_index: int, cut: bool) -> None:
    """Take the host's legs on its management networks down (or up again):
    a pulled management cable. The host can no longer reach the BMCs of
    those networks, so it fails as a proxy there; everything else it does
    (its agent, its front network) goes on. Bringing a leg up restores its
    connected route."""
    host = next(h for h in topo.hosts if h.index == host_index)
    for net_name in host.networks:
        ip("link", "set", f"m{topo.network(net_name).index}", "down" if cut else "up",
           ns=topo.instance.host_ns(host_index))


# -- what exists --------------------------------------------------------------------------

def _namespaces() -> list[str]:
    return [line.split()[0] for line in ip("netns", "list").splitlines() if line.strip()]


def _root_links() -> list[str]:
    return [line.split(":")[1].strip().split("@")[0]
            for line in ip("-o", "link", "show").splitlines()]


def _unreachable_routes() -> list[str]:
    return [line.strip() for line in ip("route", "show", "type", "unreachable").splitlines()]


def _prefix_of(route: str) -> str:
    """'unreachable 198.18.32.0/19 metric 4242' -> '198.18.32.0/19'"""
    words = route.split()
    return words[1] if len(words) > 1 else ""


def guard_routes(inst: LabInstance) -> list[str]:
    """The instance's guard routes present in the root namespace."""
    return [line for line in _unreachable_routes() if _prefix_of(line) in inst.ranges()]


def leftovers(inst: LabInstance | None = None) -> tuple[list[str], list[str]]:
    """Namespaces and root-namespace links named for the instance (for any
    instance when None). Names of an older hostpower without instance
    numbers (`hpl-…`) are never counted: nothing tells whether their lab
    still runs."""
    def ours(name: str) -> bool:
        owner = instance_of(name)
        return owner is not None and (inst is None or owner == inst)
    return [n for n in _namespaces() if ours(n)], [link for link in _root_links() if ours(link)]


def instances_present() -> set[LabInstance]:
    """Every instance that has a namespace, link or guard route on this machine."""
    namespaces, links = leftovers()
    present = {instance_of(name) for name in namespaces + links}
    guarded = {_prefix_of(line) for line in _unreachable_routes()}
    present |= {inst for inst in map(LabInstance, range(MAX_INSTANCES))
                if guarded & set(inst.ranges())}
    return {i for i in present if i is not None}


def ranges_in_use(inst: LabInstance) -> list[str]:
    """Routes and addresses of the root namespace inside the instance's
    ranges (call it once the instance's own leftovers are gone): someone
    else (an older hostpower's lab, a VPN) uses them, so this instance must
    not. Wider routes (a default route, an older lab's 198.18.0.0/15 guard)
    do not count: the lab's more specific ones win over them."""
    used = []
    for prefix in inst.ranges():
        used += [line.strip() for line in ip("-o", "route", "show", "root", prefix).splitlines()
                 if line.strip()]
        used += [" ".join(line.split()[1:4])
                 for line in ip("-o", "addr", "show", "to", prefix).splitlines() if line.strip()]
    return used


# -- removing -----------------------------------------------------------------------------

def _kill_everything_in(namespaces: list[str]) -> None:
    pids: list[int] = []
    for ns in namespaces:
        pids += [int(p) for p in ip("netns", "pids", ns).split()]
    kill_and_wait(pids)


def teardown(inst: LabInstance) -> list[str]:
    """Kill whatever still runs in the instance's namespaces, then delete
    them, its root-side links and its guard routes. Returns what was removed.
    Only ever called by the instance's owner or for an instance nobody owns."""
    removed = []
    namespaces, _ = leftovers(inst)
    _kill_everything_in(namespaces)
    for ns in namespaces:
        ip("netns", "del", ns)
        removed.append(f"netns {ns}")
    for link in leftovers(inst)[1]:
        try:
            ip("link", "del", link)
        except NetnsError:
            pass  # gone with its peer's namespace
        removed.append(f"link {link}")
    for route in guard_routes(inst):
        try:
            ip("route", "del", *route.split())
        except NetnsError:
            pass  # removed meanwhile
        removed.append(f"route {route}")
    return removed
