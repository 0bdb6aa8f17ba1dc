"""Notifications with several engines on one PostgreSQL database: each event
reaches each notifier once, whichever engine wrote it and whichever engine
delivers; an engine killed mid-delivery leaves the rest to another; an
event whose transaction commits after a later id's is not skipped."""

from __future__ import annotations

import random
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import text

from helpers import wait_until
from hostpower.context import EngineContext
from hostpower.model.events import Event, Severity
from hostpower.settings import Settings
from hostpower.store.configstore import ConfigStore
from hostpower.store.events import Events
from hostpower.store.notifiers import Notifiers
from hostpower.store.tables import NotifierStateRow
from notifykit import DelivererThread, WebhookReceiver

pytestmark = pytest.mark.postgres
KEY = "ha-receiver-key-0123456789"
HERE = Path(__file__).parent


@pytest.fixture
def pg_ctx(pg_url: str, tmp_path: Path) -> Iterator[EngineContext]:
    ctx = EngineContext.open(Settings(home=tmp_path / "home", db_url=pg_url))
    with ctx.db.session() as s:
        store = ConfigStore(s)
        store.set("EngineLeaseInSec", "2")
        store.set("NotificationAttempts", "3")
        store.set("NotificationRetryDelayInMs", "100")
        store.set("NotificationTimeoutInSec", "10")
    yield ctx
    ctx.close()


def add_webhook(ctx: EngineContext, name: str, url: str) -> int:
    with ctx.db.session() as s:
        n = Notifiers(s, ctx.box).add(name, "webhook", {"url": url}, secret=KEY,
                                      min_severity="info")
    assert n.id is not None
    return n.id


def write(ctx: EngineContext, message: str, engine: str, hold: float = 0.0) -> int:
    """An event, its transaction held open `hold` seconds after the insert."""
    with ctx.db.session() as s:
        e = Events(s).add(Event(Severity.WARNING, "fence.attempt", message, engine=engine))
        time.sleep(hold)
    assert e.id is not None
    return e.id


def holders(ctx: EngineContext) -> dict[int, tuple[str | None, int]]:
    with ctx.db.session() as s:
        return {r.notifier_id: (r.holder, r.token) for r in s.query(NotifierStateRow)}


def test_notify_ha_two_engines_deliver_every_event_exactly_once(pg_ctx: EngineContext) -> None:
    """Four writers (two per engine) commit 240 events concurrently, so ids
    commit out of order all the time; two deliverers share three notifiers;
    one stops midway (releasing its notifiers) and the other goes on."""
    ctx = pg_ctx
    with WebhookReceiver(KEY) as hook:
        ids = {add_webhook(ctx, f"n{i}", hook.url.replace("/hook", f"/n{i}")) for i in range(3)}
        written: list[int] = []
        lock = threading.Lock()

        def writer(engine: str, seed: int) -> None:
            rng = random.Random(seed)
            for n in range(60):
                event_id = write(ctx, f"{engine} event {n}", engine, rng.uniform(0, 0.02))
                with lock:
                    written.append(event_id)

        a = DelivererThread(ctx.db.url, ctx.settings.home, "engine-a")
        with a, DelivererThread(ctx.db.url, ctx.settings.home, "engine-b"):
            writers = [threading.Thread(target=writer, args=(f"engine-{x}", seed))
                       for seed, x in enumerate("abab")]
            for t in writers:
                t.start()
            wait_until(lambda: len(hook.delivered()) >= 60, 60, "deliveries to begin")
            held_before = holders(ctx)
            a.stop()   # a clean stop in the middle: engine-b takes its notifiers at once
            for t in writers:
                t.join(60)
            assert len(written) == 240
            wait_until(lambda: len(hook.delivered()) >= 3 * 240, 120,
                       "every event at every notifier")
            time.sleep(1.0)  # nothing more may come
            held_after = holders(ctx)
    per_notifier: dict[str, Counter[int]] = {}
    for r in hook.delivered():
        per_notifier.setdefault(r.event["notifier"], Counter())[r.event["id"]] += 1
    assert sorted(per_notifier) == ["n0", "n1", "n2"]
    for name, counts in per_notifier.items():
        assert sorted(counts) == sorted(written), name
        assert set(counts.values()) == {1}, (name, [i for i, c in counts.items() if c > 1])
    assert {h for h, _ in held_before.values()} <= {"engine-a", "engine-b"}
    assert set(held_after) == ids
    assert {h for h, _ in held_after.values()} == {"engine-b"}
    assert len(hook.received) == len(hook.delivered())   # no retries were needed


def test_notify_ha_event_committed_after_a_later_id_is_delivered(pg_ctx: EngineContext) -> None:
    ctx = pg_ctx
    with WebhookReceiver(KEY) as hook, DelivererThread(ctx.db.url, ctx.settings.home, "e1"):
        add_webhook(ctx, "hook", hook.url)
        before = write(ctx, "before", "e1")
        wait_until(lambda: hook.delivered_ids() == [before], 20, "the first event")
        with ctx.db.session() as slow:            # a transaction that takes its time
            early = Events(slow).add(Event(Severity.WARNING, "fence.attempt", "early id",
                                           engine="engine-a")).id
            late = write(ctx, "later id, committed first", "engine-b")
            assert early is not None and early < late
            # What a naive "id > last delivered" tail would see now: the later
            # id only; it would move past `early` before `early` commits.
            with ctx.db.engine.connect() as conn:
                naive = conn.execute(text("SELECT id FROM events WHERE id > :last ORDER BY id"),
                                     {"last": before}).scalars().all()
            assert naive == [late]
            time.sleep(1.5)  # several deliverer rounds while `early` is uncommitted
            assert hook.delivered_ids() == [before], "delivered past an open transaction"
        wait_until(lambda: len(hook.delivered()) >= 3, 20, "both events")
        time.sleep(0.5)
    assert hook.delivered_ids() == [before, early, late]


def test_notify_ha_engine_killed_mid_delivery_the_other_delivers_the_rest(
        pg_ctx: EngineContext, tmp_path: Path) -> None:
    ctx = pg_ctx
    with WebhookReceiver(KEY) as hook:
        hook.hanging.set()     # engine-a's first request hangs: it is killed in the middle
        notifier = add_webhook(ctx, "hook", hook.url)
        proc = subprocess.Popen(
            [sys.executable, str(HERE / "notifykit.py"), ctx.db.url, str(ctx.settings.home),
             "engine-a"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        try:
            assert proc.stdout is not None and proc.stdout.readline().strip() == "delivering"
            events = [write(ctx, f"event {n}", "engine-a") for n in range(5)]
            wait_until(lambda: hook.received, 20, "engine-a's first request")
            assert holders(ctx)[notifier][0] == "engine-a"
            token = holders(ctx)[notifier][1]
        finally:
            proc.kill()
            proc.wait(10)
        hook.hanging.clear()
        hook.release.set()
        with DelivererThread(ctx.db.url, ctx.settings.home, "engine-b"):
            wait_until(lambda: len(hook.delivered()) == 5, 30, "engine-b to deliver the rest")
            time.sleep(0.5)
        assert holders(ctx)[notifier] == (None, token + 1)   # taken over, then released
    assert hook.delivered_ids() == events
    # The event in flight when engine-a died reached the receiver twice
    # (once unanswered); every other once.
    assert [r.event["id"] for r in hook.received] == [events[0], *events]
    assert hook.received[0].status == 0
