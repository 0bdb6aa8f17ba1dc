"""9. What a command's turn at its device costs the engine (fencing/devicegate.py):
the lock alone (one engine: SQLite), and the lock with a claim and its
release in `device_turns` (engines sharing PostgreSQL), uncontended, the way
an engine makes them (its own connection and worker thread) and the way it
made them before (a pooled session per statement, off the event loop)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import TypeVar

from sqlalchemy.orm import Session

from bench.pgdb import fresh_database
from bench.stats import fmt, summary
from hostpower.fencing.devicegate import DeviceGate
from hostpower.model.devices import DeviceKey
from hostpower.store.db import Database
from hostpower.store.turnconnection import TurnConnection

T = TypeVar("T")
ANALYSIS = (
    "Where the time goes. The engine makes its claims and releases on a connection of "
    "their own (store/turnconnection.py): one psycopg connection in autocommit, statements "
    "prepared, used by one worker thread of its own, so a turn is two statements and two "
    "thread hops, never a pool checkout nor a wait behind the journal's work in the shared "
    "thread pool; a refused claim returns the device's row in the same statement. Both "
    "claim and release are committed with `synchronous_commit off`: a claim is visible to "
    "every other engine the moment it commits, only its disk flush is not waited for "
    "(a PostgreSQL server crash within about 0.6 s of a claim could forget it: the device "
    "is then free early, a courtesy rule towards the device broken once; fencing's own "
    "journal and tokens stay synchronous). Before, a turn was claimed through a pooled ORM "
    "session per statement (the line 'before'): a checkout with its liveness ping, BEGIN "
    "and COMMIT round trips around each statement, a hop through the shared thread pool, "
    "and the claim waiting for the write-ahead log flush. Most of the saving is the "
    "connection: measured side by side on a quiet disk, the same connection with both "
    "statements durable costs 1.2 ms against 0.7 ms, the session path with its claim "
    "asynchronous as much as with it durable (2.8 to 3.0 ms); the flush matters most when "
    "other work flushes the same log (1 to 20 ms a flush seen on this shared machine). What "
    "is left is the floor: two round trips through the worker thread. A flow whose "
    "consecutive commands go to one device could keep its claim from one command to the "
    "next (one claim and one release per flow); not done: at well under a millisecond a "
    "turn, it would save less than the fairness it costs the hosts sharing a PDU."
)
SAMPLES = 400
RESTART = 5   # commands of a restart: status, off, status, on, status
KEYS = [DeviceKey(f"10.0.{i // 250}.{i % 250}", 161) for i in range(20)]


def _runner(db: Database) -> Callable[[Callable[[Session], T]], object]:
    async def run_db(fn: Callable[[Session], T]) -> T:
        def work() -> T:
            with db.session() as s:
                return fn(s)
        return await asyncio.to_thread(work)
    return run_db


async def _turn(gate: DeviceGate, key: DeviceKey) -> None:
    await gate.release(await gate.acquire(key, "status of h via p", 60.0, 0.0))


async def _samples(db: Database, samples: int) -> dict[str, list[float]]:
    """The variants interleaved, sample by sample, so they share the machine's
    conditions: a turn on one engine; a turn with its claim and release the
    way the engine makes them, and the way it made them before (a pooled
    session per statement, the claim flushed to disk); two empty statements
    on the engine's turn connection (the floor); a restart's turns."""
    run_db = _runner(db)
    connection = TurnConnection.for_engine(db.engine)
    local, before = DeviceGate(), DeviceGate(run_db)  # type: ignore[arg-type]
    shared = DeviceGate(turns=connection)
    times: dict[str, list[float]] = {k: [] for k in ("local", "shared", "before", "floor",
                                                     "restart")}
    for i in range(samples + 20):
        key = KEYS[i % len(KEYS)]
        t0 = time.perf_counter()
        await _turn(local, key)
        t1 = time.perf_counter()
        await _turn(shared, key)
        t2 = time.perf_counter()
        await _turn(before, key)
        t3 = time.perf_counter()
        for _ in range(2):
            await connection._run("SELECT 1", {})
        t4 = time.perf_counter()
        for _ in range(RESTART):
            await _turn(shared, key)
        t5 = time.perf_counter()
        if i >= 20:  # warm-up: the connections, the rows
            for name, value in zip(times, (t1 - t0, t2 - t1, t3 - t2, t4 - t3, t5 - t4),
                                   strict=True):
                times[name].append(value)
    await shared.close()
    return times


def run(samples: int = SAMPLES) -> dict[str, object]:
    with fresh_database() as url:
        db = Database(url)
        db.upgrade()
        try:
            times = asyncio.run(_samples(db, samples))
        finally:
            db.dispose()
    local, shared, before, floor, restart = (
        summary(times[k]) for k in ("local", "shared", "before", "floor", "restart"))
    return {
        "name": "A command's turn at its device",
        "goal": "a claim and its release in the database under 2 ms (PostgreSQL)",
        "met": shared["median"] < 2,
        "lines": [
            f"one engine (SQLite: the lock alone): {fmt(local)}",
            ("engines sharing PostgreSQL (lock, claim, release on the engine's turn "
             f"connection, neither waiting for the disk): {fmt(shared)}"),
            ("before, the same through a pooled session per statement, the claim flushed "
             f"to disk: {fmt(before)}"),
            f"floor, two empty statements on the turn connection: {fmt(floor)}",
            (f"a restart's {RESTART} turns on PostgreSQL, one after the other: {fmt(restart)} "
             f"(before: about {RESTART * before['median']:.1f} ms); nothing measurable on "
             "SQLite"),
        ],
        "analysis": ANALYSIS,
    }


if __name__ == "__main__":
    for line in run()["lines"]:  # type: ignore[union-attr]
        print(line)
