"""kdump detection: the precaution that never power-cycles a host writing a crash dump.

oVirt's VdsKdumpDetectionCommand, adapted (docs/fencing.md, "kdump
detection", says where we differ). For a non-responsive host with kdump
detection on, once the gates and soft fencing let it be fenced:

1. No fence_kdump listener of any engine reported within
   `FenceKdumpListenerTimeout` -> ERROR `kdump.listener_down`, go on.
2. Wait up to `KdumpStartedTimeout` for a fence_kdump message from the host
   (the listeners record them, store/kdump.py). None -> `kdump.not_detected`,
   go on.
3. Messages -> the host is `kdumping` (`kdump.started`): never power-cycled
   while they keep coming, however long the dump takes. The monitor leaves a
   kdumping host alone.
4. No message for `KdumpFinishedTimeout` -> the dump is over
   (`kdump.finished`): the host is `non_responsive` again and should reboot
   by itself. It answers within `KdumpRebootTimeout` -> spared, no power
   action; it does not -> `kdump.no_reboot`, and the treatment goes on
   (storage lease, then hard fencing).

The decisions are model/kdump.observe; this module reads the records and
the host, sets statuses and tells events. A detection that ends without
finishing (the engine stops, loses its lease, or another engine takes the
host over) may leave a host `kdumping`: the watchdog puts such a host of
this engine's back to `non_responsive`, so its treatment starts over (oVirt
does the same for hosts found kdumping at engine start). It also forgets
the finished dumps of hosts that are up again (as oVirt does when a host
comes up), so an old dump does not count for a later failure.
"""

from __future__ import annotations

import asyncio
import logging

from hostpower.config import Config
from hostpower.fencing.escalation import Step
from hostpower.fencing.gateway import EngineGateway
from hostpower.model.errors import EngineNotReady, StorageUnavailable
from hostpower.model.events import Event, Severity
from hostpower.model.inventory import Host, HostStatus
from hostpower.model.kdump import (
    KdumpTiming, Watch, listener_alive, next_look, observe, reboot_left,
)
from hostpower.store.kdump import KdumpSession, KdumpStore

log = logging.getLogger("hostpower.monitor")

WATCHDOG_EVERY = 2.0
# Statuses in which the host is still ours to watch; UP / CONNECTING mean its
# agent answers again; anything else means someone else took charge of it.
_WATCHED = (HostStatus.NON_RESPONSIVE, HostStatus.KDUMPING)
_ANSWERING = (HostStatus.UP, HostStatus.CONNECTING)


class KdumpDetection:
    """The `kdump_detection` precaution (fencing/escalation.py) and its watchdog."""

    name = "kdump_detection"

    def __init__(self, gateway: EngineGateway, poll: float | None = None) -> None:
        """`poll`: seconds between looks at the records (default
        FenceKdumpMessageInterval, as oVirt)."""
        self.gateway = gateway
        self.poll = poll
        self.watching: set[int] = set()   # hosts a detection of this engine watches now
        self._task: asyncio.Task[None] | None = None

    # -- the precaution ----------------------------------------------------------------------

    async def consider(self, host: Host, config: Config) -> Step:
        if not host.power_management.kdump_detection:
            return Step.proceed("kdump detection is off for the host")
        timeout = float(config["FenceKdumpListenerTimeout"])
        if not await self._listener_alive(timeout):
            await self._event(Severity.ERROR, "kdump.listener_down", host,
                              f"cannot tell whether {host.name} is writing a crash dump: no "
                              f"fence_kdump listener has reported for {timeout:.0f} s "
                              f"(FenceKdumpListenerTimeout); going on without kdump detection")
            return Step.proceed("no fence_kdump listener runs")
        self.watching.add(host.id)
        try:
            return await self._watch(host, config)
        finally:
            self.watching.discard(host.id)

    async def _watch(self, host: Host, config: Config) -> Step:
        timing = KdumpTiming.from_config(config)
        poll = self.poll if self.poll is not None else float(config["FenceKdumpMessageInterval"])
        loop = asyncio.get_running_loop()
        began = loop.time()
        watch = Watch.AWAITING
        await self._event(Severity.INFO, "kdump.waiting", host,
                          f"waiting up to {timing.started_timeout:.0f} s (KdumpStartedTimeout) "
                          f"for fence_kdump messages from {host.name} before fencing it")
        while True:
            fresh = await self.gateway.host(host.id)
            if fresh.status not in _WATCHED + _ANSWERING or not await self._ours(host):
                # An operator, a flow or another engine took charge: the
                # escalation sees it and ends.
                return Step.proceed(f"{host.name} is no longer this detection's to watch")
            self.gateway.check_may_act()
            record = await self.gateway.run(lambda s: KdumpStore(s).session(host.id))
            since_last = record.since_last if record is not None else None
            new = observe(watch, loop.time() - began, since_last,
                          fresh.status in _ANSWERING, timing)
            if new is not watch:
                step = await self._changed(host, watch, new, record, timing)
                if step is not None:
                    return step
                watch = new
            await asyncio.sleep(next_look(watch, loop.time() - began, since_last, timing, poll))

    async def _changed(self, host: Host, old: Watch, new: Watch, record: KdumpSession | None,
                       timing: KdumpTiming) -> Step | None:
        """Tell and record a change of the detection; the step when it is final."""
        name = host.name
        if new is Watch.DUMPING:
            assert record is not None
            await self.gateway.set_host_status(host.id, HostStatus.KDUMPING)
            await self._event(
                Severity.WARNING, "kdump.started", host,
                f"{name} is writing a crash dump: {record.messages} fence_kdump message(s) from "
                f"{record.source} since {record.since_first:.0f} s ago; it is kdumping and is not "
                f"power-cycled while they keep coming",
                {"status": HostStatus.KDUMPING.value, "source": record.source,
                 "messages": record.messages})
            return None
        if old is Watch.DUMPING and new is not Watch.CAME_BACK:
            # The dump is over (oVirt sets the host non-responsive again):
            # the monitor heartbeats it, and sees it come back.
            await self.gateway.set_host_status(host.id, HostStatus.NON_RESPONSIVE)
            await self._finished(host, record, timing)
        elif old is Watch.AWAITING and new is Watch.REBOOTING:
            await self._finished(host, record, timing)  # it dumped before we looked
        if new is Watch.NOT_DETECTED:
            await self._event(Severity.INFO, "kdump.not_detected", host,
                              f"no fence_kdump message from {name} within "
                              f"{timing.started_timeout:.0f} s: it is not writing a crash dump")
            return Step.proceed("no crash dump")
        if new is Watch.NO_REBOOT:
            await self._event(Severity.WARNING, "kdump.no_reboot", host,
                              f"{name} did not answer within {timing.reboot_within:.0f} s "
                              f"(KdumpRebootTimeout) after its crash dump finished; the "
                              f"treatment goes on")
            return Step.proceed("not back after its crash dump")
        if new is Watch.CAME_BACK:
            if old is Watch.AWAITING:
                return Step.proceed(f"{name} answers again")  # the escalation ends
            await self.gateway.run(lambda s: KdumpStore(s).clear(host.id))
            await self._event(Severity.INFO, "kdump.rebooted", host,
                              f"{name} answers again after its crash dump")
            return Step.spared("it came back by itself after its crash dump")
        return None

    async def _finished(self, host: Host, record: KdumpSession | None,
                        timing: KdumpTiming) -> None:
        since_last = record.since_last if record is not None else None
        messages = record.messages if record is not None else 0
        await self._event(
            Severity.INFO, "kdump.finished", host,
            f"{host.name} finished its crash dump ({messages} fence_kdump message(s), none for "
            f"{since_last or 0:.0f} s); it should reboot by itself: waiting up to "
            f"{reboot_left(since_last, timing):.0f} s for it to answer before the treatment "
            f"goes on", {"status": HostStatus.NON_RESPONSIVE.value, "messages": messages})

    async def _listener_alive(self, timeout: float) -> bool:
        listeners = await self.gateway.run(lambda s: KdumpStore(s).listeners())
        return any(lst.state == "listening" and listener_alive(lst.since_heartbeat, timeout)
                   for lst in listeners)

    async def _ours(self, host: Host) -> bool:
        ring, _alive = await self.gateway.ownership()
        return ring.owner(host.id) == self.gateway.runner.name

    # -- the watchdog --------------------------------------------------------------------------

    def start(self) -> None:
        self._task = asyncio.create_task(self._watchdog(), name="kdump-watchdog")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)

    async def _watchdog(self) -> None:
        while True:
            await asyncio.sleep(WATCHDOG_EVERY)
            try:
                await self.tidy()
            except (EngineNotReady, StorageUnavailable) as exc:
                log.debug("kdump watchdog skipped a round: %s", exc)
            except Exception:
                log.exception("kdump watchdog round failed")

    async def tidy(self) -> None:
        """One watchdog round over the hosts this engine owns."""
        snapshot, config = await self.gateway.state()
        ring, _alive = await self.gateway.ownership()
        me = self.gateway.runner.name
        owned = {h.id: h for h in snapshot.hosts if ring.owner(h.id) == me}
        for host in owned.values():
            if host.status is HostStatus.KDUMPING and host.id not in self.watching:
                self.gateway.check_may_act()
                fresh = await self.gateway.host(host.id)
                if fresh.status is HostStatus.KDUMPING and host.id not in self.watching:
                    await self.gateway.set_host_status(host.id, HostStatus.NON_RESPONSIVE)
                    await self._event(
                        Severity.WARNING, "kdump.recovered", host,
                        f"{host.name} was left kdumping by a detection that did not finish "
                        f"(an engine stopped or handed the host over): non_responsive again, "
                        f"its treatment starts over", {"status": HostStatus.NON_RESPONSIVE.value})
        finished_after = float(config["KdumpFinishedTimeout"])
        sessions = await self.gateway.run(lambda s: KdumpStore(s).sessions())
        for session in sessions:
            host = owned.get(session.host_id)
            if (host is not None and host.status is HostStatus.UP
                    and session.since_last >= finished_after):
                await self.gateway.run(lambda s, i=host.id: KdumpStore(s).clear(i, finished_after))

    async def _event(self, severity: Severity, kind: str, host: Host, message: str,
                     details: dict | None = None) -> None:  # type: ignore[type-arg]
        await self.gateway.emit(Event(severity, kind, message, host_id=host.id,
                                      host_name=host.name, details=details or {}))
