"""The engine's deliverer: events from the database to the notifiers.

Every engine runs one (runtime.py). Once a `poll` it takes or renews, for
each enabled notifier, the notifier's lease in the database
(store/notifycursor.py); a notifier another engine holds is left alone, one
whose holder died is taken once its lease ran out, and one released by a
clean stop at once. For each notifier it holds it runs a worker task of its
own, so a slow or dead receiver delays only its own notifier, never a flow,
the monitor or another notifier: flows only write events, they never wait
for a delivery.

A worker reads the events after the notifier's position, passes those the
notifier does not want, and delivers the others one at a time in order:
up to `NotificationAttempts` attempts with a doubling wait between them,
then the event is given up (dropped) and the notifier is failing, which one
WARNING event `notifier.failing` says (the notifier never delivers its own
failure; the others do). While failing, each event gets a single attempt,
so an hour's outage does not become an hour's backlog; the first success
ends it (INFO `notifier.recovered`).

Once: the position moves after each delivery, in a statement that states
the holder's token. Before each attempt the worker checks that its lease
is certain (renewed less than a lease minus a quarter ago, on its own
monotonic clock, as for the engine's lease in membership.py), so no two
engines deliver for one notifier at once. An engine that dies between a
delivery and the move of the position leaves that one event to be
delivered again by the next holder: at least once across a crash, never
twice otherwise. Receivers may drop a repeat by its event id
(`X-Hostpower-Event`).
"""

from __future__ import annotations

import asyncio
import logging
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TypeVar

from sqlalchemy.orm import Session

from hostpower.config import Config
from hostpower.model.events import Event
from hostpower.model.lease import LeaseTerms
from hostpower.model.notification import RetryPolicy
from hostpower.model.notifiers import Notifier
from hostpower.model.secret import Secret
from hostpower.notify.errors import DeliveryError
from hostpower.notify.send import send_once
from hostpower.store.configstore import ConfigStore
from hostpower.store.crypto import SecretBox
from hostpower.store.db import Database
from hostpower.store.notifiers import Notifiers
from hostpower.store.notifycursor import DeliveryCursor, Position, events_after

log = logging.getLogger("hostpower.notify")
T = TypeVar("T")
BATCH = 200   # events read at once by a worker


@dataclass
class Held:
    token: int
    act_until: float   # monotonic: the lease is certain until then


@dataclass(frozen=True)
class Timing:
    policy: RetryPolicy
    timeout: float
    lease: LeaseTerms

    @classmethod
    def of(cls, config: Config) -> "Timing":
        return cls(RetryPolicy(config["NotificationAttempts"],
                               config["NotificationRetryDelayInMs"] / 1000,
                               config["NotificationRetryDelayMaxInSec"]),
                   float(config["NotificationTimeoutInSec"]),
                   LeaseTerms(config["EngineLeaseInSec"]))


class LostNotifier(Exception):
    """The notifier's lease is no longer this deliverer's (or not certain)."""


class Deliverer:
    def __init__(self, db: Database, box: SecretBox, engine: str, poll: float = 1.0,
                 ready: Callable[[], bool] = lambda: True,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.db = db
        self.box = box
        self.engine = engine
        self.instance = secrets.token_hex(8)
        self.poll = poll
        self.ready = ready
        self.clock = clock
        self._held: dict[int, Held] = {}
        self._workers: dict[int, asyncio.Task[None]] = {}
        self._task: asyncio.Task[None] | None = None
        self._timing: Timing | None = None
        self._complained = False
        self._last_error: dict[int, str] = {}

    # -- running -----------------------------------------------------------------------------

    def start(self) -> None:
        self._task = asyncio.create_task(self._loop(), name=f"notify-{self.engine}")

    async def stop(self) -> None:
        """Stop every worker and release the notifiers: another engine takes
        them at its next round."""
        tasks = [t for t in (self._task, *self._workers.values()) if t is not None]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        self._workers.clear()
        held, self._held = list(self._held), {}
        try:
            await self._db(lambda s: [DeliveryCursor(s, n).release(self.instance) for n in held])
        except Exception as exc:  # the database may be what stopped us; leases run out
            log.warning("could not release the notifiers at stop: %s", exc)

    @property
    def held(self) -> frozenset[int]:
        return frozenset(self._held)

    async def _loop(self) -> None:
        while True:
            try:
                await self.round()
                self._complained = False
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                if not self._complained:  # one line per outage, not one per second
                    log.warning("notifications: %s", exc)
                    self._complained = True
            await asyncio.sleep(self.poll)

    async def _db(self, work: Callable[[Session], T]) -> T:
        def run() -> T:
            with self.db.session() as s:
                return work(s)
        return await asyncio.to_thread(run)

    # -- claims ------------------------------------------------------------------------------

    async def round(self) -> None:
        """Take or renew the lease of every enabled notifier that is not
        another engine's, start a worker for each one held, stop the rest."""
        config, notifiers = await self._db(
            lambda s: (ConfigStore(s).load(), Notifiers(s, self.box).list()))
        self._timing = timing = Timing.of(config)
        wanted = {n.id for n in notifiers if n.enabled and n.id is not None}
        for notifier_id in list(self._held):
            if notifier_id not in wanted:
                await self._let_go(notifier_id, release=True)
        if not self.ready():
            for notifier_id in list(self._held):
                await self._let_go(notifier_id, release=False)
            return
        for notifier_id in sorted(wanted):
            sent = self.clock()
            token = await self._db(lambda s: DeliveryCursor(s, notifier_id).claim(
                self.engine, self.instance, timing.lease.seconds))
            if token is None:
                await self._let_go(notifier_id, release=False)
                continue
            before = self._held.get(notifier_id)
            if before is not None and before.token != token:
                await self._let_go(notifier_id, release=False)  # lost and taken again
            self._held[notifier_id] = Held(token, timing.lease.act_until(sent))
            worker = self._workers.get(notifier_id)
            if worker is None or worker.done():
                self._workers[notifier_id] = asyncio.create_task(
                    self._work(notifier_id, token), name=f"notify-{self.engine}-{notifier_id}")

    async def _let_go(self, notifier_id: int, release: bool) -> None:
        self._held.pop(notifier_id, None)
        worker = self._workers.pop(notifier_id, None)
        if worker is not None:
            worker.cancel()
            await asyncio.gather(worker, return_exceptions=True)
        if release:
            await self._db(lambda s: DeliveryCursor(s, notifier_id).release(self.instance))

    def _check(self, notifier_id: int, token: int) -> None:
        held = self._held.get(notifier_id)
        if held is None or held.token != token or self.clock() >= held.act_until:
            raise LostNotifier(notifier_id)

    # -- delivering --------------------------------------------------------------------------

    async def _work(self, notifier_id: int, token: int) -> None:
        try:
            while True:
                self._check(notifier_id, token)
                delivered = await self._batch(notifier_id, token)
                self._last_error.pop(notifier_id, None)  # a later error is worth a line again
                if not delivered:
                    await asyncio.sleep(self.poll)
        except LostNotifier:
            return  # the round takes it again, or another engine has it
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            # The round starts the worker again next poll: say it once, not every second.
            if self._last_error.get(notifier_id) != str(exc):
                log.warning("notifier %d: %s", notifier_id, exc)
                self._last_error[notifier_id] = str(exc)
            await asyncio.sleep(self.poll)

    async def _batch(self, notifier_id: int, token: int) -> bool:
        """Deliver what is pending; False when there was nothing."""
        def read(s: Session) -> tuple[Notifier, Secret | None, list[tuple[Position, Event]],
                                      bool]:
            store = Notifiers(s, self.box)
            position = DeliveryCursor(s, notifier_id).position()
            pending = events_after(s, position, BATCH) if position is not None else []
            return (store.get(notifier_id), store.secret(notifier_id), pending,
                    store.state(notifier_id).failing)

        notifier, secret, pending, failing = await self._db(read)
        if not pending:
            return False
        passed: Position | None = None
        for position, event in pending:
            if not notifier.wants(event):
                passed = position
                continue
            if passed is not None:
                await self._move(notifier_id, token, lambda c: c.passed(token, passed))
                passed = None
            failing = await self._deliver(notifier, secret, token, position, event, failing)
        if passed is not None:
            await self._move(notifier_id, token, lambda c: c.passed(token, passed))
        return True

    async def _move(self, notifier_id: int, token: int,
                    change: Callable[[DeliveryCursor], bool]) -> None:
        if not await self._db(lambda s: change(DeliveryCursor(s, notifier_id))):
            raise LostNotifier(notifier_id)

    async def _deliver(self, notifier: Notifier, secret: Secret | None, token: int,
                       position: Position, event: Event, failing: bool) -> bool:
        """Deliver one event with retries; whether the notifier is failing after."""
        assert notifier.id is not None and event.id is not None
        nid, timing = notifier.id, self._timing
        assert timing is not None
        attempts = 1 if failing else timing.policy.attempts
        for attempt in range(1, attempts + 1):
            self._check(nid, token)
            try:
                await send_once(notifier, secret, event, timing.timeout)
            except DeliveryError as exc:
                error = str(exc)
                log.info("notifier %s, event %d, attempt %d/%d: %s", notifier.name, event.id,
                         attempt, attempts, error)
                await self._move(nid, token, lambda c: c.attempt_failed(token, error))
                if not exc.retry or attempt == attempts:
                    await self._move(nid, token, lambda c: c.gave_up(
                        token, position, event.id, notifier.name, self.engine, error, attempt))
                    if not failing:
                        log.warning("notifier %s is failing: event %d given up after %d "
                                    "attempt(s): %s", notifier.name, event.id, attempt, error)
                    return True
                await asyncio.sleep(timing.policy.delay(attempt))
            else:
                await self._move(nid, token, lambda c: c.delivered(
                    token, position, event.id, notifier.name, self.engine))
                if failing:
                    log.warning("notifier %s delivers again", notifier.name)
                return False
        return failing  # not reached: the last attempt returns
