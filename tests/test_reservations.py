"""Several engines, one database: flow reservations with fencing tokens, the
hash ring of host ownership, second-opinion probes and the engine's guard
before external actions. The store parts run on SQLite and PostgreSQL; the
scenarios with engine processes and the lab are tests/test_ha_*.py."""

from __future__ import annotations

import asyncio
import threading
import time

import pytest

from hostpower.context import EngineContext
from hostpower.fencing.gateway import EngineGateway, acting_as
from hostpower.fencing.service import FencingService
from hostpower.membership import Identity, Membership
from hostpower.model.errors import EngineNotReady
from hostpower.model.inventory import HostStatus
from hostpower.model.operations import FlowAction, OperationState, Origin, Phase, Runner
from hostpower.model.ownership import Ownership
from hostpower.model.treatment import Gate
from hostpower.store.engines import Engines
from hostpower.store.events import Events
from hostpower.store.inventory import HostInput, Inventory
from hostpower.store.journal import Journal, ReservationLost
from hostpower.store.probes import Probes
from hostpower.model.treatment import decide
from test_treatment import facts  # the treatment tests' fact builder

E1, E2 = Runner("e1", 1), Runner("e2", 1)


def _host(ctx: EngineContext, name: str = "h1") -> int:
    n = int("".join(c for c in name if c.isdigit()) or 0)
    with ctx.db.session() as s:
        inv = Inventory(s, ctx.box)
        dc = inv.add_data_center(f"dc-{name}")
        cluster = inv.add_cluster(f"cl-{name}", dc.id)
        return inv.add_host(HostInput(name, f"127.0.9.{n + 1}", cluster.id, HostStatus.UP)).id


# -- the journal's reservations ------------------------------------------------------------

def test_reservation_takeover_increments_the_token_and_the_old_runner_is_refused(
        ctx: EngineContext) -> None:
    hid = _host(ctx)
    with ctx.db.session() as s:
        op = Journal(s).begin(hid, "h1", FlowAction.RESTART, Origin.AUTOMATIC, runner=E1)
        assert (op.runner, op.token) == (E1, 1)
        Journal(s).start_step(op.id, "check", Phase.CHECK, token=1)
    with ctx.db.session() as s:
        taken = Journal(s).take_over(op.id, 1, E2)
        assert taken is not None and (taken.runner, taken.token) == (E2, 2)
        assert taken.phase is Phase.CHECK  # the journal goes on where it was
        assert Journal(s).take_over(op.id, 1, E1) is None  # read before the takeover: refused
    with ctx.db.session() as s, pytest.raises(ReservationLost, match="took it over"):
        Journal(s).start_step(op.id, "stop", Phase.STOP, token=1)
    with ctx.db.session() as s, pytest.raises(ReservationLost):
        Journal(s).finish(op.id, OperationState.SUCCEEDED, "done", token=1)
    with ctx.db.session() as s:
        after = Journal(s).get(op.id)
        # The refused step left nothing: phase and steps are the new runner's to write.
        assert after.phase is Phase.CHECK and [st.name for st in after.steps] == ["check"]
        Journal(s).start_step(op.id, "stop", Phase.STOP, token=2)
        done = Journal(s).finish(op.id, OperationState.SUCCEEDED, "done", token=2)
        assert done.state is OperationState.SUCCEEDED and done.phase is Phase.DONE
    with ctx.db.session() as s:
        assert Journal(s).take_over(op.id, 2, E1) is None  # a finished flow is nobody's


def test_reservation_racing_takeovers_on_postgresql_one_wins(pg_url: str, tmp_path) -> None:  # type: ignore[no-untyped-def]
    from hostpower.settings import Settings

    ctx = EngineContext.open(Settings(home=tmp_path / "home", db_url=pg_url))
    try:
        hid = _host(ctx)
        with ctx.db.session() as s:
            op = Journal(s).begin(hid, "h1", FlowAction.STOP, Origin.API, runner=E1)
        barrier = threading.Barrier(8)
        winners: list[str] = []

        def contend(n: int) -> None:
            barrier.wait()
            with ctx.db.session() as s:
                if Journal(s).take_over(op.id, op.token, Runner(f"t{n}", 1)) is not None:
                    winners.append(f"t{n}")
        threads = [threading.Thread(target=contend, args=(n,)) for n in range(8)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(30)
        assert len(winners) == 1
        with ctx.db.session() as s:
            final = Journal(s).get(op.id)
        assert final.runner == Runner(winners[0], 1) and final.token == 2
    finally:
        ctx.close()


# -- ownership -------------------------------------------------------------------------------

def test_ownership_moves_only_the_share_of_the_engine_that_left() -> None:
    hosts = range(1, 3001)
    three = Ownership(["a", "b", "c"])
    two = Ownership(["a", "c"])
    for h in hosts:
        if three.owner(h) != "b":
            assert two.owner(h) == three.owner(h), h  # nobody else's host moves
        else:
            assert two.owner(h) in ("a", "c")
    shares = three.shares(hosts)
    assert sum(shares.values()) == 3000
    assert all(800 <= n <= 1200 for n in shares.values()), shares
    # Every engine computes the same owners from the same live engines.
    assert [Ownership(["c", "a", "b"]).owner(h) for h in hosts] == [three.owner(h) for h in hosts]
    assert Ownership([]).owner(1) is None and Ownership(["x"]).owner(7) == "x"


def test_ownership_shares_are_listed_per_engine_alive_or_not(ctx: EngineContext) -> None:
    for n in range(6):
        _host(ctx, f"h{n}")
    with ctx.db.session() as s:
        engines = Engines(s)
        engines.claim("e1", "http://127.0.0.1:1", 30)
        engines.claim("e2", "http://127.0.0.1:2", 30)
        engines.claim("gone", "http://127.0.0.1:3", 30)
        engines.leave("gone", 1)
        members = engines.list()
        shares = engines.host_shares(members)
    assert shares["gone"] == 0 and shares["e1"] + shares["e2"] == 6


# -- second-opinion probes ------------------------------------------------------------------------

def test_probes_are_answered_once_by_each_peer_and_pruned(ctx: EngineContext) -> None:
    with ctx.db.session() as s:
        asked = Probes(s).ask([11, 12], "e1")
    with ctx.db.session() as s:
        probes = Probes(s)
        assert probes.open_for("e1", 60) == []  # nobody answers their own probes
        assert sorted(probes.open_for("e2", 60)) == sorted((p, h) for h, p in asked.items())
        probes.answer(asked[11], "e2", True, "its agent answered in 2 ms")
        probes.answer(asked[11], "e2", False, "a second answer is ignored")
        assert probes.open_for("e2", 60) == [(asked[12], 12)]
        got = probes.answers(asked.values())
    assert [(a.engine, a.reachable, a.detail) for a in got[asked[11]]] == [
        ("e2", True, "its agent answered in 2 ms")]
    assert got[asked[12]] == []
    time.sleep(1.1)
    with ctx.db.session() as s:
        assert Probes(s).open_for("e3", 1) == []  # too old to answer
        assert Probes(s).prune(1) == 2
        assert Probes(s).answers(asked.values()) == {asked[11]: [], asked[12]: []}


# -- the guard before external actions -------------------------------------------------------

class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_guard_refuses_after_the_lease_margin_and_after_a_new_generation(
        ctx: EngineContext) -> None:
    clock = Clock()
    member = Membership.join(ctx.db, Identity("e1", "http://127.0.0.1:1"), clock=clock)
    try:
        gateway = EngineGateway(ctx, member)
        assert gateway.runner == Runner("e1", member.generation)
        gateway.check_may_act()
        clock.now += member.terms.seconds  # paused for a whole lease
        with pytest.raises(EngineNotReady, match="last renewed"):
            gateway.check_may_act()
        assert member.renew_once()  # its lease had expired: it joins as a new generation
        gateway.check_may_act()
        with acting_as(member.generation - 1), pytest.raises(EngineNotReady, match="joined again"):
            gateway.check_may_act()  # work begun by the earlier incarnation is refused
        with acting_as(member.generation):
            gateway.check_may_act()
    finally:
        member.leave()


def test_treatment_gives_a_newly_watched_host_a_fresh_grace_period() -> None:
    decision = decide(facts(watched_since=1000.0, now=1001.0, grace=60.0))
    assert not decision.fence and decision.gate is Gate.JUST_WATCHED
    assert "judges the host afresh for 60 s" in decision.reason
    assert decide(facts(watched_since=1000.0, now=1061.0, grace=60.0)).fence


# -- adopting orphaned flows ---------------------------------------------------------------------

def test_adopt_takes_a_dead_engines_flows_for_owned_hosts_only_and_never_a_live_peers(
        pg_url: str, tmp_path) -> None:  # type: ignore[no-untyped-def]
    from hostpower.settings import Settings

    ctx = EngineContext.open(Settings(home=tmp_path / "home", db_url=pg_url))
    try:
        hids = [_host(ctx, f"h{n}") for n in range(9)]
        with ctx.db.session() as s:
            engines = Engines(s)
            dead = Runner("dead", engines.claim("dead", "http://127.0.0.1:9", 0.5) or 0)
            live = Runner("live", engines.claim("live", "http://127.0.0.1:8", 60) or 0)
            journal = Journal(s)
            orphans = {hid: journal.begin(hid, f"h{n}", FlowAction.STOP, Origin.API, runner=dead)
                       for n, hid in enumerate(hids[:8])}
            held = journal.begin(hids[8], "h8", FlowAction.STOP, Origin.API, runner=live)
        time.sleep(0.6)  # the dead engine's lease runs out
        member = Membership.join(ctx.db, Identity("me", "http://127.0.0.1:1"))

        async def adopt():  # type: ignore[no-untyped-def]
            service = FencingService(EngineGateway(ctx, member), None, [], set())
            ring, _alive = await service.gateway.ownership()
            adopted = await service.adopt_orphans()
            await service.close()
            return ring, {op.host_id for op in adopted}

        ring, adopted = asyncio.run(adopt())
        assert set(ring.engines) == {"me", "live"}
        mine = {hid for hid in orphans if ring.owner(hid) == "me"}
        assert adopted == mine and 0 < len(mine) < 8  # the live peer's share waits for the peer
        with ctx.db.session() as s:
            for hid, op in orphans.items():
                after = Journal(s).get(op.id)
                assert after.token == (2 if hid in mine else 1)
                resumed = Events(s).query(operation_id=op.id, kind="fence.resumed")
                if hid in mine:
                    assert after.runner is not None and after.runner.name == "me"
                    assert "takes over stop of" in resumed[0].message
                    assert "from engine dead" in resumed[0].message
                    assert resumed[0].engine == "me"
                else:
                    assert resumed == []
            untouched = Journal(s).get(held.id)
        assert (untouched.runner, untouched.token) == (live, 1)  # a live peer's flow stays its own
        member.leave()
    finally:
        ctx.close()
