"""Smoke tests of the cluster kit (tests/clusterkit.py, tests/relay.py): real
`hostpower serve` engines sharing one PostgreSQL database beside the lab,
a database relay that a test cuts, an engine in a namespace of its own.

One lab for the module; every test has a fresh database holding its
inventory (`load_lab`). Engines listen on loopback or inside namespaces the
test creates; every engine, relay and namespace is gone when a test ends.
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path

import pytest
from sqlalchemy import create_engine, text
from sqlalchemy.exc import OperationalError

from clusterkit import LEASE, engines
from helpers import wait_until
from hostpower.context import EngineContext
from hostpower.lab import netns as lab_netns
from hostpower.lab.runner import RunningLab
from hostpower.model.inventory import HostStatus
from hostpower.settings import Settings
from hostpower.store.inventory import Inventory
from labkit import tcp_reachable_from
from relay import Relay


@pytest.mark.postgres
def test_relay_over_a_unix_socket_reaches_postgresql_and_cuts(pg_url: str) -> None:
    # A short directory: a socket path must fit in 107 bytes, pytest's tmp_path may not.
    with tempfile.TemporaryDirectory(prefix="hpr-") as short, \
            Relay(listen=Path(short) / ".s.PGSQL.5432") as relay:
        url = relay.url_for(pg_url)
        assert "@/" in url and "host=" in url  # no TCP host: libpq takes the socket directory
        db = create_engine(url, pool_pre_ping=True)
        try:
            with db.connect() as conn:
                assert conn.execute(text("SELECT 1")).scalar() == 1
            assert relay.relayed == 1 and relay.open_connections == 1  # pooled
            relay.cut()
            assert relay.open_connections == 0
            started = time.monotonic()
            with pytest.raises(OperationalError, match="closed the connection"):
                with db.connect() as conn:
                    conn.execute(text("SELECT 1"))
            assert time.monotonic() - started < 2, "a cut relay refuses at once"
            assert relay.refused >= 1
            relay.restore()
            with db.connect() as conn:
                assert conn.execute(text("SELECT 2")).scalar() == 2
        finally:
            db.dispose()
    assert not relay.unix_path.exists()  # type: ignore[union-attr]


@pytest.mark.lab
@pytest.mark.postgres
def test_cluster_two_engines_see_each_other_and_a_killed_one_expires(
        ha_world: tuple[RunningLab, Settings], tmp_path: Path) -> None:
    _lab, settings = ha_world
    with engines(settings, tmp_path) as cluster:
        a, b = cluster.start_engine("a"), cluster.start_engine("b")
        for me in (a, b):
            seen = cluster.engines_seen(via=me)
            assert {n: r["state"] for n, r in seen.items()} == {"a": "alive", "b": "alive"}
            assert {n: r["self"] for n, r in seen.items()} == {"a": me is a, "b": me is b}
            assert seen[me.name]["address"] == me.url
        b.kill()
        row = cluster.wait_state("b", "expired", LEASE + 2, via=a)
        assert row["generation"] == 1
        assert cluster.engines_seen(via=a)["a"]["state"] == "alive"
    assert not a.running and not b.running
    assert "Traceback" not in a.log_text()


@pytest.mark.lab
@pytest.mark.postgres
def test_cluster_frozen_engine_expires_comes_back_when_thawed_and_is_stopped_frozen(
        ha_world: tuple[RunningLab, Settings], tmp_path: Path) -> None:
    _lab, settings = ha_world
    with engines(settings, tmp_path) as cluster:
        a, b = cluster.start_engine("a"), cluster.start_engine("b")
        b.freeze()
        cluster.wait_state("b", "expired", LEASE + 2, via=a)
        b.thaw()
        row = cluster.wait_state("b", "alive", LEASE + 2, via=a)
        assert row["generation"] == 2  # its lease had ended: it joined again
        wait_until(lambda: b.health().status_code == 200, LEASE, "b to be ready again")
        b.freeze()  # left frozen: closing the cluster must still stop it
    assert not b.running and cluster.engines_seen()["b"]["state"] == "stopped"


@pytest.mark.lab
@pytest.mark.postgres
def test_cluster_cut_database_relay_turns_one_engine_not_ready_and_back(
        ha_world: tuple[RunningLab, Settings], tmp_path: Path) -> None:
    _lab, settings = ha_world
    with engines(settings, tmp_path) as cluster:
        relay = cluster.relay(("127.0.0.1", 0))
        solo = cluster.start_engine("solo", db_url=relay.url_for(settings.db_url))
        peer = cluster.start_engine("peer")
        assert relay.relayed >= 1
        relay.cut()
        down = wait_until(lambda: (r := solo.health()).status_code == 503 and r, LEASE + 1,
                          "solo's health to turn 503")
        assert down.json()["status"] == "not ready" and "lease" in down.json()["detail"]
        assert peer.health().status_code == 200  # the cut is solo's alone
        relay.restore()
        wait_until(lambda: solo.health().status_code == 200, LEASE + 2,
                   "solo's health to be 200 again")
        assert cluster.engines_seen(via=peer)["solo"]["state"] == "alive"
        assert solo.running
    assert "cannot renew its lease" in solo.log_text()


@pytest.mark.lab
@pytest.mark.postgres
def test_cluster_engine_in_its_own_namespace_joins_through_the_unix_relay(
        ha_world: tuple[RunningLab, Settings], tmp_path: Path) -> None:
    lab, settings = ha_world
    # The isolated engine sees every agent silent; in maintenance no engine
    # treats a host, so this smoke test fences nothing (what a cut-off engine
    # may do is for the HA scenarios).
    _all_in_maintenance(settings)
    with engines(settings, tmp_path) as cluster:
        peer = cluster.start_engine("peer")
        island, relay = cluster.isolated_engine("island")  # ready: logged, seen alive by peer
        ns = island.netns
        assert ns is not None and ns.startswith("hpl-t-")
        seen = cluster.engines_seen(via=peer)
        assert seen["island"]["state"] == "alive" and not seen["island"]["self"]
        assert seen["island"]["address"] == island.url
        assert relay.relayed >= 1 and relay.unix_path is not None
        assert f"host={relay.unix_path.parent}" in island.log_text().replace("%2F", "/")
        port = int(island.url.rsplit(":", 1)[1])
        assert tcp_reachable_from(ns, "127.0.0.1", port)  # its API, inside its namespace
        host = lab.topo.host("c1-h1")
        assert tcp_reachable_from(None, host.front_address, host.agent_port)
        assert not tcp_reachable_from(ns, host.front_address, host.agent_port)
        # Its lease goes on through the relay: still alive after several renewals.
        time.sleep(LEASE)
        assert cluster.engines_seen(via=peer)["island"]["state"] == "alive"
    assert not island.running
    assert ns not in lab_netns.ip("netns", "list")
    assert cluster.engines_seen()["island"]["state"] == "stopped"  # it left cleanly


def _all_in_maintenance(settings: Settings) -> None:
    ctx = EngineContext.open(settings)
    try:
        with ctx.db.session() as s:
            inv = Inventory(s, ctx.box)
            for h in inv.hosts():
                inv.set_status(h.id, HostStatus.MAINTENANCE)
    finally:
        ctx.close()
