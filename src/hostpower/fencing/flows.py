"""Fence flows: stop, start and restart, journaled phase by phase.

The phase is written to the journal *before* each external action, so a
flow picked up after an engine crash knows what it may already have done
and checks the device before repeating anything: a host is never switched
off twice nor left off. Writing a step also checks the flow's reservation
(store/journal.py): a flow taken over by another engine stops here, before
its next command.

    restart: check -> stop -> stop_verify -> start -> start_verify
             (a host already verified off at the check counts as fenced)
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import Protocol

from hostpower.config import Config
from hostpower.fencing.failpoints import failpoint
from hostpower.fencing.power import HostPower, PowerResult
from hostpower.model.errors import HostpowerError
from hostpower.model.events import Event, Severity
from hostpower.model.inventory import HostStatus
from hostpower.model.operations import FlowAction, Phase
from hostpower.model.power import FenceAction, Outcome
from hostpower.store.journal import Operation

log = logging.getLogger("hostpower.flows")


class FlowStore(Protocol):
    async def start_step(self, op: Operation, name: str, phase: Phase | None = None) -> int: ...
    async def finish_step(self, step_id: int, outcome: str, proxies: list[dict[str, object]],
                          message: str) -> None: ...
    async def set_host_status(self, host_id: int, status: HostStatus) -> None: ...
    async def emit(self, event: Event) -> None: ...
    async def config(self) -> Config: ...


class FlowFailed(HostpowerError):
    pass


class Flows:
    def __init__(self, power: HostPower, store: FlowStore,
                 sleep: Callable[[float], Awaitable[None]] = asyncio.sleep) -> None:
        self.power = power
        self.store = store
        self.sleep = sleep

    async def run(self, op: Operation) -> tuple[bool, str]:
        """Run (or resume) the operation's flow; (succeeded, message)."""
        handler = {FlowAction.RESTART: self._restart, FlowAction.STOP: self._stop,
                   FlowAction.START: self._start}[op.action]
        try:
            return True, await handler(op)
        except FlowFailed as exc:
            return False, str(exc)

    # -- the flows ------------------------------------------------------------------

    async def _restart(self, op: Operation) -> str:
        config = await self.store.config()
        phase = op.phase
        await self.store.set_host_status(op.host_id, HostStatus.REBOOT)
        if phase in (Phase.BEGIN, Phase.CHECK):
            status = await self._step(op, "check", FenceAction.STATUS, phase=Phase.CHECK)
            failpoint("restart.after_check")
            if status.outcome is Outcome.OFF:
                await self._note(op, "the host is already verified off: it counts as fenced")
                phase = Phase.START
            else:
                phase = Phase.STOP
        if phase is Phase.STOP:
            await self._stop_once(op, resumed=op.phase is Phase.STOP)
            phase = Phase.STOP_VERIFY
        if phase is Phase.STOP_VERIFY:
            await self._poll(op, Outcome.OFF, config["FenceStopStatusRetries"],
                             config["FenceStopStatusDelayBetweenRetriesInSec"], Phase.STOP_VERIFY)
            failpoint("restart.after_verify_off")
            phase = Phase.START
        if phase is Phase.START:
            await self._start_once(op, resumed=op.phase is Phase.START)
            phase = Phase.START_VERIFY
        await self._poll(op, Outcome.ON, config["FenceStartStatusRetries"],
                         config["FenceStartStatusDelayBetweenRetriesInSec"], Phase.START_VERIFY)
        failpoint("restart.after_verify_on")
        await self.store.set_host_status(op.host_id, HostStatus.CONNECTING)
        return f"{op.host_name} was restarted"

    async def _stop(self, op: Operation) -> str:
        config = await self.store.config()
        if op.phase in (Phase.BEGIN, Phase.STOP):
            await self._stop_once(op, resumed=op.phase is Phase.STOP)
        await self._poll(op, Outcome.OFF, config["FenceStopStatusRetries"],
                         config["FenceStopStatusDelayBetweenRetriesInSec"], Phase.STOP_VERIFY)
        await self.store.set_host_status(op.host_id, HostStatus.DOWN)
        return f"{op.host_name} was stopped"

    async def _start(self, op: Operation) -> str:
        config = await self.store.config()
        if op.phase in (Phase.BEGIN, Phase.START):
            await self._start_once(op, resumed=op.phase is Phase.START)
        await self._poll(op, Outcome.ON, config["FenceStartStatusRetries"],
                         config["FenceStartStatusDelayBetweenRetriesInSec"], Phase.START_VERIFY)
        await self.store.set_host_status(op.host_id, HostStatus.CONNECTING)
        return f"{op.host_name} was started"

    # -- building blocks -----------------------------------------------------------------

    async def _stop_once(self, op: Operation, resumed: bool) -> None:
        await self._switch_once(op, FenceAction.OFF, Outcome.OFF, Phase.STOP, resumed)

    async def _start_once(self, op: Operation, resumed: bool) -> None:
        await self._switch_once(op, FenceAction.ON, Outcome.ON, Phase.START, resumed)

    async def _switch_once(self, op: Operation, action: FenceAction, want: Outcome, phase: Phase,
                           resumed: bool) -> None:
        """Send off (or on) at most once: a resumed flow first asks the device
        whether the command already went out before the crash."""
        if resumed:
            status = await self._step(op, "check", FenceAction.STATUS)
            if status.outcome is want:
                await self._note(op, f"resumed: the host is already {want.value}, "
                                     f"the {phase} is not repeated")
                return
        result = await self._step(op, phase.value, action, phase=phase,
                                  before=f"{op.action}.before_{action.value}")
        failpoint(f"{op.action}.after_{action.value}")
        if result.outcome is not want:
            raise FlowFailed(f"{phase} of {op.host_name} failed: "
                             f"{result.message or result.outcome.value}")

    async def _poll(self, op: Operation, want: Outcome, retries: int, delay: float,
                    phase: Phase) -> None:
        polls = max(1, retries)
        verb = "stop" if want is Outcome.OFF else "start"
        for n in range(1, polls + 1):
            result = await self._step(op, f"verify_{want.value}", FenceAction.STATUS,
                                      note=f"poll {n}/{polls}", phase=phase if n == 1 else None)
            if result.outcome is want:
                return
            if n < polls:
                await self.sleep(delay)
        raise FlowFailed(f"{verb} of {op.host_name} not verified: status was not {want.value} "
                         f"after {polls} poll(s) {delay:g} s apart")

    async def _step(self, op: Operation, name: str, action: FenceAction, note: str = "",
                    phase: Phase | None = None, before: str | None = None) -> PowerResult:
        """One journaled step. `phase`, when given, is written in the same
        transaction as the step's start: before the external action."""
        step_id = await self.store.start_step(op, name, phase)
        if before:
            failpoint(before)
        result = await self.power.run(op.host_id, action, op.id)
        message = " ".join(filter(None, [note, result.message]))
        await self.store.finish_step(step_id, result.outcome.value, result.proxies, message)
        return result

    async def _note(self, op: Operation, message: str) -> None:
        await self.store.emit(Event(Severity.INFO, "fence.note", f"{op.host_name}: {message}",
                                    host_id=op.host_id, host_name=op.host_name,
                                    operation_id=op.id))
