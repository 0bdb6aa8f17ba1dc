"""Engine membership: the lease arithmetic (pure), and the engines table on
SQLite and PostgreSQL, where every lease time comes from the database's clock."""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta

import pytest

from hostpower.context import EngineContext
from hostpower.membership import EngineRefused, Identity, Membership
from hostpower.model.lease import EngineState, LeaseTerms, RowState, engine_state
from hostpower.store.db import Database
from hostpower.store.engines import Engines

T0 = datetime(2026, 1, 1, tzinfo=UTC)


@pytest.mark.parametrize("seconds", [2, 10, 600])
def test_lease_terms_renew_three_times_and_stop_acting_before_the_end(seconds: int) -> None:
    terms = LeaseTerms(seconds)
    assert terms.renew_every * 3 == pytest.approx(seconds)
    # One renewal may fail: the next is still sent before the engine must stop acting.
    assert 2 * terms.renew_every < terms.act_until(0) < seconds
    assert terms.act_until(100.0) == pytest.approx(100.0 + seconds - terms.margin)
    assert terms.margin > 0
    # Watching a peer's lease spans more than one of its renewal intervals.
    assert terms.renew_every < terms.watch_for() < seconds


@pytest.mark.parametrize("row_state, expires, state", [
    (RowState.RUNNING, T0 + timedelta(seconds=1), EngineState.ALIVE),
    (RowState.RUNNING, T0, EngineState.EXPIRED),
    (RowState.RUNNING, T0 - timedelta(seconds=1), EngineState.EXPIRED),
    (RowState.STOPPED, T0 + timedelta(seconds=1), EngineState.STOPPED),
    (RowState.STOPPED, T0 - timedelta(seconds=1), EngineState.STOPPED),
])
def test_engine_state_on_the_database_clock(row_state: RowState, expires: datetime,
                                            state: EngineState) -> None:
    assert engine_state(row_state, expires, T0) == state


def test_store_claim_renew_expire_leave(ctx: EngineContext) -> None:
    with ctx.db.session() as s:
        engines = Engines(s)
        assert engines.claim("e1", "http://127.0.0.1:1", 1.0) == 1
        assert engines.claim("e1", "http://127.0.0.1:1", 1.0) is None  # a live lease
        assert engines.claim("e2", "http://127.0.0.1:2", 30.0) == 1
        before = engines.now()
    time.sleep(1.2)
    with ctx.db.session() as s:
        engines = Engines(s)
        listed = {m.name: m for m in engines.list()}
        assert listed["e1"].state == EngineState.EXPIRED
        assert listed["e2"].state == EngineState.ALIVE
        assert listed["e2"].lease_expires_at > before + timedelta(seconds=25)
        assert not engines.renew("e1", 1, 1.0)  # expired: must claim anew
        assert engines.claim("e1", "http://127.0.0.1:3", 5.0) == 2
        assert engines.renew("e1", 2, 5.0)
        assert not engines.renew("e1", 1, 5.0)  # an old incarnation
        e1 = engines.get("e1")
        assert e1 is not None and e1.address == "http://127.0.0.1:3"
        assert e1.renewed_at >= listed["e1"].renewed_at
        assert engines.leave("e1", 2)
        assert engines.get("e1").state == EngineState.STOPPED  # type: ignore[union-attr]
        assert engines.claim("e1", "http://127.0.0.1:3", 5.0) == 3  # a stopped name is free
        e2 = listed["e2"]
        assert engines.renew("e2", 1, 30.0)
        assert not engines.expire(e2)  # renewed since it was seen: not taken
        assert engines.expire(engines.get("e2"))  # type: ignore[arg-type]
        assert engines.get("e2").state == EngineState.EXPIRED  # type: ignore[union-attr]


# -- membership.py: readiness on a fake clock, joining on a real database -------------------

class FakeClock:
    def __init__(self, now: float = 100.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.now += seconds


def test_may_act_until_the_lease_less_its_margin_after_the_last_renewal_sent() -> None:
    clock = FakeClock()
    m = Membership(None, Identity("e1", "http://127.0.0.1:1"), 1,  # type: ignore[arg-type]
                   LeaseTerms(10), sent_at=clock.now, clock=clock)
    assert m.may_act() and m.why_not() == ""
    clock.now += 7.4
    assert m.may_act()
    clock.now += 0.2  # 7.6 s: less than a quarter of the lease left
    assert not m.may_act()
    assert "last renewed 7.6 s ago" in m.why_not()


def test_join_on_sqlite_refuses_a_second_engine_naming_postgresql(tmp_path) -> None:  # type: ignore[no-untyped-def]
    db = Database(f"sqlite:///{tmp_path / 'hp.db'}")
    db.upgrade()
    first = Membership.join(db, Identity("one", "http://127.0.0.1:1"))
    with pytest.raises(EngineRefused, match="PostgreSQL"):
        Membership.join(db, Identity("two", "http://127.0.0.1:2"))
    first.leave()  # lets go of the lock and the lease
    second = Membership.join(db, Identity("two", "http://127.0.0.1:2"))
    assert second.generation == 1 and second.may_act()
    second.leave()
    db.dispose()


def test_join_under_a_live_name_is_refused_and_a_stale_one_taken_over(pg_url: str) -> None:
    db = Database(pg_url)
    db.upgrade()
    me = Identity("e1", "http://127.0.0.1:1")
    first = Membership.join(db, me)
    clock = FakeClock()

    def renewing_sleep(seconds: float) -> None:  # the first engine is alive: it renews
        clock.sleep(seconds)
        assert first.renew_once()

    with pytest.raises(EngineRefused, match="in use by a live engine"):
        Membership.join(db, me, clock=clock, sleep=renewing_sleep)
    # Nobody renews it any more (a crash): watched, ended, taken over.
    again = Membership.join(db, me, clock=clock, sleep=clock.sleep)
    assert again.generation == 2
    # The old incarnation cannot renew, nor take the name back from a live engine.
    assert not first.renew_once()
    assert first.generation == 1 and "held by another live engine" in first._failure
    with db.session() as s:
        assert Engines(s).get("e1").generation == 2  # type: ignore[union-attr]
    db.dispose()
