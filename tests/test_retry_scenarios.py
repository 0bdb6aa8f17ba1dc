"""Retry semantics against the lab (real agents, virtual IPMI BMCs, confined
management networks): what the BMCs received and what the journal and the
events show when a start is re-sent, a stop is not, a device stops
answering, one power supply of two hangs, or a group's status check fails.

Where a device must misbehave at a precise moment, a listener on the
engine's events acts right after a command answered: it runs before the
flow goes on (EngineGateway.emit calls listeners before returning), so the
moment is exact, not a race."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager

import pytest

from enginekit import (
    EngineThread, events, host_id, last_event_id, reset, scenario_world, set_chain, set_config,
)
from hostpower.lab.runner import RunningLab
from hostpower.model.events import Event
from hostpower.model.inventory import FenceAgent
from hostpower.model.operations import FlowAction, Origin
from hostpower.model.power import Outcome
from hostpower.model.secret import Secret
from hostpower.store.inventory import AgentInput, Inventory
from helpers import wait_until
from labkit import (
    counts, fence_via, outlet_counts, wait_all_agents, wait_counts, wait_outlet_counts,
)

pytestmark = pytest.mark.lab


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[RunningLab, EngineThread]]:
    with scenario_world(tmp_path_factory.mktemp("retries"), monitor=False) as world:
        yield world


@pytest.fixture
def lab(world) -> RunningLab:  # type: ignore[no-untyped-def]
    return world[0]


@pytest.fixture
def engine(world) -> Iterator[EngineThread]:  # type: ignore[no-untyped-def]
    lab, engine = world
    reset(engine.ctx, lab)
    yield engine
    for name in (h.name for h in lab.topo.hosts):
        lab.lab.fault(name, "bmc_unresponsive", clear=True)
        for bmc in lab.topo.host(name).bmcs:
            if lab.lab.bmcs[bmc.name].power == "off":
                peer = next(h.name for h in lab.topo.hosts
                            if h.cluster == lab.topo.host(name).cluster and h.name != name)
                assert fence_via(lab, peer, bmc, "on").outcome is Outcome.ON
    wait_all_agents(lab)


def run_flow(engine: EngineThread, name: str, action: str):  # type: ignore[no-untyped-def]
    op, _ = engine.call(engine.service.request(host_id(engine.ctx, name), FlowAction(action),
                                               Origin.API))
    return engine.call(engine.service.wait(op.id, 90), timeout=120)


@contextmanager
def once_after(engine: EngineThread, host: str, action: str, outcome: str,
               act: Callable[[], None]) -> Iterator[list[Event]]:
    """Run `act` (in a thread, waited for) right after the first `action` of
    `host` that answered `outcome`, before the flow takes its next step."""
    fired: list[Event] = []

    def listener(event: Event) -> None:
        d = event.details
        if (not fired and event.kind == "fence.attempt" and event.host_name == host
                and d.get("action") == action and d.get("outcome") == outcome):
            fired.append(event)
            worker = threading.Thread(target=act)  # the engine's loop must not run it itself
            worker.start()
            worker.join(30)

    remove = engine.service.gateway.on_event(listener)
    try:
        yield fired
    finally:
        remove()


def step_names(op) -> list[str]:  # type: ignore[no-untyped-def]
    return [s.name for s in op.steps]


def test_flow_start_not_verified_is_sent_once_more_and_the_bmc_counts_two_ons(
        lab: RunningLab, engine: EngineThread) -> None:
    bmc = lab.topo.host("c3-h1").bmcs[0]
    before = counts(lab, bmc.name)
    assert fence_via(lab, "c3-h2", bmc, "off").outcome is Outcome.OFF
    set_config(engine.ctx, FenceStartStatusRetries="1")
    since = last_event_id(engine.ctx)
    # The device is switched off again right after it answered the first on:
    # both polls of that start (1 + 1 retry) see it off.
    with once_after(engine, "c3-h1", "on", "on",
                    lambda: fence_via(lab, "c3-h2", bmc, "off")) as fired:
        op = run_flow(engine, "c3-h1", "start")
    assert fired and op.state == "succeeded", op.message
    assert step_names(op) == ["start", "verify_on", "verify_on", "start", "verify_on"]
    assert [s.outcome for s in op.steps] == ["on", "off", "off", "on", "on"]
    # Two offs, both the test's (before the flow, and after its first on); no off by the flow.
    after = wait_counts(lab, bmc.name, before, on=2, off=2)
    assert (after["on"] - before["on"], after["off"] - before["off"]) == (2, 2)
    [resent] = events(engine.ctx, "c3-h1", "fence.resent", since)
    assert resent.severity.value == "warning"
    assert "not verified: status was not on after 2 poll(s)" in resent.message


def test_flow_stop_not_verified_is_never_sent_again(lab: RunningLab, engine: EngineThread) -> None:
    bmc = lab.topo.host("c2-h1").bmcs[0]
    before = counts(lab, bmc.name)
    set_config(engine.ctx, FenceStopStatusRetries="2")
    with once_after(engine, "c2-h1", "off", "off",
                    lambda: fence_via(lab, "c2-h2", bmc, "on")) as fired:
        op = run_flow(engine, "c2-h1", "stop")
    assert fired and op.state == "failed"
    assert op.message.startswith("stop of c2-h1 not verified: status was not off after 3 poll(s)")
    assert step_names(op) == ["stop", "verify_off", "verify_off", "verify_off"]
    after = wait_counts(lab, bmc.name, before, off=1, on=1)
    assert after["off"] - before["off"] == 1  # the flow's only off; the on was the test's


def test_flow_bmc_that_stops_answering_ends_the_verification_at_the_fourth_poll(
        lab: RunningLab, engine: EngineThread) -> None:
    set_config(engine.ctx, FenceProxyImplicitPreferences="", FenceCommandTimeoutInSec="2",
               FenceStopStatusRetries="18")
    set_chain(engine.ctx, "c2-h2", "cluster")

    def unanswering() -> None:
        lab.lab.fault("c2-h2", "bmc_unresponsive")
        time.sleep(0.5)  # the BMC process reads the fault from its stdin

    with once_after(engine, "c2-h2", "off", "off", unanswering) as fired:
        op = run_flow(engine, "c2-h2", "stop")
    assert fired and op.state == "failed"
    # 18 retries would allow 19 polls: the fourth without an answer ends it.
    assert step_names(op) == ["stop"] + ["verify_off"] * 4
    assert op.message.startswith("stop of c2-h2 not verified: 4 of 4 status polls gave neither "
                                 "on nor off (more than 3 ends the verification)")


def test_group_start_finishes_at_the_first_supply_on_and_cancels_the_hanging_one(
        lab: RunningLab, engine: EngineThread) -> None:
    """c1-h3's two power supplies hang on two PDU outlets, one group. For the
    test that group is its only one (the BMC's agent is removed), and the
    second outlet's agent is pointed at a port where no PDU answers, so its on
    would walk the chain for FenceCommandTimeoutInSec per proxy: the start
    does not wait for it."""
    hid = host_id(engine.ctx, "c1-h3")
    bmc = lab.topo.host("c1-h3").bmcs[0]
    out1, out2 = lab.topo.host("c1-h3").outlets
    for outlet in (out1, out2):
        lab.lab.set_outlet(outlet.pdu, outlet.outlet, "off")
    wait_until(lambda: lab.lab.status()["hosts"]["c1-h3"]["power"] == "off", 5, "c1-h3 off")
    set_config(engine.ctx, FenceCommandTimeoutInSec="20")
    try:
        with agent_removed(engine, hid, bmc.address), \
                agent_moved(engine, hid, lab.topo.pdu(out2.pdu).address, port=1) as moved:
            before = outlet_counts(lab, out1)
            since = last_event_id(engine.ctx)
            started = time.monotonic()
            op = run_flow(engine, "c1-h3", "start")
            took = time.monotonic() - started
            in_flight = sum(engine.service.executor.in_flight.values())
            under_way = engine.service.executor.under_way
    finally:
        lab.lab.set_outlet(out2.pdu, out2.outlet, "on")
    assert op.state == "succeeded", op.message
    assert took < 10, f"the start waited {took:.1f} s for the hanging supply"
    # No command task outlived the group; only the engine's wait for the
    # hanging on, under way through its proxy, goes on: it keeps that
    # device's turn until the proxy answers (fencing/devicegate.py).
    assert in_flight == under_way <= 1
    [start] = [s for s in op.steps if s.name == "start"]
    outcomes = {c["agent_id"]: c["outcome"] for c in start.proxies}
    assert outcomes[moved.id] == "cancelled" and set(outcomes.values()) == {"on", "cancelled"}
    cancelled = [e for e in events(engine.ctx, "c1-h3", "fence.cancelled", since)
                 if e.details["action"] == "on"]
    assert [e.details["agent_id"] for e in cancelled] == [moved.id]
    assert cancelled[0].details["under_way"] is True  # it had reached a proxy
    assert "may still carry it out" in cancelled[0].message
    assert wait_outlet_counts(lab, out1, before, on=1)["on"] - before["on"] == 1


def test_group_whose_status_check_fails_hands_the_stop_to_the_next_group(
        lab: RunningLab, engine: EngineThread) -> None:
    """c1-h1 gets a first group whose agent has a wrong password: its status
    check fails, so it is never sent the off; the BMC's group stops the host."""
    hid = host_id(engine.ctx, "c1-h1")
    bmc = lab.topo.host("c1-h1").bmcs[0]
    set_config(engine.ctx, FenceProxyImplicitPreferences="")
    set_chain(engine.ctx, "c1-h1", "cluster")
    with engine.ctx.db.session() as s:
        inv = Inventory(s, engine.ctx.box)
        [real] = inv.agents(hid)
        inv.update_agent(hid, real.id, AgentInput(real.type, real.address, real.port,
                                                  real.username, None, None, order=2))
        broken = inv.add_agent(hid, AgentInput("ipmilan", bmc.address, bmc.port, "admin",
                                               Secret("wrong-password"), (("lanplus", "1"),),
                                               order=1))
    try:
        since = last_event_id(engine.ctx)
        op = run_flow(engine, "c1-h1", "stop")
    finally:
        with engine.ctx.db.session() as s:
            inv = Inventory(s, engine.ctx.box)
            inv.delete_agent(hid, broken.id)
            inv.update_agent(hid, real.id, AgentInput(real.type, real.address, real.port,
                                                      real.username, None, None, order=1))
    assert op.state == "succeeded", op.message
    assert step_names(op) == ["check", "stop", "verify_off"]
    check, stop, verify = op.steps
    assert [c["agent_id"] for c in check.proxies] == [broken.id]
    assert [c["agent_id"] for c in stop.proxies] == [real.id]  # the broken group got no off
    assert [c["agent_id"] for c in verify.proxies] == [real.id]
    [note] = [e for e in events(engine.ctx, "c1-h1", "fence.note", since)
              if "status check" in e.message]
    assert note.severity.value == "warning"
    assert lab.lab.bmcs[bmc.name].power == "off"


@contextmanager
def agent_removed(engine: EngineThread, hid: int, address: str) -> Iterator[None]:
    """The host's agent for `address` deleted for the block, then added again."""
    with engine.ctx.db.session() as s:
        inv = Inventory(s, engine.ctx.box)
        agent = next(a for a in inv.agents(hid) if a.address == address)
        inv.delete_agent(hid, agent.id)
    try:
        yield
    finally:
        with engine.ctx.db.session() as s:
            Inventory(s, engine.ctx.box).add_agent(hid, AgentInput(
                agent.type, agent.address, agent.port, agent.username, agent.password,
                agent.options, order=agent.order, encrypt_options=agent.encrypt_options))


@contextmanager
def agent_moved(engine: EngineThread, hid: int, address: str, port: int
                ) -> Iterator[FenceAgent]:
    """The host's agent for `address` pointed at `port` for the block."""
    with engine.ctx.db.session() as s:
        inv = Inventory(s, engine.ctx.box)
        agent = next(a for a in inv.agents(hid) if a.address == address)
        inv.update_agent(hid, agent.id, AgentInput(
            agent.type, agent.address, port, agent.username, None, None,
            encrypt_options=agent.encrypt_options))
    try:
        yield agent
    finally:
        with engine.ctx.db.session() as s:
            Inventory(s, engine.ctx.box).update_agent(
                hid, agent.id, AgentInput(agent.type, agent.address, agent.port,
                                          agent.username, None, None,
                                          encrypt_options=agent.encrypt_options))
