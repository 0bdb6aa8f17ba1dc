"""The escalation after the gates (fencing/escalation.py): precautions in
order, a spared host gets no power action, one that answers again ends it.
Precautions here are stand-ins (the logic around them is the subject); the
real ones are tested against the lab in their own scenario files."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field

from hostpower.config import Config
from hostpower.context import EngineContext
from hostpower.fencing.escalation import Escalation, Step
from hostpower.fencing.gateway import EngineGateway
from hostpower.fencing.service import FencingService
from hostpower.model.inventory import Host, HostStatus
from hostpower.store.events import Events
from hostpower.store.inventory import HostInput, Inventory
from hostpower.store.journal import Journal


@dataclass
class Recorder:
    name: str
    answer: Step
    seen: list[str] = field(default_factory=list)
    then_status: HostStatus | None = None  # what the host becomes while it is considered
    ctx: EngineContext | None = None

    async def consider(self, host: Host, config: Config) -> Step:
        self.seen.append(host.name)
        if self.then_status is not None and self.ctx is not None:
            with self.ctx.db.session() as s:
                Inventory(s, self.ctx.box).set_status(host.id, self.then_status)
        return self.answer


def _world(ctx: EngineContext) -> Host:
    with ctx.db.session() as s:
        inv = Inventory(s, ctx.box)
        dc = inv.add_data_center("dc")
        cluster = inv.add_cluster("c", dc.id)
        return inv.add_host(HostInput("h1", "127.0.0.1", cluster.id, HostStatus.NON_RESPONSIVE))


def _escalate(ctx: EngineContext, host: Host, *precautions: Recorder) -> None:
    async def run() -> None:
        service = FencingService(EngineGateway(ctx), None, [], set())
        escalation = Escalation(service, precautions)
        escalation.begin(host)
        escalation.begin(host)  # already under way: not a second one
        assert escalation.busy(host.id)
        await asyncio.wait_for(escalation._tasks[host.id], 10)
        await service.close()
    asyncio.run(run())


def _kinds(ctx: EngineContext) -> list[str]:
    with ctx.db.session() as s:
        return [e.kind for e in Events(s).query()]


def test_escalation_runs_every_precaution_in_order_then_the_restart(sqlite_ctx) -> None:  # type: ignore[no-untyped-def]
    host = _world(sqlite_ctx)
    first, second = Recorder("first", Step.proceed()), Recorder("second", Step.proceed())
    _escalate(sqlite_ctx, host, first, second)
    assert first.seen == second.seen == ["h1"]
    with sqlite_ctx.db.session() as s:
        ops = Journal(s).list(host.id)
    assert [(op.action, op.origin) for op in ops] == [("restart", "automatic")]
    assert "fence.started" in _kinds(sqlite_ctx)


def test_escalation_a_spared_host_gets_no_power_action_and_the_reason_is_told(sqlite_ctx) -> None:  # type: ignore[no-untyped-def]
    host = _world(sqlite_ctx)
    spare = Recorder("storage_lease", Step.spared("its storage lease was renewed 2 s ago"))
    after = Recorder("after", Step.proceed())
    _escalate(sqlite_ctx, host, spare, after)
    assert after.seen == []
    with sqlite_ctx.db.session() as s:
        assert Journal(s).list(host.id) == []
        spared = Events(s).query(kind="treatment.spared")
    assert [e.message for e in spared] == [
        "h1 is not power-cycled now: its storage lease was renewed 2 s ago"]
    assert spared[0].details == {"precaution": "storage_lease"}


def test_escalation_ends_when_the_host_answers_again(sqlite_ctx) -> None:  # type: ignore[no-untyped-def]
    host = _world(sqlite_ctx)
    healing = Recorder("soft_fencing", Step.proceed(), then_status=HostStatus.UP, ctx=sqlite_ctx)
    after = Recorder("after", Step.proceed())
    _escalate(sqlite_ctx, host, healing, after)
    assert healing.seen == ["h1"] and after.seen == []
    with sqlite_ctx.db.session() as s:
        assert Journal(s).list(host.id) == []


def test_escalation_a_host_spared_round_after_round_is_told_once(sqlite_ctx) -> None:  # type: ignore[no-untyped-def]
    host = _world(sqlite_ctx)
    lease = Recorder("storage_lease", Step.spared("its storage lease was renewed 1 s ago"))
    other = Recorder("kdump", Step.spared("it is writing a crash dump"))

    async def run() -> None:
        service = FencingService(EngineGateway(sqlite_ctx), None, [], set())
        escalation = Escalation(service, [lease])
        for precautions in ([lease], [lease], [lease], [other], [lease]):
            escalation.precautions = list(precautions)
            escalation.begin(host)
            await asyncio.wait_for(escalation._tasks[host.id], 10)
        await service.close()
    asyncio.run(run())
    assert len(lease.seen) == 4  # considered every round
    with sqlite_ctx.db.session() as s:
        spared = Events(s).query(kind="treatment.spared")
    # told once, then again when another precaution spared it, and once more after
    assert [e.details["precaution"] for e in spared] == ["storage_lease", "kdump", "storage_lease"]
