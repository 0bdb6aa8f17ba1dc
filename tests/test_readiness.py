"""The PM health check and the fencing-readiness verdicts, without the lab:
the verdict rules (model/readiness.py), their storage on both databases,
the checker against a recording dispatch (every candidate tried, one command
per device, bounded, only owned hosts, nothing while the engine may not
act), the API and the CLI. The lab scenarios are in test_readiness_lab.py."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from helpers import bearer
from hostpower.api.app import create_app
from hostpower.context import EngineContext
from hostpower.fencing.gateway import EngineGateway
from hostpower.fencing.readiness import ReadinessChecker
from hostpower.fencing.service import FencingService
from hostpower.inventory_file import load_document
from hostpower.membership import Identity, Membership
from hostpower.model.errors import EngineNotReady, NotFoundError
from hostpower.model.events import Severity
from hostpower.model.inventory import PowerManagement
from hostpower.model.power import FenceResult, Outcome
from hostpower.model.readiness import (
    HostReadiness, PathCheck, PathState, Readiness, assess, change, fence_paths,
)
from hostpower.settings import Settings
from hostpower.store.configstore import ConfigStore
from hostpower.store.engines import Engines
from hostpower.store.events import Events
from hostpower.store.inventory import Inventory
from hostpower.store.readiness import ReadinessStore
from hostpower.store.users import Users

HOSTPOWER = str(Path(sys.executable).with_name("hostpower"))


# -- the verdict: how many proxies must fail before the host cannot be fenced ----------------

@dataclass(frozen=True)
class A:
    id: int
    order: int = 1


def works(agent_id: int, *proxies: str) -> list[PathCheck]:
    return [PathCheck(p, "cluster", agent_id, f"a{agent_id}", PathState.WORKS, "on")
            for p in proxies]


def fails(agent_id: int, *proxies: str) -> list[PathCheck]:
    return [PathCheck(p, "cluster", agent_id, f"a{agent_id}", PathState.FAILS, "timed out")
            for p in proxies]


@pytest.mark.parametrize("agents,checks,paths", [
    ([A(1)], works(1, "p1", "p2") + fails(1, "p3"), 2),
    ([A(1)], works(1, "p1") + fails(1, "p2"), 1),
    ([A(1)], fails(1, "p1", "p2"), 0),
    ([], [], 0),
    # Two power supplies of one group: a stop needs both, so p1 is a single point.
    ([A(1), A(2)], works(1, "p1", "p2") + works(2, "p1"), 1),
    ([A(1), A(2)], works(1, "p1", "p2") + works(2, "p2", "p3"), 2),
    ([A(1), A(2)], works(1, "p1", "p2") + fails(2, "p1", "p2"), 0),
    # Two order groups: either will do, so both must be cut off.
    ([A(1, 1), A(2, 2)], works(1, "p1") + works(2, "p2"), 2),
    ([A(1, 1), A(2, 2)], works(1, "p1") + works(2, "p1"), 1),
    ([A(1, 1), A(2, 1), A(3, 2)], works(1, "p1") + fails(2, "p1") + works(3, "p2", "p3"), 2),
])
def test_readiness_paths_count_the_proxies_that_must_fail(agents, checks, paths) -> None:  # type: ignore[no-untyped-def]
    assert fence_paths(agents, checks) == paths


def test_readiness_verdicts_and_their_messages() -> None:
    ready = assess(1, "h1", [A(1)], works(1, "p1", "p2"))
    assert (ready.readiness, ready.paths, ready.working) == (Readiness.READY, 2, ["p1", "p2"])
    single = assess(1, "h1", [A(1)], works(1, "p1") + fails(1, "p2"))
    assert single.readiness is Readiness.SINGLE_PATH and single.failing == ["p2"]
    assert "only through p1: a single point of failure" in single.message
    assert "p2 (cluster) with a1: timed out" in single.message
    none = assess(1, "h1", [A(1)], fails(1, "p1"))
    assert none.readiness is Readiness.UNFENCEABLE and "cannot be fenced" in none.message
    assert "no fence agent" in assess(1, "h1", [], []).message
    assert "no eligible proxy" in assess(1, "h1", [A(1)], []).message
    # Two power supplies: p1 works for both, p2 for one; p1 is the single point.
    psus = assess(1, "h1", [A(1), A(2)], works(1, "p1", "p2") + works(2, "p1") + fails(2, "p2"))
    assert psus.readiness is Readiness.SINGLE_PATH
    assert psus.message.startswith("h1 can be fenced only through p1: a single point of failure")
    both = assess(1, "h1", [A(1), A(2)], works(1, "p1", "p2") + works(2, "p2", "p3"))
    assert both.message == "h1 can be fenced through 2 independent proxies (working: p1, p2, p3)"
    half = assess(1, "h1", [A(1), A(2)], works(1, "p1") + fails(2, "p1"))
    assert "in every order group some fence agent answers through no proxy" in half.message


@pytest.mark.parametrize("before,after,severity", [
    (None, Readiness.READY, None),               # a first verdict that is good: quiet
    (Readiness.UNKNOWN, Readiness.READY, None),
    (None, Readiness.SINGLE_PATH, Severity.WARNING),
    (None, Readiness.UNFENCEABLE, Severity.ERROR),
    (Readiness.READY, Readiness.SINGLE_PATH, Severity.WARNING),
    (Readiness.SINGLE_PATH, Readiness.UNFENCEABLE, Severity.ERROR),
    (Readiness.UNFENCEABLE, Readiness.SINGLE_PATH, Severity.WARNING),
    (Readiness.SINGLE_PATH, Readiness.READY, Severity.INFO),
    (Readiness.READY, Readiness.READY, None),  # no change, no event
    (Readiness.SINGLE_PATH, Readiness.SINGLE_PATH, None),
])
def test_readiness_events_only_on_a_change(before, after, severity) -> None:  # type: ignore[no-untyped-def]
    checks = {Readiness.READY: works(1, "p1", "p2"), Readiness.SINGLE_PATH: works(1, "p1"),
              Readiness.UNFENCEABLE: fails(1, "p1")}[after]
    note = change(before, assess(1, "h1", [A(1)], checks))
    assert (note.severity if note else None) == severity
    if severity is Severity.INFO:
        assert note is not None and "can be fenced again through 2 proxies (p1, p2)" in note.message


# -- a small world with a recording dispatch ---------------------------------------------------

def agent(n: int, address: str | None = None, **extra: Any) -> dict[str, Any]:
    return {"type": "ipmilan", "address": address or f"10.99.0.{n}", "port": 623,
            "username": "admin", "password": "pw", "options": {"lanplus": "1"}, **extra}


def host(name: str, n: int, status: str = "up", agents: list[dict[str, Any]] | None = None,
         chain: str = "") -> dict[str, Any]:
    return {"name": name, "address": f"127.0.9.{n}", "status": status,
            "power_management": {"enabled": True, "pm_proxies": chain,
                                 "agents": agents if agents is not None else [agent(n)]}}


def world(ctx: EngineContext, *clusters: list[dict[str, Any]], **config: str) -> None:
    doc = {"config": config, "data_centers": [{"name": "dc1", "clusters": [
        {"name": f"c{i}", "hosts": hosts} for i, hosts in enumerate(clusters, 1)]}]}
    with ctx.db.session() as s:
        load_document(Inventory(s, ctx.box, ctx.known_agent_types()), ConfigStore(s), doc)


class Recorder:
    """A dispatch that answers from a table and records what it was asked,
    and how many commands ran at once (overall and per device)."""

    def __init__(self, fails: dict[tuple[str, str], str] | None = None,
                 delay: float = 0.02) -> None:
        self.fails = fails or {}
        self.delay = delay
        self.calls: list[tuple[str, str, str]] = []
        self.active = 0
        self.most = 0
        self.per_device: Counter[str] = Counter()
        self.most_per_device: Counter[str] = Counter()

    async def run(self, candidate, spec, action, timeout):  # type: ignore[no-untyped-def]
        self.calls.append((candidate.name, spec.address, action.value))
        self.active += 1
        self.per_device[spec.address] += 1
        self.most = max(self.most, self.active)
        self.most_per_device[spec.address] = max(self.most_per_device[spec.address],
                                                  self.per_device[spec.address])
        try:
            await asyncio.sleep(self.delay)
        finally:
            self.active -= 1
            self.per_device[spec.address] -= 1
        reason = self.fails.get((candidate.name, spec.address))
        if reason:
            return FenceResult(action, Outcome.ERROR, reason)
        return FenceResult(action, Outcome.ON)


def checker(ctx: EngineContext, dispatch: Recorder, membership: Membership | None = None,
            **kwargs: Any) -> ReadinessChecker:
    service = FencingService(EngineGateway(ctx, membership), None, [], set())
    service.executor.dispatch = dispatch
    return ReadinessChecker(service, **kwargs)


def run_round(c: ReadinessChecker) -> dict[str, HostReadiness]:
    return {v.host_name: v for v in asyncio.run(c.round())}


def readiness_events(ctx: EngineContext) -> list[Any]:
    with ctx.db.session() as s:
        return Events(s).query(kind="readiness.changed")


def test_readiness_check_tries_every_candidate_and_names_those_not_tried(
        sqlite_ctx: EngineContext) -> None:
    world(sqlite_ctx, [host("h1", 1), host("h2", 2), host("h3", 3), host("h4", 4),
                       host("h5", 5, status="maintenance")],
          [host("h6", 6), host("h7", 7)])
    rec = Recorder(fails={("h3", "10.99.0.1"): "NetworkUnreachable: no route"})
    found = run_round(checker(sqlite_ctx, rec))
    h1 = found["h1"]
    tried = [(c.proxy, c.source, c.state.value) for c in h1.checks]
    # The chain is cluster,dc,engine: every cluster peer, then the data
    # center's (at most 3 per entry), then the engine, which cannot run ipmilan.
    assert tried == [("h2", "cluster", "works"), ("h3", "cluster", "fails"),
                     ("h4", "cluster", "works"), ("h5", "cluster", "not_tried"),
                     ("h6", "dc", "works"), ("h7", "dc", "works"),
                     ("engine", "engine", "not_tried")]
    assert (h1.readiness, h1.paths, h1.failing) == (Readiness.READY, 4, ["h3"])
    reasons = {c.proxy: c.message for c in h1.checks}
    assert reasons["h3"] == "NetworkUnreachable: no route"
    assert reasons["h5"] == "not up (status maintenance)"
    assert reasons["engine"] == "cannot run fence_ipmilan locally"
    assert {c[2] for c in rec.calls} == {"status"}
    # The maintenance host is checked too: PM-enabled, whatever its status.
    assert found["h5"].readiness is Readiness.READY


def test_readiness_check_bounds_candidates_per_entry_and_commands_per_device(
        sqlite_ctx: EngineContext) -> None:
    # Six hosts behind one PDU (one device, a plug each), one cluster.
    pdu = [host(f"h{n}", n, agents=[agent(n, "10.99.9.9", options={"plug": str(n)})])
           for n in range(1, 7)]
    world(sqlite_ctx, pdu, FenceProxyImplicitPreferences="", FenceProxyDefaultPreferences="cluster")
    rec = Recorder(delay=0.01)
    found = run_round(checker(sqlite_ctx, rec, per_entry=2, concurrency=4))
    h1 = found["h1"]
    assert [(c.proxy, c.state.value) for c in h1.checks] == [
        ("h2", "works"), ("h3", "works"), ("h4", "not_tried"), ("h5", "not_tried"),
        ("h6", "not_tried")]
    assert "beyond the first 2 candidates of cluster" in h1.checks[2].message
    assert len(rec.calls) == 6 * 2
    assert rec.most_per_device["10.99.9.9"] == 1   # one command at a time per device


def test_readiness_check_runs_devices_side_by_side_within_its_bound(
        sqlite_ctx: EngineContext) -> None:
    world(sqlite_ctx, [host(f"h{n}", n) for n in range(1, 9)],
          FenceProxyImplicitPreferences="", FenceProxyDefaultPreferences="cluster")
    rec = Recorder(delay=0.05)
    run_round(checker(sqlite_ctx, rec, per_entry=2, concurrency=4))
    assert len(rec.calls) == 8 * 2
    assert rec.most == 4 and max(rec.most_per_device.values()) == 1


def test_readiness_states_are_stored_and_each_change_is_one_event(
        sqlite_ctx: EngineContext) -> None:
    world(sqlite_ctx, [host("h1", 1), host("h2", 2), host("h3", 3)],
          FenceProxyImplicitPreferences="", FenceProxyDefaultPreferences="cluster")
    rec = Recorder()
    c = checker(sqlite_ctx, rec)
    assert {n: v.readiness for n, v in run_round(c).items()} == dict.fromkeys(
        ("h1", "h2", "h3"), Readiness.READY)
    assert readiness_events(sqlite_ctx) == []  # all ready from the start: nothing to say
    rec.fails = {("h3", "10.99.0.1"): "timed out after 4 s"}   # h3 loses h1's BMC network
    run_round(c)
    run_round(c)  # the same verdict again: no second event
    [warning] = readiness_events(sqlite_ctx)
    assert (warning.severity, warning.host_name) == (Severity.WARNING, "h1")
    assert warning.details == {"readiness": "single_path", "previous": "ready", "paths": 1,
                               "working": ["h2"], "failing": ["h3"]}
    assert "h1 can be fenced only through h2: a single point of failure" in warning.message
    rec.fails[("h2", "10.99.0.1")] = "connection refused"
    assert run_round(c)["h1"].readiness is Readiness.UNFENCEABLE
    assert readiness_events(sqlite_ctx)[-1].severity is Severity.ERROR
    rec.fails = {}
    assert run_round(c)["h1"].readiness is Readiness.READY
    last = readiness_events(sqlite_ctx)[-1]
    assert last.severity is Severity.INFO and "can be fenced again through 2 proxies" in last.message
    assert [e.details["readiness"] for e in readiness_events(sqlite_ctx)] == [
        "single_path", "unfenceable", "ready"]
    with sqlite_ctx.db.session() as s:
        [h1] = ReadinessStore(s).report(Inventory(s, sqlite_ctx.box).find_host("h1").id)
    assert h1.readiness is Readiness.READY and h1.changed_at is not None
    assert h1.engine == "local" and h1.checked_at is not None


def test_readiness_sends_nothing_while_the_engine_may_not_act(sqlite_ctx: EngineContext) -> None:
    world(sqlite_ctx, [host("h1", 1), host("h2", 2)])
    rec = Recorder()
    c = checker(sqlite_ctx, rec)
    why = "the engine lease was last renewed 9 s ago"

    def refuse() -> None:
        raise EngineNotReady(why)
    c.gateway.check_may_act = refuse  # type: ignore[method-assign]
    with pytest.raises(EngineNotReady):
        asyncio.run(c.round())
    assert rec.calls == []
    # Refused between two commands (the executor's guard, asked before a
    # command waits for its device's turn and again once it has it): the
    # round stops there.
    c = checker(sqlite_ctx, rec)
    calls = iter([None, None])

    def once() -> None:
        if next(calls, "stop") == "stop":
            raise EngineNotReady(why)
    c.survey.executor.guard = once
    with pytest.raises(EngineNotReady):
        asyncio.run(c.round())
    assert len(rec.calls) == 1


def test_readiness_pm_disabled_host_is_unknown_and_not_checked(sqlite_ctx: EngineContext) -> None:
    world(sqlite_ctx, [host("h1", 1), host("h2", 2)])
    run_round(checker(sqlite_ctx, Recorder()))
    with sqlite_ctx.db.session() as s:
        inv = Inventory(s, sqlite_ctx.box)
        h1 = inv.find_host("h1")
        inv.update_host(h1.id, power_management=PowerManagement(False))
    rec = Recorder()
    found = run_round(checker(sqlite_ctx, rec))
    assert "h1" not in found and all(target != "10.99.0.1" for _, target, _ in rec.calls)
    with sqlite_ctx.db.session() as s:
        report = {r.host_name: r for r in ReadinessStore(s).report()}
        assert ReadinessStore(s).checked_hosts() == {report["h2"].host_id}
    assert report["h1"].readiness is Readiness.UNKNOWN
    assert "power management is disabled" in report["h1"].message


def test_readiness_each_engine_checks_only_the_hosts_it_owns(pg_url: str, tmp_path: Path) -> None:
    ctx = EngineContext.open(Settings(home=tmp_path / "home", db_url=pg_url))
    member = None
    try:
        world(ctx, [host(f"h{n}", n) for n in range(1, 13)])
        with ctx.db.session() as s:
            Engines(s).claim("peer", "http://127.0.0.1:9", 600)
        member = Membership.join(ctx.db, Identity("me", "http://127.0.0.1:1"))
        rec = Recorder(delay=0)
        c = checker(ctx, rec, member)
        ring, _ = asyncio.run(c.gateway.ownership())
        found = run_round(c)
        with ctx.db.session() as s:
            ids = {h.name: h.id for h in Inventory(s, ctx.box).hosts()}
            report = {r.host_name: r for r in ReadinessStore(s).report()}
        mine = {name for name, hid in ids.items() if ring.owner(hid) == "me"}
        assert set(found) == mine and 0 < len(mine) < 12
        for name, r in report.items():
            if name in mine:
                assert r.engine == "me" and r.readiness is Readiness.READY
            else:
                assert r.readiness is Readiness.UNKNOWN and r.checked_at is None
    finally:
        if member is not None:
            member.leave()
        ctx.close()


def test_readiness_rows_go_with_their_host(ctx: EngineContext) -> None:
    world(ctx, [host("h1", 1), host("h2", 2)])
    run_round(checker(ctx, Recorder()))
    with ctx.db.session() as s:
        inv = Inventory(s, ctx.box)
        inv.delete_host(inv.find_host("h1").id)
    with ctx.db.session() as s:
        store = ReadinessStore(s)
        assert [r.host_name for r in store.report()] == ["h2"]
        assert len(store.checked_hosts()) == 1
        with pytest.raises(NotFoundError):
            store.report(999)


def test_readiness_checker_runs_rounds_only_while_enabled(sqlite_ctx: EngineContext) -> None:
    import hostpower.fencing.readiness as module

    world(sqlite_ctx, [host("h1", 1), host("h2", 2)], PMHealthCheckIntervalInSec="10")
    rec = Recorder(delay=0)

    async def main() -> tuple[int, int]:
        c = checker(sqlite_ctx, rec)
        c.start()
        await asyncio.sleep(0.3)
        off = len(rec.calls)
        with sqlite_ctx.db.session() as s:
            ConfigStore(s).set("PMHealthCheckEnabled", "true")
        await asyncio.sleep(0.5)
        on = len(rec.calls)
        await asyncio.sleep(0.5)  # the interval (10 s) has not passed: no second round
        assert len(rec.calls) == on and c.running
        await c.stop()
        return off, on

    module.POLL, saved = 0.1, module.POLL
    try:
        off, on = asyncio.run(main())
    finally:
        module.POLL = saved
    assert (off, on) == (0, 2)


# -- the API and the CLI give the same -----------------------------------------------------------

@pytest.fixture
def checked(ctx: EngineContext) -> EngineContext:
    world(ctx, [host("h1", 1), host("h2", 2), host("h3", 3)],
          [host("solo", 4)], FenceProxyImplicitPreferences="", FenceProxyDefaultPreferences="cluster")
    with ctx.db.session() as s:
        inv = Inventory(s, ctx.box)
        inv.update_host(inv.find_host("h3").id, power_management=PowerManagement(False))
    rec = Recorder(fails={("h2", "10.99.0.1"): "timed out"})
    run_round(checker(ctx, rec))
    return ctx


def test_readiness_api_lists_every_host_and_filters(checked: EngineContext) -> None:
    with checked.db.session() as s:
        Users(s).add("watcher", "viewer", "viewer-password")
    with TestClient(create_app(checked)) as api:
        assert api.get("/api/readiness").status_code == 401
        auth = bearer(api, "watcher", "viewer-password")
        listed = api.get("/api/readiness", headers=auth).json()
        by = {r["host"]: r for r in listed}
        assert [r["host"] for r in listed] == ["h1", "h2", "h3", "solo"]
        h1 = by["h1"]
        assert (h1["readiness"], h1["paths"], h1["working"], h1["failing"]) == (
            "single_path", 1, ["h3"], ["h2"])
        assert h1["cluster"] == "c1" and h1["href"] == f"/api/readiness/{h1['host_id']}"
        assert {"proxy": "h2", "source": "cluster", "agent": "ipmilan@10.99.0.1:623",
                "state": "fails", "message": "timed out"}.items() <= h1["checks"][0].items()
        assert by["h3"]["readiness"] == "unknown" and by["h3"]["checks"] == []
        assert by["solo"]["readiness"] == "unfenceable"  # alone in its cluster, chain "cluster"
        assert "no eligible proxy" in by["solo"]["message"]
        assert api.get(h1["href"], headers=auth).json() == h1
        only = api.get("/api/readiness", params={"host": "h1"}, headers=auth).json()
        assert only == [h1]
        bad = api.get("/api/readiness", params={"readiness": "unfenceable"}, headers=auth).json()
        assert [r["host"] for r in bad] == ["solo"]
        assert api.get("/api/readiness", params={"host": "nope"}, headers=auth).status_code == 404
        assert api.get("/api/readiness/999999", headers=auth).status_code == 404
        assert api.get("/api/readiness", params={"readiness": "fine"},
                       headers=auth).status_code == 422


def cli(ctx: EngineContext, tmp_path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "HOSTPOWER_HOME": str(tmp_path / "home"), "HOSTPOWER_DB_URL": ctx.db.url}
    return subprocess.run([HOSTPOWER, "readiness", *args], env=env, capture_output=True,
                          text=True, timeout=60)


def test_readiness_cli_table_detail_and_json(checked: EngineContext, tmp_path: Path) -> None:
    done = cli(checked, tmp_path)
    assert done.returncode == 0, done.stderr
    lines = [line.split() for line in done.stdout.splitlines()]
    assert lines[0] == ["HOST", "READINESS", "PATHS", "FAILING", "CHECKED"]
    rows = {line[0]: line[1:4] for line in lines[1:]}
    assert rows["h1"] == ["single_path", "1", "h2"]
    assert rows["h2"] == ["ready", "2", "-"]
    assert rows["h3"] == ["unknown", "-", "-"]
    detail = cli(checked, tmp_path, "--host", "h1")
    assert "h1 can be fenced only through h3: a single point of failure" in detail.stdout
    assert "PROXY  SOURCE   AGENT" in detail.stdout
    assert "h2     cluster  ipmilan@10.99.0.1:623  fails  timed out" in detail.stdout
    as_json = json.loads(cli(checked, tmp_path, "--json", "--readiness", "single_path").stdout)
    with TestClient(create_app(checked)) as api:
        with checked.db.session() as s:
            Users(s).add("root", "admin", "admin-password")
        auth = bearer(api, "root", "admin-password")
        assert as_json == [{k: v for k, v in r.items() if k != "href"} for r in
                           api.get("/api/readiness", params={"readiness": "single_path"},
                                   headers=auth).json()]
    missing = cli(checked, tmp_path, "--host", "nope")
    assert missing.returncode == 2 and "nope" in missing.stderr


def test_readiness_runtime_checks_for_real_once_enabled(sqlite_ctx: EngineContext,
                                                         tmp_path: Path) -> None:
    """The engine's runtime runs the check (idle until PMHealthCheckEnabled):
    two hosts powered by the real fence_dummy, run by the engine itself; one
    device answers, the other's status file holds nonsense (fence_dummy fails)."""
    from helpers import dummy_host
    from hostpower.runtime import EngineRuntime

    require_fence_dummy()
    (tmp_path / "a.power").write_text("on")
    (tmp_path / "b.power").write_text("broken")
    doc = {"config": {"FenceProxyImplicitPreferences": "", "PMHealthCheckEnabled": "true"},
           "data_centers": [{"name": "dc1", "clusters": [{"name": "c1", "hosts": [
               dummy_host("a", "127.0.9.1", tmp_path / "a.power", "pw"),
               dummy_host("b", "127.0.9.2", tmp_path / "b.power", "pw")]}]}]}
    with sqlite_ctx.db.session() as s:
        load_document(Inventory(s, sqlite_ctx.box, sqlite_ctx.known_agent_types()),
                      ConfigStore(s), doc)

    def report() -> dict[str, HostReadiness]:
        with sqlite_ctx.db.session() as s:
            return {r.host_name: r for r in ReadinessStore(s).report()}

    async def main() -> dict[str, HostReadiness]:
        runtime = EngineRuntime(sqlite_ctx, monitor=True)
        await runtime.start()
        try:
            assert runtime.readiness is not None and runtime.readiness.running
            for _ in range(200):
                found = await asyncio.to_thread(report)
                if all(r.checked_at for r in found.values()):
                    return found
                await asyncio.sleep(0.1)
            raise AssertionError(f"not checked: {found}")
        finally:
            await runtime.stop()

    found = asyncio.run(main())
    assert (found["a"].readiness, found["a"].working) == (Readiness.SINGLE_PATH, ["engine"])
    assert found["b"].readiness is Readiness.UNFENCEABLE
    [path] = found["b"].checks
    assert (path.proxy, path.state) == ("engine", PathState.FAILS) and path.message


def require_fence_dummy() -> None:
    from conftest import require

    require(Path("/usr/sbin/fence_dummy").exists(), "fence-agents (fence_dummy) is not installed")
