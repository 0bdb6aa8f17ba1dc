"""The engine's monitor alone, measured in its own process.

    python -m bench.monitor_probe --home H --db URL --seconds S
prints one JSON line: CPU seconds used, rounds, their durations."""

from __future__ import annotations

import argparse
import asyncio
import json
import resource
import time
from pathlib import Path

from hostpower.context import EngineContext
from hostpower.monitor import Monitor
from hostpower.runtime import EngineRuntime
from hostpower.settings import Settings


def cpu() -> float:
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


async def main(home: Path, db: str, seconds: float, interval: float) -> dict[str, object]:
    ctx = EngineContext.open(Settings(home, db))
    runtime = EngineRuntime(ctx, monitor=False)
    await runtime.start()
    assert runtime.service and runtime.client
    monitor = Monitor(runtime.service, runtime.client)
    warm = time.monotonic()
    for _ in range(2):  # connections and TLS sessions are set up once
        await monitor.tick()
    warmup = time.monotonic() - warm
    rounds, started_cpu, started = [], cpu(), time.monotonic()
    while time.monotonic() - started < seconds:
        t = time.monotonic()
        await monitor.tick()
        took = time.monotonic() - t
        rounds.append(took)
        await asyncio.sleep(max(0.0, interval - took))
    used, wall = cpu() - started_cpu, time.monotonic() - started
    statuses = {}
    for h in (await runtime.service.gateway.state())[0].hosts:
        statuses[h.status.value] = statuses.get(h.status.value, 0) + 1
    await runtime.stop()
    ctx.close()
    return {"cpu": used, "wall": wall, "rounds": rounds, "warmup": warmup, "statuses": statuses}


if __name__ == "__main__":
    p = argparse.ArgumentParser()
    p.add_argument("--home", type=Path, required=True)
    p.add_argument("--db", required=True)
    p.add_argument("--seconds", type=float, default=15)
    p.add_argument("--interval", type=float, default=3)
    a = p.parse_args()
    print(json.dumps(asyncio.run(main(a.home, a.db, a.seconds, a.interval))))
