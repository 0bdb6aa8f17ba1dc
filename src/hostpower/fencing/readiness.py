"""The PM health check: can each host be fenced now, and through which proxies?

Every `PMHealthCheckIntervalInSec` (when `PMHealthCheckEnabled`), the engine
asks for a status of every fence agent of every PM-enabled host it owns,
through *every* candidate proxy of the host's chain, not only the first that
answers as a fence command would: a host that can be fenced through a single
proxy is one failure away from not being fenceable at all. The verdict per
host (model/readiness.py) is stored in the database, so every engine's API
and the CLI answer the same; a change of verdict is an event.

* `PathSurvey` walks the chain entry by entry like the executor, with the
  executor's locator and dispatch (`ChainExecutor.attempt`, which checks that
  the engine may act right before each command), but tries each candidate,
  at most `PROXIES_PER_ENTRY` per entry, and writes no event per attempt.
* Bounded: at most `CONCURRENCY` commands at once over the whole engine.
  Like every command, each takes its device's turn (fencing/devicegate.py:
  one command at a time per device, with flows and other engines too); the
  checker also queues its own commands per device before taking one of its
  slots, so checks waiting for a busy PDU do not hold slots other devices
  could use. Hosts in a flow are skipped for the round.
* Several engines: each checks only the hosts it owns (the hash ring), and
  not at all while it may not act (`check_may_act`).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import replace
from datetime import UTC, datetime

from hostpower.config import Config
from hostpower.fencing.executor import ChainExecutor, agent_spec
from hostpower.fencing.gateway import acting_as
from hostpower.fencing.service import FencingService
from hostpower.model.devices import DeviceKey
from hostpower.model.errors import ConflictError, EngineNotReady, NotFoundError, StorageUnavailable
from hostpower.model.events import Event
from hostpower.model.inventory import FenceAgent, Host, InventorySnapshot
from hostpower.model.power import AgentSpec, FenceAction
from hostpower.model.proxychain import parse_chain
from hostpower.model.readiness import HostReadiness, PathCheck, PathState, assess, change
from hostpower.proxies import Candidate, effective_chain
from hostpower.store.readiness import ReadinessStore

log = logging.getLogger("hostpower.readiness")

# Status commands the health check runs at once, over every host and device.
CONCURRENCY = 16
# Candidates tried per chain entry of a host (the ones a fence command would
# try first); the rest are listed as not tried. Without a bound, `dc` and
# `other_dc` would make a round grow with the square of the inventory.
PROXIES_PER_ENTRY = 3
# Proxies passed over (not eligible now) listed per chain entry and agent.
NOT_TRIED_LISTED = 8
# How often the checker looks at its configuration between rounds, so that
# switching it on or off, or a new interval, applies within seconds.
POLL = 5.0


def agent_label(agent: FenceAgent) -> str:
    return f"{agent.type}@{agent.address}" + (f":{agent.port}" if agent.port else "")


class PathSurvey:
    """Every candidate path of one agent, tried with a status."""

    def __init__(self, executor: ChainExecutor, concurrency: int = CONCURRENCY,
                 per_entry: int = PROXIES_PER_ENTRY) -> None:
        self.executor = executor
        self.per_entry = per_entry
        self._slots = asyncio.Semaphore(concurrency)
        self._devices: dict[DeviceKey, asyncio.Lock] = {}

    async def agent(self, target: Host, agent: FenceAgent, snapshot: InventorySnapshot,
                    config: Config) -> list[PathCheck]:
        chain = effective_chain(parse_chain(target.power_management.pm_proxies), config)
        timeout = float(config["FenceCommandTimeoutInSec"])
        interval = config["DeviceCommandIntervalInMs"] / 1000
        spec = agent_spec(agent)
        label = agent_label(agent)
        locator = self.executor.locator(snapshot)
        listed: dict[int, str] = {}
        checks: list[PathCheck] = []
        for entry in chain:
            # No load given: the same order every round, the order a fence
            # command uses when nothing else runs.
            plan = locator.source_plan(target, agent.type, entry, listed, {})
            for n, candidate in enumerate(plan.candidates):
                if n >= self.per_entry:
                    checks.append(PathCheck(
                        candidate.name, entry.text, agent.id, label, PathState.NOT_TRIED,
                        f"beyond the first {self.per_entry} candidates of {entry.text} that "
                        f"are checked"))
                    continue
                checks.append(await self._try(candidate, entry.text, agent, label, spec, timeout,
                                              interval))
            # Hosts passed over (not up, cannot run the type), each named once.
            named = {c.proxy for c in checks}
            passed = [p for p in plan.passed_over if p.name != target.name
                      and p.name not in named and not p.reason.startswith("already a candidate")]
            for p in passed[:NOT_TRIED_LISTED]:
                checks.append(PathCheck(p.name, entry.text, agent.id, label, PathState.NOT_TRIED,
                                        p.reason))
        return checks

    async def _try(self, candidate: Candidate, source: str, agent: FenceAgent, label: str,
                   spec: AgentSpec, timeout: float, interval: float) -> PathCheck:
        lock = self._devices.setdefault(self.executor.device(spec), asyncio.Lock())
        async with lock, self._slots:
            started = time.monotonic()
            result = await self.executor.attempt(candidate, spec, FenceAction.STATUS, timeout,
                                                 interval)
            duration = round(time.monotonic() - started, 3)
        if result.ok:
            return PathCheck(candidate.name, source, agent.id, label, PathState.WORKS,
                             result.outcome.value, duration)
        return PathCheck(candidate.name, source, agent.id, label, PathState.FAILS,
                         result.message or result.outcome.value, duration)


class ReadinessChecker:
    """The periodic PM health check of the hosts this engine owns."""

    def __init__(self, service: FencingService, concurrency: int = CONCURRENCY,
                 per_entry: int = PROXIES_PER_ENTRY) -> None:
        self.service = service
        self.gateway = service.gateway
        self.survey = PathSurvey(service.executor, concurrency, per_entry)
        self._task: asyncio.Task[None] | None = None
        self._last_round: float | None = None   # monotonic end of the last full round
        self.on_round: list[Callable[[list[HostReadiness]], None]] = []  # metrics.py

    def start(self) -> None:
        self._task = asyncio.create_task(self._loop(), name="pm-health-check")

    @property
    def running(self) -> bool:
        return self._task is not None and not self._task.done()

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)

    async def _loop(self) -> None:
        waiting = ""   # why the last poll could not go on: said once, not every poll
        while True:
            why = ""
            try:
                config = await self.gateway.config()
                interval = float(config["PMHealthCheckIntervalInSec"])
                due = self._last_round is None or time.monotonic() - self._last_round >= interval
                if config["PMHealthCheckEnabled"] and due:
                    await self.round()
            except EngineNotReady as exc:
                why = f"PM health check waits: {exc}"    # tried again at the next poll
            except StorageUnavailable as exc:
                why = f"PM health check could not read or record: {exc}"
            except Exception:
                log.exception("PM health check round failed")
            if why and why.split(":")[0] != waiting.split(":")[0]:
                log.warning("%s", why)
            waiting = why
            await asyncio.sleep(POLL)

    async def round(self) -> list[HostReadiness]:
        """Check every PM-enabled host this engine owns (not those in a flow
        now); returns the verdicts. EngineNotReady when this engine may not
        act, before any command or as soon as it may no longer."""
        self.gateway.check_may_act()
        started = time.monotonic()
        snapshot, config = await self.gateway.state()
        ring, _alive = await self.gateway.ownership()
        me = self.gateway.runner
        owned = [h for h in snapshot.hosts if ring.owner(h.id) == me.name]
        stored = await self.gateway.run(lambda s: ReadinessStore(s).checked_hosts())
        for host in owned:
            if not host.power_management.enabled and host.id in stored:
                # Not fenceable by design: readers say so from the inventory.
                await self.gateway.run(lambda s, hid=host.id: ReadinessStore(s).delete(hid))
        hosts = [h for h in owned if h.power_management.enabled and not self.service.in_flow(h.id)]
        with acting_as(me.generation):  # the tasks below inherit it
            tasks = [asyncio.create_task(self.check(h, snapshot, config), name=f"pm-check-{h.name}")
                     for h in hosts]
        try:
            found = await asyncio.gather(*tasks)
        except BaseException:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            raise
        verdicts = [v for v in found if v is not None]
        self._last_round = time.monotonic()
        for listener in self.on_round:
            listener(verdicts)
        tally = Counter(v.readiness.value for v in verdicts)
        log.info("PM health check: %d hosts in %.1f s: %s", len(verdicts),
                 self._last_round - started,
                 ", ".join(f"{n} {state}" for state, n in sorted(tally.items())) or "none")
        return verdicts

    async def check(self, host: Host, snapshot: InventorySnapshot,
                    config: Config) -> HostReadiness | None:
        """One host: survey each agent's paths, store the verdict, an event if
        it changed. None when the host went away meanwhile."""
        try:
            agents = await self.gateway.agents(host.id)
        except NotFoundError:
            return None
        surveys = await asyncio.gather(*(self.survey.agent(host, a, snapshot, config)
                                         for a in agents))
        cluster = snapshot.cluster(host.cluster_id).name
        verdict = replace(assess(host.id, host.name, agents, [c for s in surveys for c in s]),
                          checked_at=datetime.now(UTC), engine=self.gateway.runner.name,
                          cluster=cluster)
        try:
            previous = await self.gateway.run(lambda s: ReadinessStore(s).save(verdict))
        except ConflictError:
            return None  # deleted meanwhile, or a peer wrote it in the same instant
        note = change(previous, verdict)
        if note is not None:
            await self.gateway.emit(Event(
                note.severity, "readiness.changed", note.message, host_id=host.id,
                host_name=host.name,
                details={"readiness": verdict.readiness.value,
                         "previous": previous.value if previous else None,
                         "paths": verdict.paths, "working": verdict.working,
                         "failing": verdict.failing}))
        return verdict
