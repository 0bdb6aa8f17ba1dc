"""Heartbeats and host status transitions; automatic fencing treatment.

Every HostHeartbeatIntervalInSec the engine heartbeats every host agent at
once (bounded concurrency, each call bounded by HostHeartbeatTimeoutInSec);
what each answer means for the host's status is model/liveness.py.

A non_responsive host goes through the treatment gates (model/treatment.py)
each round; a skip is an event when its reason changes, a pass begins the
escalation (fencing/escalation.py: the precautions, then the restart flow).

With several engines, each monitors only the hosts it owns (the hash ring
of model/ownership.py over the live engines, re-read every round). A host
it begins to watch (at start, or taken over from an engine that left) gets
a fresh grace period before any fencing. Before fencing, it asks its peers
for a second opinion (fencing/opinions.py), and it answers theirs. Every
full round it also takes over the flows left by dead engines
(`FencingService.adopt_orphans`).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

from hostpower.fencing.escalation import Escalation, Precaution
from hostpower.fencing.opinions import SecondOpinion, Verdict
from hostpower.fencing.service import FencingService
from hostpower.hostagent.client import AgentClient, AgentError
from hostpower.model.errors import EngineNotReady, StorageUnavailable
from hostpower.model.events import Event, Severity
from hostpower.model.inventory import Host, HostStatus
from hostpower.model.liveness import Heartbeat, Liveness, next_liveness
from hostpower.model.treatment import Facts, decide

log = logging.getLogger("hostpower.monitor")

# Statuses the monitor leaves alone: set by an operator or by a running flow.
UNMANAGED = (HostStatus.MAINTENANCE, HostStatus.INSTALLING, HostStatus.REBOOT, HostStatus.KDUMPING)
HEARTBEAT_CONCURRENCY = 512
# Hosts already connecting are probed this often between full rounds, so the
# grace period ends when it says, not at the next full round.
CONNECTING_PROBE = 1.0
# Peers' probes for a second opinion are looked for this often.
ANSWER_EVERY = 0.25


@dataclass(frozen=True)
class RoundReport:
    """What the monitor tells its listeners (metrics.py) after a full round."""

    duration: float           # seconds from its start to its end
    lag: float                # how late it started against its schedule (>= 0)
    hosts: Mapping[str, int]  # hosts this engine owns, by status at the round's end
    answered: int             # heartbeats answered this round
    missed: int               # heartbeats that failed or timed out
    engines_alive: int        # live engines sharing the database, this one included


class Monitor:
    def __init__(self, service: FencingService, client: AgentClient,
                 precautions: Sequence[Precaution] = (),
                 clock=time.time) -> None:  # type: ignore[no-untyped-def]
        self.service = service
        self.gateway = service.gateway
        self.client = client
        self.clock = clock
        self.liveness: dict[int, Liveness] = {}
        self.skipped_gate: dict[int, str] = {}   # the gate that last held each host back
        self.watched_since: dict[int, float] = {}  # hosts this engine owns, since when
        self.peers: list[str] = []                # the other live engines, as of the last round
        self.unbeaten: set[int] = set()           # owned hosts not heartbeated since they came
        # The hosts this engine owns, for one ring and one inventory revision:
        # looking up every host on the ring each second is not free at 10,000.
        self._owned_ids: tuple[object, frozenset[int]] = (None, frozenset())
        self.opinions = SecondOpinion(self.gateway, client)
        self.escalation = Escalation(service, precautions)
        self._sem = asyncio.Semaphore(HEARTBEAT_CONCURRENCY)
        self._tasks: list[asyncio.Task[None]] = []
        self.on_round: list[Callable[[RoundReport], None]] = []
        self._round_due: float | None = None     # when the next full round should start
        self._beats = (0, 0)                     # (answered, missed) in the running round

    def start(self) -> None:
        self._tasks = [asyncio.create_task(self._loop(), name="monitor"),
                       asyncio.create_task(self._answer_loop(), name="second-opinions")]

    @property
    def running(self) -> bool:
        """Whether every task of the monitor still runs (none died of an error)."""
        return bool(self._tasks) and not any(t.done() for t in self._tasks)

    async def stop(self) -> None:
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        await self.escalation.stop()

    async def _loop(self) -> None:
        while True:
            next_round = time.monotonic() + 3.0
            try:
                started = time.monotonic()
                interval = await self.tick()
                next_round = started + interval
                await self._report_round(started)
                self._round_due = next_round
                while (left := next_round - time.monotonic()) > CONNECTING_PROBE / 2:
                    await asyncio.sleep(min(CONNECTING_PROBE, left))
                    await self.tick(only_connecting=True)
            except StorageUnavailable as exc:
                # Heartbeats go on; what they found is written once the
                # database takes writes again (the next round sees it anew).
                log.warning("monitor round could not record its findings: %s", exc)
            except Exception:
                log.exception("monitor round failed")
            await asyncio.sleep(max(0.0, next_round - time.monotonic()))

    async def _answer_loop(self) -> None:
        while True:
            await asyncio.sleep(ANSWER_EVERY)
            if not self.peers:
                continue  # alone: nobody asks
            try:
                config = await self.gateway.config()
                await self.opinions.answer_open(float(config["HostHeartbeatTimeoutInSec"]))
            except StorageUnavailable:
                pass  # the monitor round reports the outage
            except Exception:
                log.exception("answering peers' second-opinion probes failed")

    async def tick(self, only_connecting: bool = False) -> float:
        """One round (or only the hosts now connecting); returns the heartbeat interval."""
        snapshot, config = await self.gateway.state()
        owned = await self._owned(snapshot)
        timeout = float(config["HostHeartbeatTimeoutInSec"])
        # Between full rounds: the hosts now connecting, and those just taken
        # over from an engine that left (watched from the next second on).
        hosts = [h for h in owned if h.status not in UNMANAGED
                 and not self.service.in_flow(h.id)
                 and (not only_connecting or h.status is HostStatus.CONNECTING
                      or h.id in self.unbeaten)]
        answers = await asyncio.gather(*(self._beat(h, timeout) for h in hosts))
        if not only_connecting:
            missed = sum(isinstance(a, BaseException) for a in answers)
            self._beats = (len(answers) - missed, missed)
        now = self.clock()
        for host, answer in zip(hosts, answers):
            self.unbeaten.discard(host.id)
            await self._transition(host, answer, now, config)
        # Every second, not only every round: a dead engine's flows resume
        # as soon as its lease has ended (one small query when none is running).
        await self.service.adopt_orphans()
        try:
            self.gateway.check_may_act()
        except EngineNotReady:
            return float(config["HostHeartbeatIntervalInSec"])  # no fencing decision now
        chosen = []
        for host in owned:
            if host.status is HostStatus.NON_RESPONSIVE and not self._treating(host.id):
                fresh = await self.gateway.host(host.id)
                if fresh.status is HostStatus.NON_RESPONSIVE and await self.treat(
                        fresh, snapshot, config):
                    chosen.append(fresh)
        for host in await self._confirmed(chosen, timeout):
            self.skipped_gate.pop(host.id, None)
            self.escalation.begin(host)
        return float(config["HostHeartbeatIntervalInSec"])

    async def _report_round(self, started: float) -> None:
        if not self.on_round:
            return
        snapshot, _config = await self.gateway.state()   # the statuses this round wrote
        mine = self._owned_ids[1]
        report = RoundReport(
            duration=time.monotonic() - started,
            lag=max(0.0, started - self._round_due) if self._round_due is not None else 0.0,
            hosts=Counter(h.status.value for h in snapshot.hosts if h.id in mine),
            answered=self._beats[0], missed=self._beats[1],
            engines_alive=len(self.peers) + 1)
        for listener in self.on_round:
            listener(report)

    def _treating(self, host_id: int) -> bool:
        """A flow or an escalation for the host is under way here."""
        return self.service.in_flow(host_id) or self.escalation.busy(host_id)

    async def _owned(self, snapshot) -> list[Host]:  # type: ignore[no-untyped-def]
        """The hosts this engine owns now; those new to it are watched from now."""
        ring, alive = await self.gateway.ownership()
        me = self.gateway.runner.name
        self.peers = sorted(name for name in alive if name != me)
        key = (ring.engines, self.gateway.inventory_revision)
        if self._owned_ids[0] != key:
            self._owned_ids = (key, frozenset(h.id for h in snapshot.hosts
                                              if ring.owner(h.id) == me))
        mine = self._owned_ids[1]
        owned = [h for h in snapshot.hosts if h.id in mine]
        now = self.clock()
        for host_id in mine - self.watched_since.keys():
            self.watched_since[host_id] = now
            self.unbeaten.add(host_id)
            self.liveness.pop(host_id, None)
        for host_id in self.watched_since.keys() - mine:
            # Another engine watches it now; if it comes back, it starts afresh.
            del self.watched_since[host_id]
            self.unbeaten.discard(host_id)
            self.liveness.pop(host_id, None)
            self.skipped_gate.pop(host_id, None)
        return owned

    async def _confirmed(self, hosts: list[Host], timeout: float) -> list[Host]:
        """The hosts no peer reaches (all of them when this engine is alone)."""
        if not hosts or not self.peers:
            return hosts
        verdicts = await self.opinions.ask(hosts, self.peers, timeout)
        confirmed = []
        for v in verdicts:
            if v.outvoted:
                await self._outvoted(v)
                continue
            confirmed.append(v.host)
            silent = f"; no answer in time from {', '.join(v.silent)}" if v.silent else ""
            who = ", ".join(a.engine for a in v.not_reached_by) or "no peer"
            await self._event(Severity.INFO, "treatment.confirmed", v.host,
                              f"second opinion on {v.host.name}: {who} cannot reach its agent "
                              f"either{silent}; fencing it",
                              {"not_reached_by": [a.engine for a in v.not_reached_by],
                               "silent": v.silent})
        return confirmed

    async def _outvoted(self, v: Verdict) -> None:
        me = self.gateway.runner.name
        if self.skipped_gate.get(v.host.id) == "outvoted":
            return
        self.skipped_gate[v.host.id] = "outvoted"
        peers = ", ".join(f"{a.engine} ({a.detail})" for a in v.reached_by)
        await self._event(Severity.WARNING, "treatment.outvoted", v.host,
                          f"automatic fencing of {v.host.name} skipped: engine {me} cannot reach "
                          f"its agent but {peers} can; {me}'s own network is the likelier "
                          f"culprit", {"gate": "outvoted",
                                       "reached_by": [a.engine for a in v.reached_by]})

    async def _beat(self, host: Host, timeout: float) -> object:
        async with self._sem:
            try:
                return await self.client.heartbeat(host.address, host.agent_port, timeout)
            except AgentError as exc:
                return exc
            except Exception as exc:  # a bug in one heartbeat must not end the round
                log.exception("heartbeat of %s failed unexpectedly", host.name)
                return AgentError(f"unexpected {type(exc).__name__}: {exc}", host.address,
                                  host.agent_port)

    async def _transition(self, host: Host, answer: object, now: float, config) -> None:  # type: ignore[no-untyped-def]
        if isinstance(answer, AgentError):
            beat = Heartbeat(answered=False, failure=str(answer))
        else:
            self.service.host_agent_types[host.id] = set(
                getattr(answer, "fence_agent_types", []) or [])
            beat = Heartbeat(answered=True, boot_id=getattr(answer, "boot_id", None))
        step = next_liveness(host.name, host.status, self.liveness.get(host.id, Liveness()), beat,
                             now, config["TimeoutToResetHostInSeconds"],
                             config["HostAttemptsToResetCount"])
        self.liveness[host.id] = step.liveness
        if step.rebooted:
            await self._event(Severity.INFO, "host.rebooted", host,
                              f"{host.name} reports a new boot id")
        if step.change is not None:
            await self.gateway.set_host_status(host.id, step.change.status)
            await self._event(step.change.severity, "host.status", host, step.change.message,
                              {"status": step.change.status.value})

    async def treat(self, host: Host, snapshot, config) -> bool:  # type: ignore[no-untyped-def]
        """Whether the gates let the host be fenced (a skip is an event when its reason changes)."""
        last = await self.gateway.last_operation_end(host.id)
        agents = await self.gateway.agents(host.id)
        cluster = snapshot.cluster(host.cluster_id)
        facts = Facts(
            host=host, cluster=cluster,
            cluster_hosts=[h for h in snapshot.hosts if h.cluster_id == cluster.id],
            now=self.clock(), engine_started_at=self.service.started_at,
            startup_window=config["DisableFenceAtStartupInSec"],
            quiet_time=config["FenceQuietTimeBetweenOperationsInSec"],
            last_operation_at=last.timestamp() if last else None,
            in_flow=self._treating(host.id), agent_count=len(agents),
            watched_since=self.watched_since.get(host.id),
            grace=float(config["TimeoutToResetHostInSeconds"]))
        decision = decide(facts)
        if not decision.fence:
            if self.skipped_gate.get(host.id) != decision.gate:
                self.skipped_gate[host.id] = decision.gate
                await self._event(Severity.WARNING if decision.gate != "connectivity_broken"
                                  else Severity.ERROR, "treatment.skipped", host,
                                  f"automatic fencing of {host.name} skipped: {decision.reason}",
                                  {"gate": decision.gate})
            return False
        return True

    async def _event(self, severity: Severity, kind: str, host: Host, message: str,
                     details: dict | None = None) -> None:  # type: ignore[type-arg]
        await self.gateway.emit(Event(severity, kind, message, host_id=host.id,
                                      host_name=host.name, details=details or {}))
