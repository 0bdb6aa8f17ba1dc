"""The engine's gateway to its stored state, for the fencing runner, the
flows and the monitor: database work off the event loop, the inventory and
configuration as of now (cached, checked against the store's revisions),
host statuses, the journal's steps, and events.

Every event names the engine user on whose behalf the current task works
(`on_behalf_of`), down to each proxy attempt, without passing the name
through every layer; a flow's task sets it from its operation, so a flow
resumed after a restart still names who asked for it. Every event also
names the engine that wrote it.

Several engines may share the database. The gateway knows this engine's
lease (membership.py): `check_may_act` is called before every external
action and refuses (EngineNotReady) while the lease is uncertain, or when
the engine joined again since the current flow began (`acting_as`): work
begun by an earlier incarnation is then another engine's to take over.
`ownership` is the hash ring over the live engines (model/ownership.py).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import replace
from datetime import datetime
from typing import TYPE_CHECKING, TypeVar

from sqlalchemy import Connection
from sqlalchemy.orm import Session

from hostpower.config import Config
from hostpower.context import EngineContext
from hostpower.model.errors import ConflictError, EngineNotReady
from hostpower.model.events import Event, Severity
from hostpower.model.inventory import (
    FenceAgent,
    Host,
    HostStatus,
    InventorySnapshot,
    NonOperationalReason,
)
from hostpower.model.lease import EngineState
from hostpower.model.operations import FlowAction, OperationState, Origin, Runner
from hostpower.model.ownership import Ownership
from hostpower.store import revisions
from hostpower.store.configstore import ConfigStore
from hostpower.store.engines import Engines
from hostpower.store.events import Events
from hostpower.store.groupcommit import GroupCommit
from hostpower.store.hoststatus import set_flow_status
from hostpower.store.inlineread import InlineReader, InlineUnavailable
from hostpower.store.inventory import Inventory
from hostpower.store.journal import AlreadyRunning, Journal, Operation, ReservationLost

if TYPE_CHECKING:
    from hostpower.membership import Membership

log = logging.getLogger("hostpower.fencing")
T = TypeVar("T")
State = tuple[InventorySnapshot, Config]
_requested_by: ContextVar[str | None] = ContextVar("requested_by", default=None)
_acting_as: ContextVar[int | None] = ContextVar("acting_as", default=None)
# The store's revisions as read in the current flow step's transaction.
_step_revisions: ContextVar[revisions.Revisions | None] = ContextVar("step_revisions",
                                                                    default=None)
_buffered: ContextVar[bool] = ContextVar("buffered_events", default=False)
# Without membership (tests, inventory-only use) the engine is alone.
ALONE = Runner("local", 0)
# How long the list of live engines is reused: a monitor round and its
# probes in between share one read.
OWNERSHIP_TTL = 1.0
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


@contextmanager
def acting_as(generation: int) -> Iterator[None]:
    """External actions inside are this engine incarnation's (a flow's task
    sets it when it starts): refused once the engine has joined again."""
    token = _acting_as.set(generation)
    try:
        yield
    finally:
        _acting_as.reset(token)


class StepRecord:
    """A journal step of a flow, as the writer thread records it: its row id
    is known once its write ran (steps of status commands are written
    without waiting)."""

    __slots__ = ("id",)

    def __init__(self) -> None:
        self.id: int | None = None

    def begin(self, c: Connection, op: Operation, name: str, phase: str | None) -> bool:
        """Write the step (and the phase) if the reservation holds; whether it did."""
        try:
            self.id = Journal(c).start_step(op.id, name, phase, op.token)
        except ReservationLost:  # nothing was written
            return False
        return True

    def finish(self, c: Connection, outcome: str, proxies: list[dict[str, object]],
               message: str) -> None:
        if self.id is not None:
            Journal(c).finish_step(self.id, outcome, proxies, message)


@contextmanager
def buffered_events() -> Iterator[None]:
    """Events emitted inside (a flow's task) are committed with the next
    write instead of each waiting for a commit of its own."""
    token = _buffered.set(True)
    try:
        yield
    finally:
        _buffered.reset(token)


class EngineGateway:
    def __init__(self, ctx: EngineContext, membership: "Membership | None" = None) -> None:
        self.ctx = ctx
        self.membership = membership
        self._ownership: tuple[float, Ownership, dict[str, int]] | None = None
        self.prefer_native = True      # PreferNativeFenceDrivers, as of the last state()
        self._state: State | None = None
        self._revisions = revisions.Revisions(-1, -1)
        self._agents: dict[int, list[FenceAgent]] = {}
        self._agents_revision = -1
        self._on_event: list[Callable[[Event], None]] = []
        # The phase each flow of this engine last journaled: the Operation a
        # flow runs with keeps the phase it was spawned at.
        self._phases: dict[int, str] = {}
        # Journal steps, host statuses and events of concurrent flows are
        # committed together (store/groupcommit.py).
        self.writer = GroupCommit(ctx.db)
        self.reader = GroupCommit(ctx.db, name="hostpower-reader")
        self._inline = InlineReader(ctx.db) if ctx.db.engine.dialect.name == "sqlite" else None

    async def run(self, fn: Callable[[Session], T]) -> T:
        """`fn(session)` in a thread, committed when it returns."""
        def work() -> T:
            with self.ctx.db.session() as s:
                return fn(s)
        return await asyncio.to_thread(work)

    async def read(self, fn: Callable[[Connection], T]) -> T:
        """`fn(connection)` for small reads that must not wait for the
        writer's commits (a status step's reservation check, the revisions):
        on SQLite on the loop itself (store/inlineread.py), else, or when
        that fails, on the reader thread."""
        if self._inline is not None:
            try:
                return self._inline.run(fn)
            except InlineUnavailable:
                pass
        return await self.reader.run(fn)

    async def close(self) -> None:
        """Commit the writes still queued (events nobody waited for)."""
        await asyncio.to_thread(self.writer.close)
        await asyncio.to_thread(self.reader.close)
        if self._inline is not None:
            self._inline.close()

    # -- this engine among its peers -------------------------------------------------------

    @property
    def runner(self) -> Runner:
        """This engine incarnation, as it reserves flows."""
        m = self.membership
        return ALONE if m is None else Runner(m.me.name, m.generation)

    def check_may_act(self) -> None:
        """EngineNotReady unless this engine may start an external action now."""
        m = self.membership
        if m is None:
            return
        reason = m.why_not()
        began = _acting_as.get()
        if not reason and began is not None and began != m.generation:
            reason = (f"it joined again as generation {m.generation} since this work began "
                      f"under generation {began}; the work is taken over afresh")
        if reason:
            raise EngineNotReady(reason)

    async def ownership(self) -> tuple[Ownership, dict[str, int]]:
        """The hash ring over the live engines, and each live engine's generation."""
        now = asyncio.get_running_loop().time()
        if self._ownership is not None and now - self._ownership[0] < OWNERSHIP_TTL:
            return self._ownership[1], self._ownership[2]
        me = self.runner
        if self.membership is None:
            alive = {me.name: me.generation}
        else:
            members = await self.run(lambda s: Engines(s).list())
            alive = {m.name: m.generation for m in members if m.state is EngineState.ALIVE}
        ring = Ownership(alive)
        self._ownership = (now, ring, alive)
        return ring, alive

    # -- the inventory and configuration -------------------------------------------------

    async def state(self) -> State:
        """The inventory and configuration as of now. The cache is checked
        against the store's revisions on every call (one small read,
        `read`) and reloads what another writer moved: everything when the
        inventory or configuration changed, only the host statuses when only
        they did.

        Inside a flow's journal step the revisions were read in the step's
        own transaction (`start_step`), right before its commands: the cache
        is used without another query when it is as of them. A write
        committed before a step begins applies to that step's commands."""
        checked = _step_revisions.get()
        if checked is None and self._state is not None:
            checked = await self.read(revisions.current)
        if checked is not None and self._state is not None and checked == self._revisions:
            return self._state
        if checked is not None and self._state is not None and \
                checked.inventory == self._revisions.inventory:
            # Only statuses moved (a mass failure moves them all the time):
            # one narrow read, off the reader thread (it must stay quick for
            # the steps' checks). Statuses read after `checked` may be newer
            # than it; the next call then reads again.
            snapshot, config = self._state

            def statuses() -> InventorySnapshot:
                with self.ctx.db.engine.connect() as c:
                    return Inventory(c, self.ctx.box).with_current_statuses(snapshot)
            snapshot = await asyncio.to_thread(statuses)
            self._state, self._revisions = (snapshot, config), checked
            return self._state
        self._state, self._revisions = await self.run(self._load_state)
        if self._revisions.inventory != self._agents_revision:
            self._agents, self._agents_revision = {}, self._revisions.inventory
        self.prefer_native = self._state[1]["PreferNativeFenceDrivers"]
        return self._state

    def _load_state(self, s: Session) -> tuple[State, revisions.Revisions]:
        """Everything, with the revisions read first: a write between the two
        reads is seen again at the next check."""
        now = revisions.current(s)
        return (Inventory(s, self.ctx.box).snapshot(), ConfigStore(s).load()), now

    @property
    def inventory_revision(self) -> int:
        """The inventory revision of the cached state (moves with every
        inventory or configuration write, not with statuses)."""
        return self._revisions.inventory

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
            cached = await self.read(lambda c: Inventory(c, self.ctx.box).stored_agents(host_id))
            self._agents[host_id] = cached
        return cached

    async def set_host_status(self, host_id: int, status: HostStatus) -> None:
        """Set a host's status, committed with the writes of concurrent flows.
        Inside a flow (`buffered_events`) nobody waits: the status is durable
        with the flow's next journal write, before its next command."""
        if status is HostStatus.NON_OPERATIONAL:  # keeps its reason: the ORM path
            def write(s: Session) -> tuple[Host, int]:
                host = Inventory(s, self.ctx.box).set_status(host_id, status)
                return host, revisions.moved_by(s)[revisions.STATUS]
            host, moved = await self.run(write)
            self._cache_status(host_id, status, moved, host.non_operational_reason)
            return
        written = self.writer.future(lambda c: set_flow_status(c, host_id, status))
        if _buffered.get():
            written.add_done_callback(
                lambda f: None if f.cancelled() or f.exception() is not None
                else self._cache_status(host_id, status, f.result()))
            return
        self._cache_status(host_id, status, await written)

    async def begin_flow(self, host: Host, action: FlowAction, origin: Origin,
                         requested_by: str | None, runner: Runner,
                         announce: Callable[[Operation], Event]) -> Operation:
        """Journal a new flow for `host` and the event `announce(op)` says it
        with, in one commit (AlreadyRunning when the host has a flow). With
        the writes of concurrent flows: a rack's worth of requests at once
        shares a few transactions."""
        def write(c: Connection) -> tuple[Operation | AlreadyRunning, Event | None]:
            op = Journal(c).open(host.id, host.name, action, origin, requested_by, runner)
            if isinstance(op, AlreadyRunning):
                return op, None
            event = self._stamped(announce(op))
            Events(c).add(event)
            return op, event
        try:
            op, event = await self.writer.run(write)
        except ConflictError:  # another engine began one for this host meanwhile
            running = await self.run(lambda s: Journal(s).active_for(host.id))
            raise AlreadyRunning(running.id if running else -1) from None
        if isinstance(op, AlreadyRunning):
            raise op
        assert event is not None
        self._published(event)
        return op

    async def finish_flow(self, op: Operation, state: OperationState, message: str,
                          status: HostStatus | None, event: Event | None = None) -> Operation:
        """End the flow, (when given) set its host's status and store `event`,
        in one commit, only while `op`'s reservation holds (ReservationLost
        otherwise: then nothing is written, not even the event)."""
        if event is not None:
            event = self._stamped(event)

        def write(c: Connection) -> tuple[Operation | ReservationLost, int | None]:
            try:
                finished = Journal(c).finish(op.id, state, message, token=op.token)
            except ReservationLost as lost:
                return lost, None
            moved = set_flow_status(c, op.host_id, status) if status is not None else None
            if event is not None:
                Events(c).add(event)
            return finished, moved
        finished, moved = await self.writer.run(write)
        if isinstance(finished, ReservationLost):
            raise finished
        if status is not None and moved is not None:
            self._cache_status(op.host_id, status, moved)
        if event is not None:
            self._published(event)
        return finished

    def _cache_status(self, host_id: int, status: HostStatus, moved: int,
                      reason: NonOperationalReason | None = None) -> None:
        # Write-through: when this write is the only one since the cache was
        # read, apply it to the cache instead of reloading every status.
        if self._state is not None and moved == self._revisions.status + 1:
            snapshot, config = self._state
            hosts = tuple(replace(h, status=status, non_operational_reason=reason)
                          if h.id == host_id else h for h in snapshot.hosts)
            self._state = (InventorySnapshot(snapshot.data_centers, snapshot.clusters, hosts), config)
            self._revisions = replace(self._revisions, status=moved)

    # -- the journal (flows.FlowStore) -------------------------------------------------------

    async def start_step(self, op: Operation, name: str, phase: str | None = None,
                         changes_power: bool = True) -> StepRecord:
        """Record a step before its external action, while this engine may act
        and still holds the flow's reservation (ReservationLost otherwise).

        A step whose command switches power (off, on) is committed before it
        returns: the journal before the action. A status step changes
        nothing: the reservation is checked by a read (no commit to wait
        for) and the step is written with the flow's next write; a crash
        before that resumes the flow from its previous phase, where it
        checks the device again. Either way the store's revisions are read
        with the check: the step's commands use the cache without another
        query when it is as of them."""
        self.check_may_act()
        record = StepRecord()
        if changes_power:
            def write(c: Connection) -> tuple[bool, revisions.Revisions]:
                return record.begin(c, op, name, phase), revisions.current(c)
            held, seen = await self.writer.run(write)
        else:
            held, seen = await self.read(
                lambda c: (Journal(c).holds(op.id, op.token), revisions.current(c)))
            if held:
                self.writer.submit(lambda c: record.begin(c, op, name, phase))
        if not held:
            raise ReservationLost(op.id, op.token)
        if phase is not None:
            self._phases[op.id] = phase
        _step_revisions.set(seen)
        return record

    def phase_reached(self, op: Operation, forget: bool = False) -> str:
        """The phase the flow of `op` last journaled here (`op.phase` if none
        since it was spawned); `forget`: the flow's task ends."""
        phase = (self._phases.pop if forget else self._phases.get)(op.id, None)
        return phase if phase is not None else op.phase

    async def finish_step(self, step: StepRecord, outcome: str,
                          proxies: list[dict[str, object]], message: str) -> None:
        """The step's outcome, committed with the flow's next write (nobody
        waits for it: a resumed flow goes by the phase and the steps begun)."""
        _step_revisions.set(None)
        self.writer.submit(lambda c: step.finish(c, outcome, proxies, message))

    async def last_operation_end(self, host_id: int) -> datetime | None:
        return await self.run(lambda s: Journal(s).last_finished_at(host_id))

    # -- events ------------------------------------------------------------------------------

    async def emit(self, event: Event) -> None:
        """Log and store `event`, then tell the listeners. Inside a flow
        (`buffered_events`) the event is committed with the flow's next
        write, without waiting: an event is not a journal entry, and it is
        durable before the flow's next step is."""
        event = self._stamped(event)
        self._log(event)  # first: the log has it even when the database cannot take it
        if _buffered.get():
            self.writer.submit(lambda c: Events(c).add(event))
        else:
            await self.writer.run(lambda c: Events(c).add(event))
        self._tell(event)

    def _stamped(self, event: Event) -> Event:
        """`event` naming the user of the current task and this engine."""
        if event.user is None:
            event = replace(event, user=_requested_by.get())
        if event.engine is None and self.membership is not None:
            event = replace(event, engine=self.membership.me.name)
        return event

    def _published(self, event: Event) -> None:
        """An event stored with other writes: logged, then told."""
        self._log(event)
        self._tell(event)

    @staticmethod
    def _log(event: Event) -> None:
        log.log(_LEVELS[event.severity], "%s", event.message)

    def _tell(self, event: Event) -> None:
        for listener in list(self._on_event):
            listener(event)  # before the flow goes on: listeners see steps in order

    def on_event(self, callback: Callable[[Event], None]) -> Callable[[], None]:
        """Call `callback` with every event once it is stored; returns the remover."""
        self._on_event.append(callback)
        return lambda: self._on_event.remove(callback)
