"""Fence flows: stop, start and restart, journaled phase by phase.

The phase is written to the journal *before* each external action, so a
flow picked up after an engine crash knows what it may already have done
and checks the device before repeating anything: a host is never switched
off twice nor left off. Writing a step also checks the flow's reservation
(store/journal.py): a flow taken over by another engine stops here, before
its next command.

    restart: check -> stop -> stop_verify -> start -> start_verify
             (a host already verified off at the check counts as fenced)

A stop or a start follows oVirt's rules (docs/fencing.md, "Retry semantics
(as oVirt)"; the pure rules in model/retries.py and model/agentgroups.py):
the agent groups are tried in order, each but the last asked its status
first and skipped when it gives no verified answer; the command goes to one
group at a time, then 1 + N status polls verify it; a start that failed is
sent once more, a stop never.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Protocol

from hostpower.config import Config
from hostpower.fencing.failpoints import failpoint
from hostpower.fencing.power import HostPower, PowerResult
from hostpower.model.agentgroups import hands_over, needs_status_check, order_groups
from hostpower.model.errors import HostpowerError
from hostpower.model.events import Event, Severity
from hostpower.model.inventory import FenceAgent, HostStatus
from hostpower.model.operations import FlowAction, Phase
from hostpower.model.power import FenceAction, Outcome
from hostpower.model.retries import (
    UNKNOWN_ANSWERS_TOLERATED, Verdict, attempts_left, poll_verdict, status_polls,
    switch_attempts, unverified,
)
from hostpower.store.journal import Operation

log = logging.getLogger("hostpower.flows")


class FlowStore(Protocol):
    async def start_step(self, op: Operation, name: str, phase: Phase | None = None,
                         changes_power: bool = True) -> object: ...
    async def finish_step(self, step: object, outcome: str, proxies: list[dict[str, object]],
                          message: str) -> None: ...
    async def set_host_status(self, host_id: int, status: HostStatus) -> None: ...
    async def emit(self, event: Event) -> None: ...
    async def config(self) -> Config: ...


class FlowFailed(HostpowerError):
    pass


@dataclass(frozen=True)
class _Switch:
    """A stop or a start: its command, phases, and configuration keys."""

    want: Outcome
    action: FenceAction
    phase: Phase
    verify: Phase
    verb: str
    retries_key: str
    delay_key: str


_STOP = _Switch(Outcome.OFF, FenceAction.OFF, Phase.STOP, Phase.STOP_VERIFY, "stop",
                "FenceStopStatusRetries", "FenceStopStatusDelayBetweenRetriesInSec")
_START = _Switch(Outcome.ON, FenceAction.ON, Phase.START, Phase.START_VERIFY, "start",
                 "FenceStartStatusRetries", "FenceStartStatusDelayBetweenRetriesInSec")


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
        checked: PowerResult | None = None
        await self.store.set_host_status(op.host_id, HostStatus.REBOOT)
        if phase in (Phase.BEGIN, Phase.CHECK):
            status = await self._step(op, "check", FenceAction.STATUS, phase=Phase.CHECK)
            failpoint("restart.after_check")
            if status.outcome is Outcome.OFF:
                await self._note(op, "the host is already verified off: it counts as fenced")
                phase = Phase.START
            else:
                phase = Phase.STOP
                checked = status  # the groups' answers: the status check before the stop
        if phase in (Phase.STOP, Phase.STOP_VERIFY):
            await self._switch(op, _STOP, config, _resumed(op, phase), checked)
            failpoint("restart.after_verify_off")
            phase = Phase.START
        await self._switch(op, _START, config, _resumed(op, phase))
        failpoint("restart.after_verify_on")
        await self.store.set_host_status(op.host_id, HostStatus.CONNECTING)
        return f"{op.host_name} was restarted"

    async def _stop(self, op: Operation) -> str:
        config = await self.store.config()
        await self._switch(op, _STOP, config, _resumed(op, op.phase))
        await self.store.set_host_status(op.host_id, HostStatus.DOWN)
        return f"{op.host_name} was stopped"

    async def _start(self, op: Operation) -> str:
        config = await self.store.config()
        await self._switch(op, _START, config, _resumed(op, op.phase))
        await self.store.set_host_status(op.host_id, HostStatus.CONNECTING)
        return f"{op.host_name} was started"

    # -- a stop or a start -------------------------------------------------------------

    async def _switch(self, op: Operation, sw: _Switch, config: Config,
                      resumed: Phase | None = None, checked: PowerResult | None = None) -> None:
        """Send the off (on) and verify it, as oVirt does: groups in order,
        each but the last checked first; per group, the command and 1 + N
        polls, a start sent once more if that failed. `resumed`: the phase a
        resumed flow was in; `checked`: a status just taken, whose groups'
        answers serve as their status checks. Raises FlowFailed."""
        retries = int(config[sw.retries_key])
        delay = float(config[sw.delay_key])
        attempts = switch_attempts(sw.action)
        journaled = sum(1 for s in op.steps if s.name == sw.phase.value) if resumed else 0
        failure = ""
        if resumed is sw.verify:
            # The command went out before the engine stopped: verify it first.
            verified, failure = await self._verify(op, sw, retries, delay, None)
            if verified:
                return
            attempts = attempts_left(sw.action, journaled, verify_pending=True)
            if not attempts:
                raise FlowFailed(failure)
            await self._resend(op, sw, failure)
        elif resumed is sw.phase:
            # Maybe it went out, maybe not: the device says.
            status = await self._step(op, "check", FenceAction.STATUS)
            if status.outcome is sw.want:
                await self._note(op, f"resumed: the host is already {sw.want.value}, "
                                     f"the {sw.phase} is not repeated")
                verified, failure = await self._verify(op, sw, retries, delay, None)
                if verified:
                    return
                raise FlowFailed(failure)
            attempts = attempts_left(sw.action, journaled, verify_pending=False)
            checked = status
        groups = order_groups(await self.power.agents(op.host_id))
        if not groups:
            raise FlowFailed(f"{sw.phase} of {op.host_name} failed: the host has no fence agent")
        for position, group in enumerate(groups):
            label = _label(group, position, len(groups))
            if needs_status_check(position, len(groups)):
                answer = checked.group_answer(group) if checked is not None else None
                if answer is None:
                    check = await self._step(op, "check", FenceAction.STATUS, agents=group,
                                             note=f"{label}: status before the {sw.verb}")
                    answer = check.outcome
                if hands_over(answer, position, len(groups)):
                    failure = (f"{sw.phase} of {op.host_name} failed: no group gave a verified "
                               f"status")
                    await self._note(op, f"{label} failed its status check ({answer.value}): "
                                         f"the {sw.verb} goes to the next group", Severity.WARNING)
                    continue
            for attempt in range(1, attempts + 1):
                result = await self._step(
                    op, sw.phase.value, sw.action, phase=sw.phase, agents=group,
                    before=f"{op.action}.before_{sw.action.value}",
                    note=" ".join(filter(None, [label, "sent once more" if attempt > 1 else ""])))
                failpoint(f"{op.action}.after_{sw.action.value}")
                if result.outcome is sw.want:
                    verified, failure = await self._verify(op, sw, retries, delay, group)
                    if verified:
                        return
                else:
                    failure = (f"{sw.phase} of {op.host_name} failed: "
                               f"{result.message or result.outcome.value}")
                if attempt < attempts:
                    await self._resend(op, sw, failure)
            if position < len(groups) - 1:
                await self._note(op, f"{failure}; the {sw.verb} goes to the next group",
                                 Severity.WARNING)
        raise FlowFailed(failure)

    async def _verify(self, op: Operation, sw: _Switch, retries: int, delay: float,
                      group: Sequence[FenceAgent] | None) -> tuple[bool, str]:
        """1 + `retries` status polls, `delay` apart, until the wanted state
        (model/retries.poll_verdict); of `group`, or of the host's groups in
        order when None. (verified, why not)."""
        polls = status_polls(retries)
        answers: list[Outcome] = []
        while True:
            n = len(answers) + 1
            result = await self._step(op, f"verify_{sw.want.value}", FenceAction.STATUS,
                                      note=f"poll {n}/{polls}",
                                      phase=sw.verify if n == 1 else None, agents=group)
            answers.append(result.outcome)
            verdict = poll_verdict(answers, sw.want, retries)
            if verdict is Verdict.VERIFIED:
                return True, ""
            if verdict is Verdict.EXHAUSTED:
                return False, (f"{sw.verb} of {op.host_name} not verified: status was not "
                               f"{sw.want.value} after {polls} poll(s) {delay:g} s apart "
                               f"(the first and {sw.retries_key}={retries} retries)")
            if verdict is Verdict.TOO_MANY_UNKNOWN:
                unknown = sum(unverified(a) for a in answers)
                return False, (f"{sw.verb} of {op.host_name} not verified: {unknown} of {n} "
                               f"status polls gave neither on nor off (more than "
                               f"{UNKNOWN_ANSWERS_TOLERATED} ends the verification); last: "
                               f"{result.message or result.outcome.value}")
            await self.sleep(delay)

    async def _resend(self, op: Operation, sw: _Switch, failure: str) -> None:
        await self._note(op, f"{failure}; the {sw.verb} is sent once more (a failed start is "
                             f"re-sent once, a stop never)", Severity.WARNING, "fence.resent")

    # -- building blocks -----------------------------------------------------------------

    async def _step(self, op: Operation, name: str, action: FenceAction, note: str = "",
                    phase: Phase | None = None, before: str | None = None,
                    agents: Sequence[FenceAgent] | None = None) -> PowerResult:
        """One journaled step. `phase`, when given, is written in the same
        transaction as the step's start: before the external action (a
        status changes nothing: its step only checks the reservation first,
        and is durable with the flow's next write). With `agents`, the
        command goes to those (one group) only, as stored now: an agent
        edited during the flow is used as edited at the next step."""
        step = await self.store.start_step(op, name, phase,
                                           changes_power=action is not FenceAction.STATUS)
        if before:
            failpoint(before)
        if agents is not None:
            ids = {a.id for a in agents}
            agents = [a for a in await self.power.agents(op.host_id) if a.id in ids]
        result = await self.power.run(op.host_id, action, op.id, agents=agents)
        message = " ".join(filter(None, [note, result.message]))
        await self.store.finish_step(step, result.outcome.value, result.proxies, message)
        return result

    async def _note(self, op: Operation, message: str, severity: Severity = Severity.INFO,
                    kind: str = "fence.note") -> None:
        await self.store.emit(Event(severity, kind, f"{op.host_name}: {message}",
                                    host_id=op.host_id, host_name=op.host_name,
                                    operation_id=op.id))


def _resumed(op: Operation, phase: Phase) -> Phase | None:
    """The phase a resumed flow stopped in, when it is `phase` (the flow is
    taking up that very step); None for a step the flow reaches afresh."""
    return op.phase if op.phase is phase and phase is not Phase.BEGIN else None


def _label(group: Sequence[FenceAgent], position: int, groups: int) -> str:
    """How a group is named in notes: nothing when the host has one group."""
    if groups == 1:
        return ""
    agents = ", ".join(f"{a.type}@{a.address}" for a in group)
    return f"group {position + 1}/{groups} (order {group[0].order}: {agents})"
