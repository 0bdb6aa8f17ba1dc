"""This engine's membership among the engines sharing its database.

The engine joins at start (`Membership.join`, before it listens), renews its
lease every third of `EngineLeaseInSec` while it runs (`start`), and leaves
when it stops cleanly (`stop`). Lease times are the database's (see
store/engines.py): an engine's own clock only measures how long ago it sent
its last successful renewal, so clock skew between engine machines does not
matter, only the rate of each clock.

`may_act()` is what the rest of the engine checks before it starts an
external action: false once the last successful renewal is older than the
lease less its margin (model/lease.py), i.e. before peers can see the lease
expired. /api/health answers 503 "not ready" meanwhile.

SQLite serves one engine: `join` takes the database's file lock
(store/enginelock.py) and refuses to start when another engine holds it, or
when another engine still renews a lease on the database.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass

from hostpower.model.errors import HostpowerError, StorageUnavailable
from hostpower.model.lease import EngineMember, EngineState, LeaseTerms
from hostpower.store.configstore import ConfigStore
from hostpower.store.db import Database, sqlite_file
from hostpower.store.enginelock import EngineLock
from hostpower.store.engines import Engines

log = logging.getLogger("hostpower.membership")

POLL = 0.2  # seconds between looks at a peer's lease while watching it
POSTGRES_HINT = ("SQLite serves one engine; to run several engines, share a PostgreSQL "
                 "database (HOSTPOWER_DB_URL=postgresql+psycopg://USER@HOST/DB)")


class EngineRefused(HostpowerError):
    """This engine may not join: another engine holds the SQLite database, or
    a live engine has this engine's name."""


@dataclass
class Identity:
    name: str
    address: str


class Membership:
    def __init__(self, db: Database, me: Identity, generation: int, terms: LeaseTerms,
                 sent_at: float, lock: EngineLock | None = None,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.db = db
        self.me = me
        self.generation = generation
        self.terms = terms
        self._lock = lock
        self._clock = clock
        self._act_until = terms.act_until(sent_at)
        self._failure = ""  # why the last renewal failed; "" after a success
        self._reported = True  # whether the last renewal logged succeeded
        self._task: asyncio.Task[None] | None = None

    # -- joining ----------------------------------------------------------------------------

    @classmethod
    def join(cls, db: Database, me: Identity, clock: Callable[[], float] = time.monotonic,
             sleep: Callable[[float], None] = time.sleep) -> "Membership":
        """Register this engine with a fresh lease. EngineRefused when another
        engine holds the SQLite database or, on any database, this name;
        StorageUnavailable when the database cannot be written."""
        db_file = sqlite_file(db.url)
        single = db.url.startswith("sqlite")
        lock = None
        if db_file is not None:
            lock = EngineLock.try_acquire(db_file)
            if lock is None:
                holder = EngineLock.holder(db_file)
                raise EngineRefused(
                    f"another engine{f' (process {holder})' if holder else ''} already runs "
                    f"on the SQLite database {db_file}. {POSTGRES_HINT}")
        try:
            with db.session() as s:
                terms = LeaseTerms(ConfigStore(s).load()["EngineLeaseInSec"])
                members = Engines(s).list()
            blockers = [m for m in members if m.state == EngineState.ALIVE
                        and (single or m.name == me.name)]
            cls._wait_out(db, blockers, terms, me, single, clock, sleep)
            sent_at = clock()
            with db.session() as s:
                generation = Engines(s).claim(me.name, me.address, terms.seconds)
            if generation is None:
                raise EngineRefused(f"engine name {me.name!r} was taken by another engine "
                                    f"while this one started; give this one another "
                                    f"--engine-name")
        except BaseException:
            if lock is not None:
                lock.release()
            raise
        log.info("engine %s (%s) joined as generation %d, lease %g s", me.name, me.address,
                 generation, terms.seconds)
        return cls(db, me, generation, terms, sent_at, lock, clock)

    @staticmethod
    def _wait_out(db: Database, blockers: list[EngineMember], terms: LeaseTerms, me: Identity,
                  single: bool, clock: Callable[[], float],
                  sleep: Callable[[float], None]) -> None:
        """Watch the unexpired leases in the way for a renewal interval and a
        half: one that is renewed belongs to a live engine (refused); one that
        is not was left by an engine that died (its lease is ended, so a
        crash never blocks a restart for a whole lease)."""
        if not blockers:
            return
        deadline = clock() + terms.watch_for()
        while True:
            with db.session() as s:
                engines = Engines(s)
                for seen in blockers:
                    now = engines.get(seen.name)
                    if (now is not None and now.generation == seen.generation
                            and now.renewed_at != seen.renewed_at
                            and now.state == EngineState.ALIVE):
                        raise _refusal(now, me, single)
            if clock() >= deadline:
                break
            sleep(POLL)
        with db.session() as s:
            for seen in blockers:
                if Engines(s).expire(seen):
                    log.warning("engine %s (generation %d) stopped renewing its lease without "
                                "leaving: its lease is ended", seen.name, seen.generation)

    # -- while running ------------------------------------------------------------------------

    def may_act(self) -> bool:
        """Whether this engine may start an external action now: its lease is
        certainly valid for at least the margin."""
        return self._clock() < self._act_until

    def why_not(self) -> str:
        """Why the engine may not act (empty when it may)."""
        if self.may_act():
            return ""
        age = self._clock() - (self._act_until - self.terms.seconds + self.terms.margin)
        cause = f": {self._failure}" if self._failure else ""
        return f"the engine lease was last renewed {age:.1f} s ago{cause}"

    def renew_once(self) -> bool:
        """One renewal (blocking: run it off the event loop). After an expiry
        the engine claims its name again as a new generation."""
        sent_at = self._clock()
        try:
            with self.db.session() as s:
                terms = LeaseTerms(ConfigStore(s).load()["EngineLeaseInSec"])
                engines = Engines(s)
                renewed = engines.renew(self.me.name, self.generation, terms.seconds)
                generation = (self.generation if renewed else
                              engines.claim(self.me.name, self.me.address, terms.seconds))
        except StorageUnavailable as exc:
            self._failure = exc.cause
            self._report()
            return False
        if generation is None:
            self._failure = f"engine name {self.me.name!r} is held by another live engine"
            self._report()
            return False
        if generation != self.generation:
            log.warning("engine %s: its lease had expired; joined again as generation %d "
                        "(was %d)", self.me.name, generation, self.generation)
            self.generation = generation
        self.terms = terms
        self._act_until = terms.act_until(sent_at)
        self._failure = ""
        self._report()
        return True

    def _report(self) -> None:
        """Log each change of readiness once."""
        renewing = not self._failure
        if renewing == self._reported:
            return
        self._reported = renewing
        if renewing:
            log.warning("engine %s: lease renewed again", self.me.name)
        else:
            log.error("engine %s cannot renew its lease (%s): it starts no external action "
                      "%s", self.me.name, self._failure,
                      f"from {max(0.0, self._act_until - self._clock()):.1f} s on unless a "
                      f"renewal succeeds" if self.may_act() else "until it can")

    async def _run(self) -> None:
        while True:
            ok = await asyncio.to_thread(self.renew_once)
            # After a failure try again sooner: the margin is running out.
            await asyncio.sleep(self.terms.renew_every if ok else min(self.terms.renew_every, 1.0))

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="engine-lease")

    async def stop(self) -> None:
        """Stop renewing and leave: the engine is shown stopped at once
        (if the database cannot be reached, its lease expires instead)."""
        if self._task is not None:
            self._task.cancel()
            try:
                await self._task
            except asyncio.CancelledError:
                pass
            self._task = None
        await asyncio.to_thread(self.leave)

    def leave(self) -> None:
        """Record the stop (blocking) and let go of the SQLite lock."""
        self._act_until = float("-inf")
        try:
            with self.db.session() as s:
                Engines(s).leave(self.me.name, self.generation)
            log.info("engine %s (generation %d) left", self.me.name, self.generation)
        except StorageUnavailable as exc:
            log.warning("engine %s could not record that it stopped (%s): its lease will "
                        "expire", self.me.name, exc.cause)
        finally:
            if self._lock is not None:
                self._lock.release()
                self._lock = None


def _refusal(holder: EngineMember, me: Identity, single: bool) -> EngineRefused:
    if single:
        return EngineRefused(f"engine {holder.name} ({holder.address}) is running on this "
                             f"SQLite database: it renews its lease. {POSTGRES_HINT}")
    return EngineRefused(f"engine name {me.name!r} is in use by a live engine at "
                         f"{holder.address}; give this one another --engine-name")
