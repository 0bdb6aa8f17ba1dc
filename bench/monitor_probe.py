"""The engine's monitor alone, measured in its own process.

    python -m bench.monitor_probe --home H --db URL --seconds S
prints one JSON line: CPU seconds used, rounds, their durations. The probe
drives `Monitor.tick` itself, one full round per interval (benchmark 4).

    python -m bench.monitor_probe --home H --db URL --seconds S --engine-name NAME --engines K
runs one engine among several on a shared (PostgreSQL) database, as
`hostpower serve` runs it minus the HTTP API: it joins the membership under
NAME with a real lease (renewed by `Membership`) and talks on stdin/stdout:

    probe: "joined"            bench: "go"       (every engine has joined by then)
    probe starts the real `Monitor` once K engines are alive (its own loop: full
    rounds every HostHeartbeatIntervalInSec, probes of connecting hosts in
    between, answers to peers' second-opinion probes, adoption of orphaned
    flows), lets it run two full rounds (connections and TLS sessions are set
    up once)
    probe: "warm"              bench: "measure"
    probe measures for S seconds, prints one JSON line (with the hosts it owns
    and the warnings and errors logged meanwhile)
    bench closes stdin         probe stops its monitor and leaves

so that engines measured together are measured over the same span and leave
together, none taking over another's share while that one is measured.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import resource
import sys
import time
from pathlib import Path

from bench.childproc import parent_line, wait_for_engines
from hostpower import monitor as monitor_module
from hostpower.context import EngineContext
from hostpower.membership import Identity, Membership
from hostpower.model.events import Event
from hostpower.monitor import Monitor
from hostpower.runtime import EngineRuntime
from hostpower.settings import Settings

START_WITHIN = 120.0  # seconds for every engine to be alive once told to go


class Tally(logging.Handler):
    """Counts the warnings and errors the engine logs while it is measured."""

    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.counting = False
        self.counts: dict[str, int] = {}
        self.first: dict[str, str] = {}

    def emit(self, record: logging.LogRecord) -> None:
        if not self.counting:
            return
        key = f"{record.levelname} {record.name}"
        self.counts[key] = self.counts.get(key, 0) + 1
        self.first.setdefault(key, record.getMessage()[:300] + (
            f" ({record.exc_info[0].__name__}: {record.exc_info[1]})"[:300]
            if record.exc_info and record.exc_info[0] else ""))


def machine_busy() -> tuple[float, float]:
    """(busy, total) jiffies of the whole machine so far (/proc/stat)."""
    fields = [float(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    idle = fields[3] + fields[4]  # idle + iowait
    return sum(fields) - idle, sum(fields)


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


async def member(home: Path, db: str, seconds: float, name: str, engines: int,
                 profile: Path | None) -> None:
    """One engine of several: see the module's docstring."""
    logging.basicConfig(level=logging.INFO, stream=sys.stderr,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    tally = Tally()
    logging.getLogger().addHandler(tally)
    ctx = EngineContext.open(Settings(home, db))
    membership = Membership.join(ctx.db, Identity(name, f"probe://{name}"))
    runtime = EngineRuntime(ctx, monitor=False, membership=membership)
    monitor: Monitor | None = None
    try:
        await runtime.start()
        assert runtime.service and runtime.client
        print("joined", flush=True)
        if await parent_line() != "go":
            return
        gateway = runtime.service.gateway
        deadline = time.monotonic() + START_WITHIN  # for the engines and the warm-up
        await wait_for_engines(gateway, engines, START_WITHIN, name)
        config = await gateway.config()
        interval = float(config["HostHeartbeatIntervalInSec"])

        monitor = Monitor(runtime.service, runtime.client)
        full: list[tuple[float, float, bool]] = []  # (start, duration, completed) per full round
        tick = monitor.tick

        ticks = [0]  # rounds of either kind while measured

        async def timed(only_connecting: bool = False) -> float:
            t, completed = time.monotonic(), False
            if tally.counting:
                ticks[0] += 1
            try:
                interval = await tick(only_connecting)
                completed = True
                return interval
            finally:
                if not only_connecting:
                    full.append((t, time.monotonic() - t, completed))
        monitor.tick = timed  # type: ignore[method-assign]
        monitor.start()
        # Warm-up: connections and TLS sessions are set up once.
        while sum(1 for *_, completed in full if completed) < 2:
            if not monitor.running or time.monotonic() > deadline:
                raise SystemExit(f"{name}: the monitor did not complete two rounds within "
                                 f"{START_WITHIN:g} s ({len(full)} begun)")
            await asyncio.sleep(0.05)
        warmup = full[-1][0] + full[-1][1] - full[0][0]
        events: dict[str, int] = {}

        def count(event: Event) -> None:
            if tally.counting:
                events[event.kind] = events.get(event.kind, 0) + 1
        gateway.on_event(count)
        print("warm", flush=True)
        if await parent_line() != "measure":
            return
        profiler = None
        if profile is not None:
            import cProfile
            profiler = cProfile.Profile()
            profiler.enable()
        tally.counting = True
        busy_before = machine_busy()
        started_cpu, started = cpu(), time.monotonic()
        await asyncio.sleep(seconds)
        used, wall = cpu() - started_cpu, time.monotonic() - started
        busy_after = machine_busy()
        tally.counting = False
        if profiler is not None:
            profiler.disable()
            profiler.dump_stats(str(profile))
        assert monitor.running, "the monitor died during the measurement"
        measured = [(t, d, ok) for t, d, ok in full if t >= started]
        owned = set(monitor.watched_since)
        statuses: dict[str, int] = {}
        for h in (await gateway.state())[0].hosts:
            if h.id in owned:
                statuses[h.status.value] = statuses.get(h.status.value, 0) + 1
        _ring, alive = await gateway.ownership()
        print(json.dumps({
            "engine": name, "cpu": used, "wall": wall, "interval": interval,
            "rounds": [d for _, d, ok in measured if ok],
            "failed_rounds": sum(1 for *_, ok in measured if not ok), "events": events,
            "ticks": ticks[0],
            # cores of the whole machine in use meanwhile, whoever used them
            "machine_busy": (busy_after[0] - busy_before[0]) / (busy_after[1] - busy_before[1])
            * (os.cpu_count() or 1),
            "gaps": [b[0] - a[0] for a, b in zip(measured, measured[1:])],
            "warmup": warmup, "owned": len(owned), "statuses": statuses,
            "alive": sorted(alive), "logged": tally.counts, "first_logged": tally.first,
            "open_files": resource.getrlimit(resource.RLIMIT_NOFILE)[0],
        }), flush=True)
        await parent_line()  # until the bench closes stdin: engines measured together leave together
    finally:
        if monitor is not None:
            await monitor.stop()
        await runtime.stop()  # leaves the membership
        ctx.close()


if __name__ == "__main__":
    p = argparse.ArgumentParser()
    p.add_argument("--home", type=Path, required=True)
    p.add_argument("--db", required=True)
    p.add_argument("--seconds", type=float, default=15)
    p.add_argument("--interval", type=float, default=3,
                   help="without --engine-name: seconds between the probe's rounds")
    p.add_argument("--engine-name", help="join the database's engines under this name and run "
                                         "the real monitor loop (see the module's docstring)")
    p.add_argument("--engines", type=int, default=1,
                   help="with --engine-name: how many engines must be alive before it starts")
    p.add_argument("--answer-every", type=float,
                   help="with --engine-name: seconds between looks for peers' second-opinion "
                        "probes instead of monitor.ANSWER_EVERY (to see what that loop costs)")
    p.add_argument("--profile", type=Path, help="with --engine-name: cProfile the event loop's "
                                                "thread during the measurement into this file")
    a = p.parse_args()
    if a.answer_every is not None:
        monitor_module.ANSWER_EVERY = a.answer_every
    if a.engine_name:
        asyncio.run(member(a.home, a.db, a.seconds, a.engine_name, a.engines, a.profile))
    else:
        print(json.dumps(asyncio.run(main(a.home, a.db, a.seconds, a.interval))))
