"""Retry semantics of the flows, without a lab: the flows (fencing/flows.py)
against a scripted HostPower and an in-memory journal, and the concurrent
group of fencing/power.py against a ChainExecutor whose proxies are fakes.

The scripted cases follow oVirt's SingleAgentFenceActionExecutorTest and
HostFenceActionExecutorTest: what is sent, in which order, how often."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

import pytest

from hostpower.config import Config
from hostpower.fencing.executor import ChainExecutor, CommandResult
from hostpower.fencing.flows import Flows
from hostpower.fencing.power import HostPower, PowerResult
from hostpower.model.errors import EngineNotReady
from hostpower.model.events import Event, Severity
from hostpower.model.inventory import (
    Cluster, DataCenter, FenceAgent, Host, HostStatus, InventorySnapshot,
)
from hostpower.model.operations import FlowAction, OperationState, Origin, Phase
from hostpower.model.power import AgentSpec, FenceAction, FenceResult, Outcome
from hostpower.proxies import Candidate
from hostpower.store.journal import Operation, Step

ON, OFF, UNKNOWN, ERROR = Outcome.ON, Outcome.OFF, Outcome.UNKNOWN, Outcome.ERROR
A = FenceAgent(1, 1, "ipmilan", "10.9.0.1", 1)
B = FenceAgent(2, 1, "apc_snmp", "10.9.0.2", 2)


class ScriptedPower:
    """Answers each command from a script of (action, answer, agent ids or None
    for the whole host), in order; an unexpected command fails the test."""

    def __init__(self, script: Sequence[tuple[str, Any, tuple[int, ...] | None]],
                 agents: Sequence[FenceAgent] = (A,), log: list[tuple] | None = None) -> None:
        self.script = list(script)
        self._agents = list(agents)
        self.calls: list[tuple[str, tuple[int, ...] | None]] = []
        self.log = log if log is not None else []

    async def agents(self, host_id: int) -> list[FenceAgent]:
        return self._agents

    async def run(self, host_id: int, action: FenceAction, operation_id: int | None = None,
                  agents: Sequence[FenceAgent] | None = None) -> PowerResult:
        ids = tuple(a.id for a in agents) if agents is not None else None
        self.calls.append((action.value, ids))
        self.log.append(("command", action.value))
        assert self.script, f"unexpected {action.value} to {ids}"
        want_action, answer, want_ids = self.script.pop(0)
        assert (action.value, ids) == (want_action, want_ids), (action.value, ids)
        if isinstance(answer, PowerResult):
            return answer
        return PowerResult(action, answer, message="" if answer in (ON, OFF) else "no answer")


class MemoryJournal:
    def __init__(self, log: list[tuple], **config: str) -> None:
        self.log = log
        self.steps: list[tuple[str, Phase | None, str]] = []
        self.events: list[Event] = []
        self.statuses: list[HostStatus] = []
        self.values = {"FenceStopStatusDelayBetweenRetriesInSec": "7",
                       "FenceStartStatusDelayBetweenRetriesInSec": "7", **config}

    async def start_step(self, op: Operation, name: str, phase: Phase | None = None,
                         changes_power: bool = True) -> int:
        self.log.append(("step", name, phase))
        self.steps.append((name, phase, ""))
        return len(self.steps) - 1

    async def finish_step(self, step_id: int, outcome: str, proxies: list[dict[str, object]],
                          message: str) -> None:
        name, phase, _ = self.steps[step_id]
        self.steps[step_id] = (name, phase, message)

    async def set_host_status(self, host_id: int, status: HostStatus) -> None:
        self.statuses.append(status)

    async def emit(self, event: Event) -> None:
        self.events.append(event)

    async def config(self) -> Config:
        return Config(self.values)


def operation(action: FlowAction, phase: Phase = Phase.BEGIN,
              steps: Sequence[str] = ()) -> Operation:
    now = datetime.now(UTC)
    return Operation(1, 1, "h1", action, Origin.API, OperationState.RUNNING, phase, "", now, now,
                     None, steps=[Step(n, name, "done", "on", [], "", now, now)
                                  for n, name in enumerate(steps)])


def flow(script: Sequence[tuple[str, Any, tuple[int, ...] | None]], action: FlowAction,
         agents: Sequence[FenceAgent] = (A,), phase: Phase = Phase.BEGIN,
         steps: Sequence[str] = (), **config: str
         ) -> tuple[bool, str, ScriptedPower, MemoryJournal, list[float]]:
    log: list[tuple] = []
    power = ScriptedPower(script, agents, log)
    journal = MemoryJournal(log, **config)
    slept: list[float] = []

    async def sleep(seconds: float) -> None:
        slept.append(seconds)

    flows = Flows(power, journal, sleep=sleep)  # type: ignore[arg-type]
    ok, message = asyncio.run(flows.run(operation(action, phase, steps)))
    assert not power.script, f"commands not sent: {power.script}"
    return ok, message, power, journal, slept


def names(journal: MemoryJournal) -> list[str]:
    return [name for name, _, _ in journal.steps]


def kinds(journal: MemoryJournal, kind: str) -> list[Event]:
    return [e for e in journal.events if e.kind == kind]


# -- 1 + N status polls ---------------------------------------------------------------------

def test_flow_start_verified_at_the_first_poll() -> None:
    ok, _, power, journal, slept = flow([("on", ON, (1,)), ("status", ON, (1,))],
                                        FlowAction.START, FenceStartStatusRetries="1")
    assert ok
    assert names(journal) == ["start", "verify_on"]
    assert journal.steps[1][2] == "poll 1/2"
    assert slept == []


def test_flow_verification_is_one_poll_plus_the_retries_delay_apart() -> None:
    """FenceStopStatusRetries=2: three polls, two delays; then the stop has failed."""
    ok, message, power, journal, slept = flow(
        [("off", OFF, (1,)), ("status", ON, (1,)), ("status", ON, (1,)), ("status", ON, (1,))],
        FlowAction.STOP, FenceStopStatusRetries="2")
    assert not ok
    assert message == ("stop of h1 not verified: status was not off after 3 poll(s) 7 s apart "
                       "(the first and FenceStopStatusRetries=2 retries)")
    assert [m for n, _, m in journal.steps if n == "verify_off"] == [
        "poll 1/3", "poll 2/3", "poll 3/3"]
    assert slept == [7.0, 7.0]


def test_flow_zero_retries_is_a_single_poll() -> None:
    ok, _, _, journal, _ = flow([("off", OFF, (1,)), ("status", ON, (1,))], FlowAction.STOP,
                                FenceStopStatusRetries="0")
    assert not ok and names(journal) == ["stop", "verify_off"]


# -- a failed start is sent once more, a stop never ---------------------------------------------

def test_flow_start_whose_command_failed_is_sent_once_more() -> None:
    """oVirt successfulStartWithStartRetry."""
    ok, _, power, journal, _ = flow(
        [("on", ERROR, (1,)), ("on", ON, (1,)), ("status", ON, (1,))], FlowAction.START)
    assert ok
    assert names(journal) == ["start", "start", "verify_on"]
    assert journal.steps[1][2] == "sent once more"
    [resent] = kinds(journal, "fence.resent")
    assert resent.severity is Severity.WARNING
    assert "start of h1 failed: no answer; the start is sent once more" in resent.message


def test_flow_start_whose_verification_failed_is_sent_once_more_then_fails() -> None:
    """oVirt failedStartStatusRetriesExceeded: start, 2 polls, start, 2 polls."""
    ok, message, power, journal, _ = flow(
        [("on", ON, (1,)), ("status", OFF, (1,)), ("status", OFF, (1,)),
         ("on", ON, (1,)), ("status", OFF, (1,)), ("status", OFF, (1,))],
        FlowAction.START, FenceStartStatusRetries="1")
    assert not ok
    assert message.startswith("start of h1 not verified: status was not on after 2 poll(s)")
    assert [c for c, _ in power.calls] == ["on", "status", "status", "on", "status", "status"]


def test_flow_start_sent_twice_at_most() -> None:
    ok, message, power, _, _ = flow([("on", ERROR, (1,)), ("on", ERROR, (1,))], FlowAction.START)
    assert not ok and message == "start of h1 failed: no answer"
    assert [c for c, _ in power.calls] == ["on", "on"]


def test_flow_stop_whose_command_failed_is_never_sent_again() -> None:
    """oVirt failedStopWithStopRetry."""
    ok, message, power, journal, _ = flow([("off", ERROR, (1,))], FlowAction.STOP)
    assert not ok and message == "stop of h1 failed: no answer"
    assert power.calls == [("off", (1,))]
    assert kinds(journal, "fence.resent") == []


def test_flow_stop_whose_verification_failed_is_never_sent_again() -> None:
    ok, _, power, _, _ = flow([("off", OFF, (1,)), ("status", ON, (1,)), ("status", ON, (1,))],
                              FlowAction.STOP, FenceStopStatusRetries="1")
    assert not ok
    assert [c for c, _ in power.calls] == ["off", "status", "status"]


def test_flow_restart_stop_not_verified_never_reaches_the_start() -> None:
    ok, _, power, _, _ = flow([("status", ON, None), ("off", OFF, (1,)), ("status", ON, (1,))],
                              FlowAction.RESTART, FenceStopStatusRetries="0")
    assert not ok
    assert "on" not in [c for c, _ in power.calls]


# -- polls that give no verified answer are bounded ------------------------------------------

def test_flow_fourth_unverified_poll_ends_the_verification() -> None:
    ok, message, power, journal, _ = flow(
        [("off", OFF, (1,)), ("status", UNKNOWN, (1,)), ("status", ERROR, (1,)),
         ("status", UNKNOWN, (1,)), ("status", ERROR, (1,))],
        FlowAction.STOP, FenceStopStatusRetries="18")
    assert not ok
    assert message == ("stop of h1 not verified: 4 of 4 status polls gave neither on nor off "
                       "(more than 3 ends the verification); last: no answer")
    assert names(journal).count("verify_off") == 4


def test_flow_unknowns_end_the_first_start_then_the_resent_one_succeeds() -> None:
    """oVirt successfulStartUnknownStatusLimitExceededOn1stAttempt."""
    ok, _, power, _, _ = flow(
        [("on", ON, (1,))] + [("status", UNKNOWN, (1,))] * 4
        + [("on", ON, (1,)), ("status", ON, (1,))], FlowAction.START)
    assert ok
    assert [c for c, _ in power.calls].count("on") == 2


# -- the journal rule: the phase before every external action --------------------------------

def test_flow_every_command_follows_its_journal_step_and_each_send_writes_its_phase() -> None:
    log: list[tuple] = []
    ok, _, power, journal, _ = flow(
        [("status", ON, None), ("off", OFF, (1,)), ("status", OFF, (1,)),
         ("on", ERROR, (1,)), ("on", ON, (1,)), ("status", OFF, (1,)), ("status", ON, (1,))],
        FlowAction.RESTART, FenceStartStatusRetries="3")
    assert ok
    entries = power.log
    for i, entry in enumerate(entries):
        if entry[0] == "command":
            assert entries[i - 1][0] == "step", entries[: i + 1]
    sends = [(entries[i - 1][2], e[1]) for i, e in enumerate(entries)
             if e[0] == "command" and e[1] in ("on", "off")]
    assert sends == [(Phase.STOP, "off"), (Phase.START, "on"), (Phase.START, "on")]
    first_polls = [s for s in journal.steps if s[0].startswith("verify_") and s[1] is not None]
    assert [p for _, p, _ in first_polls] == [Phase.STOP_VERIFY, Phase.START_VERIFY]


# -- the status check per agent group ---------------------------------------------------------

def test_flow_group_whose_status_check_fails_hands_the_stop_to_the_next_group() -> None:
    ok, _, power, journal, _ = flow(
        [("status", ERROR, (1,)), ("off", OFF, (2,)), ("status", OFF, (2,))],
        FlowAction.STOP, agents=(A, B))
    assert ok
    assert ("off", (1,)) not in power.calls
    [note] = [e for e in kinds(journal, "fence.note") if "status check" in e.message]
    assert note.severity is Severity.WARNING
    assert "group 1/2 (order 1: ipmilan@10.9.0.1) failed its status check (error)" in note.message


def test_flow_group_that_answers_its_status_check_gets_the_command() -> None:
    ok, _, power, journal, _ = flow(
        [("status", ON, (1,)), ("on", ON, (1,)), ("status", ON, (1,))],
        FlowAction.START, agents=(A, B))
    assert ok
    assert names(journal) == ["check", "start", "verify_on"]


def test_flow_group_that_fails_the_command_hands_over_and_the_last_group_is_not_checked() -> None:
    ok, _, power, _, _ = flow(
        [("status", ON, (1,)), ("off", ERROR, (1,)), ("off", OFF, (2,)), ("status", OFF, (2,))],
        FlowAction.STOP, agents=(A, B))
    assert ok
    assert power.calls == [("status", (1,)), ("off", (1,)), ("off", (2,)), ("status", (2,))]


def test_flow_start_tries_each_group_twice_before_the_next() -> None:
    ok, _, power, _, _ = flow(
        [("status", OFF, (1,)), ("on", ERROR, (1,)), ("on", ERROR, (1,)),
         ("on", ON, (2,)), ("status", ON, (2,))],
        FlowAction.START, agents=(A, B))
    assert ok


def test_flow_only_group_is_sent_the_command_without_a_status_check() -> None:
    ok, _, power, _, _ = flow([("off", OFF, (1,)), ("status", OFF, (1,))], FlowAction.STOP)
    assert ok and power.calls[0] == ("off", (1,))


def test_flow_restart_check_serves_as_the_status_check_of_each_group_it_asked() -> None:
    check = PowerResult(FenceAction.STATUS, ON, groups=[((1,), ERROR), ((2,), ON)])
    ok, _, power, journal, _ = flow(
        [("status", check, None), ("off", OFF, (2,)), ("status", OFF, (2,)),
         # the start: group 1 is asked afresh (it failed before the stop)
         ("status", OFF, (1,)), ("on", ON, (1,)), ("status", ON, (1,))],
        FlowAction.RESTART, agents=(A, B))
    assert ok
    assert names(journal)[:3] == ["check", "stop", "verify_off"]


# -- resumed flows ------------------------------------------------------------------------------

def test_flow_resumed_while_verifying_the_first_start_may_send_it_once_more() -> None:
    ok, _, power, _, _ = flow(
        [("status", OFF, None), ("status", OFF, None), ("on", ON, (1,)), ("status", ON, (1,))],
        FlowAction.START, phase=Phase.START_VERIFY, steps=["start", "verify_on"],
        FenceStartStatusRetries="1")
    assert ok
    assert [c for c, _ in power.calls].count("on") == 1


def test_flow_resumed_while_verifying_the_second_start_sends_nothing_more() -> None:
    ok, message, power, _, _ = flow(
        [("status", OFF, None), ("status", OFF, None)],
        FlowAction.START, phase=Phase.START_VERIFY,
        steps=["start", "verify_on", "start", "verify_on"], FenceStartStatusRetries="1")
    assert not ok and "not verified" in message


def test_flow_resumed_stop_already_off_is_not_sent_again() -> None:
    ok, _, power, journal, _ = flow([("status", OFF, None), ("status", OFF, None)],
                                    FlowAction.STOP, phase=Phase.STOP, steps=["stop"])
    assert ok and "off" not in [c for c, _ in power.calls]
    assert any("not repeated" in e.message for e in kinds(journal, "fence.note"))


def test_flow_resumed_at_the_stop_sends_it_when_the_device_is_still_on() -> None:
    ok, _, power, _, _ = flow([("status", ON, None), ("off", OFF, (1,)), ("status", OFF, (1,))],
                              FlowAction.STOP, phase=Phase.STOP, steps=["stop"])
    assert ok


# -- a concurrent group: the first on settles a start, the rest is cancelled ------------------

TARGET = Host(1, "h1", "10.0.1.1", 10, HostStatus.NON_RESPONSIVE)
PROXY = Host(2, "h2", "10.0.1.2", 10, HostStatus.UP)
PSU1 = FenceAgent(11, 1, "ipmilan", "10.9.1.1", 1)
PSU2 = FenceAgent(12, 1, "ipmilan", "10.9.1.2", 1)


class Proxies:
    """Dispatch: each device address answers at once, or hangs (the request
    reached the proxy, which is still waiting for the device)."""

    def __init__(self, answers: dict[str, Outcome | None]) -> None:
        self.answers = answers
        self.received: list[tuple[str, str]] = []

    async def run(self, candidate: Candidate, spec: AgentSpec, action: FenceAction,
                  timeout: float) -> FenceResult:
        self.received.append((spec.address, action.value))
        answer = self.answers[spec.address]
        if answer is None:
            await asyncio.sleep(3600)
        return FenceResult(action, answer or ERROR)


def executor(proxies: Proxies, events: list[Event],
             guard: Any = lambda: None) -> ChainExecutor:
    snapshot = InventorySnapshot((DataCenter(1, "dc1"),), (Cluster(10, "c10", 1),),
                                 (TARGET, PROXY))

    async def state() -> tuple[InventorySnapshot, Config]:
        return snapshot, Config({"FenceProxyImplicitPreferences": "", "FindFenceProxyRetries": "0"})

    async def emit(event: Event) -> None:
        events.append(event)

    return ChainExecutor(state, proxies, emit, engine_agent_types=set(), guard=guard)


def run_group(action: FenceAction, answers: dict[str, Outcome | None], guard: Any = lambda: None
              ) -> tuple[list[CommandResult], list[Event], ChainExecutor, float, int]:
    events: list[Event] = []
    ex = executor(Proxies(answers), events, guard)

    async def main() -> tuple[list[CommandResult], float, int]:
        power = HostPower(ex, lambda host_id: asyncio.sleep(0, [PSU1, PSU2]))
        started = time.monotonic()
        results = await power.run_group(1, [PSU1, PSU2], action, 5)
        took = time.monotonic() - started
        # Tasks besides this one and the commands still under way through a
        # proxy (each keeps its device's turn until the proxy answers).
        left = len(asyncio.all_tasks()) - 1 - ex.under_way
        await ex.close()
        return results, took, left

    results, took, left = asyncio.run(main())
    return results, events, ex, took, left


def test_group_start_ends_at_the_first_on_and_cancels_the_command_still_under_way() -> None:
    results, events, ex, took, left = run_group(FenceAction.ON, {"10.9.1.1": ON, "10.9.1.2": None})
    assert took < 5
    assert left == 0  # no command task outlives the group but the send still under way
    assert ex.under_way == 0 and sum(ex.in_flight.values()) == 0  # ended by close()
    on, cancelled = results
    assert (on.result.outcome, on.cancelled, cancelled.cancelled) == (ON, False, True)
    assert cancelled.summary()["outcome"] == "cancelled"
    assert [(a.proxy, a.outcome) for a in cancelled.attempts] == [("h2", "cancelled")]
    [event] = [e for e in events if e.kind == "fence.cancelled"]
    assert event.severity is Severity.INFO and event.operation_id == 5
    assert event.message == (
        "on of h1 with ipmilan@10.9.1.2 cancelled: ipmilan@10.9.1.1 of the same group already "
        "answered on; it was under way through h2 (cluster), which may still carry it out: "
        "cancelling stops the engine waiting, not the proxy")
    assert event.details["under_way"] is True


def test_group_status_ends_at_the_first_on_too() -> None:
    results, events, _, took, left = run_group(FenceAction.STATUS,
                                               {"10.9.1.1": None, "10.9.1.2": ON})
    assert took < 5 and left == 0
    assert [r.cancelled for r in results] == [True, False]


def test_group_stop_waits_for_every_agent() -> None:
    results, events, _, _, _ = run_group(FenceAction.OFF, {"10.9.1.1": OFF, "10.9.1.2": OFF})
    assert [r.result.outcome for r in results] == [OFF, OFF]
    assert not any(e.kind == "fence.cancelled" for e in events)


def test_group_start_where_no_agent_answers_on_waits_for_all_and_cancels_nothing() -> None:
    results, events, _, _, _ = run_group(FenceAction.ON, {"10.9.1.1": ERROR, "10.9.1.2": ERROR})
    assert [r.cancelled for r in results] == [False, False]
    assert not any(e.kind == "fence.cancelled" for e in events)


def test_group_error_in_one_command_cancels_the_others_before_it_is_raised() -> None:
    calls = []

    def guard() -> None:
        calls.append(1)
        if len(calls) == 2:
            raise EngineNotReady("lease uncertain")

    events: list[Event] = []
    ex = executor(Proxies({"10.9.1.1": None, "10.9.1.2": None}), events, guard)

    async def main() -> int:
        power = HostPower(ex, lambda host_id: asyncio.sleep(0, [PSU1, PSU2]))
        with pytest.raises(EngineNotReady):
            await power.run_group(1, [PSU1, PSU2], FenceAction.ON)
        # Only the command already under way through its proxy is still awaited.
        assert sum(ex.in_flight.values()) == ex.under_way <= 1
        left = len(asyncio.all_tasks()) - 1 - ex.under_way
        await ex.close()
        return left

    assert asyncio.run(main()) == 0
    assert sum(ex.in_flight.values()) == 0


def test_a_command_cancelled_before_any_proxy_got_it_is_said_never_sent() -> None:
    events: list[Event] = []
    ex = executor(Proxies({}), events)
    record = CommandResult(PSU2, FenceAction.ON, FenceResult(FenceAction.ON, ERROR))
    asyncio.run(ex.cancelled(1, record, "another agent answered on"))
    [event] = events
    assert event.severity is Severity.WARNING  # that supply stays off
    assert event.message.endswith("it had not been sent to any proxy, and will not be")
    assert record.cancelled and record.attempts == []
