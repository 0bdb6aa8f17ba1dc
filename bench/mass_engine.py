"""One engine of several restarting the hosts it owns, in its own process (benchmark 6).

    python -m bench.mass_engine --home H --db URL --engine-name NAME --engines K

runs an `EngineRuntime` (no monitor, no HTTP API) that joins the database's
engines under NAME with a real `Membership` lease, as `hostpower serve` does,
and talks on stdin/stdout, one JSON line per answer:

    probe: "joined"
    bench: "go"           probe waits until K engines are alive, takes the hosts
                          the hash ring gives it, restarts one of them (warm-up:
                          pools, IPMI sessions) and answers {"owned": n}
    bench: "single N"     probe restarts N of its hosts one after another and
                          answers {"single": [seconds, ...]} (the others idle)
    bench: "start T"      at wall-clock time T (every engine is given the same T)
                          probe requests a restart of every host it owns, waits
                          for them all and answers {"started", "ended", "owned",
                          "failed", "cpu"}
    bench closes stdin    probe leaves the membership and exits

The wall clock is shared by the engines of one machine, so "ended" of the
slowest engine minus T is the whole mass failure's time.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import resource
import sys
import time
from pathlib import Path

from bench.childproc import parent_line, wait_for_engines
from hostpower.context import EngineContext
from hostpower.membership import Identity, Membership
from hostpower.model.operations import FlowAction, Origin
from hostpower.runtime import EngineRuntime
from hostpower.settings import Settings

ALIVE_WITHIN = 60.0  # seconds for all K engines to be alive once told to go
FLOW_TIMEOUT = 600.0


def _cpu() -> float:
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def _answer(value: dict[str, object]) -> None:
    print(json.dumps(value), flush=True)


async def restart_all(service, host_ids: list[int]) -> list[str]:  # type: ignore[no-untyped-def]
    """Request a restart of every host, then wait for all: the messages of those that failed."""
    ops = [(await service.request(h, FlowAction.RESTART, Origin.API))[0] for h in host_ids]
    done = await asyncio.gather(*(service.wait(op.id, FLOW_TIMEOUT) for op in ops))
    return [f"{op.host_id}: {op.state} {op.message}" for op in done if op.state != "succeeded"]


async def member(home: Path, db: str, name: str, engines: int) -> None:
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    ctx = EngineContext.open(Settings(home, db))
    membership = Membership.join(ctx.db, Identity(name, f"bench://{name}"))
    runtime = EngineRuntime(ctx, monitor=False, membership=membership)
    try:
        await runtime.start()
        service = runtime.service
        assert service is not None
        print("joined", flush=True)
        if await parent_line() != "go":
            return
        ring, _alive = await wait_for_engines(service.gateway, engines, ALIVE_WITHIN, name)
        hosts = (await service.gateway.state())[0].hosts
        owned = sorted(h.id for h in hosts if ring.owner(h.id) == name)
        failed = await restart_all(service, owned[:1])
        _answer({"owned": len(owned), "engines": list(ring.engines), "failed": failed})
        while True:
            word, _, arg = (await parent_line()).partition(" ")
            if word == "single":
                times = []
                for host in owned[1:1 + int(arg)]:
                    t = time.monotonic()
                    failed += await restart_all(service, [host])
                    times.append(time.monotonic() - t)
                _answer({"single": times, "failed": failed})
            elif word == "start":
                await asyncio.sleep(max(0.0, float(arg) - time.time()))
                started, cpu = time.time(), _cpu()
                failed = await restart_all(service, owned)
                _answer({"engine": name, "started": started, "ended": time.time(),
                         "owned": len(owned), "failed": failed, "cpu": _cpu() - cpu})
            else:
                return
    finally:
        await runtime.stop()  # leaves the membership
        ctx.close()


if __name__ == "__main__":
    p = argparse.ArgumentParser()
    p.add_argument("--home", type=Path, required=True)
    p.add_argument("--db", required=True)
    p.add_argument("--engine-name", required=True)
    p.add_argument("--engines", type=int, default=3)
    a = p.parse_args()
    asyncio.run(member(a.home, a.db, a.engine_name, a.engines))
