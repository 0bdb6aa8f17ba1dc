"""The engine's running parts: agent client, drivers, fencing service, monitor,
PM health check (fencing/readiness.py).

Built by `hostpower serve` around the API; the API works without it (then
power operations answer 503), which keeps inventory-only tests light.
"""

from __future__ import annotations

import logging
import resource
import time

from hostpower.context import EngineContext
from hostpower.drivers.registry import default_drivers, local_agent_types
from hostpower.fencing.gateway import EngineGateway
from hostpower.fencing.readiness import ReadinessChecker
from hostpower.fencing.kdump import KdumpDetection
from hostpower.fencing.service import FencingService
from hostpower.fencing.softfencing import SoftFencing
from hostpower.fencing.storagelease import StorageLease
from hostpower.hostagent.client import AgentClient
from hostpower.hostagent.pki import CertificateAuthority, ensure_engine_certificate
from hostpower.kdumplistener import KdumpListener
from hostpower.membership import Membership
from hostpower.metrics import EngineMetrics
from hostpower.monitor import Monitor
from hostpower.notify.deliverer import Deliverer

log = logging.getLogger("hostpower.engine")


def raise_open_file_limit() -> int:
    """The engine keeps a connection open to every host agent: with thousands
    of hosts the usual soft limit of 1,024 files is far too low. Raise it to
    the hard limit; returns the limit now in force."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard == resource.RLIM_INFINITY or soft < hard:
        target = hard if hard != resource.RLIM_INFINITY else max(soft, 1 << 20)
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
            soft = target
        except (ValueError, OSError):
            log.warning("could not raise the open file limit above %d", soft)
    return soft


class EngineRuntime:
    """`membership` (joined by `hostpower serve` before it listens) renews the
    engine's lease from start to stop; without it (tests, inventory-only use)
    the engine is always ready."""

    def __init__(self, ctx: EngineContext, monitor: bool = True,
                 membership: Membership | None = None) -> None:
        self.ctx = ctx
        self.with_monitor = monitor
        self.membership = membership
        self.client: AgentClient | None = None
        self.service: FencingService | None = None
        self.monitor: Monitor | None = None
        self.readiness: ReadinessChecker | None = None
        self.kdump_listener: KdumpListener | None = None
        self.kdump: KdumpDetection | None = None
        self.metrics = EngineMetrics(
            may_act=lambda: membership is None or membership.may_act(),
            database_errors=lambda: ctx.db.errors)
        self.notifications: Deliverer | None = None

    async def start(self) -> None:
        if self.membership is not None:
            self.membership.start()  # first: the lease was taken at join, keep it
        raise_open_file_limit()
        config = self.ctx.config()
        ca = CertificateAuthority.load_or_create(self.ctx.settings.pki_dir)
        paths = ensure_engine_certificate(ca, self.ctx.settings.pki_dir / "engine")
        self.client = AgentClient(paths.ca, paths.cert, paths.key)
        drivers = default_drivers(config["FenceAgentsPath"], config["PreferNativeFenceDrivers"],
                                  config["RedfishCaBundle"])
        self.service = FencingService(EngineGateway(self.ctx, self.membership), self.client, drivers,
                                      local_agent_types(drivers), time.time())
        self.service.on_finish(self.metrics.operation_finished)
        self.service.gateway.on_event(self.metrics.event)
        # Notifications: events from the database to webhooks and mail (notify/).
        self.notifications = Deliverer(
            self.ctx.db, self.ctx.box, self.membership.me.name if self.membership else "local",
            ready=self.membership.may_act if self.membership else lambda: True)
        self.notifications.start()
        resumed = await self.service.resume()
        if resumed:
            log.warning("resumed %d unfinished fence flow(s)", len(resumed))
        if self.with_monitor:
            # fence_kdump messages are heard by every engine that monitors
            # (a busy port is logged and the engine goes on without them).
            self.kdump_listener = KdumpListener(self.service.gateway)
            await self.kdump_listener.start()
            self.kdump = KdumpDetection(self.service.gateway)
            # The precautions in oVirt's order (fencing/escalation.py).
            self.monitor = Monitor(self.service, self.client, precautions=[
                SoftFencing(self.service, self.client, self.ctx.settings.ssh_dir),
                self.kdump,
                StorageLease(self.service.gateway, self.client, self.service.executor.in_flight),
            ])
            self.monitor.on_round.append(self.metrics.round_finished)
            self.monitor.start()
            self.kdump.start()
            # The PM health check: idle unless PMHealthCheckEnabled (read every few seconds).
            self.readiness = ReadinessChecker(self.service)
            self.readiness.on_round.append(self.metrics.health_checked)
            self.readiness.start()

    async def stop(self) -> None:
        if self.readiness:
            await self.readiness.stop()
        if self.monitor:
            await self.monitor.stop()
        if self.kdump:
            await self.kdump.stop()
        if self.kdump_listener:
            await self.kdump_listener.stop()
        if self.notifications:
            await self.notifications.stop()
        if self.service:
            await self.service.close()
        if self.client:
            await self.client.aclose()
        if self.membership is not None:
            await self.membership.stop()  # last: nothing of this engine acts any more
