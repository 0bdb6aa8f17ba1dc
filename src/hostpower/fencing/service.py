"""The fencing service: power operations on demand and automatic, one flow
per host at most, a bounded number at once, resumed after an engine crash."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import replace
from typing import Any, TypeVar

from hostpower.config import Config
from hostpower.context import EngineContext
from hostpower.fencing.dispatch import ProxyDispatch
from hostpower.fencing.drivers.base import FenceDriver
from hostpower.fencing.executor import ChainExecutor
from hostpower.fencing.flows import Flows
from hostpower.fencing.power import HostPower, PowerResult
from hostpower.hostagent.client import AgentClient
from hostpower.model.errors import ConflictError
from hostpower.model.events import Event, Severity
from hostpower.model.inventory import FenceAgent, Host, HostStatus, InventorySnapshot
from hostpower.model.power import FenceAction
from hostpower.store import revisions
from hostpower.store.configstore import ConfigStore
from hostpower.store.events import Events
from hostpower.store.inventory import Inventory
from hostpower.store.journal import AlreadyRunning, Journal, Operation

log = logging.getLogger("hostpower.fencing")
T = TypeVar("T")
FLOW_ACTIONS = ("start", "stop", "restart")
# The engine user on whose behalf the current task works (a status, a flow):
# every event it emits names them, down to each proxy attempt, without passing
# the name through every layer. A flow's task sets it from its operation, so a
# flow resumed after a restart still names who asked for it.
_requested_by: ContextVar[str | None] = ContextVar("requested_by", default=None)


@contextmanager
def _on_behalf_of(user: str | None) -> Iterator[None]:
    token = _requested_by.set(user)
    try:
        yield
    finally:
        _requested_by.reset(token)


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
        self._revisions = revisions.Revisions(-1, -1)
        self._agents: dict[int, list[FenceAgent]] = {}
        self._agents_revision = -1

    # -- database access, off the event loop -------------------------------------------

    async def _db(self, fn: Callable[[Any], T]) -> T:
        def work() -> T:
            with self.ctx.db.session() as s:
                return fn(s)
        return await asyncio.to_thread(work)

    async def _load_state(self) -> tuple[InventorySnapshot, Config]:
        """The inventory and configuration as of now. The cache is checked
        against the store's revisions on every call (one small query) and
        reloads what another writer moved: everything when the inventory or
        configuration changed, only the host statuses when only they did."""
        self._state, self._revisions = await self._db(
            lambda s: self._fresh_state(s, self._state, self._revisions))
        if self._revisions.inventory != self._agents_revision:
            self._agents, self._agents_revision = {}, self._revisions.inventory
        self._prefer_native = self._state[1]["PreferNativeFenceDrivers"]
        return self._state

    def _fresh_state(self, s: Any, state: tuple[InventorySnapshot, Config] | None,
                     seen: revisions.Revisions) -> tuple[tuple[InventorySnapshot, Config],
                                                         revisions.Revisions]:
        now = revisions.current(s)
        if state is None or now.inventory != seen.inventory:
            return (Inventory(s, self.ctx.box).snapshot(), ConfigStore(s).load()), now
        if now.status != seen.status:
            snapshot, config = state
            return (Inventory(s, self.ctx.box).with_current_statuses(snapshot), config), now
        return state, now

    async def _load_agents(self, host_id: int) -> list[FenceAgent]:
        """A host's agents, passwords decrypted: read when a command needs
        them, kept until the inventory revision moves (a flow asks at every step)."""
        await self._load_state()
        cached = self._agents.get(host_id)
        if cached is None:
            cached = await self._db(lambda s: Inventory(s, self.ctx.box).agents(host_id))
            self._agents[host_id] = cached
        return cached

    # -- FlowStore ------------------------------------------------------------------------

    async def start_step(self, op_id: int, name: str, phase: str | None = None) -> int:
        return await self._db(lambda s: Journal(s).start_step(op_id, name, phase))

    async def finish_step(self, step_id: int, outcome: str, proxies: list[dict[str, object]],
                          message: str) -> None:
        await self._db(lambda s: Journal(s).finish_step(step_id, outcome, proxies, message))

    async def set_host_status(self, host_id: int, status: HostStatus) -> None:
        def write(s: Any) -> tuple[Host, dict[str, int]]:
            return Inventory(s, self.ctx.box).set_status(host_id, status), revisions.moved_by(s)
        host, moved = await self._db(write)
        # Write-through: when this write is the only one since the cache was
        # read, apply it to the cache instead of reloading every status.
        if self._state is not None and moved.get(revisions.STATUS) == self._revisions.status + 1:
            snapshot, config = self._state
            hosts = tuple(host if h.id == host_id else h for h in snapshot.hosts)
            self._state = (InventorySnapshot(snapshot.data_centers, snapshot.clusters, hosts), config)
            self._revisions = replace(self._revisions, status=moved[revisions.STATUS])

    async def emit(self, event: Event) -> None:
        if event.user is None:
            event = replace(event, user=_requested_by.get())
        level = {Severity.INFO: logging.INFO, Severity.WARNING: logging.WARNING,
                 Severity.ERROR: logging.ERROR}[event.severity]
        log.log(level, "%s", event.message)
        await self._db(lambda s: Events(s).add(event))
        for listener in list(self._on_event):
            listener(event)  # before the flow goes on: listeners see steps in order

    async def config(self) -> Config:
        return (await self._load_state())[1]

    # -- operations -----------------------------------------------------------------------

    async def status(self, host_id: int, requested_by: str | None = None) -> PowerResult:
        """A status through the chain, answered at once (no journal)."""
        with _on_behalf_of(requested_by):
            return await self.power.run(host_id, FenceAction.STATUS)

    async def test_agent(self, host_id: int, agent: FenceAgent,
                         requested_by: str | None = None) -> PowerResult:
        """oVirt's Test button: a status with an agent definition that may be unsaved."""
        with _on_behalf_of(requested_by):
            return await self.power.run(host_id, FenceAction.STATUS, agents=[agent])

    async def request(self, host_id: int, action: str, origin: str,
                      requested_by: str | None = None) -> tuple[Operation, bool]:
        """Start a flow, or join the one already running for the host: (operation, joined).
        `origin` is api or automatic; `requested_by` the engine user who asked."""
        if action not in FLOW_ACTIONS:
            raise ValueError(action)
        host = await self._db(lambda s: Inventory(s, self.ctx.box).host(host_id))
        by = f"by {requested_by} ({origin})" if requested_by else f"({origin})"
        try:
            op = await self._db(lambda s: Journal(s).begin(host.id, host.name, action, origin,
                                                           requested_by=requested_by))
        except AlreadyRunning as running:
            existing = running.operation_id
            op = await self._db(lambda s: Journal(s).get(existing))
            await self.emit(Event(Severity.INFO, "fence.joined",
                                  f"{action} of {host.name} requested {by} while "
                                  f"operation {op.id} ({op.action}) runs: joined it",
                                  host_id=host.id, host_name=host.name, operation_id=op.id,
                                  user=requested_by,
                                  details={"operation_requested_by": op.requested_by}))
            return op, True
        await self.emit(Event(Severity.INFO, "fence.started",
                              f"{action} of {host.name} started {by}",
                              host_id=host.id, host_name=host.name, operation_id=op.id,
                              user=requested_by))
        self._spawn(op)
        return op, False

    async def manual(self, host_id: int, requested_by: str | None = None) -> None:
        """The operator confirms the host was rebooted by hand: clear its state."""
        host = await self._db(lambda s: Inventory(s, self.ctx.box).host(host_id))
        active = await self._db(lambda s: Journal(s).active_for(host_id))
        if active is not None:
            raise ConflictError("fence_type", f"operation {active.id} ({active.action}) is "
                                              f"running for {host.name}")
        await self.set_host_status(host_id, HostStatus.DOWN)
        operator = requested_by or "operator"
        await self.emit(Event(Severity.WARNING, "fence.manual",
                              f"{operator} confirmed {host.name} was rebooted by hand; its "
                              f"state is cleared (down until its agent answers)",
                              host_id=host.id, host_name=host.name, user=requested_by))

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
        _requested_by.set(op.requested_by)  # this task's own context: no reset needed
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
