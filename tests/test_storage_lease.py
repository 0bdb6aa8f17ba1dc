"""Skip fencing while the host's storage lease is alive (cluster policy
skip_if_sd_active), against the lab: every simulated host's real agent
renews its lease in the lab's shared directory and watches its peers'; the
engine's monitor asks a proxy host's agent, chosen through the chain, before
it power-cycles a non-responsive host.

* cut off from the engine only (`isolate`), still renewing: not fenced,
  told once, watched on; its agent then killed: the lease goes stale and the
  host is fenced through the restart flow;
* a hung agent (SIGSTOP) renews nothing: fenced after the check;
* policy off: the isolated host is fenced as before, nobody is asked.
"""

from __future__ import annotations

import time
from collections.abc import Iterator

import pytest

from enginekit import (
    EngineThread, events, last_event_id, reset, scenario_world, set_config, status_of,
)
from helpers import wait_until
from hostpower.lab.runner import RunningLab
from hostpower.lab.storage import storage_dir
from hostpower.model.inventory import FencingPolicy, HostStatus
from hostpower.store.configstore import ConfigStore
from hostpower.store.inventory import Inventory
from hostpower.store.journal import Journal
from labkit import counts, fence_via, wait_all_agents, wait_counts

pytestmark = pytest.mark.lab

WINDOW = 5  # HostStorageLeaseAliveCheckingInterval in these scenarios (the lab renews every 1 s)
POWER = ("on", "off", "reset", "cycle")


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[RunningLab, EngineThread]]:
    with scenario_world(tmp_path_factory.mktemp("slease"), monitor=True) as world:
        yield world


@pytest.fixture
def engine(world) -> EngineThread:  # type: ignore[no-untyped-def]
    return world[1]


@pytest.fixture
def lab(world) -> Iterator[RunningLab]:  # type: ignore[no-untyped-def]
    lab, engine = world
    set_config(engine.ctx, HostStorageLeaseAliveCheckingInterval=str(WINDOW))
    yield lab
    for h in lab.topo.hosts:
        for fault in ("agent_crash", "isolate", "agent_hang"):
            if fault != "isolate" or lab.lab.hosts[h.name].isolated:
                lab.lab.fault(h.name, fault, clear=True)
        for bmc in h.bmcs:
            if lab.lab.bmcs[bmc.name].power == "off":
                peer = next(p.name for p in lab.topo.hosts
                            if p.cluster == h.cluster and p.name != h.name)
                fence_via(lab, peer, bmc, "on")
    wait_all_agents(lab)
    policy(engine, "c1", False)
    with engine.ctx.db.session() as s:
        ConfigStore(s).reset("HostStorageLeaseAliveCheckingInterval")
    reset(engine.ctx, lab)
    wait_until(lambda: all(status_of(engine.ctx, h.name) is HostStatus.UP
                           for h in lab.topo.hosts), 15, "every host up again")


def policy(engine: EngineThread, cluster: str, skip_if_sd_active: bool) -> None:
    with engine.ctx.db.session() as s:
        inv = Inventory(s, engine.ctx.box)
        c = next(c for c in inv.clusters() if c.name == cluster)
        p = c.fencing_policy
        inv.update_cluster(c.id, fencing_policy=FencingPolicy(
            p.enabled, p.skip_if_connectivity_broken, skip_if_sd_active))


def automatic(engine: EngineThread, name: str, since: float):  # type: ignore[no-untyped-def]
    with engine.ctx.db.session() as s:
        hid = Inventory(s, engine.ctx.box).find_host(name).id
        return [o for o in Journal(s).list(hid)
                if o.origin == "automatic" and o.created_at.timestamp() >= since]


def finished(engine: EngineThread, name: str, since: float):  # type: ignore[no-untyped-def]
    return next((o for o in automatic(engine, name, since) if not o.running), None)


def power(lab: RunningLab, bmc: str) -> dict[str, int]:
    return {k: v for k, v in counts(lab, bmc).items() if k in POWER}


def heal_when_powered_off(lab: RunningLab, host: str):  # type: ignore[no-untyped-def]
    """The reboot fixes the host's network: clear its isolation when its power goes off."""
    def listener(event: dict) -> None:  # type: ignore[type-arg]
        if event == {"event": "power", "bmc": f"{host}-bmc", "power": "off"}:
            lab.lab.fault(host, "isolate", clear=True)
    lab.lab.add_listener(listener)
    return listener


def test_slease_the_lab_hosts_renew_their_leases_on_shared_storage(lab: RunningLab) -> None:
    shared = storage_dir(lab.run_dir)
    assert shared == lab.run_dir / "storage"
    wait_until(lambda: {p.name for p in shared.glob("*.lease")}
               == {f"{h.name}.lease" for h in lab.topo.hosts}, 10, "every host's lease")


def test_slease_isolated_host_renewing_its_lease_is_spared_until_its_agent_dies(
        lab: RunningLab, engine: EngineThread) -> None:
    policy(engine, "c1", True)
    since, started = last_event_id(engine.ctx), time.time()
    before = power(lab, "c1-h1-bmc")
    lab.lab.fault("c1-h1", "isolate")  # no route to the engine; its peers and storage remain

    [spared] = wait_until(lambda: events(engine.ctx, "c1-h1", "treatment.spared", since), 30,
                          "c1-h1 to be spared")
    assert spared.details == {"precaution": "storage_lease"}
    assert spared.message.startswith("c1-h1 is not power-cycled now: its storage lease was "
                                     "renewed "), spared.message
    assert "alive but cut off from this engine" in spared.message
    [alive] = events(engine.ctx, "c1-h1", "storage_lease.alive", since)
    proxy = alive.details["proxy"]
    assert proxy in ("c1-h2", "c1-h3") and alive.details["source"] == "cluster"
    assert f"(seen by proxy {proxy})" in spared.message
    assert alive.details["renewed_ago"] <= WINDOW

    # Watched on: a few more rounds, and nothing is switched, nothing said twice.
    time.sleep(3.5)
    assert status_of(engine.ctx, "c1-h1") is HostStatus.NON_RESPONSIVE
    assert events(engine.ctx, "c1-h1", "fence.started", since) == []
    assert automatic(engine, "c1-h1", started) == []
    assert power(lab, "c1-h1-bmc") == before
    assert len(events(engine.ctx, "c1-h1", "treatment.spared", since)) == 1
    assert len(events(engine.ctx, "c1-h1", "storage_lease.alive", since)) == 1

    # Its agent dies: no more renewals, the lease goes stale, the host is fenced.
    listener = heal_when_powered_off(lab, "c1-h1")
    try:
        crashed = time.monotonic()
        lab.lab.fault("c1-h1", "agent_crash")
        op = wait_until(lambda: finished(engine, "c1-h1", started), 60,
                        "the automatic restart to finish")
    finally:
        lab.lab._listeners.remove(listener)
    assert op.state == "succeeded", op.message
    [stale] = events(engine.ctx, "c1-h1", "storage_lease.stale", since)
    assert stale.details["state"] == "stale" and stale.details["proxy"] in ("c1-h2", "c1-h3")
    assert "fencing goes on" in stale.message
    # Not before the lease could be stale (the last renewal is dated to within two scans).
    assert time.monotonic() - crashed >= WINDOW - 2.5
    after = wait_counts(lab, "c1-h1-bmc", before, off=1, on=1)
    assert (after["off"] - before["off"], after["on"] - before["on"]) == (1, 1)
    kinds = [e.kind for e in events(engine.ctx, "c1-h1", since_id=since)
             if e.kind.startswith(("storage_lease.", "treatment.", "fence.started",
                                   "fence.succeeded"))]
    assert kinds == ["storage_lease.alive", "treatment.spared", "storage_lease.stale",
                     "fence.started", "fence.succeeded"]
    wait_until(lambda: status_of(engine.ctx, "c1-h1") is HostStatus.UP, 20, "c1-h1 up again")


def test_slease_hung_agent_renews_nothing_and_is_fenced_after_the_check(
        lab: RunningLab, engine: EngineThread) -> None:
    policy(engine, "c1", True)
    since, started = last_event_id(engine.ctx), time.time()
    before = power(lab, "c1-h2-bmc")
    lab.lab.fault("c1-h2", "agent_hang")  # SIGSTOP: no heartbeat answers, no renewals
    op = wait_until(lambda: finished(engine, "c1-h2", started), 60,
                    "the automatic restart to finish")
    assert op.state == "succeeded", op.message
    [stale] = events(engine.ctx, "c1-h2", "storage_lease.stale", since)
    assert stale.details["proxy"] in ("c1-h1", "c1-h3")
    # Frozen at once: the lease may still have looked alive for a round or two.
    assert all(e.details == {"precaution": "storage_lease"}
               for e in events(engine.ctx, "c1-h2", "treatment.spared", since))
    wait_counts(lab, "c1-h2-bmc", before, off=1, on=1)
    wait_until(lambda: status_of(engine.ctx, "c1-h2") is HostStatus.UP, 20, "c1-h2 up again")


def test_slease_policy_off_the_isolated_host_is_fenced_as_before(
        lab: RunningLab, engine: EngineThread) -> None:
    since, started = last_event_id(engine.ctx), time.time()
    before = power(lab, "c1-h1-bmc")
    listener = heal_when_powered_off(lab, "c1-h1")
    try:
        lab.lab.fault("c1-h1", "isolate")
        op = wait_until(lambda: finished(engine, "c1-h1", started), 40,
                        "the automatic restart to finish")
    finally:
        lab.lab._listeners.remove(listener)
    assert op.state == "succeeded", op.message
    assert [e.kind for e in events(engine.ctx, "c1-h1", since_id=since)
            if e.kind.startswith(("storage_lease.", "treatment.spared"))] == []
    wait_counts(lab, "c1-h1-bmc", before, off=1, on=1)
    wait_until(lambda: status_of(engine.ctx, "c1-h1") is HostStatus.UP, 20, "c1-h1 up again")
