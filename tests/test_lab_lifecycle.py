"""The lab's life cycle as an operator meets it: `hostpower lab start` in a
terminal, Ctrl-C, a crash, the next start; and loopback mode."""

from __future__ import annotations

import os
import signal
import subprocess
from pathlib import Path

import pytest

from helpers import wait_until
from hostpower.lab import netns
from hostpower.model.power import Outcome
from labkit import (
    HOSTPOWER, SMALL, announced_instance, fence_via, launch, require_lab_tools, run, start, unreachable_routes, wait_started,
)

pytestmark = pytest.mark.lab


def test_ctrl_c_stops_the_lab_and_leaves_nothing_behind(tmp_path: Path) -> None:
    require_lab_tools()
    proc, env = launch(tmp_path)
    try:
        text = wait_started(proc)
        assert "on network namespaces (management networks confined)" in text
        inst = announced_instance(text)
        assert f"ip netns exec hpl{inst.number}-h1 fence_ipmilan" in text
        for prefix in inst.ranges():
            assert f"unreachable {prefix} metric" in unreachable_routes()
        status = subprocess.run([HOSTPOWER, "lab", "status"], env=env, capture_output=True,
                                text=True, timeout=30)
        assert "k1-a  on     running  1" in status.stdout
        fault = subprocess.run([HOSTPOWER, "lab", "fault", "k1-a", "agent_hang"], env=env,
                               capture_output=True, text=True, timeout=30)
        assert fault.stdout.strip() == "agent_hang injected into k1-a"
        proc.send_signal(signal.SIGINT)
        rest = proc.communicate(timeout=30)[0]
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 0
    assert "lab: stopped, nothing left behind" in rest
    assert netns.leftovers(inst) == ([], [])
    for prefix in inst.ranges():
        assert f"unreachable {prefix}" not in unreachable_routes()


def test_next_start_removes_what_a_crashed_lab_left_behind(tmp_path: Path) -> None:
    require_lab_tools()
    proc, env = launch(tmp_path)
    crashed = announced_instance(wait_started(proc))
    proc.kill()  # SIGKILL: no chance to clean up
    proc.wait()
    namespaces, _ = netns.leftovers(crashed)
    assert crashed.front_ns in namespaces  # a crash leaves the lab's network behind
    proc, env = launch(tmp_path)
    try:
        text = wait_started(proc)
        assert "removed" in text and "leftovers of an earlier lab" in text
        second = announced_instance(text)
    finally:
        proc.send_signal(signal.SIGINT)
        proc.communicate(timeout=30)
    r = subprocess.run([HOSTPOWER, "lab", "cleanup"], env=env, capture_output=True, text=True,
                       timeout=30)
    assert r.stdout.strip() == "nothing to clean up"
    assert netns.leftovers(crashed) == ([], []) and netns.leftovers(second) == ([], [])
    assert netns.guard_routes(crashed) == [] and netns.guard_routes(second) == []


def test_fault_without_a_running_lab_says_so(tmp_path: Path) -> None:
    env = {**os.environ, "HOSTPOWER_HOME": str(tmp_path / "home")}
    r = subprocess.run([HOSTPOWER, "lab", "fault", "k1-a", "agent_hang"], env=env,
                       capture_output=True, text=True, timeout=30)
    assert r.returncode == 1 and "no lab is running" in r.stderr


def test_loopback_mode_runs_without_namespaces(tmp_path: Path) -> None:
    require_lab_tools(namespaces=False)
    from labkit import load_yaml
    lab, _ = start(tmp_path, load_yaml(SMALL), loopback=True)
    try:
        assert not lab.topo.namespaced
        a, b = lab.topo.host("k1-a"), lab.topo.host("k1-b")
        assert a.front_address.startswith("127.18.") and a.bmcs[0].address.startswith("127.19.")
        assert netns.leftovers(lab.instance) == ([], []) if netns.available() else True
        assert fence_via(lab, "k1-b", a.bmcs[0], "status").outcome is Outcome.ON
        hb = run(lambda c: c.heartbeat(b.front_address, b.agent_port, 2), lab)
        assert hb.host == "k1-b"
        with pytest.raises(Exception, match="isolate needs namespace mode"):
            lab.lab.fault("k1-a", "isolate")
    finally:
        lab.stop()
    wait_until(lambda: all(s.process is None or s.process.poll() is not None
                           for s in lab.lab.hosts.values()), 10, "agents to exit")
