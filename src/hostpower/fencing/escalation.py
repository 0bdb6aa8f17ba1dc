"""Escalation: what follows once the gates let a non-responsive host be fenced.

Power-cycling a host kills every workload on it, so it comes last. Before
it, each precaution in turn may spare the host (oVirt's order, see
docs/fencing.md):

    soft fencing over SSH -> kdump detection -> storage lease -> hard fencing

A precaution answers PROCEED (go on to the next) or SPARED with the reason
(no power action now; the monitor keeps watching the host and, if it stays
non-responsive, the gates and the precautions run again at a later round).
Precautions emit their own events about what they did; the escalation emits
one `treatment.spared` event when a host is spared (not again while the same
precaution keeps sparing it round after round: like `treatment.skipped`, it
is said once per episode), and hard fencing is the restart flow
(`FencingService.request`).

Each escalation runs as a task of its own, one per host, because
precautions wait (soft fencing for the agent to come back, kdump detection
for the first messages): the monitor's round never waits for them. Before
each precaution the host is read again: one that answers again, or that
another engine took over, ends the escalation.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass
from enum import StrEnum
from typing import Protocol

from hostpower.config import Config
from hostpower.fencing.service import FencingService
from hostpower.model.errors import EngineNotReady, StorageUnavailable
from hostpower.model.events import Event, Severity
from hostpower.model.inventory import Host, HostStatus
from hostpower.model.operations import FlowAction, Origin

log = logging.getLogger("hostpower.monitor")

# Spared again by the same precaution within this many seconds of the last
# spare: the same episode (a host spared is reconsidered every round).
SPARED_EPISODE_GAP = 30.0


class Verdict(StrEnum):
    PROCEED = "proceed"
    SPARED = "spared"


@dataclass(frozen=True)
class Step:
    verdict: Verdict
    reason: str = ""

    @classmethod
    def proceed(cls, reason: str = "") -> "Step":
        return cls(Verdict.PROCEED, reason)

    @classmethod
    def spared(cls, reason: str) -> "Step":
        return cls(Verdict.SPARED, reason)


class Precaution(Protocol):
    """One thing to try, or to check, before a host is power-cycled."""

    name: str  # e.g. "soft_fencing"; names the step in events

    async def consider(self, host: Host, config: Config) -> Step:
        """PROCEED to the next precaution, or SPARED: no power action now."""
        ...


class Escalation:
    def __init__(self, service: FencingService, precautions: Sequence[Precaution] = ()) -> None:
        self.service = service
        self.gateway = service.gateway
        self.precautions = list(precautions)
        self._tasks: dict[int, asyncio.Task[None]] = {}
        self._spared: dict[int, tuple[str, float]] = {}  # host -> (precaution, when) last spared

    def busy(self, host_id: int) -> bool:
        """Whether an escalation for the host is under way."""
        task = self._tasks.get(host_id)
        return task is not None and not task.done()

    def begin(self, host: Host) -> None:
        """Escalate for `host` (a no-op while one is under way for it)."""
        if self.busy(host.id):
            return
        self._tasks[host.id] = asyncio.create_task(self._escalate(host),
                                                   name=f"escalation-{host.name}")

    async def stop(self) -> None:
        for task in self._tasks.values():
            task.cancel()
        await asyncio.gather(*self._tasks.values(), return_exceptions=True)
        self._tasks.clear()

    async def _escalate(self, host: Host) -> None:
        try:
            for precaution in self.precautions:
                fresh = await self._still_ours(host)
                if fresh is None:
                    return
                config = await self.gateway.config()
                step = await precaution.consider(fresh, config)
                if step.verdict is Verdict.SPARED:
                    if self._same_episode(host.id, precaution.name):
                        log.debug("%s still spared by %s: %s", host.name, precaution.name,
                                  step.reason)
                        return
                    await self.gateway.emit(Event(
                        Severity.WARNING, "treatment.spared",
                        f"{host.name} is not power-cycled now: {step.reason}",
                        host_id=host.id, host_name=host.name,
                        details={"precaution": precaution.name}))
                    return
            self._spared.pop(host.id, None)
            if await self._still_ours(host) is not None:
                await self.service.request(host.id, FlowAction.RESTART, Origin.AUTOMATIC)
        except (EngineNotReady, StorageUnavailable) as exc:
            # The monitor's next round starts over once the engine may act.
            log.warning("escalation for %s interrupted: %s", host.name, exc)
        except Exception:
            log.exception("escalation for %s failed", host.name)

    def _same_episode(self, host_id: int, precaution: str) -> bool:
        """Record a spare; whether the same precaution spared the host just before."""
        now = time.monotonic()
        last = self._spared.get(host_id)
        self._spared[host_id] = (precaution, now)
        return last is not None and last[0] == precaution and now - last[1] <= SPARED_EPISODE_GAP

    async def _still_ours(self, host: Host) -> Host | None:
        """The host as stored now, if it is still non-responsive and this
        engine's to treat; None otherwise (the escalation ends)."""
        fresh = await self.gateway.host(host.id)
        if fresh.status is not HostStatus.NON_RESPONSIVE:
            return None
        ring, _alive = await self.gateway.ownership()
        if ring.owner(host.id) != self.gateway.runner.name:
            return None
        self.gateway.check_may_act()
        return fresh
