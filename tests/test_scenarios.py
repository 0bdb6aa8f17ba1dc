"""Fencing scenarios against the lab (real agents, BMCs and confined
management networks), each named for the situation it reproduces and
checking what an operator sees: the proxy used, the operation's steps, the
events, and what the BMCs received."""

from __future__ import annotations

import concurrent.futures
from collections.abc import Iterator

import pytest

from enginekit import (
    EngineThread, events, host_id, last_event_id, operation, reset, scenario_world, set_chain,
    set_config, set_status, status_of,
)
from hostpower.lab.runner import RunningLab
from hostpower.model.inventory import FenceAgent, HostStatus
from hostpower.model.power import Outcome
from hostpower.model.secret import Secret
from hostpower.model.operations import FlowAction, Origin
from labkit import (
    counts, fence_via, wait_all_agents, wait_counts,
)

pytestmark = pytest.mark.lab
DOWN = HostStatus.NON_RESPONSIVE


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[RunningLab, EngineThread]]:
    with scenario_world(tmp_path_factory.mktemp("scenarios"), monitor=False) as world:
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
        for fault in ("bmc_unresponsive", "agent_crash"):
            lab.lab.fault(name, fault, clear=True)
        for bmc in lab.topo.host(name).bmcs:
            if lab.lab.bmcs[bmc.name].power == "off":
                peer = next(h.name for h in lab.topo.hosts
                            if h.cluster == lab.topo.host(name).cluster and h.name != name)
                assert fence_via(lab, peer, bmc, "on").outcome is Outcome.ON
    wait_all_agents(lab)


def status(engine: EngineThread, name: str):  # type: ignore[no-untyped-def]
    return engine.call(engine.service.status(host_id(engine.ctx, name)))


def run_flow(engine: EngineThread, name: str, action: str):  # type: ignore[no-untyped-def]
    op, _ = engine.call(engine.service.request(host_id(engine.ctx, name), FlowAction(action), Origin.API))
    return engine.call(engine.service.wait(op.id, 60))


def step(op, name: str):  # type: ignore[no-untyped-def]
    return next(s for s in op.steps if s.name == name)


def proxies_of(step_) -> list[str]:  # type: ignore[no-untyped-def]
    return [c["proxy"] for c in step_.proxies]


def test_chain_default_picks_a_proxy_in_the_same_cluster(engine: EngineThread) -> None:
    result = status(engine, "c1-h1")
    assert result.outcome is Outcome.ON
    [command] = result.commands
    assert command.proxy == "c1-h2"
    assert command.attempts[0].source == "cluster"


def test_chain_whole_cluster_down_falls_back_to_a_dc_proxy(engine: EngineThread) -> None:
    set_status(engine.ctx, "c1-h2", DOWN)
    set_status(engine.ctx, "c1-h3", HostStatus.MAINTENANCE)
    [command] = status(engine, "c1-h1").commands
    assert (command.proxy, command.attempts[-1].source) == ("c2-h1", "dc")


def test_chain_whole_data_center_down_falls_back_to_the_engine(engine: EngineThread) -> None:
    set_status(engine.ctx, "c3-h2", DOWN)
    result = status(engine, "c3-h1")
    assert result.outcome is Outcome.ON
    assert result.commands[0].proxy == "engine"
    assert [a.source for a in result.commands[0].attempts] == ["engine"]


def test_chain_proxy_dying_between_stop_and_start_hands_the_start_to_the_next_proxy(
        lab: RunningLab, engine: EngineThread) -> None:
    def kill_proxy_once_off_is_done(event) -> None:  # type: ignore[no-untyped-def]
        d = event.details
        if event.kind == "fence.attempt" and d.get("action") == "off" and d.get("outcome") == "off":
            lab.lab.fault(d["proxy"], "agent_crash")
    remove = engine.service.gateway.on_event(kill_proxy_once_off_is_done)
    try:
        op = run_flow(engine, "c1-h1", "restart")
    finally:
        remove()
    assert op.state == "succeeded", op.message
    assert proxies_of(step(op, "stop")) == ["c1-h2"]
    start = step(op, "start")
    assert proxies_of(start) == ["c1-h3"]
    tried = [a["proxy"] for a in start.proxies[0]["attempts"]]
    assert tried == ["c1-h2", "c1-h3"]  # the dead proxy was tried, then the next one won


def test_chain_every_proxy_failing_gives_one_error_event_listing_them(
        lab: RunningLab, engine: EngineThread) -> None:
    set_config(engine.ctx, FenceProxyImplicitPreferences="", FenceCommandTimeoutInSec="2")
    lab.lab.fault("c2-h2", "bmc_unresponsive")
    set_chain(engine.ctx, "c2-h2", "cluster")
    since = last_event_id(engine.ctx)
    result = status(engine, "c2-h2")
    assert result.outcome is Outcome.ERROR
    [error] = events(engine.ctx, "c2-h2", "fence.all_proxies_failed", since)
    assert error.severity.value == "error"
    assert "c2-h1 (cluster)" in error.message
    assert [a["proxy"] for a in error.details["attempts"]] == ["c2-h1"]
    set_chain(engine.ctx, "c2-h2", "cluster,c3-h1")
    since = last_event_id(engine.ctx)
    status(engine, "c2-h2")
    [error] = events(engine.ctx, "c2-h2", "fence.all_proxies_failed", since)
    assert [a["proxy"] for a in error.details["attempts"]] == ["c2-h1", "c3-h1"]


def test_chain_named_host_is_used_first(engine: EngineThread) -> None:
    set_chain(engine.ctx, "c1-h1", "c3-h2,cluster")
    [command] = status(engine, "c1-h1").commands
    assert command.proxy == "c3-h2"
    assert [a.source for a in command.attempts] == ["c3-h2"]


def test_chain_other_dc_finds_a_proxy_in_another_data_center(engine: EngineThread) -> None:
    set_config(engine.ctx, FenceProxyImplicitPreferences="")
    set_chain(engine.ctx, "c1-h1", "other_dc")
    [command] = status(engine, "c1-h1").commands
    # c3-h1 has no leg on c1's management network and fails for real; c3-h2 has one.
    assert [(a.proxy, a.outcome) for a in command.attempts] == [("c3-h1", "error"), ("c3-h2", "on")]
    assert command.proxy == "c3-h2"


def test_flow_request_for_a_host_already_in_a_flow_joins_it(
        lab: RunningLab, engine: EngineThread) -> None:
    before = counts(lab, "c2-h1-bmc")
    hid = host_id(engine.ctx, "c2-h1")
    def request():  # type: ignore[no-untyped-def]
        return engine.call(engine.service.request(hid, FlowAction.RESTART, Origin.API))
    with concurrent.futures.ThreadPoolExecutor(3) as pool:
        answers = list(pool.map(lambda _: request(), range(3)))
    assert len({op.id for op, _ in answers}) == 1
    assert sorted(joined for _, joined in answers) == [False, True, True]
    op = engine.call(engine.service.wait(answers[0][0].id, 60))
    assert op.state == "succeeded"
    after = wait_counts(lab, "c2-h1-bmc", before, off=1, on=1)
    assert (after["off"] - before["off"], after["on"] - before["on"]) == (1, 1)
    assert len(events(engine.ctx, "c2-h1", "fence.joined")) >= 2


def test_flow_host_already_verified_off_counts_as_fenced(lab: RunningLab, engine: EngineThread) -> None:
    bmc = lab.topo.host("c2-h2").bmcs[0]
    before = counts(lab, bmc.name)
    assert fence_via(lab, "c2-h1", bmc, "off").outcome is Outcome.OFF
    op = run_flow(engine, "c2-h2", "restart")
    assert op.state == "succeeded"
    assert [s.name for s in op.steps if s.name in ("stop", "start")] == ["start"]
    after = wait_counts(lab, bmc.name, before, off=1, on=1)
    assert after["off"] - before["off"] == 1  # only the test's own off: the flow sent none
    assert any("already verified off" in e.message for e in events(engine.ctx, "c2-h2", "fence.note"))


def test_flow_restart_moves_the_host_through_reboot_to_connecting(
        lab: RunningLab, engine: EngineThread) -> None:
    seen = []
    def record(event: dict) -> None:  # type: ignore[type-arg]
        if event.get("bmc") == "c3-h1-bmc" and event.get("command") == "off":
            seen.append(status_of(engine.ctx, "c3-h1"))
    lab.lab.add_listener(record)
    try:
        op = run_flow(engine, "c3-h1", "restart")
    finally:
        lab.lab._listeners.remove(record)
    assert op.state == "succeeded"
    assert seen == [HostStatus.REBOOT]
    assert status_of(engine.ctx, "c3-h1") is HostStatus.CONNECTING
    assert [s.name for s in op.steps][:2] == ["check", "stop"]
    assert op.steps[-1].name == "verify_on" and op.steps[-1].outcome == "on"


def test_flow_failed_restart_marks_the_host_non_responsive_with_an_error(
        lab: RunningLab, engine: EngineThread) -> None:
    set_config(engine.ctx, FenceProxyImplicitPreferences="", FenceCommandTimeoutInSec="2")
    set_chain(engine.ctx, "c2-h2", "cluster")
    lab.lab.fault("c2-h2", "bmc_unresponsive")
    op = run_flow(engine, "c2-h2", "restart")
    assert op.state == "failed"
    assert "stop of c2-h2 failed" in op.message
    assert status_of(engine.ctx, "c2-h2") is HostStatus.NON_RESPONSIVE
    [failed] = events(engine.ctx, "c2-h2", "fence.failed")[-1:]
    assert failed.severity.value == "error"


def test_chain_a_source_without_eligible_proxy_is_searched_again_before_moving_on(
        engine: EngineThread) -> None:
    set_config(engine.ctx, FindFenceProxyRetries="2", FenceProxyImplicitPreferences="")
    set_chain(engine.ctx, "c2-h2", "cluster")
    set_status(engine.ctx, "c2-h1", DOWN)
    since = last_event_id(engine.ctx)
    op = run_flow(engine, "c2-h2", "stop")
    assert op.state == "failed"
    searches = events(engine.ctx, "c2-h2", "fence.no_proxy", since)
    assert [e.message.endswith(f"({n}/2)") for n, e in enumerate(searches, 1)] == [True, True]


def test_flow_test_button_checks_an_unsaved_agent_definition(lab: RunningLab, engine: EngineThread) -> None:
    bmc = lab.topo.host("c1-h1").bmcs[0]
    hid = host_id(engine.ctx, "c1-h1")
    set_config(engine.ctx, FenceProxyImplicitPreferences="")
    set_chain(engine.ctx, "c1-h1", "cluster")
    good = FenceAgent(0, hid, "ipmilan", bmc.address, 1, bmc.port, "admin",
                      Secret("lab-bmc-password"), (("lanplus", "1"),))
    result = engine.call(engine.service.test_agent(hid, good))
    assert (result.outcome, result.commands[0].proxy) == (Outcome.ON, "c1-h2")
    bad = FenceAgent(0, hid, "ipmilan", bmc.address, 1, bmc.port, "admin",
                     Secret("wrong-password"), (("lanplus", "1"),))
    assert engine.call(engine.service.test_agent(hid, bad)).outcome is Outcome.ERROR


def test_flow_a_slow_bmc_does_not_hold_up_other_hosts_flows(lab: RunningLab, engine: EngineThread) -> None:
    import time
    set_config(engine.ctx, FenceProxyImplicitPreferences="", FenceCommandTimeoutInSec="3")
    set_chain(engine.ctx, "c2-h2", "cluster")
    lab.lab.fault("c2-h2", "bmc_unresponsive")
    slow, _ = engine.call(engine.service.request(host_id(engine.ctx, "c2-h2"), FlowAction.RESTART,
                                                    Origin.API))
    started = time.monotonic()
    fast = run_flow(engine, "c3-h1", "restart")
    fast_took = time.monotonic() - started
    assert fast.state == "succeeded"
    assert operation(engine.ctx, slow.id).running, "the slow flow should still be waiting on its BMC"
    assert fast_took < 3, f"the healthy host's restart took {fast_took:.1f} s"
    assert engine.call(engine.service.wait(slow.id, 60)).state == "failed"
