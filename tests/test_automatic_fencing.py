"""Automatic fencing against the lab: the engine's monitor notices a host
that stops answering, walks the gates, and fences it once through the chain."""

from __future__ import annotations

import time
from collections.abc import Iterator

import pytest

from helpers import wait_until
from enginekit import (
    EngineThread, events, last_event_id, reset, scenario_world, set_config, status_of,
)
from hostpower.lab.runner import RunningLab
from hostpower.model.inventory import HostStatus
from hostpower.store.journal import Journal
from labkit import (
    counts, fence_via, wait_all_agents, wait_counts,
)

pytestmark = pytest.mark.lab


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[RunningLab, EngineThread]]:
    with scenario_world(tmp_path_factory.mktemp("auto"), monitor=True) as world:
        yield world


@pytest.fixture
def lab(world) -> Iterator[RunningLab]:  # type: ignore[no-untyped-def]
    lab, engine = world
    yield lab
    for h in lab.topo.hosts:
        for fault in ("agent_crash", "isolate", "agent_hang"):
            if fault != "isolate" or lab.lab.hosts[h.name].isolated:
                lab.lab.fault(h.name, fault, clear=True)
        for bmc in h.bmcs:
            if lab.lab.bmcs[bmc.name].power == "off":
                peer = next(p.name for p in lab.topo.hosts if p.cluster == h.cluster and p.name != h.name)
                fence_via(lab, peer, bmc, "on")
    wait_all_agents(lab)
    reset(engine.ctx, lab)
    wait_until(lambda: all(status_of(engine.ctx, h.name) is HostStatus.UP for h in lab.topo.hosts),
               15, "every host up again")


@pytest.fixture
def engine(world) -> EngineThread:  # type: ignore[no-untyped-def]
    return world[1]


def operations(engine: EngineThread, name: str):  # type: ignore[no-untyped-def]
    with engine.ctx.db.session() as s:
        from hostpower.store.inventory import Inventory
        hid = Inventory(s, engine.ctx.box).find_host(name).id
        return Journal(s).list(hid)


def test_auto_crashed_agent_gets_its_host_fenced_exactly_once(
        lab: RunningLab, engine: EngineThread) -> None:
    since = last_event_id(engine.ctx)
    before = counts(lab, "c1-h2-bmc")
    lab.lab.fault("c1-h2", "agent_crash")
    op = wait_until(lambda: next((o for o in operations(engine, "c1-h2")
                                  if o.origin == "automatic" and not o.running), None),
                    30, "the automatic restart to finish")
    assert op.state == "succeeded", op.message
    wait_until(lambda: status_of(engine.ctx, "c1-h2") is HostStatus.UP, 15, "c1-h2 up again")
    time.sleep(2.5)  # two more heartbeat rounds: nothing may fence it again
    after = wait_counts(lab, "c1-h2-bmc", before, off=1, on=1)
    assert (after["off"] - before["off"], after["on"] - before["on"]) == (1, 1)
    story = [(e.kind, e.details.get("status")) for e in events(engine.ctx, "c1-h2", since_id=since)
             if e.kind in ("host.status", "fence.started", "fence.succeeded")]
    assert story == [("host.status", "connecting"), ("host.status", "non_responsive"),
                     ("fence.started", None), ("fence.succeeded", None), ("host.status", "up")]


def test_auto_host_cut_off_from_the_engine_is_fenced_through_a_peer(
        lab: RunningLab, engine: EngineThread) -> None:
    def heal_on_power_off(event: dict) -> None:  # type: ignore[type-arg]
        if event == {"event": "power", "bmc": "c1-h1-bmc", "power": "off"}:
            lab.lab.fault("c1-h1", "isolate", clear=True)  # the reboot fixed its network
    lab.lab.add_listener(heal_on_power_off)
    try:
        lab.lab.fault("c1-h1", "isolate")
        op = wait_until(lambda: next((o for o in operations(engine, "c1-h1")
                                      if o.origin == "automatic" and not o.running), None),
                        30, "the automatic restart to finish")
    finally:
        lab.lab._listeners.remove(heal_on_power_off)
    assert op.state == "succeeded", op.message
    stop = next(s for s in op.steps if s.name == "stop")
    assert stop.proxies[0]["proxy"] in ("c1-h2", "c1-h3")  # a peer, not the engine


def test_auto_connectivity_broken_threshold_skips_fencing(lab: RunningLab, engine: EngineThread) -> None:
    since = last_event_id(engine.ctx)
    before = {b: counts(lab, b) for b in ("c2-h1-bmc", "c2-h2-bmc")}
    lab.lab.fault("c2-h1", "agent_crash")
    lab.lab.fault("c2-h2", "agent_crash")
    skipped = wait_until(lambda: [e for e in events(engine.ctx, kind="treatment.skipped", since_id=since)
                                  if e.details.get("gate") == "connectivity_broken"],
                         30, "the connectivity gate to skip fencing")
    assert skipped[0].severity.value == "error"
    assert "2 of 2 hosts of cluster c2 (100%)" in skipped[0].message
    time.sleep(2)
    for b, base in before.items():
        assert counts(lab, b)["off"] == base["off"], f"{b} was switched off"
    assert not [o for o in operations(engine, "c2-h1") if o.origin == "automatic" and o.created_at.timestamp() > time.time() - 60]


def test_auto_startup_window_skips_fencing(lab: RunningLab, engine: EngineThread) -> None:
    set_config(engine.ctx, DisableFenceAtStartupInSec="3600")
    since = last_event_id(engine.ctx)
    before = counts(lab, "c3-h1-bmc")
    lab.lab.fault("c3-h1", "agent_crash")
    [skip] = wait_until(lambda: [e for e in events(engine.ctx, "c3-h1", "treatment.skipped", since)
                                 if e.details.get("gate") == "startup_window"], 30, "a startup skip")
    assert "DisableFenceAtStartupInSec" in skip.message
    time.sleep(1.5)
    assert counts(lab, "c3-h1-bmc")["off"] == before["off"]
    assert len(events(engine.ctx, "c3-h1", "treatment.skipped", since)) == 1  # said once, not every round
