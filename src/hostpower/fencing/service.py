"""The fencing service: power operations on demand and automatic, one flow
per host at most, a bounded number at once, resumed after an engine crash."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from typing import Any, TypeVar

from hostpower.config import Config
from hostpower.context import EngineContext
from hostpower.fencing.dispatch import ProxyDispatch
from hostpower.drivers.base import FenceDriver
from hostpower.fencing.executor import ChainExecutor
from hostpower.fencing.flows import Flows
from hostpower.fencing.power import HostPower, PowerResult
from hostpower.hostagent.client import AgentClient
from hostpower.model.errors import ConflictError
from hostpower.model.events import Event, Severity
from hostpower.model.inventory import FenceAgent, HostStatus, InventorySnapshot
from hostpower.model.power import FenceAction
from hostpower.store.configstore import ConfigStore
from hostpower.store.events import Events
from hostpower.store.inventory import Inventory
from hostpower.store.journal import AlreadyRunning, Journal, Operation

log = logging.getLogger("hostpower.fencing")
T = TypeVar("T")
FLOW_ACTIONS = ("start", "stop", "restart")
# How long one inventory snapshot serves proxy selection. Status changes made
# by this engine (flows, monitor) are applied to it at once; other writers
# (an operator's edit through the API or CLI) are seen within this time.
SNAPSHOT_TTL = 1.0


class FencingService:
    def __init__(self, ctx: EngineContext, client: AgentClient | None,
                 drivers: list[FenceDriver], engine_agent_types: set[str] | frozenset[str],
                 started_at: float | None = None) -> None:
        self.ctx = ctx
        self.started_at = started_at if started_at is not None else time.time()
        self.host_agent_types: dict[int, set[str]] = {}
        self._prefer_native = True
        dispatch = ProxyDispatch(client, drivers, lambda: self._prefer_native)
        self.executor = ChainExecutor(self._load_state, dispatch, self.emit,
                                      engine_agent_types, self.host_agent_types)
        self.power = HostPower(self.executor, self._load_agents)
        self.flows = Flows(self.power, self)
        self._tasks: dict[int, asyncio.Task[None]] = {}
        self._limit: asyncio.Semaphore | None = None
        self._on_finish: list[Callable[[Operation], None]] = []
        self._on_event: list[Callable[[Event], None]] = []
        self._state: tuple[InventorySnapshot, Config] | None = None
        self._agents: dict[int, tuple[float, list[FenceAgent]]] = {}
        self._state_at = 0.0

    # -- database access, off the event loop -------------------------------------------

    async def _db(self, fn: Callable[[Any], T]) -> T:
        def work() -> T:
            with self.ctx.db.session() as s:
                return fn(s)
        return await asyncio.to_thread(work)

    async def _load_state(self) -> tuple[InventorySnapshot, Config]:
        """The inventory and configuration, cached for SNAPSHOT_TTL seconds:
        with thousands of hosts, reading them for every command would cost
        more than the command itself."""
        if self._state is None or time.monotonic() - self._state_at > SNAPSHOT_TTL:
            self._state = await self._db(lambda s: (Inventory(s, self.ctx.box).snapshot(),
                                                    ConfigStore(s).load()))
            self._state_at = time.monotonic()
            self._prefer_native = self._state[1]["PreferNativeFenceDrivers"]
        return self._state

    def invalidate(self) -> None:
        """Forget the cached inventory (after a write this engine did not make itself)."""
        self._state = None
        self._agents = {}

    async def _load_agents(self, host_id: int) -> list[FenceAgent]:
        """A host's agents (passwords decrypted), kept as long as the snapshot:
        a flow asks for them at every step."""
        cached = self._agents.get(host_id)
        if cached is not None and time.monotonic() - cached[0] <= SNAPSHOT_TTL:
            return cached[1]
        agents = await self._db(lambda s: Inventory(s, self.ctx.box).agents(host_id))
        self._agents[host_id] = (time.monotonic(), agents)
        return agents

    # -- FlowStore ------------------------------------------------------------------------

    async def start_step(self, op_id: int, name: str, phase: str | None = None) -> int:
        return await self._db(lambda s: Journal(s).start_step(op_id, name, phase))

    async def finish_step(self, step_id: int, outcome: str, proxies: list[dict[str, object]],
                          message: str) -> None:
        await self._db(lambda s: Journal(s).finish_step(step_id, outcome, proxies, message))

    async def set_host_status(self, host_id: int, status: HostStatus) -> None:
        host = await self._db(lambda s: Inventory(s, self.ctx.box).set_status(host_id, status))
        if self._state is not None:  # write-through, so the next selection sees it
            snapshot, config = self._state
            hosts = tuple(host if h.id == host_id else h for h in snapshot.hosts)
            self._state = (InventorySnapshot(snapshot.data_centers, snapshot.clusters, hosts), config)

    async def emit(self, event: Event) -> None:
        level = {Severity.INFO: logging.INFO, Severity.WARNING: logging.WARNING,
                 Severity.ERROR: logging.ERROR}[event.severity]
        log.log(level, "%s", event.message)
        await self._db(lambda s: Events(s).add(event))
        for listener in list(self._on_event):
            listener(event)  # before the flow goes on: listeners see steps in order

    async def config(self) -> Config:
        return (await self._load_state())[1]

    # -- operations -----------------------------------------------------------------------

    async def status(self, host_id: int) -> PowerResult:
        """A status through the chain, answered at once (no journal)."""
        return await self.power.run(host_id, FenceAction.STATUS)

    async def test_agent(self, host_id: int, agent: FenceAgent) -> PowerResult:
        """oVirt's Test button: a status with an agent definition that may be unsaved."""
        return await self.power.run(host_id, FenceAction.STATUS, agents=[agent])

    async def request(self, host_id: int, action: str, origin: str) -> tuple[Operation, bool]:
        """Start a flow, or join the one already running for the host: (operation, joined)."""
        if action not in FLOW_ACTIONS:
            raise ValueError(action)
        host = await self._db(lambda s: Inventory(s, self.ctx.box).host(host_id))
        try:
            op = await self._db(lambda s: Journal(s).begin(host.id, host.name, action, origin))
        except AlreadyRunning as running:
            existing = running.operation_id
            op = await self._db(lambda s: Journal(s).get(existing))
            await self.emit(Event(Severity.INFO, "fence.joined",
                                  f"{action} of {host.name} requested ({origin}) while "
                                  f"operation {op.id} ({op.action}) runs: joined it",
                                  host_id=host.id, host_name=host.name, operation_id=op.id))
            return op, True
        await self.emit(Event(Severity.INFO, "fence.started",
                              f"{action} of {host.name} started ({origin})",
                              host_id=host.id, host_name=host.name, operation_id=op.id))
        self._spawn(op)
        return op, False

    async def manual(self, host_id: int) -> None:
        """The operator confirms the host was rebooted by hand: clear its state."""
        host = await self._db(lambda s: Inventory(s, self.ctx.box).host(host_id))
        active = await self._db(lambda s: Journal(s).active_for(host_id))
        if active is not None:
            raise ConflictError("fence_type", f"operation {active.id} ({active.action}) is "
                                              f"running for {host.name}")
        await self.set_host_status(host_id, HostStatus.DOWN)
        await self.emit(Event(Severity.WARNING, "fence.manual",
                              f"operator confirmed {host.name} was rebooted by hand; its "
                              f"state is cleared (down until its agent answers)",
                              host_id=host.id, host_name=host.name))

    async def resume(self) -> list[Operation]:
        """Pick up every flow a previous engine left running."""
        running = await self._db(lambda s: Journal(s).running())
        for op in running:
            await self.emit(Event(Severity.WARNING, "fence.resumed",
                                  f"resuming {op.action} of {op.host_name} at phase {op.phase} "
                                  f"after an engine restart",
                                  host_id=op.host_id, host_name=op.host_name, operation_id=op.id))
            self._spawn(op)
        return running

    def in_flow(self, host_id: int) -> bool:
        task = self._tasks.get(host_id)
        return task is not None and not task.done()

    async def wait(self, op_id: int, timeout: float) -> Operation:
        deadline = time.monotonic() + timeout
        while True:
            op = await self._db(lambda s: Journal(s).get(op_id))
            if not op.running or time.monotonic() > deadline:
                return op
            await asyncio.sleep(0.05)

    def on_finish(self, callback: Callable[[Operation], None]) -> None:
        self._on_finish.append(callback)

    def on_event(self, callback: Callable[[Event], None]) -> Callable[[], None]:
        """Call `callback` with every event once it is stored; returns the remover."""
        self._on_event.append(callback)
        return lambda: self._on_event.remove(callback)

    async def close(self) -> None:
        """Stop without finishing: journaled flows resume on the next start."""
        for task in self._tasks.values():
            task.cancel()
        await asyncio.gather(*self._tasks.values(), return_exceptions=True)

    def _spawn(self, op: Operation) -> None:
        self._tasks[op.host_id] = asyncio.create_task(self._run(op), name=f"flow-{op.id}")

    async def _run(self, op: Operation) -> None:
        if self._limit is None:
            self._limit = asyncio.Semaphore((await self.config())["FenceConcurrencyLimit"])
        async with self._limit:
            try:
                ok, message = await self.flows.run(op)
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # a bug must still end the flow visibly
                log.exception("flow %s crashed", op.id)
                ok, message = False, f"internal error: {type(exc).__name__}: {exc}"
        if not ok and op.action == "restart":
            await self.set_host_status(op.host_id, HostStatus.NON_RESPONSIVE)
        finished = await self._db(lambda s: Journal(s).finish(
            op.id, "succeeded" if ok else "failed", message))
        await self.emit(Event(Severity.INFO if ok else Severity.ERROR,
                              "fence.succeeded" if ok else "fence.failed",
                              message if ok else f"{op.action} of {op.host_name} failed: {message}",
                              host_id=op.host_id, host_name=op.host_name, operation_id=op.id))
        for callback in self._on_finish:
            callback(finished)
