"""Engine membership: the lease arithmetic (pure), and the engines table on
SQLite and PostgreSQL, where every lease time comes from the database's clock."""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta

import pytest

from hostpower.context import EngineContext
from hostpower.model.lease import EngineState, LeaseTerms, RowState, engine_state
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
