"""kdump detection against the lab: a host whose kernel crashed runs Debian's
real fence_kdump_send from its own network namespace towards the engine
(the lab fault `kernel_crash_kdump`), and the engine's monitor, its
fence_kdump listener and the kdump precaution decide what happens."""

from __future__ import annotations

import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from conftest import require
from enginekit import (
    EngineThread, engine_context, events, last_event_id, reset, set_config, status_of,
)
from helpers import wait_until
from hostpower.lab.kdump import FENCE_KDUMP_SEND
from hostpower.lab.runner import RunningLab
from hostpower.model.inventory import HostStatus, PowerManagement
from hostpower.store.inventory import Inventory
from hostpower.store.journal import Journal
from hostpower.store.kdump import KdumpStore
from labkit import counts, fence_via, load_yaml, require_lab_tools, start, wait_all_agents

pytestmark = pytest.mark.lab

TOPOLOGY = """
name: kdump
boot_delay: 0.3
data_centers:
  - name: d1
    clusters:
      - name: k1
        hosts: [{name: k1-a}, {name: k1-b}, {name: k1-c}, {name: k1-d}]
"""
POWER = ("on", "off", "reset", "cycle")   # BMC commands that change power
# Fast detection: fence_kdump_send sends every second.
KDUMP = {"FenceKdumpMessageInterval": "1", "KdumpStartedTimeout": "5",
         "KdumpFinishedTimeout": "3", "KdumpRebootTimeout": "20"}


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[RunningLab, EngineThread]]:
    require_lab_tools()
    require(Path(FENCE_KDUMP_SEND).exists(), f"{FENCE_KDUMP_SEND} is missing (fence-agents)")
    lab, settings = start(tmp_path_factory.mktemp("kdump"), load_yaml(TOPOLOGY))
    ctx = engine_context(lab, settings)   # FAST: a listener port of this test run's own
    set_config(ctx, **KDUMP)
    try:
        with EngineThread(ctx, monitor=True) as engine:
            yield lab, engine
    finally:
        ctx.close()
        lab.stop()


@pytest.fixture
def lab(world) -> Iterator[RunningLab]:  # type: ignore[no-untyped-def]
    lab, engine = world
    set_config(engine.ctx, **KDUMP)
    yield lab
    for h in lab.topo.hosts:
        lab.lab.fault(h.name, "kernel_crash_kdump", clear=True)
        for bmc in h.bmcs:
            if lab.lab.bmcs[bmc.name].power == "off":
                peer = next(p.name for p in lab.topo.hosts if p.name != h.name)
                fence_via(lab, peer, bmc, "on")
    wait_all_agents(lab)
    reset(engine.ctx, lab)
    wait_until(lambda: all(status_of(engine.ctx, h.name) is HostStatus.UP for h in lab.topo.hosts),
               15, "every host up again")


@pytest.fixture
def engine(world) -> EngineThread:  # type: ignore[no-untyped-def]
    return world[1]


def port(engine: EngineThread) -> int:
    return int(engine.ctx.config()["FenceKdumpDestinationPort"])


def crash(lab: RunningLab, engine: EngineThread, host: str, duration: float,
          reboot: bool = False) -> None:
    lab.lab.fault(host, "kernel_crash_kdump", options={
        "port": port(engine), "interval": 1, "duration": duration, "reboot": reboot})


def operations(engine: EngineThread, name: str):  # type: ignore[no-untyped-def]
    with engine.ctx.db.session() as s:
        return Journal(s).list(Inventory(s, engine.ctx.box).find_host(name).id)


def power_commands(lab: RunningLab, host: str) -> dict[str, int]:
    c = counts(lab, f"{host}-bmc")
    return {k: c.get(k, 0) for k in POWER}


def story(engine: EngineThread, host: str, since: int) -> list[tuple[str, str | None]]:
    return [(e.kind, e.details.get("status")) for e in events(engine.ctx, host, since_id=since)
            if e.kind.startswith(("kdump.", "fence.started", "fence.succeeded", "treatment."))
            or e.kind == "host.status"]


def test_kdump_a_dumping_host_is_left_alone_and_comes_back_unfenced(
        lab: RunningLab, engine: EngineThread) -> None:
    since = last_event_id(engine.ctx)
    before = power_commands(lab, "k1-b")
    boots = lab.lab.status()["hosts"]["k1-b"]["boots"]
    crash(lab, engine, "k1-b", duration=12)
    assert lab.lab.status()["hosts"]["k1-b"]["agent"] == "kdumping"
    wait_until(lambda: status_of(engine.ctx, "k1-b") is HostStatus.KDUMPING, 20, "k1-b kdumping")
    # While the messages come, nobody touches it: the monitor leaves it alone,
    # no power command is sent.
    for _ in range(4):
        time.sleep(1)
        assert status_of(engine.ctx, "k1-b") is HostStatus.KDUMPING
    assert power_commands(lab, "k1-b") == before
    [started] = events(engine.ctx, "k1-b", "kdump.started", since)
    front = lab.topo.host("k1-b").front_address
    assert f"fence_kdump message(s) from {front}" in started.message
    with engine.ctx.db.session() as s:
        dump = KdumpStore(s).session(Inventory(s, engine.ctx.box).find_host("k1-b").id)
    assert dump is not None and dump.source == front and dump.messages >= 3
    # The dump ends (fence_kdump_send stops): non_responsive again, waiting for the reboot.
    wait_until(lambda: events(engine.ctx, "k1-b", "kdump.finished", since), 25, "the dump's end")
    assert status_of(engine.ctx, "k1-b") is HostStatus.NON_RESPONSIVE
    lab.lab.fault("k1-b", "kernel_crash_kdump", clear=True)   # it reboots: a new agent
    wait_until(lambda: status_of(engine.ctx, "k1-b") is HostStatus.UP, 15, "k1-b up again")
    wait_until(lambda: events(engine.ctx, "k1-b", "treatment.spared", since), 10, "spared")
    time.sleep(2)  # a couple more rounds: still nothing
    assert power_commands(lab, "k1-b") == before
    assert lab.lab.status()["hosts"]["k1-b"]["boots"] == boots + 1
    assert not [o for o in operations(engine, "k1-b") if o.origin == "automatic"]
    assert story(engine, "k1-b", since) == [
        ("host.status", "connecting"), ("host.status", "non_responsive"),
        ("kdump.waiting", None), ("kdump.started", "kdumping"),
        ("kdump.finished", "non_responsive"), ("host.status", "up"),
        ("kdump.rebooted", None), ("treatment.spared", None)]
    [spared] = events(engine.ctx, "k1-b", "treatment.spared", since)
    assert spared.details == {"precaution": "kdump_detection"}
    assert spared.message == ("k1-b is not power-cycled now: it came back by itself after its "
                              "crash dump")


def test_kdump_a_host_that_reboots_by_itself_after_its_dump_is_spared(
        lab: RunningLab, engine: EngineThread) -> None:
    """kdump's own final action: the host reboots once the dump is written."""
    since = last_event_id(engine.ctx)
    before = power_commands(lab, "k1-d")
    crash(lab, engine, "k1-d", duration=8, reboot=True)
    wait_until(lambda: events(engine.ctx, "k1-d", "treatment.spared", since), 40, "spared")
    assert status_of(engine.ctx, "k1-d") is HostStatus.UP
    assert power_commands(lab, "k1-d") == before
    kinds = [k for k, _ in story(engine, "k1-d", since)]
    assert kinds.index("kdump.started") < kinds.index("kdump.rebooted")


def test_kdump_detection_off_the_same_crash_is_hard_fenced(
        lab: RunningLab, engine: EngineThread) -> None:
    with engine.ctx.db.session() as s:
        inv = Inventory(s, engine.ctx.box)
        h = inv.find_host("k1-c")
        inv.update_host(h.id, power_management=PowerManagement(True, True, False, ""))
    since = last_event_id(engine.ctx)
    before = power_commands(lab, "k1-c")
    crash(lab, engine, "k1-c", duration=60)
    op = wait_until(lambda: next((o for o in operations(engine, "k1-c")
                                  if o.origin == "automatic" and not o.running), None),
                    40, "the automatic restart to finish")
    assert op.state == "succeeded", op.message
    wait_until(lambda: status_of(engine.ctx, "k1-c") is HostStatus.UP, 15, "k1-c up again")
    after = power_commands(lab, "k1-c")
    assert after["off"] - before["off"] == 1 and after["on"] - before["on"] == 1
    assert not [e for e in events(engine.ctx, "k1-c", since_id=since)
                if e.kind.startswith("kdump.")]
    status = lab.lab.status()["hosts"]["k1-c"]
    assert status["agent"] == "running" and status["kdump"] is None  # power off ended the dump


def test_kdump_a_host_that_does_not_come_back_after_its_dump_is_hard_fenced(
        lab: RunningLab, engine: EngineThread) -> None:
    set_config(engine.ctx, KdumpRebootTimeout="4")
    since = last_event_id(engine.ctx)
    before = power_commands(lab, "k1-a")
    crash(lab, engine, "k1-a", duration=6)   # and it stays dead afterwards
    wait_until(lambda: events(engine.ctx, "k1-a", "kdump.started", since), 20, "the dump")
    finished = wait_until(lambda: events(engine.ctx, "k1-a", "kdump.finished", since), 25,
                          "the dump's end")
    assert power_commands(lab, "k1-a") == before  # nothing while it dumped
    assert lab.lab.status()["hosts"]["k1-a"]["agent"] == "dumped"
    op = wait_until(lambda: next((o for o in operations(engine, "k1-a")
                                  if o.origin == "automatic" and not o.running), None),
                    30, "the automatic restart to finish")
    assert op.state == "succeeded", op.message
    wait_until(lambda: status_of(engine.ctx, "k1-a") is HostStatus.UP, 15, "k1-a up again")
    kinds = [k for k, _ in story(engine, "k1-a", since)]
    assert kinds[kinds.index("kdump.started"):] [:4] == [
        "kdump.started", "kdump.finished", "kdump.no_reboot", "fence.started"]
    [no_reboot] = events(engine.ctx, "k1-a", "kdump.no_reboot", since)
    # not before KdumpRebootTimeout after the end of the dump
    assert (no_reboot.created_at - finished[0].created_at).total_seconds() >= 3
    assert "did not answer within 4 s (KdumpRebootTimeout)" in no_reboot.message
    after = power_commands(lab, "k1-a")
    assert after["off"] - before["off"] == 1 and after["on"] - before["on"] == 1


def test_kdump_messages_from_an_address_that_is_no_hosts_are_ignored_and_counted(
        lab: RunningLab, engine: EngineThread) -> None:
    listener = engine.runtime.kdump_listener
    assert listener is not None and listener.listening is not None
    before = (listener.counts.unknown, listener.counts.malformed, listener.counts.accepted)
    engine_address = lab.topo.engine_front_address
    # The real sender, from the engine machine itself (the root namespace):
    # its messages leave from the engine's own front address, which no host has.
    subprocess.run([FENCE_KDUMP_SEND, "-p", str(port(engine)), "-c", "2", "-i", "1",
                    engine_address], check=True, timeout=20, capture_output=True)
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind((engine_address, 0))
        s.sendto(b"not a fence_kdump message", (engine_address, port(engine)))
    wait_until(lambda: (listener.counts.unknown, listener.counts.malformed)
               == (before[0] + 2, before[1] + 1), 5, "the datagrams to be counted")
    assert listener.counts.accepted == before[2]
    assert listener.counts.last_unknown == engine_address

    def stored():  # type: ignore[no-untyped-def]
        with engine.ctx.db.session() as s:
            [row] = KdumpStore(s).listeners()
        return row if row.counts.unknown == before[0] + 2 else None
    row = wait_until(stored, 5, "the counts to be stored")
    assert row.counts.last_unknown == engine_address and row.state == "listening"
    with engine.ctx.db.session() as s:  # no host got a dump out of it
        assert all(d.source != engine_address for d in KdumpStore(s).sessions())
    assert all(status_of(engine.ctx, h.name) is HostStatus.UP for h in lab.topo.hosts)
