"""The device gate: one command at a time per PM device, spaced by
`DeviceCommandIntervalInMs`, whoever sends it (flows, API statuses, the PM
health check; through a proxy or by the engine itself) and, on a shared
database, whichever engine sends it.

Every command of the executor (fencing/executor.py `_try`) takes a turn at
its device (model/devices.py `device_key`: the address and effective port)
before it is sent, and gives it back when its answer is in:

1. within this engine, an asyncio lock per device, taken in arrival order
   (no database work while another command of this engine holds it);
2. then the spacing: the command waits until the interval has passed since
   the previous command to the device ended;
3. on a database other engines can write (PostgreSQL), the turn is also
   claimed in the `device_turns` table: one conditional statement that wins
   only when the device is free on the database's clock, made by the
   engine on a connection of its own (store/turnconnection.py; a session
   per statement, store/deviceturns.py, when given `run_db` instead). The
   claim expires after the command's timeout plus a margin (a crashed
   holder frees the device then); the release records the end and the
   spacing for the next claimant. A refused waiter asks again
   after a short back-off (model/devices.py `retry_delay`).

A waiter waits at most as long as one other command may hold the device
(model/devices.py `wait_limit`: the command timeout plus the claim's
margin): it then fails with DeviceBusy, naming the device and who holds it,
and nothing is sent. A command through a proxy that cannot reach the device
holds the turn until its timeout (the engine cannot know the device got
nothing), so a flow's command queued behind one such health check still goes. On
SQLite only one engine can run (store/enginelock.py) and no CLI command
sends a fence command itself (`hostpower fence` asks a running engine), so
the lock alone is the gate there: no statement per command.
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Protocol, TypeVar

from sqlalchemy.orm import Session

from hostpower.model.devices import (
    CLAIM_MARGIN,
    LONG_WAIT,
    DeviceKey,
    claim_ttl,
    retry_delay,
    spacing_wait,
)
from hostpower.model.errors import DeviceBusy
from hostpower.store.deviceturns import DeviceTurns, TurnState

log = logging.getLogger("hostpower.devices")
T = TypeVar("T")
DbRunner = Callable[[Callable[[Session], T]], Awaitable[T]]


@dataclass
class Turn:
    """A command's turn at its device, from the claim to the release."""

    key: DeviceKey
    label: str                    # the command, e.g. "off of h1 via h2"
    interval: float               # seconds the next command waits after this one ends
    waited: float                 # seconds spent waiting for the turn
    busy_with: str | None         # what held the device when the wait began (None: free)
    token: str | None = None      # the claim in the database, if the gate claims there
    started: float = 0.0          # monotonic: turn taken
    ended: float | None = None    # monotonic: turn given back
    # The same two instants on the database's clock when claimed there, else this machine's.
    claimed_at: datetime = field(default_factory=lambda: datetime.now(UTC))
    released_at: datetime | None = None


class TurnStore(Protocol):
    """Where the claims of engines sharing a database are made."""

    async def claim(self, device: str, holder: str, token: str,
                    ttl: float) -> tuple[datetime | None, TurnState | None]:
        """The claim's start (None: refused) and the device's row (None: none yet)."""

    async def release(self, device: str, token: str, interval: float) -> datetime | None:
        """The turn's end (None: the claim was no longer this one)."""

    async def close(self) -> None: ...


class SessionTurns:
    """The claims made with a session per statement (`run_db`)."""

    def __init__(self, run_db: DbRunner) -> None:
        self.run_db = run_db

    async def claim(self, device: str, holder: str, token: str,
                    ttl: float) -> tuple[datetime | None, TurnState | None]:
        claimed = await self.run_db(lambda s: DeviceTurns(s).claim(device, holder, token, ttl))
        if claimed is not None:
            return claimed, None
        return None, await self.run_db(lambda s: DeviceTurns(s).state(device))

    async def release(self, device: str, token: str, interval: float) -> datetime | None:
        return await self.run_db(
            lambda s: DeviceTurns(s).release(device, token, interval))

    async def close(self) -> None:
        pass


@dataclass
class _Device:
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    last_end: float | None = None      # monotonic end of this engine's last command to it
    holder: str | None = None          # the command holding it now
    last_holder: str | None = None     # the command that held it last


class DeviceGate:
    """`turns`: where turns are claimed when other writers of the database
    may send commands too (or `run_db`, a function running a function with a
    database session: EngineGateway.run); neither when this engine is the
    only one. `holder`: who this engine is, as said to a waiter of another
    engine."""

    def __init__(self, run_db: DbRunner | None = None,
                 holder: Callable[[], str] = lambda: f"pid {os.getpid()}",
                 clock: Callable[[], float] = time.monotonic,
                 sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
                 claim_margin: float = CLAIM_MARGIN,
                 turns: TurnStore | None = None) -> None:
        self.turns = turns if turns is not None else (
            SessionTurns(run_db) if run_db is not None else None)
        self.claim_margin = claim_margin
        self.holder = holder
        self.clock = clock
        self.sleep = sleep
        self._devices: dict[DeviceKey, _Device] = {}
        self._observers: list[Callable[[Turn], None]] = []
        self._abandoned: set[asyncio.Task[None]] = set()

    @property
    def shared(self) -> bool:
        return self.turns is not None

    def observe(self, callback: Callable[[Turn], None]) -> Callable[[], None]:
        """Call `callback` with every turn once it is given back; returns the remover."""
        self._observers.append(callback)
        return lambda: self._observers.remove(callback)

    def busy(self, key: DeviceKey) -> str | None:
        """The command of this engine holding `key` now, if any."""
        device = self._devices.get(key)
        return device.holder if device is not None else None

    async def acquire(self, key: DeviceKey, label: str, timeout: float, interval: float,
                      wait: float | None = None,
                      may_act: Callable[[], None] = lambda: None) -> Turn:
        """Wait for `key`'s turn for a command of `timeout` seconds, at most
        `wait` seconds (default `timeout`; DeviceBusy then: nothing may be
        sent). `may_act` raises when this engine may no longer act: asked
        before each claim in the database, so an engine that lost its lease
        while waiting stops claiming. Give the turn back with `release`,
        whatever happens."""
        began = self.clock()
        limit = timeout if wait is None else wait
        deadline = began + limit
        device = self._devices.setdefault(key, _Device())
        contended = device.lock.locked()
        if not contended:
            await device.lock.acquire()   # free: taken at once, no task, no yield
        else:
            try:
                await asyncio.wait_for(device.lock.acquire(), limit)
            except TimeoutError:
                raise DeviceBusy(str(key), device.holder or "another command of this engine",
                                 self.clock() - began) from None
        device.holder = label
        token: str | None = None
        try:
            pause = spacing_wait(device.last_end, self.clock(), interval)
            busy_with = device.last_holder if contended or pause > 0 else None
            if pause > 0:
                if self.clock() + pause > deadline:
                    raise DeviceBusy(str(key), f"the spacing after the last command "
                                               f"({interval:g} s)", self.clock() - began)
                await self.sleep(pause)
            turn = Turn(key, label, interval, 0.0, busy_with)
            if self.turns is not None:
                token = uuid.uuid4().hex
                turn.token = token
                turn.claimed_at, held_by = await self._claim(key, label, token, timeout, began,
                                                             deadline, may_act)
                turn.busy_with = turn.busy_with or held_by
        except BaseException:
            if token is not None:
                self._abandon(key, token)
            device.holder = None
            device.lock.release()
            raise
        turn.started = self.clock()
        turn.waited = turn.started - began
        if turn.waited >= LONG_WAIT:
            log.info("device %s: %s waited %.1f s for its turn (busy with %s)", key, label,
                     turn.waited, turn.busy_with)
        elif turn.waited >= 0.001:
            log.debug("device %s: %s waited %.3f s for its turn (busy with %s)", key, label,
                      turn.waited, turn.busy_with)
        return turn

    async def release(self, turn: Turn) -> None:
        """Give the turn back: the command's answer is in (or it was never sent)."""
        device = self._devices[turn.key]
        turn.ended = device.last_end = self.clock()
        try:
            if turn.token is not None and self.turns is not None:
                ended = await self.turns.release(turn.key.text, turn.token, turn.interval)
                if ended is None:
                    log.warning("device %s: the claim of %s had expired before it ended "
                                "(the command took longer than its timeout)", turn.key,
                                turn.label)
                turn.released_at = ended or datetime.now(UTC)
            else:
                turn.released_at = datetime.now(UTC)
        except Exception as exc:  # the claim then expires by itself
            log.warning("device %s: could not release the claim of %s (%s); it expires "
                        "by itself", turn.key, turn.label, exc)
        finally:
            device.last_holder, device.holder = turn.label, None
            device.lock.release()
        for observer in list(self._observers):
            observer(turn)

    async def close(self) -> None:
        """Wait for the releases of claims given up while they were being
        made, then close the claims' connection."""
        await asyncio.gather(*self._abandoned, return_exceptions=True)
        if self.turns is not None:
            await self.turns.close()

    # -- the claim in the database -----------------------------------------------------------

    async def _claim(self, key: DeviceKey, label: str, token: str, timeout: float,
                     began: float, deadline: float,
                     may_act: Callable[[], None]) -> tuple[datetime, str | None]:
        assert self.turns is not None
        holder = f"{self.holder()}: {label}"[:300]
        ttl = claim_ttl(timeout, self.claim_margin)
        tries = 0
        held_by: str | None = None
        while True:
            may_act()
            claimed, state = await self.turns.claim(key.text, holder, token, ttl)
            if claimed is not None:
                return claimed, held_by
            tries += 1
            if state is not None:
                held_by = held_by or state.holder
            remaining = deadline - self.clock()
            if remaining <= 0:
                who = state.holder if state is not None else "another engine"
                raise DeviceBusy(str(key), who, self.clock() - began)
            await self.sleep(retry_delay(tries, state.free_in if state else None, remaining))

    def _abandon(self, key: DeviceKey, token: str) -> None:
        """A claim being made when its command gave up (cancelled, timed out)
        may have been written: release it at once rather than at its expiry."""
        turns = self.turns
        if turns is None:
            return

        async def release() -> None:
            try:
                await turns.release(key.text, token, 0.0)
            except Exception as exc:
                log.warning("device %s: could not release an abandoned claim (%s); it "
                            "expires by itself", key, exc)

        task = asyncio.create_task(release(), name=f"device-release-{key}")
        self._abandoned.add(task)
        task.add_done_callback(self._abandoned.discard)
