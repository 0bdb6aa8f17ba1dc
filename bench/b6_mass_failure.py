"""6. Mass failure: 200 hosts restarted at once with a concurrency limit C.

200 virtual BMCs (each chassis command takes 50 ms, as a slow real BMC
would) on loopback, every host fenced by the engine itself (chain
`engine`), so the measurement is the engine's scheduling, not 200 agent
processes. Compared: the total time against (200 / C) x the time of one
restart alone; and every BMC's largest number of commands in flight."""

from __future__ import annotations

import tempfile
import time
from pathlib import Path

from enginekit import EngineThread
from hostpower.context import EngineContext
from hostpower.inventory_file import load_document
from hostpower.lab.bmc import VirtualBmc
from hostpower.settings import Settings
from hostpower.store.configstore import ConfigStore
from hostpower.store.inventory import Inventory
from hostpower.store.journal import Journal
from hostpower.model.operations import FlowAction, Origin

HOSTS = 200
COMMAND_DELAY = 0.05


def _inventory(bmcs: list[VirtualBmc]) -> dict:  # type: ignore[type-arg]
    hosts = [{"name": f"m{i:03d}", "address": f"10.200.{i // 250}.{i % 250 + 1}", "status": "up",
              "power_management": {"enabled": True, "pm_proxies": "engine", "agents": [
                  {"type": "ipmilan", "address": b.address, "port": b.port, "username": "admin",
                   "password": "bench-password", "options": {"lanplus": "1"}}]}}
             for i, b in enumerate(bmcs)]
    return {"data_centers": [{"name": "mass", "clusters": [{"name": "mass", "hosts": hosts}]}]}


def _timed_restarts(engine: EngineThread, ids: list[int]) -> float:
    started = time.monotonic()
    ops = [engine.call(engine.service.request(i, FlowAction.RESTART, Origin.API))[0] for i in ids]
    for op in ops:
        done = engine.call(engine.service.wait(op.id, 600))
        assert done.state == "succeeded", done.message
    return time.monotonic() - started


def run(limits: tuple[int, ...] = (10, 50)) -> dict[str, object]:
    lines, met, per_flow = [], True, []
    bmcs = [VirtualBmc(f"127.19.{200 + i // 200}.{i % 200 + 1}", 0, "admin", "bench-password",
                       state="on", command_delay=COMMAND_DELAY).start() for i in range(HOSTS)]
    try:
        for limit in limits:
            with tempfile.TemporaryDirectory(prefix="hostpower-bench-") as tmp:
                ctx = EngineContext.open(Settings(Path(tmp), f"sqlite:///{Path(tmp) / 'e.db'}"))
                with ctx.db.session() as s:
                    load_document(Inventory(s, ctx.box, ctx.known_agent_types()), ConfigStore(s),
                                  _inventory(bmcs))
                    for k, v in {"FenceProxyImplicitPreferences": "", "FenceConcurrencyLimit": str(limit),
                                 "FenceStopStatusDelayBetweenRetriesInSec": "0",
                                 "FenceStartStatusDelayBetweenRetriesInSec": "0",
                                 "DisableFenceAtStartupInSec": "3600"}.items():
                        ConfigStore(s).set(k, v)
                    ids = [h.id for h in Inventory(s, ctx.box).hosts()]
                with EngineThread(ctx) as engine:
                    _timed_restarts(engine, ids[:1])  # warm up
                    single = min(_timed_restarts(engine, [ids[1 + n]]) for n in range(3))
                    total = _timed_restarts(engine, ids)
                with ctx.db.session() as s:
                    ops = Journal(s).list(limit=1000)
                ctx.close()
            ideal = HOSTS / limit * single
            per_flow.append(total / HOSTS)
            lines.append(f"C={limit}: {HOSTS} restarts in {total:.2f} s; one restart alone "
                         f"{single * 1000:.0f} ms; (200/C) x single = {ideal:.2f} s; "
                         f"ratio {total / ideal:.2f}; {len(ops)} operations journaled")
            met = met and total <= ideal * 1.5
        worst = max(b.max_in_flight for b in bmcs)
        lines.append(f"largest number of commands one BMC had in flight at once: {worst}")
        met = met and worst <= 1
    finally:
        for b in bmcs:
            b.stop()
    engine_bound = min(per_flow) * 1000 if per_flow else float("nan")
    analysis = (
        f"What bounds it: with enough concurrency the engine itself is the bottleneck, at about "
        f"{engine_bound:.0f} ms of engine time per restart flow (200 flows / total time at the "
        f"largest C). A flow is five agent commands and about 24 database commits (journal "
        f"phases and steps, events, host status), all in one Python process: the same cost as "
        f"benchmark 2's overhead. Below that bound the flows overlap as intended (the 50 ms BMC "
        f"commands and status polls of different hosts run at once, never two on one BMC). "
        f"Cutting further means batching event writes or moving the journal to PostgreSQL's "
        f"group commit; a real BMC takes seconds per command, so with real hardware the "
        f"(200 / C) x single term dominates and the ratio approaches 1.")
    return {
        "analysis": analysis,
        "name": "Mass failure",
        "goal": "total close to (200 / C) x single-flow time; no BMC with more than one command at a time",
        "met": met,
        "lines": [f"{HOSTS} virtual BMCs on loopback, {COMMAND_DELAY * 1000:.0f} ms per chassis "
                  f"command, engine as the proxy (native ipmilan)"] + lines,
    }


if __name__ == "__main__":
    for line in run()["lines"]:  # type: ignore[union-attr]
        print(line)
