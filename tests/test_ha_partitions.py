"""High availability under partitions (issue 10): real `hostpower serve`
engines on one PostgreSQL database beside the lab (tests/clusterkit.py), one
of them cut off from the hosts, or every engine cut off from the database
(tests/relay.py).

What is checked is what an operator sees: events (and which engine wrote
them), API answers (/api/health, operations, hosts), the engine's log where
the database cannot take an event, and the commands each lab BMC received.

* An engine that reaches the database but no host finds its hosts
  non_responsive, asks its peer for a second opinion, is outvoted and fences
  nothing.
* An engine that loses the database mid-restart (for longer than its lease)
  sends nothing while it is gone and finishes the flow once it is back: one
  off, one on. With two engines cut at once, neither acts during the outage
  and exactly one resumes the flow afterwards.

One lab for the module; every test has a fresh database holding its
inventory, and takes the BMC counts it compares against itself.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import httpx
import pytest

from clusterkit import LEASE, Cluster, Engine, engines, events, hosts, owners
from enginekit import FAST
from helpers import wait_until
from hostpower.lab.runner import RunningLab
from hostpower.settings import Settings
from labkit import counts, wait_counts

pytestmark = [pytest.mark.lab, pytest.mark.postgres]

HEARTBEAT = float(FAST["HostHeartbeatIntervalInSec"])
GRACE = float(FAST["TimeoutToResetHostInSeconds"])
POWER_COMMANDS = ("off", "on", "reset", "cycle")  # every command that changes a host's power
TARGET = "c1-h2"            # the host restarted in the database-outage scenarios
PAUSE_AFTER_OFF = "restart.after_off:pause"
OUTAGE = 2 * LEASE + 1      # seconds the database stays cut: longer than two leases


def power_counts(lab: RunningLab) -> dict[str, dict[str, int]]:
    """Every lab BMC's count of power-changing commands."""
    found = {}
    for host in lab.topo.hosts:
        for bmc in host.bmcs:
            seen = counts(lab, bmc.name)
            found[bmc.name] = {c: seen.get(c, 0) for c in POWER_COMMANDS}
    return found


def disable_connectivity_gate(engine: Engine) -> None:
    """Every cluster's skip_if_connectivity_broken off, through the API: an
    engine cut off from every host would otherwise be held back by that gate
    before it ever asks for a second opinion."""
    r = engine.api("GET", "/api/clusters")
    assert r.status_code == 200, r.text
    for cluster in r.json():
        policy = cluster["fencing_policy"]
        policy["skip_if_connectivity_broken"]["enabled"] = False
        put = engine.api("PUT", f"/api/clusters/{cluster['id']}", json={"fencing_policy": policy})
        assert put.status_code == 200, put.text
        assert put.json()["fencing_policy"]["skip_if_connectivity_broken"]["enabled"] is False


def operation(engine: Engine, op_id: int) -> dict[str, Any] | None:
    """The operation as `engine` reports it; None while it cannot answer
    (its database is coming back)."""
    try:
        r = engine.api("GET", f"/api/operations/{op_id}", timeout=5)
    except httpx.TransportError:
        return None
    return r.json() if r.status_code == 200 else None


def health_status(engine: Engine) -> int | None:
    try:
        return engine.health(timeout=2).status_code
    except httpx.TransportError:
        return None


def request_restart_and_wait_for_the_pause(engine: Engine, host: str) -> int:
    """A restart of `host` through `engine`'s API (started with the
    PAUSE_AFTER_OFF failpoint); returns the operation id once the engine has
    stopped itself right after the off command."""
    host_id = hosts(engine)[host]["id"]
    r = engine.api("POST", f"/api/hosts/{host_id}/fence", json={"fence_type": "restart"})
    assert r.status_code == 202, r.text
    wait_until(lambda: engine.frozen, 30, f"engine {engine.name} to pause after the off command",
               step=0.02)
    return r.json()["id"]


def hold_the_outage(cluster: Cluster, cut_at: float, lab: RunningLab, bmc: str,
                    frozen_counts: dict[str, int]) -> None:
    """Until OUTAGE seconds after `cut_at`: every engine keeps running (not
    stopped again, not dead), says 503 not ready, and `bmc` receives nothing."""
    while (left := cut_at + OUTAGE - time.monotonic()) > 0:
        for engine in cluster.started:
            assert engine.running, f"engine {engine.name} died:\n{engine.log_text()}"
            assert not engine.frozen, f"engine {engine.name} stopped at a failpoint again"
            assert health_status(engine) == 503, f"{engine.name} is ready without its database"
        assert counts(lab, bmc) == frozen_counts, "a command reached the BMC during the outage"
        time.sleep(min(0.5, left))


def wait_finished(cluster: Cluster, op_id: int, timeout: float) -> dict[str, Any]:
    """The operation once finished, as the first engine that answers reports it."""
    def finished() -> dict[str, Any] | None:
        for engine in cluster.started:
            assert not engine.frozen, (
                f"engine {engine.name} stopped at {PAUSE_AFTER_OFF} again: the resumed flow "
                f"sent a second off")
            op = operation(engine, op_id)
            if op is not None and op["state"] != "running":
                return op
        return None
    return wait_until(finished, timeout, f"operation {op_id} to finish", step=0.2)


# -- an engine cut off from the hosts ------------------------------------------------------

def test_ha_engine_cut_off_from_the_hosts_is_outvoted_and_fences_nothing(
        ha_world: tuple[RunningLab, Settings], tmp_path: Path) -> None:
    lab, settings = ha_world
    before = power_counts(lab)
    with engines(settings, tmp_path) as cluster:
        a = cluster.start_engine("a")
        disable_connectivity_gate(a)
        n, _relay = cluster.isolated_engine("n")  # the database through a relay; no host
        alive = cluster.engines_seen(via=a)
        assert {name: row["state"] for name, row in alive.items()} == {"a": "alive",
                                                                       "n": "alive"}
        ids = {name: h["id"] for name, h in hosts(a).items()}
        owner = owners(alive, ids.values())
        n_hosts = sorted(name for name, hid in ids.items() if owner[hid] == "n")
        a_hosts = sorted(name for name, hid in ids.items() if owner[hid] == "a")
        assert n_hosts and a_hosts, f"the ring gives each engine hosts: {owner}"

        def by_n(kind: str, host: str, evs: list[dict[str, Any]]) -> list[dict[str, Any]]:
            return [e for e in evs if e["kind"] == kind and e["host"] == host
                    and e["engine"] == "n"]

        # N cannot reach its hosts' agents: connecting, then non_responsive
        # (after its fresh grace period), by N's own account.
        def all_non_responsive() -> list[dict[str, Any]] | None:
            evs = events(a)
            done = all(any(e["details"].get("status") == "non_responsive"
                           for e in by_n("host.status", h, evs)) for h in n_hosts)
            return evs if done else None
        wait_until(all_non_responsive, 4 * GRACE + 10, f"n to find {n_hosts} non_responsive")

        # Before fencing any, N asks A, which reaches every one of them.
        def all_outvoted() -> list[dict[str, Any]] | None:
            evs = events(a)
            return evs if all(by_n("treatment.outvoted", h, evs) for h in n_hosts) else None
        evs = wait_until(all_outvoted, 15, f"n to be outvoted on {n_hosts}", step=0.2)
        for host in n_hosts:
            [outvoted] = by_n("treatment.outvoted", host, evs)  # said once per host
            assert outvoted["severity"] == "warning"
            assert outvoted["details"]["reached_by"] == ["a"]
            assert (f"automatic fencing of {host} skipped: engine n cannot reach its agent "
                    f"but a (") in outvoted["message"]
            assert "n's own network is the likelier culprit" in outvoted["message"]

        # A few more rounds: N asks again each round and is outvoted again.
        time.sleep(2 * HEARTBEAT + 1)
        evs = events(a)
        kinds = {e["kind"] for e in evs}
        assert not {k for k in kinds if k.startswith("fence.")}, \
            [e["message"] for e in evs if e["kind"].startswith("fence.")]
        assert "treatment.confirmed" not in kinds
        assert a.api("GET", "/api/operations").json() == []
        # Each engine spoke only of its own hosts.
        assert not [e for e in evs if e["kind"] == "host.status" and e["engine"] == "a"], \
            "A's hosts never left up"
        assert {e["host"] for e in evs if e["engine"] == "n" and e["host"]} <= set(n_hosts)
        now = hosts(a)
        assert {h: now[h]["status"] for h in a_hosts} == dict.fromkeys(a_hosts, "up")
        assert {h: now[h]["status"] for h in n_hosts} == dict.fromkeys(n_hosts, "non_responsive")
        assert {name: row["state"] for name, row in cluster.engines_seen(via=a).items()} == {
            "a": "alive", "n": "alive"}
        assert n.running and "Traceback" not in n.log_text()
        # N first: were A to leave first, N would be alone, with nobody to
        # ask, and would try to fence its hosts (it reaches none of them).
        n.stop()
    assert power_counts(lab) == before, "a BMC received a power command"
    assert all(h["power"] == "on" for h in lab.lab.status()["hosts"].values())


# -- the database gone for longer than the lease ---------------------------------------------

def test_ha_database_outage_longer_than_the_lease_sends_nothing_and_resumes(
        ha_world: tuple[RunningLab, Settings], tmp_path: Path) -> None:
    lab, settings = ha_world
    bmc = f"{TARGET}-bmc"
    before = counts(lab, bmc)
    with engines(settings, tmp_path) as cluster:
        relay = cluster.relay(listen=("127.0.0.1", 0))
        a = cluster.start_engine("a", failpoint=PAUSE_AFTER_OFF,
                                 db_url=relay.url_for(settings.db_url))
        op_id = request_restart_and_wait_for_the_pause(a, TARGET)
        relay.cut()
        cut_at = time.monotonic()
        a.thaw()  # it goes on from right after the off, without its database

        off_sent = wait_counts(lab, bmc, before, off=1)  # the off went out before the pause
        down = wait_until(lambda: (r := a.health(timeout=2)).status_code == 503 and r,
                          LEASE + 2, "a's health to turn 503")
        assert down.json()["status"] == "not ready" and "lease" in down.json()["detail"]
        # The flow paused where it was (its off journaled); the database
        # cannot take the event: the log says it, once.
        paused = f"restart of {TARGET} paused at phase stop: "
        wait_until(lambda: paused in a.log_text(), LEASE + 2, "a to log that the restart paused")
        time.sleep(1)  # commands are counted asynchronously: let any straggler show
        frozen_counts = counts(lab, bmc)
        assert (frozen_counts["off"] - before["off"], frozen_counts["on"] - before["on"]) == (1, 0)
        assert frozen_counts["status"] == off_sent["status"], "a status check without database"
        hold_the_outage(cluster, cut_at, lab, bmc, frozen_counts)
        assert lab.lab.status()["hosts"][TARGET]["power"] == "off"  # left off, safely

        relay.restore()
        op = wait_finished(cluster, op_id, 30)
        assert op["state"] == "succeeded", op["message"]
        wait_until(lambda: health_status(a) == 200, LEASE + 2, "a's health to be 200 again")
        seen = cluster.engines_seen(via=a)["a"]
        assert seen["state"] == "alive" and seen["generation"] == 2  # its lease had expired
        evs = events(a, operation=op_id)
        kinds = [e["kind"] for e in evs]
        assert a.log_text().count(paused) == 1 and "cannot renew its lease" in a.log_text()
    after = wait_counts(lab, bmc, before, off=1, on=1)
    assert (after["off"] - before["off"], after["on"] - before["on"]) == (1, 1)
    assert lab.lab.status()["hosts"][TARGET]["power"] == "on"
    assert kinds[0] == "fence.started" and kinds[-1] == "fence.succeeded", kinds
    [resumed] = [e for e in evs if e["kind"] == "fence.resumed"]
    assert resumed["engine"] == "a" and resumed["details"]["from_engine"] == "a"
    assert resumed["details"]["phase"] == "stop"
    # The resumed flow asked the device first and did not repeat the off.
    assert any(e["kind"] == "fence.note" and "already off" in e["message"] for e in evs), kinds
    assert all(e["engine"] == "a" for e in evs)


def test_ha_database_outage_with_two_engines_no_takeover_while_both_are_cut(
        ha_world: tuple[RunningLab, Settings], tmp_path: Path) -> None:
    lab, settings = ha_world
    bmc = f"{TARGET}-bmc"
    before = counts(lab, bmc)
    with engines(settings, tmp_path) as cluster:
        relay = cluster.relay(listen=("127.0.0.1", 0))
        url = relay.url_for(settings.db_url)
        a = cluster.start_engine("a", failpoint=PAUSE_AFTER_OFF, db_url=url)
        b = cluster.start_engine("b", db_url=url)
        op_id = request_restart_and_wait_for_the_pause(a, TARGET)
        relay.cut()
        cut_at = time.monotonic()
        a.thaw()

        wait_counts(lab, bmc, before, off=1)
        for engine in (a, b):
            wait_until(lambda e=engine: health_status(e) == 503, LEASE + 2,
                       f"{engine.name}'s health to turn 503")
        wait_until(lambda: f"restart of {TARGET} paused at phase stop: " in a.log_text(),
                   LEASE + 2, "a to log that the restart paused")
        time.sleep(1)
        frozen_counts = counts(lab, bmc)
        assert (frozen_counts["off"] - before["off"], frozen_counts["on"] - before["on"]) == (1, 0)
        hold_the_outage(cluster, cut_at, lab, bmc, frozen_counts)

        relay.restore()
        op = wait_finished(cluster, op_id, 30)
        assert op["state"] == "succeeded", op["message"]
        for engine in (a, b):
            wait_until(lambda e=engine: health_status(e) == 200, LEASE + 2,
                       f"{engine.name}'s health to be 200 again")
        seen = cluster.engines_seen(via=b)
        assert {n: (r["state"], r["generation"]) for n, r in seen.items()} == {
            "a": ("alive", 2), "b": ("alive", 2)}  # both leases had expired
        evs = events(b, operation=op_id)
        kinds = [e["kind"] for e in evs]
    after = wait_counts(lab, bmc, before, off=1, on=1)
    assert (after["off"] - before["off"], after["on"] - before["on"]) == (1, 1)
    assert lab.lab.status()["hosts"][TARGET]["power"] == "on"
    assert kinds[0] == "fence.started" and kinds[-1] == "fence.succeeded", kinds
    [resumed] = [e for e in evs if e["kind"] == "fence.resumed"]  # one engine, once
    assert resumed["details"]["from_engine"] == "a" and resumed["details"]["phase"] == "stop"
    # Every step after the outage is the resuming engine's.
    after_resume = evs[evs.index(resumed):]
    assert {e["engine"] for e in after_resume} == {resumed["engine"]}, after_resume
    assert any(e["kind"] == "fence.note" and "already off" in e["message"] for e in evs), kinds
