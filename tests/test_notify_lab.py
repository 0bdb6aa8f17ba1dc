"""Notifications of real fence flows against the lab: the events of a
restart reach a webhook and a mailbox started by the test, and a receiver
that hangs delays no flow."""

from __future__ import annotations

import time
from collections.abc import Iterator

import pytest

from enginekit import EngineThread, host_id, reset, scenario_world, set_config
from helpers import wait_until
from hostpower.lab.runner import RunningLab
from hostpower.model.events import Event, Severity
from hostpower.model.operations import FlowAction, Origin
from hostpower.store.events import Events
from hostpower.store.notifiers import Notifiers
from labkit import wait_all_agents
from notifykit import SmtpReceiver, WebhookReceiver

pytestmark = pytest.mark.lab
KEY = "lab-webhook-key-0123456789"


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[RunningLab, EngineThread]]:
    with scenario_world(tmp_path_factory.mktemp("notify"), monitor=False) as world:
        yield world


@pytest.fixture
def engine(world) -> Iterator[EngineThread]:  # type: ignore[no-untyped-def]
    lab, engine = world
    reset(engine.ctx, lab)
    set_config(engine.ctx, NotificationRetryDelayInMs="200", NotificationTimeoutInSec="30")
    yield engine
    with engine.ctx.db.session() as s:
        store = Notifiers(s, engine.ctx.box)
        for n in store.list():
            store.remove(n.id)  # type: ignore[arg-type]
    wait_all_agents(lab)


def restart(engine: EngineThread, name: str) -> tuple[int, float]:
    """Runs a restart to its end: the operation's id and how long it took."""
    started = time.monotonic()
    op, _ = engine.call(engine.service.request(host_id(engine.ctx, name), FlowAction.RESTART,
                                               Origin.API))
    done = engine.call(engine.service.wait(op.id, 90))
    assert done.state == "succeeded", done
    return op.id, time.monotonic() - started


def test_notify_lab_a_restart_reaches_the_webhook_and_the_mailbox(engine: EngineThread) -> None:
    ctx = engine.ctx
    with WebhookReceiver(KEY) as hook, SmtpReceiver() as smtp:
        with ctx.db.session() as s:
            store = Notifiers(s, ctx.box)
            store.add("hook", "webhook", {"url": hook.url}, secret=KEY, min_severity="info",
                      kinds=["fence.*"])
            store.add("mail", "smtp", {"host": "127.0.0.1", "port": smtp.port,
                                       "security": "none", "sender": "hostpower@example.org",
                                       "recipients": ["ops@example.org"]},
                      min_severity="info", kinds=["fence.succeeded", "fence.failed"])
        op_id, _ = restart(engine, "c1-h1")
        with ctx.db.session() as s:
            flow = [e for e in Events(s).query(operation_id=op_id) if e.kind.startswith("fence.")]
        assert {e.kind for e in flow} >= {"fence.started", "fence.attempt", "fence.succeeded"}
        wait_until(lambda: len(hook.delivered()) >= len(flow), 30, "the flow's events")
        wait_until(lambda: smtp.messages, 30, "the mail")
    assert [r.event["id"] for r in hook.delivered()
            if r.event["operation_id"] == op_id] == [e.id for e in flow]
    assert all(r.signed for r in hook.received)
    last = hook.delivered()[-1].event
    assert (last["kind"], last["host"], last["operation_id"]) == ("fence.succeeded", "c1-h1",
                                                                  op_id)
    [mail] = smtp.messages
    assert mail["Subject"].startswith("[hostpower] INFO fence.succeeded c1-h1: ")


def test_notify_lab_a_hanging_receiver_delays_no_flow(world, engine: EngineThread) -> None:  # type: ignore[no-untyped-def]
    ctx = engine.ctx
    _, usual = restart(engine, "c1-h2")   # the usual time, no notifier
    wait_all_agents(world[0])
    with WebhookReceiver(KEY) as hook:
        hook.hanging.set()
        with ctx.db.session() as s:
            Notifiers(s, ctx.box).add("stuck", "webhook", {"url": hook.url}, secret=KEY,
                                      min_severity="info")
        # Something to deliver before the flow starts: the receiver is already hanging.
        with ctx.db.session() as s:
            Events(s).add(Event(Severity.INFO, "test.marker", "before the restart"))
        wait_until(lambda: hook.received, 30, "the receiver to hang on a first request")
        _, took = restart(engine, "c1-h2")
        assert took < usual + 3, f"the restart took {took:.1f} s, usually {usual:.1f} s"
        assert all(r.status == 0 for r in hook.received)   # it never answered
        hook.release.set()
