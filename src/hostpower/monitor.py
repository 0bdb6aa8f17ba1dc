"""Heartbeats and host status transitions; automatic fencing treatment.

Every HostHeartbeatIntervalInSec the engine heartbeats every host agent at
once (bounded concurrency, each call bounded by HostHeartbeatTimeoutInSec);
what each answer means for the host's status is model/liveness.py.

A non_responsive host goes through the treatment gates (model/treatment.py)
each round; a skip is an event when its reason changes, a pass starts the
restart flow (or joins the running one).
"""

from __future__ import annotations

import asyncio
import logging
import time

from hostpower.fencing.service import FencingService
from hostpower.hostagent.client import AgentClient, AgentError
from hostpower.model.errors import StorageUnavailable
from hostpower.model.events import Event, Severity
from hostpower.model.inventory import Host, HostStatus
from hostpower.model.operations import FlowAction, Origin
from hostpower.model.liveness import Heartbeat, Liveness, next_liveness
from hostpower.model.treatment import Facts, decide

log = logging.getLogger("hostpower.monitor")

# Statuses the monitor leaves alone: set by an operator or by a running flow.
UNMANAGED = (HostStatus.MAINTENANCE, HostStatus.INSTALLING, HostStatus.REBOOT, HostStatus.KDUMPING)
HEARTBEAT_CONCURRENCY = 512
# Hosts already connecting are probed this often between full rounds, so the
# grace period ends when it says, not at the next full round.
CONNECTING_PROBE = 1.0


class Monitor:
    def __init__(self, service: FencingService, client: AgentClient,
                 clock=time.time) -> None:  # type: ignore[no-untyped-def]
        self.service = service
        self.gateway = service.gateway
        self.client = client
        self.clock = clock
        self.liveness: dict[int, Liveness] = {}
        self.skipped_gate: dict[int, str] = {}   # the gate that last held each host back
        self._sem = asyncio.Semaphore(HEARTBEAT_CONCURRENCY)
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.create_task(self._loop(), name="monitor")

    async def stop(self) -> None:
        if self._task:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)

    async def _loop(self) -> None:
        while True:
            next_round = time.monotonic() + 3.0
            try:
                next_round = time.monotonic() + await self.tick()
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

    async def tick(self, only_connecting: bool = False) -> float:
        """One round (or only the hosts now connecting); returns the heartbeat interval."""
        snapshot, config = await self.gateway.state()
        timeout = float(config["HostHeartbeatTimeoutInSec"])
        hosts = [h for h in snapshot.hosts if h.status not in UNMANAGED
                 and not self.service.in_flow(h.id)
                 and (not only_connecting or h.status is HostStatus.CONNECTING)]
        answers = await asyncio.gather(*(self._beat(h, timeout) for h in hosts))
        now = self.clock()
        for host, answer in zip(hosts, answers):
            await self._transition(host, answer, now, config)
        for host in snapshot.hosts:
            if host.status is HostStatus.NON_RESPONSIVE and not self.service.in_flow(host.id):
                fresh = await self.gateway.host(host.id)
                if fresh.status is HostStatus.NON_RESPONSIVE:
                    await self.treat(fresh, snapshot, config)
        return float(config["HostHeartbeatIntervalInSec"])

    async def _beat(self, host: Host, timeout: float) -> object:
        async with self._sem:
            try:
                return await self.client.heartbeat(host.address, host.agent_port, timeout)
            except AgentError as exc:
                return exc

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

    async def treat(self, host: Host, snapshot, config) -> None:  # type: ignore[no-untyped-def]
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
            in_flow=self.service.in_flow(host.id), agent_count=len(agents))
        decision = decide(facts)
        if not decision.fence:
            if self.skipped_gate.get(host.id) != decision.gate:
                self.skipped_gate[host.id] = decision.gate
                await self._event(Severity.WARNING if decision.gate != "connectivity_broken"
                                  else Severity.ERROR, "treatment.skipped", host,
                                  f"automatic fencing of {host.name} skipped: {decision.reason}",
                                  {"gate": decision.gate})
            return
        self.skipped_gate.pop(host.id, None)
        await self.service.request(host.id, FlowAction.RESTART, Origin.AUTOMATIC)

    async def _event(self, severity: Severity, kind: str, host: Host, message: str,
                     details: dict | None = None) -> None:  # type: ignore[type-arg]
        await self.gateway.emit(Event(severity, kind, message, host_id=host.id,
                                      host_name=host.name, details=details or {}))
