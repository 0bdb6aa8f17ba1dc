"""One command at a time per device, against the lab: real host agents as
proxies, real virtual IPMI BMCs, one engine (SQLite: its turns are its own).

SCENARIO_TOPOLOGY (tests/enginekit.py), with c1-h2's fence agent pointed at
c1-h1's BMC: two hosts on one device, as two servers behind one PDU are.
Their flows go through different proxies (each host agent runs its own
driver), so only the engine's device gate keeps their commands apart. The
device is watched through the lab: every command the BMC receives is an
event, timestamped here on receipt; the engine's turns at the device come
from its gate (`DeviceGate.observe`). Every command the device received
falls in exactly one turn, and turns are DeviceCommandIntervalInMs apart.
"""

from __future__ import annotations

import asyncio
import itertools
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import pytest
from enginekit import EngineThread, events, host_id, scenario_world, set_chain, set_config
from labkit import fence_via, wait_all_agents

from hostpower.fencing.devicegate import Turn
from hostpower.fencing.readiness import ReadinessChecker
from hostpower.lab.runner import RunningLab
from hostpower.lab.topology import LabBmc
from hostpower.model.devices import DeviceKey, device_key
from hostpower.model.operations import FlowAction, OperationState, Origin
from hostpower.model.secret import Secret
from hostpower.store.inventory import AgentInput, Inventory

pytestmark = pytest.mark.lab

INTERVAL = 0.8        # DeviceCommandIntervalInMs in these tests, in seconds
# The BMC reports commands by polling its counters every 10 ms, through the
# supervisor's pipe: a command is heard here at most this long after it was
# received (far less than INTERVAL, so a command belongs to one turn only).
HEARD_WITHIN = INTERVAL / 2
# Scheduling delays tolerated on a busy machine where a wait must be
# explained otherwise; below INTERVAL, which any wait for another command
# of the same device would add.
SLOP = 0.3


@dataclass
class DeviceWatch:
    """Commands the shared BMC received and the engine's turns at it."""

    bmc: LabBmc
    key: DeviceKey
    commands: list[tuple[float, str]] = field(default_factory=list)
    turns: list[Turn] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def on_lab(self, event: dict[str, Any]) -> None:
        if event.get("event") == "command" and event.get("bmc") == self.bmc.name:
            with self.lock:
                self.commands.append((time.monotonic(), str(event.get("command"))))

    def on_turn(self, turn: Turn) -> None:
        if turn.key == self.key:
            with self.lock:
                self.turns.append(turn)

    def clear(self) -> None:
        with self.lock:
            self.commands.clear()
            self.turns.clear()

    def one_after_another(self) -> list[tuple[Turn, list[str]]]:
        """Each turn with the commands the device received in it; asserts the
        turns never overlap, are spaced, and hold every command received."""
        time.sleep(HEARD_WITHIN)  # the last commands' reports
        with self.lock:
            turns = sorted(self.turns, key=lambda t: t.started)
            commands = list(self.commands)
        assert turns and commands
        for before, after in zip(turns, turns[1:]):
            assert before.ended is not None
            assert after.started - before.ended >= INTERVAL - 0.002, (before, after)
        held: list[tuple[Turn, list[str]]] = [(t, []) for t in turns]
        for heard, command in commands:
            owners = [(t, got) for t, got in held
                      if t.started <= heard <= (t.ended or heard) + HEARD_WITHIN]
            assert len(owners) == 1, f"{command} heard at {heard} outside every turn: {turns}"
            owners[0][1].append(command)
        return held


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory
          ) -> Iterator[tuple[RunningLab, EngineThread, DeviceWatch]]:
    with scenario_world(tmp_path_factory.mktemp("devices"), monitor=False) as (lab, engine):
        ctx = engine.ctx
        bmc = lab.topo.host("c1-h1").bmcs[0]
        with ctx.db.session() as s:
            inv = Inventory(s, ctx.box)
            h2 = inv.find_host("c1-h2")
            agent = inv.agents(h2.id)[0]
            inv.update_agent(h2.id, agent.id, AgentInput(
                type="ipmilan", address=bmc.address, port=bmc.port, username=agent.username,
                password=None, options=None))
        # Only proxies that reach c1's management network: every path works.
        for host in ("c1-h1", "c1-h2"):
            set_chain(ctx, host, "cluster")
        set_config(ctx, FenceProxyImplicitPreferences="", FenceCommandTimeoutInSec="20",
                   DeviceCommandIntervalInMs=str(int(INTERVAL * 1000)))
        watch = DeviceWatch(bmc, device_key("ipmilan", bmc.address, bmc.port))
        lab.lab.add_listener(watch.on_lab)
        engine.service.executor.gate.observe(watch.on_turn)
        yield lab, engine, watch


def restart_at_once(engine: EngineThread, *hosts: str) -> list[Any]:
    ids = [host_id(engine.ctx, h) for h in hosts]
    ops = [engine.call(engine.service.request(i, FlowAction.RESTART, Origin.API, "tester"))[0]
           for i in ids]
    return [engine.call(engine.service.wait(op.id, 120), timeout=130) for op in ops]


def test_device_two_hosts_on_one_bmc_fenced_at_once_one_after_the_other(world) -> None:  # type: ignore[no-untyped-def]
    lab, engine, watch = world
    wait_all_agents(lab, timeout=30)
    watch.clear()
    done = restart_at_once(engine, "c1-h1", "c1-h2")
    assert [op.state for op in done] == [OperationState.SUCCEEDED] * 2, [op.message for op in done]
    held = watch.one_after_another()
    # The device heard both hosts' commands, each in a turn of its own host.
    by_host = {h: [c for t, got in held if f" of {h} via " in t.label for c in got]
               for h in ("c1-h1", "c1-h2")}
    assert all(by_host.values()), by_host
    assert {"off", "on"} <= set(by_host["c1-h1"]) | set(by_host["c1-h2"])
    # They did want the device at the same time: some command waited for the other host's.
    waited = [t for t, _ in held if t.busy_with and t.waited > 0
              and t.label.split(" of ")[1].split()[0] != t.busy_with.split(" of ")[1].split()[0]]
    assert waited, [(t.label, t.busy_with, t.waited) for t, _ in held]
    # Each attempt's event names the device and the turn.
    attempts = [e for e in events(engine.ctx, "c1-h2", kind="fence.attempt")
                if e.operation_id == done[1].id]
    assert attempts and all(e.details["device"] == watch.key.text for e in attempts)
    assert lab.lab.status()["hosts"]["c1-h1"]["bmcs"][watch.bmc.name]["power"] == "on"


def test_device_health_check_and_flow_on_one_device_never_overlap(world) -> None:  # type: ignore[no-untyped-def]
    lab, engine, watch = world
    wait_all_agents(lab, timeout=30)
    watch.clear()
    checker = ReadinessChecker(engine.service)
    round_ = asyncio.run_coroutine_threadsafe(checker.round(), engine.loop)
    (op,) = restart_at_once(engine, "c1-h2")
    verdicts = {v.host_name: v for v in round_.result(120)}
    assert op.state is OperationState.SUCCEEDED, op.message
    held = watch.one_after_another()
    labels = [t.label for t, _ in held]
    checks = [t for t, got in held if " check via " in t.label and got]
    flow = [t for t, got in held if " of c1-h2 via " in t.label and got]
    assert checks and flow, labels
    assert "c1-h1" in verdicts   # checked through the device the flow used


def _turns_of(engine: EngineThread, keys: set[DeviceKey]) -> tuple[list[Turn], Any]:
    turns: list[Turn] = []
    remove = engine.service.executor.gate.observe(
        lambda t: turns.append(t) if t.key in keys else None)
    return turns, remove


def _quiet(engine: EngineThread, keys: set[DeviceKey]) -> None:
    """Until no command of earlier tests holds these devices and their
    spacing has passed: what a test measures is then its own commands' doing."""
    gate = engine.service.executor.gate
    deadline = time.monotonic() + 60
    while any(gate.busy(k) for k in keys):
        assert time.monotonic() < deadline, "a device stayed busy for a minute"
        time.sleep(0.1)
    time.sleep(INTERVAL + 0.1)


def _power_on(lab: RunningLab, *bmcs: LabBmc) -> None:
    """These BMCs on (sent straight to them through c2-h1, between tests)."""
    for bmc in bmcs:
        assert fence_via(lab, "c2-h1", bmc, "on").ok


def _group_of(engine: EngineThread, lab: RunningLab, host: str, *bmcs: LabBmc) -> None:
    """`host`'s agents replaced by one concurrent group (order 1) on `bmcs`,
    commanded through c2-h1, which reaches c1's and c2's management networks
    (SCENARIO_TOPOLOGY's extra host): whatever power supplies the topology
    gives the host, its group is these BMCs."""
    ctx = engine.ctx
    with ctx.db.session() as s:
        inv = Inventory(s, ctx.box)
        h = inv.find_host(host)
        for agent in inv.agents(h.id):
            inv.delete_agent(h.id, agent.id)
        for bmc in bmcs:
            inv.add_agent(h.id, AgentInput(
                type="ipmilan", address=bmc.address, port=bmc.port,
                username=lab.topo.bmc_username, password=Secret(lab.topo.bmc_password),
                options=(("lanplus", "1"),), order=1))
    set_chain(ctx, host, "c2-h1")


def test_device_group_on_two_devices_runs_its_agents_in_parallel(world) -> None:  # type: ignore[no-untyped-def]
    """A concurrent group on two BMCs (two power supplies): different
    devices, so the gate never makes one wait for the other."""
    lab, engine, _watch = world
    bmcs = (lab.topo.host("c1-h3").bmcs[0], lab.topo.host("c2-h2").bmcs[0])
    _power_on(lab, *bmcs)
    wait_all_agents(lab, timeout=30)
    _group_of(engine, lab, "c1-h3", *bmcs)
    keys = {device_key("ipmilan", b.address, b.port) for b in bmcs}
    _quiet(engine, keys)
    turns, remove = _turns_of(engine, keys)
    try:
        (op,) = restart_at_once(engine, "c1-h3")
    finally:
        remove()
        # The group's start ends at the first supply on: the other on may
        # have been cancelled before it was sent.
        _power_on(lab, *bmcs)
    assert op.state is OperationState.SUCCEEDED, op.message
    offs = [t for t in turns if t.label.startswith("off of c1-h3")]
    assert {t.key for t in offs} == keys
    first, second = offs[:2]
    # Asked at once (the group's commands are tasks of their own; each reads
    # the state first, off the event loop: SLOP covers a busy machine) ...
    assert abs((first.started - first.waited) - (second.started - second.waited)) < SLOP
    # ... and each waited only for its own device: the end of the device's
    # previous command (a status cancelled once the other supply answered
    # goes on to its end) and the spacing after it.
    for off in offs:
        asked = off.started - off.waited
        before = [t.ended for t in turns if t.key == off.key and t.ended is not None
                  and t.ended <= off.started and t is not off]
        free_at = max([asked, *[end + INTERVAL for end in before]])
        assert off.started - free_at < SLOP, (off, before)


def test_device_group_with_two_agents_on_one_device_takes_turns(world) -> None:  # type: ignore[no-untyped-def]
    """Both agents of a group on one BMC (as two outlets of one PDU feeding
    one server): its commands take turns at the device."""
    lab, engine, _watch = world
    bmc = lab.topo.host("c1-h3").bmcs[0]
    _power_on(lab, bmc)
    wait_all_agents(lab, timeout=30)
    _group_of(engine, lab, "c1-h3", bmc, bmc)
    key = device_key("ipmilan", bmc.address, bmc.port)
    _quiet(engine, {key})
    turns, remove = _turns_of(engine, {key})
    try:
        (op,) = restart_at_once(engine, "c1-h3")
    finally:
        remove()
    assert op.state is OperationState.SUCCEEDED, op.message
    offs = [t for t in turns if t.label.startswith("off of c1-h3")]
    assert len(offs) == 2
    ordered = sorted(turns, key=lambda t: t.started)
    for before, after in itertools.pairwise(ordered):
        assert before.ended is not None and after.started - before.ended >= INTERVAL - 0.002
    assert offs[1].busy_with == offs[0].label or offs[0].busy_with == offs[1].label
