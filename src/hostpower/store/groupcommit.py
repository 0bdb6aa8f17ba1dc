"""Group commit: the engine's writes of one moment in one transaction.

When a rack loses power, hundreds of flows journal their steps at once.
Committing each write on its own costs a thread hop, a transaction and (on
PostgreSQL) a flush of the write-ahead log per write. Here one writer thread
takes every write queued while the previous transaction committed and runs
them together in the next one:

* A caller that awaits `run(work)` resumes only once the transaction holding
  its work has committed: a flow's phase is as durable before its external
  action as it was with a transaction of its own.
* Each work is a function of one Connection (Core statements). It must not
  raise for an expected outcome (a lost reservation is a return value): an
  exception rolls the whole batch back, and the writer then runs each work of
  the batch alone, so that one bad write fails only its own caller. A
  database that cannot be reached fails the whole batch instead: a commit
  cut off may have happened, and no write is ever made twice.
* `submit(work)` queues a write nobody waits for (an event, a step's
  outcome). The queue is first in, first out and one thread commits it, so
  such a write is durable no later than any write queued after it: before
  the flow's next journal step. If it fails it is logged and dropped. On
  PostgreSQL a transaction of such writes alone commits without waiting for
  the disk (`synchronous_commit off`): the log is written in order, so the
  next commit that waits makes them durable too.

Errors reach callers as the Database's sessions give them: ConflictError,
StorageUnavailable, ValidationError (store/dberrors.py).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import queue
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

from sqlalchemy import Connection, text
from sqlalchemy.exc import DataError, IntegrityError, OperationalError

from hostpower.store.dberrors import conflict_from, refused_value_from, unavailable_from

log = logging.getLogger("hostpower.store")
T = TypeVar("T")
Work = Callable[[Connection], T]
# Writes taken into one transaction at most: bounds how long one batch holds
# the database's write lock (SQLite) and how much one failure rolls back.
MAX_BATCH = 500
_ASYNC_COMMIT = text("SET LOCAL synchronous_commit TO OFF")
# Seconds the thread keeps its connection between batches (see _transaction).
KEEP_IDLE_CONNECTION = 1.0


@dataclass
class _Job(Generic[T]):
    work: Work[T]
    loop: asyncio.AbstractEventLoop | None = None
    future: asyncio.Future[T] | None = None
    result: Any = None
    error: BaseException | None = None


class GroupCommit:
    """One writer thread for `database` (a store.db.Database), with a
    connection of its own, started at the first write and ended by
    `close()`. Reads that must not wait for the writes' commits get an
    instance of their own (EngineGateway.read)."""

    def __init__(self, database: Any, name: str = "hostpower-writer") -> None:
        self.database = database
        self.name = name
        self._queue: queue.SimpleQueue[_Job[Any] | None] = queue.SimpleQueue()
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()
        self._closed = False
        self._conn: Connection | None = None   # the writer thread's own
        self._postgres = database.engine.dialect.name == "postgresql"
        self._last_used = 0.0
        self.batches = 0   # transactions committed (how much was grouped: tests read it)
        self.writes = 0    # works they held

    async def run(self, work: Work[T]) -> T:
        """`work(connection)` in the next transaction; returns its result once
        that transaction has committed."""
        return await self.future(work)

    def future(self, work: Work[T]) -> asyncio.Future[T]:
        """`work(connection)` in the next transaction; the future (of the
        running event loop) has its result once that transaction committed.
        Futures are resolved in the order their works were queued."""
        loop = asyncio.get_running_loop()
        future: asyncio.Future[T] = loop.create_future()
        self._put(_Job(work, loop, future))
        return future

    def submit(self, work: Work[Any]) -> None:
        """`work(connection)` in the next transaction, nobody waiting for it."""
        self._put(_Job(work))

    def close(self) -> None:
        """Commit what is queued, then stop the thread."""
        with self._lock:
            self._closed = True
            thread = self._thread
        if thread is not None:
            self._queue.put(None)
            thread.join(30)

    def _put(self, job: _Job[Any]) -> None:
        with self._lock:
            if self._closed:
                raise RuntimeError(f"{self.name} is closed")
            if self._thread is None:
                self._thread = threading.Thread(target=self._serve, name=self.name, daemon=True)
                self._thread.start()
        self._queue.put(job)

    # -- the writer thread ---------------------------------------------------------------

    def _serve(self) -> None:
        stop = False
        while not stop:
            first = self._queue.get()
            if first is None:
                break
            batch = [first]
            while len(batch) < MAX_BATCH:
                try:
                    job = self._queue.get_nowait()
                except queue.Empty:
                    break
                if job is None:
                    stop = True
                    break
                batch.append(job)
            self._commit(batch)
        if self._conn is not None:
            self._conn.close()
            self._conn = None

    def _commit(self, batch: list[_Job[Any]]) -> None:
        try:
            self._transaction(batch)
        except OperationalError as exc:
            # The database is unreachable or refused the commit: every work of
            # the batch fails (a flow pauses). Not retried one by one: a commit
            # cut off may have happened, and a write must never be made twice.
            error = self._error(exc)
            for job in batch:
                self._fail(job, error)
        except Exception as exc:  # noqa: BLE001 - one work failed: find whose
            if len(batch) == 1:
                self._fail(batch[0], self._error(exc))
            else:
                for job in batch:
                    try:
                        self._transaction([job])
                    except Exception as alone:  # noqa: BLE001 - it fails its caller
                        self._fail(job, self._error(alone))
        self._settle(batch)

    def _transaction(self, batch: list[_Job[Any]]) -> None:
        # The thread keeps its connection while busy: a checkout per batch
        # (PostgreSQL: a ping and a reset, two more round trips) cost more
        # than the batch. One idle for a while goes back to the pool, and the
        # next batch checks one out, pinged: a connection the database or the
        # network dropped meanwhile is replaced before anything is sent on it.
        now = time.monotonic()
        if self._conn is not None and now - self._last_used > KEEP_IDLE_CONNECTION:
            self._conn.close()
            self._conn = None
        self._last_used = now
        if self._conn is None:
            self._conn = self.database.engine.connect()
        try:
            with self._conn.begin():
                if self._postgres and all(job.future is None for job in batch):
                    # Nobody waits for these writes: they need not wait for
                    # the disk either. PostgreSQL writes its log in order, so
                    # the next commit that does wait flushes them with it.
                    self._conn.execute(_ASYNC_COMMIT)
                results = [job.work(self._conn) for job in batch]
        except OperationalError:
            self._drop_connection()
            raise
        for job, result in zip(batch, results):
            job.result = result
        self.batches += 1
        self.writes += len(batch)

    def _drop_connection(self) -> None:
        """The connection failed: the next batch opens a new one."""
        conn, self._conn = self._conn, None
        if conn is not None:
            with contextlib.suppress(Exception):  # it is being thrown away
                conn.invalidate()
                conn.close()

    def _error(self, exc: Exception) -> BaseException:
        """`exc` as the Database's sessions report it."""
        if isinstance(exc, IntegrityError):
            return conflict_from(exc)
        if isinstance(exc, OperationalError):
            self.database.errors += 1
            return unavailable_from(exc)
        if isinstance(exc, DataError):
            return refused_value_from(exc)
        return exc

    def _fail(self, job: _Job[Any], error: BaseException) -> None:
        job.error = error
        if job.future is None:
            log.warning("a write nobody waited for was not stored: %s", error)

    def _settle(self, batch: list[_Job[Any]]) -> None:
        """Wake the callers: one call into each event loop per batch."""
        by_loop: dict[asyncio.AbstractEventLoop, list[_Job[Any]]] = {}
        for job in batch:
            if job.loop is not None:
                by_loop.setdefault(job.loop, []).append(job)
        for loop, jobs in by_loop.items():
            try:
                loop.call_soon_threadsafe(_wake, jobs)
            except RuntimeError:  # the loop was closed meanwhile: nobody waits any more
                pass


def _wake(jobs: list[_Job[Any]]) -> None:
    for job in jobs:
        future = job.future
        if future is None or future.done():  # its caller was cancelled
            continue
        if job.error is not None:
            future.set_exception(job.error)
        else:
            future.set_result(job.result)
