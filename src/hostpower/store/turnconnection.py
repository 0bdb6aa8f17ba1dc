"""The device turns of an engine sharing PostgreSQL, on a connection of
their own: the same rows and rules as store/deviceturns.py (`free_at` on
the database's clock, one conditional statement per change), made the
cheapest way the engine can.

* One long-lived psycopg connection in autocommit, its statements prepared
  on first use, used by one worker thread of its own. A turn costs two
  statements (claim, release) and two thread hops, never queued behind the
  engine's journal work in the shared thread pool, never a pool checkout.
  One thread keeps the statements in the order they were asked: a release
  asked before the next claim of this engine always runs first.
* A refused claim returns the device's row in the same statement (who holds
  it, when it is free): a waiter makes one statement per try, not two.
* The connection commits with `synchronous_commit off`: a claim is visible
  to every other engine the moment it commits (what keeps two engines from
  commanding one device at once); the disk flush follows within
  3 × wal_writer_delay (0.6 s by default) instead of being waited for. Only
  a crash of the PostgreSQL server itself inside that window can forget a
  claim, and then the device is merely free early: a courtesy rule towards
  the device (one command at a time) may be broken once, never a fencing
  rule — the fencing journal's phases and tokens are committed through the
  engine's own sessions, synchronously (store/journal.py).

A broken connection is dropped and made again at the next statement; the
statement that broke raises StorageUnavailable (the claim it may have left
expires by itself, or is released by its token). Statements queued while a
connection attempt failed fail with it instead of each trying again: the
statements queued behind one worker thread must not each wait for a connect
timeout while the database is away; a statement asked for after that tries
again. A connection idle for more than PING_AFTER_IDLE is pinged before a
statement is sent on it, and made again if the ping fails.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from typing import Any, TypeVar

import psycopg
from sqlalchemy import Engine

from hostpower.model.errors import StorageUnavailable
from hostpower.store.db import POSTGRES_CONNECT_ARGS
from hostpower.store.deviceturns import TurnState

T = TypeVar("T")
PING_AFTER_IDLE = 1.0   # seconds: a connection idle longer is pinged before use

# The claim, and the device's row as it was when the statement began (the
# main query does not see its own CTE's insert): when the claim is refused,
# who holds the device and for how long. Same condition as DeviceTurns.claim.
CLAIM = """
WITH claimed AS (
    INSERT INTO device_turns AS t (device, holder, token, claimed_at, ended_at, free_at)
    VALUES (%(device)s, %(holder)s, %(token)s, now(), NULL,
            now() + %(ttl)s * interval '1 second')
    ON CONFLICT (device) DO UPDATE
        SET holder = excluded.holder, token = excluded.token,
            claimed_at = excluded.claimed_at, ended_at = NULL, free_at = excluded.free_at
        WHERE t.free_at <= now()
    RETURNING claimed_at
)
SELECT (SELECT claimed_at FROM claimed), r.holder, r.token IS NOT NULL,
       extract(epoch FROM r.free_at - now())::float8
FROM (SELECT 1) AS one LEFT JOIN device_turns AS r ON r.device = %(device)s
"""
RELEASE = """
UPDATE device_turns
SET token = NULL, ended_at = now(), free_at = now() + %(interval)s * interval '1 second'
WHERE device = %(device)s AND token = %(token)s
RETURNING ended_at
"""


def _first_line(exc: Exception) -> str:
    lines = str(exc).strip().splitlines()
    return lines[0] if lines else type(exc).__name__


def _utc(value: datetime) -> datetime:
    return value if value.tzinfo else value.replace(tzinfo=UTC)


class TurnConnection:
    """The claims and releases of one engine's device gate (fencing/devicegate.py)."""

    def __init__(self, connect: Callable[[], psycopg.Connection[Any]]) -> None:
        self._connect = connect
        self._conn: psycopg.Connection[Any] | None = None
        self._worker: ThreadPoolExecutor | None = None   # made at the first statement
        self._guard = threading.Lock()   # close() from another thread than the worker's
        self._failed: tuple[float, str] | None = None   # monotonic, why: the last failed connect
        self._last_used = 0.0

    @classmethod
    def for_engine(cls, engine: Engine) -> TurnConnection:
        """A connection to the database of `engine` (a PostgreSQL one), with
        its connection options (timeouts, keepalives: store/db.py)."""
        cargs, cparams = engine.dialect.create_connect_args(engine.url)
        options = {**POSTGRES_CONNECT_ARGS, **cparams}

        def connect() -> psycopg.Connection[Any]:
            return psycopg.connect(*cargs, autocommit=True, prepare_threshold=0, **options)
        return cls(connect)

    async def claim(self, device: str, holder: str, token: str,
                    ttl: float) -> tuple[datetime | None, TurnState | None]:
        """Take the device's turn for `ttl` seconds if it is free: the
        claim's start on the database's clock (None: refused) and the
        device's row before the statement (None: no row yet)."""
        row = await self._run(CLAIM, {"device": device, "holder": holder, "token": token,
                                      "ttl": ttl})
        assert row is not None   # the LEFT JOIN on one row always gives one
        claimed, who, held, free_in = row
        state = TurnState(who, held, free_in) if who is not None else None
        return (_utc(claimed) if claimed is not None else None), state

    async def release(self, device: str, token: str, interval: float) -> datetime | None:
        """End the turn claimed with `token`; None when the claim is no longer this one."""
        row = await self._run(RELEASE, {"device": device, "token": token,
                                        "interval": interval})
        return _utc(row[0]) if row is not None else None

    async def close(self) -> None:
        """Close the connection and end the worker thread (at engine stop);
        a later statement makes them again."""
        worker, self._worker = self._worker, None
        if worker is not None:
            await asyncio.get_running_loop().run_in_executor(worker, self._drop)
            worker.shutdown(wait=False)

    async def _run(self, sql: str, params: dict[str, object]) -> tuple[Any, ...] | None:
        if self._worker is None:
            self._worker = ThreadPoolExecutor(1, thread_name_prefix="device-turns")
        return await asyncio.get_running_loop().run_in_executor(
            self._worker, self._execute, sql, params, time.monotonic())

    def _execute(self, sql: str, params: dict[str, object],
                 asked: float) -> tuple[Any, ...] | None:
        try:
            conn = self._usable(asked)
            result = conn.execute(sql, params).fetchone()  # type: ignore[arg-type]
            self._last_used = time.monotonic()
            return result
        except (psycopg.OperationalError, psycopg.InterfaceError) as exc:
            self._drop()
            raise StorageUnavailable(_first_line(exc)) from exc

    def _usable(self, asked: float) -> psycopg.Connection[Any]:
        """The connection, made again when there is none. One idle for a
        while is pinged first: the database or the network may have dropped
        it meanwhile (an outage the engine waited out), and a statement must
        not fail on it when a new connection would do."""
        conn = self._conn
        if conn is not None and not conn.closed and \
                time.monotonic() - self._last_used > PING_AFTER_IDLE:
            try:
                conn.execute("SELECT 1")
            except (psycopg.OperationalError, psycopg.InterfaceError):
                self._drop()
                conn = None
        if conn is None or conn.closed:
            conn = self._reconnect(asked)
        return conn

    def _reconnect(self, asked: float) -> psycopg.Connection[Any]:
        # Statements asked for before the last attempt failed fail with it (a
        # queue of them must not each wait for a connect timeout); one asked
        # for since tries again (the database may be back).
        if self._failed is not None and asked <= self._failed[0]:
            raise StorageUnavailable(self._failed[1])
        try:
            conn = self._connect()
            conn.execute("SET synchronous_commit TO off")
        except (psycopg.OperationalError, psycopg.InterfaceError) as exc:
            self._failed = (time.monotonic(), _first_line(exc))
            raise StorageUnavailable(self._failed[1]) from exc
        self._failed, self._conn = None, conn
        return conn

    def _drop(self) -> None:
        with self._guard:
            conn, self._conn = self._conn, None
        if conn is not None:
            try:
                conn.close()
            except psycopg.Error:
                pass
