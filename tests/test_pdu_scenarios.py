"""Device scenarios at engine level against the lab: the original design's
redundant power supply case (a server whose BMC is the first way to fence
it and whose two power supplies hang on two switched PDUs, switched as one
concurrent group), and a wrong Redfish password. Real fence_apc_snmp and
fence_redfish through the hosts' agents, snmpsim PDUs, sushy-tools BMCs.

The dual-PSU server has an IPMI BMC here, so these scenarios do not depend
on how Redfish certificates are trusted (drivers/redfish.py's business)."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest

from enginekit import (
    EngineThread, events, host_id, last_event_id, reset, scenario_world, set_chain, set_config,
)
from hostpower.fencing.devicegate import Turn
from hostpower.model.devices import device_key
from hostpower.lab.runner import RunningLab
from hostpower.model.events import Severity
from hostpower.model.inventory import FenceAgent
from hostpower.model.operations import FlowAction, Origin
from hostpower.model.power import FenceAction, Outcome
from hostpower.model.secret import Secret
from labkit import counts, outlet_counts, restore_power, wait_outlet_counts

pytestmark = pytest.mark.lab

TOPOLOGY = """
name: pdu-scenarios
boot_delay: 0.3
data_centers:
  - name: dc1
    clusters:
      - name: c1
        pdus: [{name: c1-pdu-a, outlets: 4}, {name: c1-pdu-b, outlets: 4}]
        hosts:
          - {name: c1-dual, power_supplies: 2, outlets: [c1-pdu-a:2, c1-pdu-b:2]}
          - {name: c1-dual2, power_supplies: 2, outlets: [c1-pdu-a:3, c1-pdu-b:3]}
          - {name: c1-h2}
          - {name: c1-red, bmc: redfish}
"""


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[RunningLab, EngineThread]]:
    with scenario_world(tmp_path_factory.mktemp("pdu"), monitor=False,
                        topology=TOPOLOGY) as world:
        yield world


@pytest.fixture
def lab(world) -> RunningLab:  # type: ignore[no-untyped-def]
    return world[0]


@pytest.fixture
def engine(world) -> Iterator[EngineThread]:  # type: ignore[no-untyped-def]
    lab, engine = world
    reset(engine.ctx, lab)
    yield engine
    restore_power(lab)


def run_flow(engine: EngineThread, name: str, action: str):  # type: ignore[no-untyped-def]
    op, _ = engine.call(engine.service.request(host_id(engine.ctx, name), FlowAction(action),
                                               Origin.API))
    return engine.call(engine.service.wait(op.id, 90), timeout=120)


def step(op, name: str):  # type: ignore[no-untyped-def]
    return next(s for s in op.steps if s.name == name)


def test_pdu_bmc_dead_the_pdu_group_fences_the_host_both_outlets_off_then_on(
        lab: RunningLab, engine: EngineThread) -> None:
    host = lab.topo.host("c1-dual")
    bmc = host.bmcs[0]
    a, b = host.outlets
    before = {o: outlet_counts(lab, o) for o in (a, b)}
    bmc_before = counts(lab, bmc.name)
    boots = lab.lab.status()["hosts"]["c1-dual"]["boots"]
    lab.lab.fault("c1-dual", "bmc_unresponsive")
    op = run_flow(engine, "c1-dual", "restart")
    assert op.state == "succeeded", op.message
    stop = step(op, "stop")
    assert stop.outcome == "off"
    assert sorted(c["agent"] for c in stop.proxies) == sorted(
        f"apc_snmp@{lab.topo.pdu(o.pdu).address}" for o in (a, b))
    for o in (a, b):
        after = wait_outlet_counts(lab, o, before[o], off=1, on=1)
        assert (after["off"] - before[o]["off"], after["on"] - before[o]["on"]) == (1, 1)
    status = lab.lab.status()["hosts"]["c1-dual"]
    assert status["boots"] == boots + 1  # it lost power and booted again
    assert [o["power"] for o in status["outlets"]] == ["on", "on"]
    bmc_after = counts(lab, bmc.name)
    assert (bmc_after["off"], bmc_after["on"]) == (bmc_before["off"], bmc_before["on"])


def test_pdu_two_hosts_on_one_pdu_pair_fenced_at_once_each_pdu_hears_one_command_at_a_time(
        lab: RunningLab, engine: EngineThread) -> None:
    """Two dual-PSU servers on the same two PDUs, their BMCs dead, restarted
    at once: their flows run side by side, yet each PDU receives their
    commands one after the other. What each PDU received (every SNMP
    request, reported by the lab as it arrives) falls inside exactly one of
    the engine's turns at that PDU, the turn of the host that outlet feeds;
    turns at one PDU never overlap and are DeviceCommandIntervalInMs apart."""
    interval = 0.4
    heard_within = 0.2   # a request is reported through the supervisor's pipe at once
    hosts = ("c1-dual", "c1-dual2")
    set_config(engine.ctx, DeviceCommandIntervalInMs=str(int(interval * 1000)),
               FenceProxyImplicitPreferences="")
    for h in hosts:  # one proxy for both: their dead BMCs fail in step, the PDUs are wanted together
        set_chain(engine.ctx, h, "c1-h2")
    feeds = {(o.pdu, o.outlet): h for h in hosts for o in lab.topo.host(h).outlets}
    keys = {device_key("apc_snmp", lab.topo.pdu(pdu).address, lab.topo.pdu(pdu).port): pdu
            for pdu, _ in feeds}
    heard: list[tuple[float, str, int]] = []
    turns: list[Turn] = []
    lock = threading.Lock()

    def on_lab(event: dict[str, Any]) -> None:
        if event.get("event") == "command" and event.get("pdu") in keys.values() \
                and event.get("outlet") is not None:
            with lock:
                heard.append((time.monotonic(), str(event["pdu"]), int(event["outlet"])))

    def on_turn(turn: Turn) -> None:
        if turn.key in keys:
            with lock:
                turns.append(turn)

    before = {o: outlet_counts(lab, o) for h in hosts for o in lab.topo.host(h).outlets}
    for h in hosts:
        lab.lab.fault(h, "bmc_unresponsive")
    lab.lab.add_listener(on_lab)
    stop_watching = engine.service.executor.gate.observe(on_turn)
    try:
        ops = [engine.call(engine.service.request(host_id(engine.ctx, h), FlowAction.RESTART,
                                                  Origin.API))[0] for h in hosts]
        done = [engine.call(engine.service.wait(op.id, 120), timeout=130) for op in ops]
        time.sleep(heard_within)
    finally:
        stop_watching()
    assert [op.state for op in done] == ["succeeded", "succeeded"], [op.message for op in done]
    for outlet, was in before.items():
        after = wait_outlet_counts(lab, outlet, was, off=1, on=1)
        assert (after["off"] - was["off"], after["on"] - was["on"]) == (1, 1), outlet
    with lock:
        heard_now, turns_now = list(heard), list(turns)
    for key, pdu in keys.items():
        mine = sorted((t for t in turns_now if t.key == key), key=lambda t: t.started)
        for first, second in zip(mine, mine[1:]):
            assert first.ended is not None
            assert second.started - first.ended >= interval - 0.002, (pdu, first, second)
        requests = [(at, outlet) for at, p, outlet in heard_now if p == pdu]
        assert requests, pdu
        for at, outlet in requests:
            owners = [t for t in mine if t.started <= at <= (t.ended or at) + heard_within]
            assert len(owners) == 1, (pdu, outlet, at, [(t.label, t.started, t.ended)
                                                        for t in mine])
            assert f" of {feeds[(pdu, outlet)]} via " in owners[0].label, (owners[0].label,
                                                                           outlet)
        # Both hosts used this PDU, and at least once one had to wait for the other.
        assert {h for h in hosts if any(f" of {h} via " in t.label for t in mine)} == set(hosts)
        assert any(t.busy_with and t.waited > 0 and t.busy_with.split(" of ")[1].split()[0]
                   != t.label.split(" of ")[1].split()[0] for t in mine), \
            [(t.label, t.busy_with, t.waited) for t in mine]


def test_pdu_one_pdu_of_the_pair_unreachable_the_stop_fails_and_names_the_outlet(
        lab: RunningLab, engine: EngineThread) -> None:
    host = lab.topo.host("c1-dual")
    _, b = host.outlets
    dead = lab.topo.pdu(b.pdu)
    lab.lab.fault("c1-dual", "bmc_unresponsive")
    lab.lab.fault("c1-dual", "pdu_unresponsive", options={"pdu": dead.name})
    since = last_event_id(engine.ctx)
    op = run_flow(engine, "c1-dual", "stop")
    assert op.state == "failed", op.message
    agent = f"apc_snmp@{dead.address}"
    assert agent in op.message
    errors = [e for e in events(engine.ctx, "c1-dual", since_id=since)
              if e.severity is Severity.ERROR and agent in e.message]
    assert errors, [e.message for e in events(engine.ctx, "c1-dual", since_id=since)]
    # Off only when verified: one supply is still powered, the host runs.
    status = lab.lab.status()["hosts"]["c1-dual"]
    assert status["power"] == "on" and status["agent"] == "running"


def test_redfish_wrong_password_with_fence_redfish_is_a_clear_error_without_a_retry_storm(
        lab: RunningLab, engine: EngineThread) -> None:
    bmc = lab.topo.host("c1-red").bmcs[0]
    hid = host_id(engine.ctx, "c1-red")
    before = counts(lab, bmc.name)
    # ssl_insecure: trusting the lab's device CA is the Redfish driver's
    # configuration (RedfishCaBundle), not this scenario's subject.
    wrong = FenceAgent(0, hid, "redfish", bmc.address, 1, bmc.port, "admin",
                       Secret("not-the-password"),
                       (("systems_uri", bmc.systems_uri), ("ssl_insecure", "1")))
    result = engine.call(engine.service.test_agent(hid, wrong))
    assert result.action is FenceAction.STATUS and result.outcome is Outcome.ERROR
    assert f"redfish@{bmc.address}" in result.message
    assert "failed on every proxy" in result.message
    assert "not-the-password" not in result.message
    after = counts(lab, bmc.name)
    refused = after["refused"] - before["refused"]
    proxies = len(result.commands[0].attempts) if result.commands else 0
    # fence_redfish asks once per attempt (it fails at the first 401); at most
    # one attempt per proxy of the chain, and no login ever succeeds.
    assert 1 <= refused <= max(proxies, 1) * 2, (refused, proxies)
    assert after["login"] == before["login"]
