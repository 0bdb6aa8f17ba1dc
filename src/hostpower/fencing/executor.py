"""Running one fence agent command through a host's proxy chain.

For every command the executor takes a fresh inventory snapshot, asks the
locator for candidates entry by entry, and tries them in order until one
executes the command (the device answered on or off). Every attempt becomes
an event; when all proxies fail, one ERROR event lists each and why.

Every command takes its turn at its device first (fencing/devicegate.py):
one command at a time per device, spaced by DeviceCommandIntervalInMs, over
every engine sharing the database. A command whose device stays busy longer
than one other command may hold it (model/devices.py `wait_limit`) is not
sent; the walk ends with an error naming the device and its holder.

A command's task may be cancelled (the other agent of a concurrent group
already answered: fencing/power.py). Cancelling ends the engine's side only:
a request that already reached a proxy is carried out there (the agent runs
the fence agent to its end, whoever waits for the answer), one that had not
is never sent (one still waiting for its device's turn had not). A command
that was sent keeps its device's turn until its answer is in, even when its
task is cancelled: the device may still be carrying it out. `cancelled()`
records which of the two it was and says so in an event.
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Mapping, Set
from dataclasses import dataclass, field
from typing import Protocol

from hostpower.config import Config
from hostpower.fencing.devicegate import DeviceGate, Turn
from hostpower.model.devices import LONG_WAIT, DeviceKey, device_key, wait_limit
from hostpower.model.errors import DeviceBusy
from hostpower.model.events import Event, Severity
from hostpower.model.inventory import FenceAgent, Host, InventorySnapshot
from hostpower.model.power import AgentSpec, FenceAction, FenceResult, Outcome
from hostpower.model.proxychain import ProxyEntry, parse_chain
from hostpower.proxies import Candidate, ProxyLocator, effective_chain

# Effective chains kept (one per distinct chain text: a few in practice).
CHAIN_CACHE = 1024


class Dispatch(Protocol):
    """Carries one command to the device through one candidate proxy."""

    async def run(self, candidate: Candidate, spec: AgentSpec, action: FenceAction,
                  timeout: float) -> FenceResult: ...


@dataclass(frozen=True)
class Attempt:
    proxy: str
    source: str
    outcome: str
    message: str
    duration: float


@dataclass
class CommandResult:
    agent: FenceAgent
    action: FenceAction
    result: FenceResult
    proxy: str | None = None           # the proxy that executed it, None if none did
    attempts: list[Attempt] = field(default_factory=list)
    cancelled: bool = False            # its task was cancelled before it ended
    # The proxy (name, chain entry, monotonic start) the command is under way
    # through, while it is; left set when the task is cancelled meanwhile.
    sending: tuple[str, str, float] | None = None

    def summary(self) -> dict[str, object]:
        return {"agent_id": self.agent.id, "agent": f"{self.agent.type}@{self.agent.address}",
                "action": self.action.value,
                "outcome": "cancelled" if self.cancelled else self.result.outcome.value,
                "proxy": self.proxy, "message": self.result.message,
                "attempts": [a.__dict__ for a in self.attempts]}


def agent_spec(agent: FenceAgent) -> AgentSpec:
    """The stored agent as a driver sees it; option `plug` selects the outlet."""
    options = tuple((k, v) for k, v in agent.options if k != "plug")
    plug = next((v for k, v in agent.options if k == "plug"), None)
    return AgentSpec(type=agent.type, address=agent.address, username=agent.username,
                     password=agent.password, port=agent.port, plug=plug, options=options)


StateLoader = Callable[[], Awaitable[tuple[InventorySnapshot, Config]]]
EventSink = Callable[[Event], Awaitable[None]]


class ChainExecutor:
    def __init__(self, load_state: StateLoader, dispatch: Dispatch, emit: EventSink,
                 engine_agent_types: Set[str],
                 host_agent_types: Mapping[int, Set[str]] | None = None,
                 sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
                 guard: Callable[[], None] = lambda: None,
                 gate: DeviceGate | None = None) -> None:
        self.load_state = load_state
        self.dispatch = dispatch
        self.emit = emit
        self.engine_agent_types = engine_agent_types
        self.host_agent_types = host_agent_types if host_agent_types is not None else {}
        self.sleep = sleep
        # Raises (EngineNotReady) when this engine may not send a command now;
        # called right before each one, outside the handling of a proxy's failure.
        self.guard = guard
        self.in_flight: Counter[int] = Counter()   # commands each proxy host runs now
        # One command at a time per device; without a gate given, this
        # engine's own turns only (no other engine shares its database).
        self.gate = gate if gate is not None else DeviceGate()
        self._sent: set[asyncio.Task[FenceResult]] = set()   # commands under way
        self._locator: ProxyLocator | None = None
        self._chains: dict[tuple[str | None, str, str], tuple[ProxyEntry, ...]] = {}

    def locator(self, snapshot: InventorySnapshot) -> ProxyLocator:
        """One index per snapshot: building it is the costly part of a selection."""
        if self._locator is None or self._locator.snapshot is not snapshot:
            self._locator = ProxyLocator(snapshot, self.engine_agent_types, self.host_agent_types)
        return self._locator

    def _chain(self, pm_proxies: str | None, config: Config) -> tuple[ProxyEntry, ...]:
        """The host's effective chain. Parsed once per text and preferences: a
        mass failure asks it for every command of every host."""
        key = (pm_proxies, config["FenceProxyDefaultPreferences"],
               config["FenceProxyImplicitPreferences"])
        chain = self._chains.get(key)
        if chain is None:
            chain = effective_chain(parse_chain(pm_proxies), config)
            if len(self._chains) >= CHAIN_CACHE:
                self._chains.clear()
            self._chains[key] = chain
        return chain

    async def run(self, host_id: int, agent: FenceAgent, action: FenceAction,
                  operation_id: int | None = None,
                  record: CommandResult | None = None) -> CommandResult:
        """Run the command through the chain. With `record`, the result is
        filled in there as the command goes (what a canceller reads)."""
        snapshot, config = await self.load_state()
        target = snapshot.host(host_id)
        chain = self._chain(target.power_management.pm_proxies, config)
        timeout = float(config["FenceCommandTimeoutInSec"])
        interval = config["DeviceCommandIntervalInMs"] / 1000
        search_retries = config["FindFenceProxyRetries"] if action in (FenceAction.ON, FenceAction.OFF) else 0
        search_delay = float(config["FindFenceProxyDelayBetweenRetriesInSec"])
        spec = agent_spec(agent)
        outcome = record if record is not None else CommandResult(agent, action, FenceResult(
            action, Outcome.ERROR, "no proxy tried"))
        outcome.result = FenceResult(action, Outcome.ERROR, "no proxy tried")
        listed: dict[int, str] = {}
        for entry in chain:
            plan = None
            for search in range(search_retries + 1):
                plan = self.locator(snapshot).source_plan(snapshot.host(host_id), agent.type, entry,
                                           dict(listed), self.in_flight)
                if plan.candidates or search == search_retries:
                    break
                await self._event(Severity.WARNING, "fence.no_proxy", target, operation_id,
                                  f"no eligible proxy in {entry.text} for {action.value} of "
                                  f"{target.name}; searching again in {search_delay:.0f} s "
                                  f"({search + 1}/{search_retries})",
                                  {"source": entry.text})
                await self.sleep(search_delay)
                snapshot, config = await self.load_state()
            assert plan is not None
            for candidate in plan.candidates:
                if candidate.host is not None:
                    listed[candidate.host.id] = entry.text
                self.guard()
                label = f"{action.value} of {target.name} via {candidate.name}"
                mark = (candidate.name, entry.text)
                try:
                    result, turn = await self._try(
                        candidate, spec, action, timeout, interval, label,
                        on_send=lambda mark=mark: setattr(outcome, "sending",
                                                          (*mark, time.monotonic())))
                except DeviceBusy as busy:
                    return await self._busy(outcome, target, agent, action, operation_id, busy)
                outcome.sending = None
                attempt = Attempt(candidate.name, entry.text, result.outcome.value,
                                  result.message, round(result.duration, 3))
                outcome.attempts.append(attempt)
                ok = result.ok
                await self._event(
                    Severity.INFO if ok else Severity.WARNING, "fence.attempt", target,
                    operation_id,
                    f"{action.value} of {target.name} via {candidate.name} ({entry.text}) "
                    f"with {agent.type}@{agent.address}: {result.outcome.value}"
                    + ("" if ok else f" — {result.message}") + _waited(turn),
                    {"proxy": candidate.name, "source": entry.text, "agent_id": agent.id,
                     "agent": f"{agent.type}@{agent.address}", "action": action.value,
                     "outcome": result.outcome.value, "duration": attempt.duration,
                     "message": result.message, **_turn_details(turn)})
                if ok:
                    outcome.result, outcome.proxy = result, candidate.name
                    return outcome
        tried = "; ".join(f"{a.proxy} ({a.source}): {a.message or a.outcome}" for a in outcome.attempts)
        message = (f"{action.value} of {target.name} with {agent.type}@{agent.address} failed "
                   f"on every proxy of chain {','.join(e.text for e in chain)}: "
                   + (tried or "no eligible proxy"))
        outcome.result = FenceResult(action, Outcome.ERROR, message)
        await self._event(Severity.ERROR, "fence.all_proxies_failed", target, operation_id,
                          message, {"attempts": [a.__dict__ for a in outcome.attempts],
                                    "agent_id": agent.id, "action": action.value})
        return outcome

    async def attempt(self, candidate: Candidate, spec: AgentSpec, action: FenceAction,
                      timeout: float, interval: float) -> FenceResult:
        """One command through one given candidate, guarded and taking its
        device's turn like every command of `run` (`interval`: the device
        spacing, in seconds), but without its walk and events: the PM health
        check (fencing/readiness.py) tries every candidate and reports on its own."""
        self.guard()
        label = f"{action.value} check via {candidate.name}"
        try:
            result, _turn = await self._try(candidate, spec, action, timeout, interval, label)
        except DeviceBusy as busy:
            return FenceResult(action, Outcome.ERROR, str(busy), duration=busy.waited)
        return result

    @property
    def under_way(self) -> int:
        """Commands sent whose answer the engine still awaits, among them those
        whose callers were cancelled: each keeps its device's turn until then."""
        return len(self._sent)

    def device(self, spec: AgentSpec) -> DeviceKey:
        """The device `spec`'s commands go to (model/devices.py)."""
        return device_key(spec.type, spec.address, spec.port)

    async def close(self) -> None:
        """At engine stop: end the commands still under way (their proxies
        carry them out regardless) so that their turns are given back."""
        for task in self._sent:
            task.cancel()
        await asyncio.gather(*self._sent, return_exceptions=True)
        await self.gate.close()

    async def cancelled(self, host_id: int, command: CommandResult, reason: str,
                        operation_id: int | None = None) -> None:
        """Record that `command`'s task was cancelled, and say so in an event:
        whether it had reached a proxy (which may still carry it out) or not."""
        action, agent = command.action, command.agent
        snapshot, _ = await self.load_state()
        target = snapshot.host(host_id)
        if command.sending is not None:
            proxy, source, started = command.sending
            where = (f"it was under way through {proxy} ({source}), which may still carry it "
                     f"out: cancelling stops the engine waiting, not the proxy")
            command.attempts.append(Attempt(proxy, source, "cancelled", reason,
                                            round(time.monotonic() - started, 3)))
        else:
            proxy = source = None
            where = "it had not been sent to any proxy, and will not be"
        command.cancelled = True
        command.result = FenceResult(action, Outcome.ERROR, f"cancelled: {reason}")
        message = (f"{action.value} of {target.name} with {agent.type}@{agent.address} "
                   f"cancelled: {reason}; {where}")
        # An on that never left leaves that device off (a second power supply
        # unpowered): worth a warning. One under way most likely completes.
        unsent_on = action is FenceAction.ON and proxy is None
        await self._event(Severity.WARNING if unsent_on else Severity.INFO,
                          "fence.cancelled", target, operation_id, message,
                          {"agent_id": agent.id, "agent": f"{agent.type}@{agent.address}",
                           "action": action.value, "proxy": proxy, "source": source,
                           "under_way": proxy is not None, "reason": reason})

    async def _try(self, candidate: Candidate, spec: AgentSpec, action: FenceAction,
                   timeout: float, interval: float, label: str,
                   on_send: Callable[[], None] | None = None) -> tuple[FenceResult, Turn]:
        """Take the device's turn (DeviceBusy when it stays busy past the wait
        limit), check once more that this engine may act (the wait may have
        been long), then send. Once sent, the command runs to its answer in a
        task of its own that gives the turn back: cancelling the caller does
        not free the device while a proxy may still be carrying the command out."""
        turn = await self.gate.acquire(self.device(spec), label, timeout, interval,
                                       wait=wait_limit(timeout), may_act=self.guard)
        try:
            self.guard()
        except BaseException:
            await self.gate.release(turn)
            raise
        if on_send is not None:
            on_send()
        task = asyncio.create_task(self._send(turn, candidate, spec, action, timeout),
                                   name=f"send-{label}")
        self._sent.add(task)
        task.add_done_callback(self._sent.discard)
        return await asyncio.shield(task), turn

    async def _send(self, turn: Turn, candidate: Candidate, spec: AgentSpec,
                    action: FenceAction, timeout: float) -> FenceResult:
        key = candidate.host.id if candidate.host else 0
        self.in_flight[key] += 1
        started = time.monotonic()
        try:
            return await self.dispatch.run(candidate, spec, action, timeout)
        except Exception as exc:  # a proxy's failure is data, never the end of the flow
            return FenceResult(action, Outcome.ERROR, f"{type(exc).__name__}: {exc}",
                               duration=time.monotonic() - started)
        finally:
            self.in_flight[key] -= 1
            await self.gate.release(turn)

    async def _busy(self, outcome: CommandResult, target: Host, agent: FenceAgent,
                    action: FenceAction, operation_id: int | None,
                    busy: DeviceBusy) -> CommandResult:
        """The device stayed busy longer than its wait limit: nothing was
        sent, and no other proxy would do better (the device is the same)."""
        message = (f"{action.value} of {target.name} with {agent.type}@{agent.address} not "
                   f"sent: {busy}")
        outcome.sending = None
        outcome.result = FenceResult(action, Outcome.ERROR, message, duration=busy.waited)
        await self._event(Severity.ERROR, "fence.device_busy", target, operation_id, message,
                          {"agent_id": agent.id, "agent": f"{agent.type}@{agent.address}",
                           "action": action.value, "device": busy.device,
                           "holder": busy.holder, "waited": round(busy.waited, 3)})
        return outcome

    async def _event(self, severity: Severity, kind: str, host: Host, operation_id: int | None,
                     message: str, details: dict[str, object]) -> None:
        await self.emit(Event(severity, kind, message, host_id=host.id, host_name=host.name,
                              operation_id=operation_id, details=details))


def _waited(turn: Turn) -> str:
    """A long wait for the device, said in the command's event."""
    if turn.waited < LONG_WAIT:
        return ""
    return f" (waited {turn.waited:.1f} s for device {turn.key}, busy with {turn.busy_with})"


def _turn_details(turn: Turn) -> dict[str, object]:
    """The device and the command's turn at it (on the database's clock when
    several engines share it): when it was claimed and given back."""
    return {"device": str(turn.key), "device_wait": round(turn.waited, 3),
            "device_turn": [turn.claimed_at.isoformat(),
                            turn.released_at.isoformat() if turn.released_at else None]}
