"""The engine's gateway to its stored state, for the fencing runner, the
flows and the monitor: database work off the event loop, the inventory and
configuration as of now (cached, checked against the store's revisions),
host statuses, the journal's steps, and events.

Every event names the engine user on whose behalf the current task works
(`on_behalf_of`), down to each proxy attempt, without passing the name
through every layer; a flow's task sets it from its operation, so a flow
resumed after a restart still names who asked for it.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import replace
from datetime import datetime
from typing import TypeVar

from sqlalchemy.orm import Session

from hostpower.config import Config
from hostpower.context import EngineContext
from hostpower.model.events import Event, Severity
from hostpower.model.inventory import FenceAgent, Host, HostStatus, InventorySnapshot
from hostpower.store import revisions
from hostpower.store.configstore import ConfigStore
from hostpower.store.events import Events
from hostpower.store.inventory import Inventory
from hostpower.store.journal import Journal

log = logging.getLogger("hostpower.fencing")
T = TypeVar("T")
State = tuple[InventorySnapshot, Config]
_requested_by: ContextVar[str | None] = ContextVar("requested_by", default=None)
_LEVELS = {Severity.INFO: logging.INFO, Severity.WARNING: logging.WARNING,
           Severity.ERROR: logging.ERROR}


@contextmanager
def on_behalf_of(user: str | None) -> Iterator[None]:
    """Events emitted inside name `user` (None: the engine's own doing)."""
    token = _requested_by.set(user)
    try:
        yield
    finally:
        _requested_by.reset(token)


class EngineGateway:
    def __init__(self, ctx: EngineContext) -> None:
        self.ctx = ctx
        self.prefer_native = True      # PreferNativeFenceDrivers, as of the last state()
        self._state: State | None = None
        self._revisions = revisions.Revisions(-1, -1)
        self._agents: dict[int, list[FenceAgent]] = {}
        self._agents_revision = -1
        self._on_event: list[Callable[[Event], None]] = []

    async def run(self, fn: Callable[[Session], T]) -> T:
        """`fn(session)` in a thread, committed when it returns."""
        def work() -> T:
            with self.ctx.db.session() as s:
                return fn(s)
        return await asyncio.to_thread(work)

    # -- the inventory and configuration -------------------------------------------------

    async def state(self) -> State:
        """The inventory and configuration as of now. The cache is checked
        against the store's revisions on every call (one small query) and
        reloads what another writer moved: everything when the inventory or
        configuration changed, only the host statuses when only they did."""
        self._state, self._revisions = await self.run(
            lambda s: self._fresh_state(s, self._state, self._revisions))
        if self._revisions.inventory != self._agents_revision:
            self._agents, self._agents_revision = {}, self._revisions.inventory
        self.prefer_native = self._state[1]["PreferNativeFenceDrivers"]
        return self._state

    def _fresh_state(self, s: Session, state: State | None,
                     seen: revisions.Revisions) -> tuple[State, revisions.Revisions]:
        now = revisions.current(s)
        if state is None or now.inventory != seen.inventory:
            return (Inventory(s, self.ctx.box).snapshot(), ConfigStore(s).load()), now
        if now.status != seen.status:
            snapshot, config = state
            return (Inventory(s, self.ctx.box).with_current_statuses(snapshot), config), now
        return state, now

    async def config(self) -> Config:
        return (await self.state())[1]

    async def host(self, host_id: int) -> Host:
        """The host as stored now (NotFoundError if it is not)."""
        return await self.run(lambda s: Inventory(s, self.ctx.box).host(host_id))

    async def agents(self, host_id: int) -> list[FenceAgent]:
        """A host's agents, passwords decrypted: read when a command needs
        them, kept until the inventory revision moves (a flow asks at every step)."""
        await self.state()
        cached = self._agents.get(host_id)
        if cached is None:
            cached = await self.run(lambda s: Inventory(s, self.ctx.box).agents(host_id))
            self._agents[host_id] = cached
        return cached

    async def set_host_status(self, host_id: int, status: HostStatus) -> None:
        def write(s: Session) -> tuple[Host, dict[str, int]]:
            return Inventory(s, self.ctx.box).set_status(host_id, status), revisions.moved_by(s)
        host, moved = await self.run(write)
        # Write-through: when this write is the only one since the cache was
        # read, apply it to the cache instead of reloading every status.
        if self._state is not None and moved.get(revisions.STATUS) == self._revisions.status + 1:
            snapshot, config = self._state
            hosts = tuple(host if h.id == host_id else h for h in snapshot.hosts)
            self._state = (InventorySnapshot(snapshot.data_centers, snapshot.clusters, hosts), config)
            self._revisions = replace(self._revisions, status=moved[revisions.STATUS])

    # -- the journal (flows.FlowStore) -------------------------------------------------------

    async def start_step(self, op_id: int, name: str, phase: str | None = None) -> int:
        return await self.run(lambda s: Journal(s).start_step(op_id, name, phase))

    async def finish_step(self, step_id: int, outcome: str, proxies: list[dict[str, object]],
                          message: str) -> None:
        await self.run(lambda s: Journal(s).finish_step(step_id, outcome, proxies, message))

    async def last_operation_end(self, host_id: int) -> datetime | None:
        return await self.run(lambda s: Journal(s).last_finished_at(host_id))

    # -- events ------------------------------------------------------------------------------

    async def emit(self, event: Event) -> None:
        if event.user is None:
            event = replace(event, user=_requested_by.get())
        log.log(_LEVELS[event.severity], "%s", event.message)
        await self.run(lambda s: Events(s).add(event))
        for listener in list(self._on_event):
            listener(event)  # before the flow goes on: listeners see steps in order

    def on_event(self, callback: Callable[[Event], None]) -> Callable[[], None]:
        """Call `callback` with every event once it is stored; returns the remover."""
        self._on_event.append(callback)
        return lambda: self._on_event.remove(callback)
