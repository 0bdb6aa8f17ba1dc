"""Device gates in processes of their own, for tests/test_device_gate.py:
`python tests/devicekit.py ...` runs one gate on a database (as another
engine would) and reports its turns as JSON lines on stdout.

* `race URL DEVICE N HOLD INTERVAL`: after a line on stdin ("go"), take N
  turns at DEVICE (ADDRESS:PORT), each held HOLD seconds; one line per turn
  {"start", "end"} (CLOCK_MONOTONIC, the same for every process of the
  machine).
* `hold URL DEVICE TIMEOUT MARGIN`: take one turn (claim expiring after
  TIMEOUT + MARGIN seconds), print {"held": true} and wait to be killed.
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
import time
from collections.abc import Callable
from typing import TypeVar

from sqlalchemy.orm import Session

from hostpower.fencing.devicegate import DeviceGate
from hostpower.model.devices import DeviceKey
from hostpower.store.db import Database
from hostpower.store.turnconnection import TurnConnection

T = TypeVar("T")


def parse_device(text: str) -> DeviceKey:
    address, _, port = text.rpartition(":")
    return DeviceKey(address, int(port))


def shared_gate(db: Database, margin: float = 10.0) -> DeviceGate:
    """A gate claiming its turns in `db`, as an engine on a shared database
    does (fencing/service.py `device_gate`)."""
    def holder() -> str:
        return f"racer pid {os.getpid()}"

    if db.engine.dialect.name != "sqlite":
        return DeviceGate(holder=holder, claim_margin=margin,
                          turns=TurnConnection.for_engine(db.engine))

    async def run_db(fn: Callable[[Session], T]) -> T:   # SQLite: a session per statement
        def work() -> T:
            with db.session() as s:
                return fn(s)
        return await asyncio.to_thread(work)
    return DeviceGate(run_db, holder, claim_margin=margin)


def say(**fields: object) -> None:
    sys.stdout.write(json.dumps(fields) + "\n")
    sys.stdout.flush()


async def race(gate: DeviceGate, key: DeviceKey, n: int, hold: float, interval: float) -> None:
    for i in range(n):
        turn = await gate.acquire(key, f"command {i}", 30.0, interval)
        start = time.monotonic()
        await asyncio.sleep(hold)
        end = time.monotonic()
        await gate.release(turn)
        say(start=start, end=end, waited=turn.waited)


async def hold(gate: DeviceGate, key: DeviceKey, timeout: float) -> None:
    await gate.acquire(key, "a command that never ends", timeout, 0.0)
    say(held=True)
    await asyncio.sleep(3600)


def main(argv: list[str]) -> int:
    mode, url, device = argv[:3]
    db = Database(url)
    key = parse_device(device)
    if mode == "race":
        n, held, interval = int(argv[3]), float(argv[4]), float(argv[5])
        gate = shared_gate(db)
        say(ready=True)
        sys.stdin.readline()
        asyncio.run(race(gate, key, n, held, interval))
    else:
        timeout, margin = float(argv[3]), float(argv[4])
        asyncio.run(hold(shared_gate(db, margin), key, timeout))
    db.dispose()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
