"""9. What a command's turn at its device costs the engine (fencing/devicegate.py):
the lock alone (one engine: SQLite), and the lock with a claim and its
release in `device_turns` (engines sharing PostgreSQL), uncontended, the way
an engine makes them (a session per statement, off the event loop)."""

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

T = TypeVar("T")
SAMPLES = 400
KEYS = [DeviceKey(f"10.0.{i // 250}.{i % 250}", 161) for i in range(20)]


def _runner(db: Database) -> Callable[[Callable[[Session], T]], object]:
    async def run_db(fn: Callable[[Session], T]) -> T:
        def work() -> T:
            with db.session() as s:
                return fn(s)
        return await asyncio.to_thread(work)
    return run_db


async def _turns(gate: DeviceGate, samples: int) -> list[float]:
    times = []
    for i in range(samples + 20):
        started = time.perf_counter()
        turn = await gate.acquire(KEYS[i % len(KEYS)], "status of h via p", 60.0, 0.0)
        await gate.release(turn)
        if i >= 20:  # warm-up: the pool's connections, the rows
            times.append(time.perf_counter() - started)
    return times


def run(samples: int = SAMPLES) -> dict[str, object]:
    local = summary(asyncio.run(_turns(DeviceGate(), samples)))
    with fresh_database() as url:
        db = Database(url)
        db.upgrade()
        try:
            shared = summary(asyncio.run(_turns(DeviceGate(_runner(db)), samples)))  # type: ignore[arg-type]
        finally:
            db.dispose()
    per_restart = 5 * shared["median"]   # ms
    return {
        "name": "A command's turn at its device",
        "goal": "a claim and its release in the database under 2 ms (PostgreSQL)",
        "met": shared["median"] < 2,
        "lines": [
            f"one engine (SQLite: the lock alone): {fmt(local)}",
            f"engines sharing PostgreSQL (lock, claim, release: two statements): {fmt(shared)}",
            f"a restart (about 5 commands) pays about {per_restart:.1f} ms on PostgreSQL, "
            f"nothing measurable on SQLite",
        ],
    }


if __name__ == "__main__":
    for line in run()["lines"]:  # type: ignore[union-attr]
        print(line)
