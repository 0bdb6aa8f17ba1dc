"""Labs that coexist: two labs from two homes run side by side, each fences
its own hosts, stopping or crashing one leaves the other intact; and the
instance pool behind it (bounded, race-free, freed by death)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from helpers import wait_until
from hostpower.lab import netns
from hostpower.lab.errors import LabError
from hostpower.lab.identity import MAX_CLUSTERS, MAX_INSTANCES, LabInstance
from hostpower.lab.instances import MARKER, InstancePool
from hostpower.lab.runner import RunningLab, load_topology, start_lab
from hostpower.lab.topology import parse
from hostpower.model.errors import ValidationError
from hostpower.model.power import Outcome
from hostpower.settings import Settings
from labkit import (
    HOSTPOWER, SMALL, announced_instance, counts, fence_via, host_ns, interrupt, launch, load_yaml, require_lab_tools, run, start, tcp_reachable_from, wait_counts, wait_started,
)

# -- the pool and the identity, without a lab ---------------------------------------------------


def test_every_name_fits_an_interface_and_instances_never_share_a_range() -> None:
    ranges = set()
    for inst in map(LabInstance, range(MAX_INSTANCES)):
        for name in (inst.uplink, inst.engine_leg(MAX_CLUSTERS), inst.front_ns,
                     inst.mgmt_ns(MAX_CLUSTERS), inst.host_ns(MAX_CLUSTERS * 99)):
            assert len(name) <= 15, name
            assert name.startswith(f"hpl{inst.number}-")
        ranges |= set(inst.ranges(True)) | set(inst.ranges(False))
    assert len(ranges) == 4 * MAX_INSTANCES
    assert LabInstance(0).mgmt_subnet(1, True) == "198.19.1"  # instance 0: the single-lab plan
    with pytest.raises(ValueError):
        LabInstance(MAX_INSTANCES)


def test_a_topology_lies_inside_its_instances_ranges() -> None:
    doc = {"data_centers": [{"name": "d", "clusters": [
        {"name": f"c{n}", "management": {"engine_access": True}, "hosts": [{"name": f"c{n}-h"}]}
        for n in range(1, MAX_CLUSTERS + 1)]}]}
    for namespaced in (True, False):
        topo = parse(doc, namespaced=namespaced, instance=LabInstance(5))
        first = "198" if namespaced else "127"
        third = {int(h.front_address.split(".")[2]) for h in topo.hosts}
        assert third == set(range(5 * 32 + 1, 6 * 32))
        assert all(b.address.startswith(f"{first}.19.") for b in topo.bmcs)
        assert {int(b.address.split(".")[2]) for b in topo.bmcs} == third
    doc["data_centers"][0]["clusters"].append({"name": "one-too-many", "hosts": [{"name": "x"}]})
    with pytest.raises(ValidationError, match="at most 31 clusters"):
        parse(doc, namespaced=True)


def test_the_pool_is_bounded_and_hands_out_each_instance_once(tmp_path: Path) -> None:
    pool = InstancePool(tmp_path / "run", manages_namespaces=False)
    leases = [pool.reserve(namespaced=False) for _ in range(MAX_INSTANCES)]
    try:
        assert sorted(lease.instance.number for lease in leases) == list(range(MAX_INSTANCES))
        with pytest.raises(LabError, match=f"at most {MAX_INSTANCES} labs"):
            pool.reserve(namespaced=False)
        assert set(pool.running()) == {lease.instance for lease in leases}
        leases[3].release()
        again = pool.reserve(namespaced=False)
        assert again.instance == LabInstance(3)
        again.release()
    finally:
        for lease in leases:
            lease.release()
    assert pool.running() == {}


def test_labs_starting_at_the_same_moment_get_different_instances(tmp_path: Path) -> None:
    pool = InstancePool(tmp_path / "run", manages_namespaces=False)
    barrier = threading.Barrier(MAX_INSTANCES)
    got: list[int] = []
    leases = []

    def claim() -> None:
        barrier.wait(10)
        lease = pool.reserve(namespaced=False)
        leases.append(lease)
        got.append(lease.instance.number)

    threads = [threading.Thread(target=claim) for _ in range(MAX_INSTANCES)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    for lease in leases:
        lease.release()
    assert sorted(got) == list(range(MAX_INSTANCES))


def test_an_owner_that_dies_frees_its_instance_and_its_processes_are_killed(tmp_path: Path) -> None:
    """The lock goes with its holder however it dies; a process the dead lab
    started (it carries the instance's marker) is killed by the next claim."""
    run_dir = tmp_path / "run"
    owner = subprocess.Popen(
        [sys.executable, "-c",
         ("import os, subprocess, sys, time\n"
         "from pathlib import Path\n"
         "from hostpower.lab.instances import InstancePool\n"
         f"lease = InstancePool(Path({str(run_dir)!r}), manages_namespaces=False).reserve(False)\n"
         "child = subprocess.Popen(['sleep', '300'], env=lease.child_env(), start_new_session=True)\n"
         "print(lease.instance.number, child.pid, flush=True)\n"
         "time.sleep(300)\n")],
        stdout=subprocess.PIPE, text=True)
    try:
        assert owner.stdout is not None
        number, orphan = map(int, owner.stdout.readline().split())
        pool = InstancePool(run_dir, manages_namespaces=False)
        assert LabInstance(number) in pool.running()
        other = pool.reserve(namespaced=False)
        assert other.instance != LabInstance(number)  # alive: not handed out again
        other.release()
    finally:
        owner.kill()
        owner.wait()
    assert os.path.exists(f"/proc/{orphan}")  # the owner's death alone leaves its child running
    lease = pool.reserve(namespaced=False)
    try:
        assert lease.instance == LabInstance(number)
        assert f"process {orphan} of lab instance {number}" in lease.removed
        wait_until(lambda: not _alive(orphan), 5, "the orphan to be gone")
    finally:
        lease.release()


def _alive(pid: int) -> bool:
    from hostpower.lab.processes import alive
    return alive(pid)


# -- two real labs --------------------------------------------------------------------------------

PAIR = """
name: pair
boot_delay: 0.2
data_centers:
  - name: d1
    clusters:
      - name: k1
        management: {engine_access: true}
        hosts: [{name: k1-a}, {name: k1-b}]
"""


@pytest.fixture
def first_lab(tmp_path: Path) -> Iterator[RunningLab]:
    """A lab that must survive what the test does to the others."""
    require_lab_tools()
    lab, _ = start(tmp_path / "first", load_yaml(PAIR))
    yield lab
    lab.stop()
    assert netns.leftovers(lab.instance) == ([], [])
    assert netns.guard_routes(lab.instance) == []


def settled_counts(lab: RunningLab, bmc: str) -> dict[str, int]:
    """A BMC's counts once no report is in flight (the BMC process reports
    every 10 ms): the same twice, 0.3 s apart."""
    def settled() -> dict[str, int] | None:
        first = counts(lab, bmc)
        time.sleep(0.3)
        return first if counts(lab, bmc) == first else None
    return wait_until(settled, 10, f"{bmc}'s counts to settle", step=0)


def assert_intact(lab: RunningLab, namespaces: list[str], links: list[str]) -> None:
    """Its namespaces, links and guard routes are all there and its hosts answer."""
    assert netns.leftovers(lab.instance) == (namespaces, links)
    assert len(netns.guard_routes(lab.instance)) == 2
    a, b = lab.topo.host("k1-a"), lab.topo.host("k1-b")
    assert run(lambda c: c.heartbeat(b.front_address, b.agent_port, 2), lab).host == "k1-b"
    assert fence_via(lab, "k1-b", a.bmcs[0], "status", prefer_native=False).outcome is Outcome.ON
    assert tcp_reachable_from(host_ns(lab, "k1-a"), b.front_address, b.agent_port)


@pytest.mark.lab
def test_two_labs_from_two_homes_run_side_by_side(first_lab: RunningLab, tmp_path: Path) -> None:
    second, _ = start(tmp_path / "second", load_yaml(PAIR))
    try:
        one, two = first_lab, second
        assert one.instance != two.instance
        assert {h.front_address for h in one.topo.hosts}.isdisjoint(
            h.front_address for h in two.topo.hosts)
        for lab, other in ((one, two), (two, one)):  # each fences its own host, counted by its own BMC
            bmc = lab.topo.host("k1-a").bmcs[0]
            before, other_before = counts(lab, bmc.name), settled_counts(other, bmc.name)
            for action, outcome in (("status", Outcome.ON), ("off", Outcome.OFF),
                                    ("on", Outcome.ON)):
                result = fence_via(lab, "k1-b", bmc, action, prefer_native=False, power_wait="0")
                assert result.outcome is outcome, result.message
            assert fence_via(lab, "k1-b", bmc, "status").outcome is Outcome.ON  # native driver
            wait_counts(lab, bmc.name, before, off=1, on=1, status=2)
            assert settled_counts(other, bmc.name) == other_before
            wait_until(lambda lab=lab: lab.lab.status()["hosts"]["k1-a"]["boots"] == 2, 10,
                       "k1-a to boot again")
        # A proxy of one lab cannot reach the other lab's BMCs: no route between instances.
        foreign = fence_via(one, "k1-b", two.topo.host("k1-a").bmcs[0], "status", timeout=5)
        assert foreign.outcome is Outcome.ERROR
        kept = netns.leftovers(one.instance)
    finally:
        second.stop()
    assert netns.leftovers(second.instance) == ([], [])
    assert netns.guard_routes(second.instance) == []
    assert_intact(first_lab, *kept)


@pytest.mark.lab
def test_a_crashed_lab_is_cleaned_up_while_another_runs(first_lab: RunningLab,
                                                        tmp_path: Path) -> None:
    kept = netns.leftovers(first_lab.instance)
    # Crash one, then start another: the start removes the crashed one's leftovers.
    proc, env = launch(tmp_path, home="crashed")
    crashed = announced_instance(wait_started(proc))
    agents = _agent_pids(env)
    proc.kill()
    proc.wait()
    assert netns.leftovers(crashed)[0] and netns.guard_routes(crashed)
    lab = None
    try:
        lab, _ = start(tmp_path / "next", load_yaml(SMALL))
        assert f"netns {crashed.front_ns}" in lab.lease.removed
        assert f"link {crashed.uplink}" in lab.lease.removed
        assert not any(_alive(pid) for pid in agents)
        if lab.instance != crashed:  # the lowest free instance: usually the crashed one's, reused
            assert netns.leftovers(crashed) == ([], []) and netns.guard_routes(crashed) == []
        a = lab.topo.host("k1-a")
        assert fence_via(lab, "k1-b", a.bmcs[0], "status").outcome is Outcome.ON
        assert_intact(first_lab, *kept)
    finally:
        if lab is not None:
            lab.stop()
    # Crash one more: `hostpower lab cleanup` removes it, and only it.
    proc, env = launch(tmp_path, home="crashed-again")
    crashed = announced_instance(wait_started(proc))
    listing = subprocess.run([HOSTPOWER, "lab", "list"], capture_output=True, text=True,
                             timeout=30).stdout
    assert str(tmp_path / "crashed-again") in listing and str(tmp_path / "first") in listing
    agents = _agent_pids(env)
    proc.kill()
    proc.wait()
    status = subprocess.run([HOSTPOWER, "lab", "status"], env=env, capture_output=True,
                            text=True, timeout=30)
    assert status.returncode == 1 and "has died" in status.stderr
    r = subprocess.run([HOSTPOWER, "lab", "cleanup"], env=env, capture_output=True, text=True,
                       timeout=60)
    assert f"netns {crashed.front_ns}" in r.stdout
    assert all(crashed.prefix in line or "route unreachable" in line or "process" in line
               for line in r.stdout.splitlines()), r.stdout
    assert netns.leftovers(crashed) == ([], []) and netns.guard_routes(crashed) == []
    assert not any(_alive(pid) for pid in agents)
    assert not (tmp_path / "crashed-again" / "lab" / "lab.json").exists()
    assert_intact(first_lab, *kept)


def _agent_pids(env: dict[str, str]) -> list[int]:
    state = json.loads((Path(env["HOSTPOWER_HOME"]) / "lab" / "lab.json").read_text())
    hosts = httpx.get(state["control"] + "/status", timeout=10).json()["hosts"].values()
    return [h["pid"] for h in hosts if h["pid"]]


def _sshd_pids(env: dict[str, str]) -> list[int]:
    """The SSH servers started for the lab of this home (sshd rewrites its
    command line into one title: "sshd: /usr/sbin/sshd -D ... [listener] ...")."""
    home = env["HOSTPOWER_HOME"].encode()
    pids = []
    for entry in Path("/proc").iterdir():
        try:
            args = (entry / "cmdline").read_bytes().split(b"\0") if entry.name.isdigit() else []
        except OSError:
            continue
        if args and b"sshd" in args[0] and any(home in a for a in args):
            pids.append(int(entry.name))
    return pids


@pytest.mark.lab
def test_a_second_lab_from_the_same_home_is_refused(first_lab: RunningLab, tmp_path: Path) -> None:
    settings = Settings(home=tmp_path / "first" / "home", db_url="sqlite://")
    topo = load_topology(load_yaml(SMALL), loopback=False)
    with pytest.raises(LabError, match="is running"):
        start_lab(settings, topo, log=lambda m: None)
    assert topo.lease is not None and not topo.lease.held  # the claimed instance went back


@pytest.mark.lab
def test_loopback_labs_coexist_and_a_crashed_ones_agents_are_killed(tmp_path: Path) -> None:
    require_lab_tools(namespaces=False)
    first, _ = start(tmp_path / "first", load_yaml(SMALL), loopback=True)
    proc = None
    try:
        proc, env = launch(tmp_path, "--loopback", home="second")
        text = wait_started(proc)
        if "Ctrl-C stops" not in text:  # it failed: the rest of its output says why
            assert proc.stdout is not None
            pytest.fail(f"the second lab did not start:\n{text}{proc.stdout.read()}")
        second = announced_instance(text)
        assert second != first.instance and "127.18." in text
        agents = _agent_pids(env)
        assert all(f"{MARKER}=".encode() in Path(f"/proc/{pid}/environ").read_bytes()
                   for pid in agents)
        sshds = _sshd_pids(env)  # sshd clears its environment: found by its command line
        assert sshds
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        leftovers = agents + sshds
        assert all(_alive(pid) for pid in leftovers)  # orphans, still holding 127.18 addresses
        r = subprocess.run([HOSTPOWER, "lab", "cleanup"], env=env, capture_output=True,
                           text=True, timeout=60)
        assert all(f"process {pid} of lab instance {second.number}" in r.stdout
                   for pid in leftovers), r.stdout
        assert not any(_alive(pid) for pid in leftovers)
        a = first.topo.host("k1-a")
        assert fence_via(first, "k1-b", a.bmcs[0], "status").outcome is Outcome.ON
        assert all(s.process and s.process.poll() is None for s in first.lab.hosts.values())
    finally:
        if proc is not None:
            interrupt(proc)
        first.stop()
