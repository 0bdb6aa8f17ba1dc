"""The fencing service: power operations on demand and automatic, one flow
per host at most, a bounded number at once, resumed after an engine crash
or taken over from an engine that died.

A flow that this engine may not go on with (its lease is uncertain, the
database is unreachable, another engine took it over) is *paused*: its task
ends and the journal keeps it running as it was. `adopt_orphans`, called at
start and every monitor round, picks up every running flow that no live
engine runs: this engine's own paused flows, and those of dead engines for
the hosts this engine owns. Taking one over increments its fencing token.
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
import weakref
from collections.abc import Callable

from hostpower.drivers.base import FenceDriver
from hostpower.fencing.devicegate import DeviceGate
from hostpower.fencing.dispatch import ProxyDispatch
from hostpower.fencing.executor import ChainExecutor
from hostpower.fencing.flows import Flows
from hostpower.fencing.gateway import EngineGateway, acting_as, buffered_events, on_behalf_of
from hostpower.fencing.power import HostPower, PowerResult
from hostpower.fencing.tlsnotice import InsecureTlsNotice
from hostpower.hostagent.client import AgentClient
from hostpower.model.errors import ConflictError, EngineNotReady, StorageUnavailable
from hostpower.model.events import Event, Severity
from hostpower.model.inventory import FenceAgent, Host, HostStatus
from hostpower.model.operations import FlowAction, OperationState, Origin, Runner
from hostpower.model.power import FenceAction
from hostpower.store.journal import AlreadyRunning, Journal, Operation, ReservationLost
from hostpower.store.turnconnection import TurnConnection

log = logging.getLogger("hostpower.fencing")
# How often `wait` reads an operation that this engine does not run (another
# engine's, or one paused here); one this engine runs wakes its waiters itself.
WAIT_POLL = 0.5


class FencingService:
    """Runs power operations: statuses at once, flows journaled and spawned,
    at most one per host and FenceConcurrencyLimit at once. Everything it
    reads or writes goes through `gateway`."""

    def __init__(self, gateway: EngineGateway, client: AgentClient | None,
                 drivers: list[FenceDriver], engine_agent_types: set[str] | frozenset[str],
                 started_at: float | None = None) -> None:
        self.gateway = gateway
        self.started_at = started_at if started_at is not None else time.time()
        self.host_agent_types: dict[int, set[str]] = {}
        self.dispatch = ProxyDispatch(client, drivers, lambda: gateway.prefer_native)
        self.executor = ChainExecutor(gateway.state, self.dispatch, gateway.emit,
                                      engine_agent_types, self.host_agent_types,
                                      guard=gateway.check_may_act, gate=device_gate(gateway))
        self.power = HostPower(self.executor, gateway.agents)
        self.flows = Flows(self.power, gateway)
        self._tasks: dict[int, asyncio.Task[None]] = {}
        # Hosts whose flow this engine is beginning (journaled, not yet
        # spawned): not an orphan for adopt_orphans meanwhile.
        self._starting: set[int] = set()
        self._limit: asyncio.Semaphore | None = None
        self._on_finish: list[Callable[[Operation], None]] = []
        # Waiters of operations (`wait`), woken when this engine ends one;
        # an entry lives as long as someone waits on it.
        self._ended: weakref.WeakValueDictionary[int, asyncio.Event] = weakref.WeakValueDictionary()
        self._running: set[int] = set()   # operations whose flow task runs here
        # Agents that skip TLS verification (ssl_insecure): a WARNING once each.
        self.power.notice = InsecureTlsNotice(gateway.emit, self._host_name).check

    async def _host_name(self, host_id: int) -> str | None:
        snapshot, _ = await self.gateway.state()
        try:
            return snapshot.host(host_id).name
        except KeyError:  # a host deleted meanwhile: the event names its id
            return None

    # -- operations -----------------------------------------------------------------------

    async def status(self, host_id: int, requested_by: str | None = None) -> PowerResult:
        """A status through the chain, answered at once (no journal)."""
        self.gateway.check_may_act()
        with on_behalf_of(requested_by):
            return await self.power.run(host_id, FenceAction.STATUS)

    async def test_agent(self, host_id: int, agent: FenceAgent,
                         requested_by: str | None = None) -> PowerResult:
        """oVirt's Test button: a status with an agent definition that may be unsaved."""
        self.gateway.check_may_act()
        with on_behalf_of(requested_by):
            return await self.power.run(host_id, FenceAction.STATUS, agents=[agent])

    async def request(self, host_id: int, action: FlowAction, origin: Origin,
                      requested_by: str | None = None) -> tuple[Operation, bool]:
        """Start a flow, or join the one already running for the host: (operation, joined).
        `requested_by` is the engine user who asked (None for automatic fencing)."""
        host = await self.gateway.host(host_id)
        by = f"by {requested_by} ({origin})" if requested_by else f"({origin})"
        runner = self.gateway.runner
        self.gateway.check_may_act()  # a flow begun now would only pause: say so at once
        self._starting.add(host.id)
        try:
            return await self._begin(host, action, origin, requested_by, runner, by)
        finally:
            self._starting.discard(host.id)

    async def _begin(self, host: Host, action: FlowAction, origin: Origin,
                     requested_by: str | None, runner: Runner, by: str,
                     ) -> tuple[Operation, bool]:
        try:
            op = await self.gateway.begin_flow(
                host, action, origin, requested_by, runner,
                lambda op: Event(Severity.INFO, "fence.started",
                                 f"{action} of {host.name} started {by}", host_id=host.id,
                                 host_name=host.name, operation_id=op.id, user=requested_by))
        except AlreadyRunning as running:
            existing = running.operation_id
            op = await self.gateway.run(lambda s: Journal(s).get(existing))
            await self.gateway.emit(Event(Severity.INFO, "fence.joined",
                                  f"{action} of {host.name} requested {by} while "
                                  f"operation {op.id} ({op.action}) runs: joined it",
                                  host_id=host.id, host_name=host.name, operation_id=op.id,
                                  user=requested_by,
                                  details={"operation_requested_by": op.requested_by}))
            return op, True
        self._spawn(op)
        return op, False

    async def manual(self, host_id: int, requested_by: str | None = None) -> None:
        """The operator confirms the host was rebooted by hand: clear its state."""
        host = await self.gateway.host(host_id)
        active = await self.gateway.run(lambda s: Journal(s).active_for(host_id))
        if active is not None:
            raise ConflictError("fence_type", f"operation {active.id} ({active.action}) is "
                                              f"running for {host.name}")
        await self.gateway.set_host_status(host_id, HostStatus.DOWN)
        operator = requested_by or "operator"
        await self.gateway.emit(Event(Severity.WARNING, "fence.manual",
                              f"{operator} confirmed {host.name} was rebooted by hand; its "
                              f"state is cleared (down until its agent answers)",
                              host_id=host.id, host_name=host.name, user=requested_by))

    async def resume(self) -> list[Operation]:
        """At start: pick up the flows a previous engine left running."""
        return await self.adopt_orphans()

    async def adopt_orphans(self) -> list[Operation]:
        """Take over every running flow that no live engine runs and that is
        this engine's to take: its own (paused, or begun by an earlier
        incarnation) or one of a dead engine for a host this engine owns.
        A takeover is a conditional write (the token must be as read), so two
        engines that both see an orphan never both run it."""
        try:
            self.gateway.check_may_act()
        except EngineNotReady:
            return []
        ring, alive = await self.gateway.ownership()
        me = self.gateway.runner
        running = await self.gateway.run(lambda s: Journal(s).running())
        adopted = []
        for op in running:
            holder = op.runner
            if self.in_flow(op.host_id):
                continue
            held_by_peer = (holder is not None and holder.name != me.name
                            and alive.get(holder.name) == holder.generation)
            if held_by_peer:
                continue
            if holder != me and ring.owner(op.host_id) != me.name:
                continue  # the host's owner takes it
            taken = await self.gateway.run(
                lambda s, op=op: Journal(s).take_over(op.id, op.token, me))
            if taken is None:
                continue  # another engine was faster
            await self.gateway.emit(Event(Severity.WARNING, "fence.resumed",
                                          _resumed_message(op, holder, me), host_id=op.host_id,
                                          host_name=op.host_name, operation_id=op.id,
                                          details={"from_engine": holder.name if holder else None,
                                                   "phase": op.phase.value,
                                                   "token": taken.token}))
            self._spawn(taken)
            adopted.append(taken)
        return adopted

    def in_flow(self, host_id: int) -> bool:
        if host_id in self._starting:
            return True
        task = self._tasks.get(host_id)
        return task is not None and not task.done()

    async def wait(self, op_id: int, timeout: float) -> Operation:
        """The operation once it has ended, or as it stands after `timeout`.

        A flow this engine runs wakes its waiters when its task ends
        (finished or paused); the journal is read then, not polled. One that
        runs elsewhere (another engine, or paused here) is read again every
        WAIT_POLL seconds. Polling every waiter of a mass failure 20 times a
        second cost more engine time than the flows themselves (bench 6)."""
        deadline = time.monotonic() + timeout
        while True:
            # Taken before the read: a flow ending after the read still wakes us.
            ended = self._ended.setdefault(op_id, asyncio.Event())
            op = await self.gateway.run(lambda s: Journal(s).get(op_id))
            left = deadline - time.monotonic()
            if not op.running or left <= 0:
                return op
            # A flow running here sets `ended` when its task ends (finished
            # or paused): no need to read it again before.
            here = op_id in self._running
            try:
                await asyncio.wait_for(ended.wait(), left if here else min(WAIT_POLL, left))
            except TimeoutError:
                pass

    def on_finish(self, callback: Callable[[Operation], None]) -> None:
        self._on_finish.append(callback)

    async def close(self) -> None:
        """Stop without finishing: journaled flows resume on the next start."""
        for task in self._tasks.values():
            task.cancel()
        await asyncio.gather(*self._tasks.values(), return_exceptions=True)
        await self.executor.close()
        self.dispatch.close()
        await self.gateway.close()

    def _spawn(self, op: Operation) -> None:
        self._running.add(op.id)
        self._tasks[op.host_id] = asyncio.create_task(self._run(op), name=f"flow-{op.id}")

    async def _run(self, op: Operation) -> None:
        # The task runs in a context of its own: the user and this engine's
        # incarnation stay set for the whole flow.
        with (on_behalf_of(op.requested_by), acting_as(self.gateway.runner.generation),
              buffered_events()):
            try:
                await self._run_flow(op)
            except (EngineNotReady, StorageUnavailable, ReservationLost) as paused:
                await self._paused(op, paused)
            finally:
                self.gateway.phase_reached(op, forget=True)
                self._running.discard(op.id)
                ended = self._ended.pop(op.id, None)
                if ended is not None:
                    ended.set()

    async def _run_flow(self, op: Operation) -> None:
        if self._limit is None:
            limit = (await self.gateway.config())["FenceConcurrencyLimit"]
            if self._limit is None:  # flows begun at once all awaited the config: one semaphore
                self._limit = asyncio.Semaphore(limit)
        async with self._limit:
            try:
                ok, message = await self.flows.run(op)
            except (asyncio.CancelledError, EngineNotReady, StorageUnavailable, ReservationLost):
                raise
            except Exception as exc:  # a bug must still end the flow visibly
                log.exception("flow %s crashed", op.id)
                ok, message = False, f"internal error: {type(exc).__name__}: {exc}"
        finished = await self.gateway.finish_flow(
            op, OperationState.SUCCEEDED if ok else OperationState.FAILED, message,
            HostStatus.NON_RESPONSIVE if not ok and op.action is FlowAction.RESTART else None,
            Event(Severity.INFO if ok else Severity.ERROR,
                  "fence.succeeded" if ok else "fence.failed",
                  message if ok else f"{op.action} of {op.host_name} failed: {message}",
                  host_id=op.host_id, host_name=op.host_name, operation_id=op.id))
        for callback in self._on_finish:
            callback(finished)

    async def _paused(self, op: Operation, why: Exception) -> None:
        """The flow stops where it is; the journal keeps it running for
        `adopt_orphans` (here or on the engine that took it over)."""
        if isinstance(why, ReservationLost):
            message = (f"{op.action} of {op.host_name}: engine {self.gateway.runner.name} lost "
                       f"its reservation (another engine took the flow over); it sends nothing "
                       f"more for it")
        else:
            message = (f"{op.action} of {op.host_name} paused at phase "
                       f"{self.gateway.phase_reached(op)}: {why}; it goes on once the engine "
                       f"may act again")
        try:
            # emit logs the message before it stores the event: the log has
            # it even when the database cannot take it.
            await self.gateway.emit(Event(Severity.WARNING, "fence.paused", message,
                                          host_id=op.host_id, host_name=op.host_name,
                                          operation_id=op.id))
        except StorageUnavailable:
            pass  # logged by emit; the database cannot take the event now


def device_gate(gateway: EngineGateway) -> DeviceGate:
    """The engine's device gate: turns claimed in the database too when other
    engines may share it (PostgreSQL: on a connection of the gate's own,
    store/turnconnection.py); on SQLite this engine is the only one."""
    engine = gateway.ctx.db.engine
    shared = engine.dialect.name != "sqlite"

    def holder() -> str:
        runner = gateway.runner
        return f"engine {runner.name} (generation {runner.generation}, pid {os.getpid()})"

    return DeviceGate(holder=holder,
                      turns=TurnConnection.for_engine(engine) if shared else None)


def _resumed_message(op: Operation, holder: Runner | None, me: Runner) -> str:
    what = f"{op.action} of {op.host_name} at phase {op.phase}"
    if holder is None or holder.name == me.name and holder.generation != me.generation:
        return f"resuming {what} after an engine restart"
    if holder == me:
        return f"resuming {what}, paused while this engine could not act"
    return (f"engine {me.name} takes over {what} from engine {holder.name}, which stopped "
            f"renewing its lease")
