"""6. Mass failure: 200 hosts restarted at once with a concurrency limit C.

200 virtual BMCs (each chassis command takes 50 ms, as a slow real BMC
would) served by a child process (bench/bmcfarm.py), every host fenced by
the engine itself (chain `engine`), so the measurement is the engine's
scheduling, not 200 agent processes. Three variants at each C, one after
the other against the same BMCs:

* one engine on SQLite and one engine on PostgreSQL (127.0.0.1), each in
  this process (tests/enginekit.EngineThread): total time against the ideal
  (200 / C) x the time of one restart alone;
* three engines on one PostgreSQL database, each a process of its own
  (bench/mass_engine.py) with a real membership lease, each restarting the
  hosts the hash ring gives it with its own limit C, all starting at the
  same wall-clock moment: total time (the last engine's end) against the
  ideal (largest share / C) x single, i.e. the slowest engine's share at
  the pace of one restart alone on that engine.

And every BMC's largest number of chassis commands in flight at once."""

from __future__ import annotations

import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bench.bmcfarm import PASSWORD, USER, BmcFarm
from bench.childproc import Lines, close, say
from bench.monitor_probe import machine_busy
from bench.pgdb import fresh_database
from bench.stats import pct
from enginekit import EngineThread
from hostpower.context import EngineContext
from hostpower.inventory_file import load_document
from hostpower.model.operations import FlowAction, Origin
from hostpower.settings import Settings
from hostpower.store.configstore import ConfigStore
from hostpower.store.inventory import Inventory
from hostpower.store.journal import Journal

HOSTS = 200
COMMAND_DELAY = 0.05
FARM_PROCESSES = 1  # 200 BMCs in one process keep their 50 ms (method.md, "Mass failure")
ENGINES = ("engine-a", "engine-b", "engine-c")
SINGLES = 3  # restarts alone; the best is "single"
# An attempt slower than this waited for pyghmi's retransmission timer (0.5 to 1 s):
# see method.md, "Mass failure".
SLOW = 0.4
GOALS = {10: 1.2, 50: 2.0}  # largest ratio to the ideal, per C (issue 15)


@dataclass
class Outcome:
    """One variant at one C."""

    variant: str
    limit: int
    total: float
    single: float
    ideal: float
    journaled: tuple[int, list[float]]  # operations, BMC command attempts' seconds (engine's view)
    farm_ms: list[float]  # chassis command durations inside the BMCs during the mass failure
    farm_cpu: float  # CPU seconds of the BMC farm during the mass failure
    engine_cpu: dict[str, float]  # per engine: CPU seconds of its process during the mass failure
    busy: float  # cores of the whole machine in use during the mass failure, whoever used them
    shares: dict[str, int] = field(default_factory=dict)  # per engine: hosts owned
    ends: dict[str, float] = field(default_factory=dict)  # per engine: seconds to its last flow

    @property
    def ratio(self) -> float:
        return self.total / self.ideal

    def goal(self) -> float:
        return GOALS.get(self.limit, 2.0)


def _inventory(endpoints: list[tuple[str, int]]) -> dict:  # type: ignore[type-arg]
    hosts = [{"name": f"m{i:03d}", "address": f"10.200.{i // 250}.{i % 250 + 1}", "status": "up",
              "power_management": {"enabled": True, "pm_proxies": "engine", "agents": [
                  {"type": "ipmilan", "address": a, "port": p, "username": USER,
                   "password": PASSWORD, "options": {"lanplus": "1"}}]}}
             for i, (a, p) in enumerate(endpoints)]
    return {"data_centers": [{"name": "mass", "clusters": [{"name": "mass", "hosts": hosts}]}]}


def _prepare(ctx: EngineContext, endpoints: list[tuple[str, int]], limit: int) -> list[int]:
    with ctx.db.session() as s:
        load_document(Inventory(s, ctx.box, ctx.known_agent_types()), ConfigStore(s),
                      _inventory(endpoints))
        for k, v in {"FenceProxyImplicitPreferences": "", "FenceConcurrencyLimit": str(limit),
                     "FenceStopStatusDelayBetweenRetriesInSec": "0",
                     "FenceStartStatusDelayBetweenRetriesInSec": "0",
                     "DisableFenceAtStartupInSec": "3600"}.items():
            ConfigStore(s).set(k, v)
        return [h.id for h in Inventory(s, ctx.box).hosts()]


def _journaled(ctx: EngineContext) -> tuple[int, list[float]]:
    """Operations journaled, and the duration of every BMC command attempt
    they record (as the engine's driver saw it: round trip, retransmissions)."""
    with ctx.db.session() as s:
        journal = Journal(s)
        ops = [journal.get(op.id) for op in journal.list(limit=1000)]
    return len(ops), [a["duration"] for op in ops if op for st in op.steps for c in st.proxies
                      for a in c["attempts"]]


def _cpu() -> float:
    """CPU seconds of this process so far (the BMC farm is another process)."""
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def _cores(before: tuple[float, float]) -> float:
    after = machine_busy()
    return (after[0] - before[0]) / max(1.0, after[1] - before[1]) * (os.cpu_count() or 1)


def _timed_restarts(engine: EngineThread, ids: list[int]) -> float:
    started = time.monotonic()
    ops = [engine.call(engine.service.request(i, FlowAction.RESTART, Origin.API))[0] for i in ids]
    for op in ops:
        done = engine.call(engine.service.wait(op.id, 600))
        assert done.state == "succeeded", done.message
    return time.monotonic() - started


def one_engine(farm: BmcFarm, limit: int, db_url: str, home: Path, variant: str) -> Outcome:
    """One engine in this process (its event loop on a thread of its own)."""
    ctx = EngineContext.open(Settings(home, db_url))
    try:
        ids = _prepare(ctx, farm.endpoints, limit)
        with EngineThread(ctx) as engine:
            _timed_restarts(engine, ids[:1])  # warm up pools and IPMI sessions
            single = min(_timed_restarts(engine, [ids[1 + n]]) for n in range(SINGLES))
            before, cpu, busy = farm.stats(), _cpu(), machine_busy()
            total = _timed_restarts(engine, ids)
            cpu, busy, after = _cpu() - cpu, _cores(busy), farm.stats()
        return Outcome(variant, limit, total, single, HOSTS / limit * single, _journaled(ctx),
                       after["command_ms"], sum(after["cpu"]) - sum(before["cpu"]),
                       {"engine": cpu}, busy)
    finally:
        ctx.close()


@contextmanager
def _engines(home: Path, db_url: str, logs: Path) -> Iterator[list[tuple[str, subprocess.Popen[str], Lines]]]:
    procs: list[tuple[str, subprocess.Popen[str], Lines]] = []
    try:
        for name in ENGINES:
            with (logs / f"{name}.log").open("w") as err:
                proc = subprocess.Popen(
                    [sys.executable, "-m", "bench.mass_engine", "--home", str(home), "--db", db_url,
                     "--engine-name", name, "--engines", str(len(ENGINES))],
                    stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=err, text=True,
                    cwd=Path(__file__).resolve().parent.parent)
            procs.append((name, proc, Lines(proc)))
        yield procs
    finally:
        for _, proc, _ in procs:
            close(proc, wait=30)


def _expect(name: str, lines: Lines, logs: Path, timeout: float = 120) -> Any:
    got = lines.get(timeout)
    if got is None or not got.startswith(("{", "joined")):
        tail = (logs / f"{name}.log").read_text()[-3000:]
        raise AssertionError(f"mass engine {name}: {got!r}: {tail}")
    if got == "joined":
        return got
    answer = json.loads(got)
    assert not answer.get("failed"), f"{name}: flows failed: {answer['failed'][:5]}"
    return answer


def three_engines(farm: BmcFarm, limit: int, db_url: str, home: Path, logs: Path) -> Outcome:
    """Three engine processes on one PostgreSQL database (see the module's docstring)."""
    ctx = EngineContext.open(Settings(home, db_url))
    try:
        _prepare(ctx, farm.endpoints, limit)
        with _engines(home, db_url, logs) as procs:
            for name, _, lines in procs:
                _expect(name, lines, logs)
            for _, proc, _ in procs:
                say(proc, "go")
            shares = {name: _expect(name, lines, logs)["owned"] for name, _, lines in procs}
            assert sum(shares.values()) == HOSTS, f"the engines' shares {shares} miss hosts"
            singles = {}
            for name, proc, lines in procs:  # one at a time: "alone"
                say(proc, f"single {SINGLES}")
                singles[name] = min(_expect(name, lines, logs)["single"])
            before = farm.stats()
            at = time.time() + 1.0  # every engine is told before then
            for _, proc, _ in procs:
                say(proc, f"start {at}")
            busy = machine_busy()
            ended = {name: _expect(name, lines, logs, 600) for name, _, lines in procs}
            busy, after = _cores(busy), farm.stats()
        total = max(r["ended"] for r in ended.values()) - at
        ideal = max(shares[n] / limit * singles[n] for n in shares)
        slowest = max(shares, key=lambda n: shares[n] / limit * singles[n])
        return Outcome("PostgreSQL, 3 engines", limit, total, singles[slowest], ideal,
                       _journaled(ctx), after["command_ms"], sum(after["cpu"]) - sum(before["cpu"]),
                       {n: r["cpu"] for n, r in ended.items()}, busy, shares, {n: r["ended"] - at for n, r in ended.items()})
    finally:
        ctx.close()


def _line(o: Outcome) -> str:
    ms = o.farm_ms or [float("nan")]
    seen = [s * 1000 for s in o.journaled[1]] or [float("nan")]
    text = (f"C={o.limit}, {o.variant}: {HOSTS} restarts in {o.total:.2f} s; one restart alone "
            f"{o.single * 1000:.0f} ms; ideal {o.ideal:.2f} s; **ratio {o.ratio:.2f}** "
            f"(goal ≤ {o.goal():g}); {o.journaled[0]} operations journaled; chassis commands "
            f"inside the BMCs: median {statistics.median(ms):.1f} ms, p99 {pct(ms, 99):.1f} ms; "
            f"BMC command attempts as the engine saw them: median {statistics.median(seen):.0f} "
            f"ms, p99 {pct(seen, 99):.0f} ms, {sum(1 for s in seen if s > SLOW * 1000)} of {len(seen)} "
            f"over {SLOW * 1000:.0f} ms; BMC farm CPU {o.farm_cpu / o.total:.2f} core; machine "
            f"busy {o.busy:.1f} of {os.cpu_count()} cores")
    if o.shares:
        text += "; per engine (hosts owned, seconds to its last flow, CPU): " + ", ".join(
            f"{n} {o.shares[n]} in {o.ends[n]:.2f} s, {o.engine_cpu[n] / o.ends[n]:.2f} core"
            for n in o.shares)
    else:
        text += f"; engine process CPU {o.engine_cpu['engine'] / o.total:.2f} core"
    return text


def _profiled(pg: bool, limit: int = 10) -> str:
    """The top functions of one engine's mass failure (bench/profile.py), or why not."""
    from bench.profile import record
    from bench.pyspy_agg import markdown

    out = Path(tempfile.gettempdir()) / f"hostpower-profile-6{'-pg' if pg else ''}.txt"
    try:
        what, found = record("6", pg, limit, 40, 250, out)
    except (SystemExit, OSError, TimeoutError) as exc:  # py-spy missing or not allowed to attach
        return f"Profile ({'PostgreSQL' if pg else 'SQLite'}) not taken: {exc}"
    return markdown(found, f"Profile, `python -m bench.profile 6{' --pg' if pg else ''}` ({what}):")


def run(limits: tuple[int, ...] = (10, 50)) -> dict[str, object]:
    outcomes: list[Outcome] = []
    with tempfile.TemporaryDirectory(prefix="hostpower-bench-") as t, \
            BmcFarm(HOSTS, COMMAND_DELAY, FARM_PROCESSES) as farm:
        tmp = Path(t)
        for limit in limits:
            with tempfile.TemporaryDirectory(dir=tmp) as d:
                outcomes.append(one_engine(farm, limit, f"sqlite:///{Path(d) / 'e.db'}",
                                           Path(d) / "home", "SQLite, 1 engine"))
            with tempfile.TemporaryDirectory(dir=tmp) as d, fresh_database() as url:
                outcomes.append(one_engine(farm, limit, url, Path(d) / "home",
                                           "PostgreSQL, 1 engine"))
            with tempfile.TemporaryDirectory(dir=tmp) as d, fresh_database() as url:
                outcomes.append(three_engines(farm, limit, url, Path(d) / "home", Path(d)))
        worst = max(farm.stats()["max_in_flight"])
    met = worst <= 1 and all(o.ratio <= o.goal() for o in outcomes)
    lines = [f"{HOSTS} virtual BMCs on loopback served by {FARM_PROCESSES} child process(es), "
             f"{COMMAND_DELAY * 1000:.0f} ms per chassis command, engine as the proxy (native "
             f"ipmilan); ideal = (200 / C) x single for one engine, (largest share / C) x that "
             f"engine's single for three"]
    lines += [_line(o) for o in outcomes]
    lines.append(f"largest number of commands one BMC had in flight at once: {worst}")
    one = [o for o in outcomes if not o.shares]
    bound = min(o.total / HOSTS for o in one) * 1000 if one else float("nan")
    analysis = (
        f"What bounds it: the engine process's one interpreter. At C=50 one engine runs at "
        f"about a full core (engine process CPU above), {bound:.0f} ms per restart flow "
        f"(200 flows / total time): Python's lock lets one thread run at a time, so the "
        f"event loop, the journal's writer, and the native IPMI driver's threads and "
        f"pyghmi's I/O thread (an RMCP+ login per host, AES and HMAC of every packet in "
        f"Python) take turns. A restart alone needs about 8 to 13 ms of that (the profiles "
        f"below); at C=10 the flows of one wave queue for the interpreter, hence the ratio "
        f"above 1. The BMCs are not the bound (their chassis commands take their 50 ms, the "
        f"engine sees no attempt waiting for pyghmi's retransmission any more), nor is the "
        f"database on SQLite (the writer commits the steps of concurrent flows together; "
        f"on PostgreSQL each waited commit also waits for the disk, which is why PostgreSQL "
        f"trails). Never two commands on one BMC at once. Three engines, the BMC farm and "
        f"PostgreSQL share this machine's 2 cores (machine busy above), so three engines are "
        f"bounded by the machine, not by their shares of the hosts. With host agents as the "
        f"proxies (production), the IPMI work leaves the engine for the proxies (benchmark 2: "
        f"under 10 ms of engine time per restart on SQLite); and a real BMC takes seconds "
        f"per command, so there the (200 / C) x single term dominates and the ratio "
        f"approaches 1.")
    for pg in (False, True):
        analysis += "\n\n" + _profiled(pg)
    return {
        "analysis": analysis,
        "name": "Mass failure",
        "goal": "≤ 1.2 × (200/C) × single at C=10, ≤ 2 × at C=50 (SQLite, PostgreSQL, 3 engines on "
                "PostgreSQL); no BMC with more than one command at a time",
        "met": met,
        "lines": lines,
    }


if __name__ == "__main__":
    for line in run()["lines"]:  # type: ignore[union-attr]
        print(line)
