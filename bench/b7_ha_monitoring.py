"""7. Monitoring across engines: N simulated hosts (the heartbeat farm of
benchmark 4) in one PostgreSQL database, heartbeated first by one engine
alone, then by three engines sharing them over the hash ring. Each engine is
a process of its own running the real Monitor with a real Membership
(bench/monitor_probe.py --engine-name), so its CPU time (getrusage) is its
own. Reported per engine: CPU share of one core, hosts owned, full rounds
against the heartbeat interval. Then the same engines over a handful of
hosts, with and without their second-opinion loop: what an engine costs
whatever its share, to say where a departure from linear comes from."""

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
from pathlib import Path
from typing import Any

import psycopg

from bench.childproc import Lines
from bench.heartbeat_farm import PER_PROCESS, PORT, address
from bench.pgdb import fresh_database
from bench.stats import pct
from conftest import PG_ADMIN_DSN
from hostpower.context import EngineContext
from hostpower.model.inventory import HostStatus
from hostpower.model.ownership import Ownership
from hostpower.monitor import ANSWER_EVERY
from hostpower.settings import Settings
from hostpower.store.configstore import ConfigStore
from hostpower.store.inventory import HostInput, Inventory

WANTED = 10_000
ENGINES = ("e1", "e2", "e3")
INTERVAL = 3      # HostHeartbeatIntervalInSec (the default)
HB_TIMEOUT = 20   # HostHeartbeatTimeoutInSec (the default; every agent answers within it here)
SECONDS = 30.0    # measured per phase, after two warm-up rounds
PAIRS = 3         # one engine then three, this many times in turn (turns differ by ~0.1x)
SPARE_FILES = 300  # descriptors besides one per connection (database, logs, libraries)
LINEAR = 1.25     # three engines together may use this much more CPU than one alone
SMALL = 30        # hosts of the phase that shows what an engine costs whatever its share


def plan(wanted: int = WANTED) -> tuple[int, int, int]:
    """(hard limit of open files, N, hosts per farm process). A farm host
    costs two descriptors (listener and connection), an engine one per host
    it heartbeats; the single engine heartbeats all N, so N stays under the
    hard limit, and farm processes split the rest."""
    hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
    if hard == resource.RLIM_INFINITY:
        hard = 1 << 20
    per_farm = min(PER_PROCESS, (hard - SPARE_FILES) // 2)
    count = min(wanted, (hard - SPARE_FILES) // 1000 * 1000)
    return hard, count, per_farm


def _prepare(home: Path, db: str, count: int) -> None:
    ctx = EngineContext.open(Settings(home, db))
    try:
        with ctx.db.session() as s:
            inv = Inventory(s, ctx.box)
            dc = inv.add_data_center("farm")
            clusters = [inv.add_cluster(f"farm-{c}", dc.id) for c in range((count + 99) // 100)]
            for i in range(count):
                inv.add_host(HostInput(f"farm-{i}", address(i), clusters[i // 100].id,
                                       HostStatus.UP, agent_port=PORT))
            store = ConfigStore(s)
            store.set("DisableFenceAtStartupInSec", "86400")  # watch only, never fence
            store.set("HostHeartbeatTimeoutInSec", str(HB_TIMEOUT))
            store.set("HostHeartbeatIntervalInSec", str(INTERVAL))
    finally:
        ctx.close()


@contextmanager
def farm(home: Path, count: int, per_process: int, log: Path) -> Iterator[None]:
    procs: list[subprocess.Popen[str]] = []
    with log.open("w") as out:
        try:
            for first in range(0, count, per_process):
                procs.append(subprocess.Popen(
                    [sys.executable, "-m", "bench.heartbeat_farm", "--first", str(first),
                     "--count", str(min(per_process, count - first)), "--pki", str(home / "pki")],
                    stdout=subprocess.PIPE, stderr=out, text=True))
            for proc in procs:
                line = Lines(proc).get(300)
                assert line == "ready", f"heartbeat farm did not start ({line!r}): see {log}"
            yield
        finally:
            for proc in procs:
                proc.terminate()
            for proc in procs:
                try:
                    proc.wait(20)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait(10)


def engines_together(home: Path, db: str, names: tuple[str, ...], seconds: float,
                     logs: Path, *options: str) -> list[dict[str, Any]]:
    """One probe per name: all join, then their monitors start one after
    another (each once the previous one completed its two warm-up rounds:
    on this small machine, three engines opening thousands of TLS sessions
    at once would only measure the machine), then all are measured over the
    same span and leave together. Their JSON results."""
    procs: list[tuple[str, subprocess.Popen[str], Lines, Any]] = []

    def say(proc: subprocess.Popen[str], line: str) -> None:
        assert proc.stdin is not None
        proc.stdin.write(line + "\n")
        proc.stdin.flush()

    def expect(name: str, lines: Lines, wanted: str, timeout: float) -> str:
        got = lines.get(timeout)
        if got is None or not got.startswith(wanted):
            raise AssertionError(f"engine probe {name}: {got!r} instead of {wanted!r}: "
                                 f"{_tail(logs / f'engine-{name}.log')}")
        return got

    try:
        for name in names:
            err = (logs / f"engine-{name}.log").open("w")
            proc = subprocess.Popen(
                [sys.executable, "-m", "bench.monitor_probe", "--home", str(home), "--db", db,
                 "--seconds", str(seconds), "--engine-name", name, "--engines", str(len(names)),
                 *options],
                stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=err, text=True)
            procs.append((name, proc, Lines(proc), err))
        for name, _, lines, _ in procs:
            expect(name, lines, "joined", 120)
        for name, proc, lines, _ in procs:
            say(proc, "go")
            expect(name, lines, "warm", 180)
        for _, proc, _, _ in procs:
            say(proc, "measure")
        return [json.loads(expect(name, lines, "{", seconds + 120))
                for name, _, lines, _ in procs]
    finally:
        for _, proc, _, _ in procs:
            if proc.stdin is not None and not proc.stdin.closed:
                try:
                    proc.stdin.close()  # the probe leaves the membership and exits
                except OSError:
                    pass
        for _, proc, _, err in procs:
            try:
                proc.wait(60)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(10)
            err.close()


def _tail(log: Path, chars: int = 3000) -> str:
    try:
        return log.read_text()[-chars:]
    except OSError as exc:
        return str(exc)


def _figures(r: dict[str, Any]) -> dict[str, Any]:
    rounds = r["rounds"] or [float("nan")]
    return {**r, "share": r["cpu"] / r["wall"],
            "per_1000": r["cpu"] / r["wall"] / max(1, r["owned"]) * 1000,
            "median_round": statistics.median(rounds), "p99_round": pct(rounds, 99),
            "max_round": max(rounds), "on_time": bool(r["rounds"]) and max(rounds) <= r["interval"]
            and not r["failed_rounds"],
            "max_gap": max(r["gaps"]) if r["gaps"] else float("nan")}


def ring_cost(count: int, names: tuple[str, ...] = ENGINES, repeat: int = 5) -> float:
    """Seconds to find the owner of every one of `count` hosts, as each
    engine's monitor does for the whole inventory at every round."""
    ring = Ownership(names)
    best = float("inf")
    for _ in range(repeat):
        t = time.perf_counter()
        for host_id in range(1, count + 1):
            ring.owner(host_id)
        best = min(best, time.perf_counter() - t)
    return best


def measure(count: int, per_farm: int, seconds: float = SECONDS, pairs: int = PAIRS,
            small: int = SMALL) -> dict[str, Any]:
    """One engine, then three, over `count` hosts, `pairs` times in turn;
    then the same over `small` hosts (another database, same farm): what an
    engine costs whatever its share; and three once more with their
    second-opinion loops idle (what that loop costs). Each key holds a list
    of phases, each a list of engine results."""
    out: dict[str, list[list[dict[str, Any]]]] = {}
    with tempfile.TemporaryDirectory(prefix="hostpower-bench-") as t:
        tmp = Path(t)
        home = tmp / "home"
        with fresh_database() as db, fresh_database() as db_small:
            _prepare(home, db, count)
            _prepare(home, db_small, small)
            with farm(home, count, per_farm, tmp / "farm.log"):
                for key, database, names, options in (
                        *((("solo", db, ("solo",), ()), ("trio", db, ENGINES, ())) * pairs),
                        ("solo_small", db_small, ("solo",), ()),
                        ("trio_small", db_small, ENGINES, ()),
                        ("trio_small_quiet", db_small, ENGINES, ("--answer-every", "1e6"))):
                    out.setdefault(key, []).append(
                        engines_together(home, database, names, seconds, tmp, *options))
    return out


def merged(phases: list[list[dict[str, Any]]]) -> list[dict[str, Any]]:
    """Each engine's results over all phases as one: CPU over the summed
    time, every round, the last statuses, events and log lines added up."""
    out = []
    for runs in zip(*phases):
        last = runs[-1]
        events: dict[str, int] = {}
        logged: dict[str, int] = {}
        for r in runs:
            for k, v in r["events"].items():
                events[k] = events.get(k, 0) + v
            for k, v in r["logged"].items():
                logged[k] = logged.get(k, 0) + v
        out.append(_figures({
            **last, "cpu": sum(r["cpu"] for r in runs), "wall": sum(r["wall"] for r in runs),
            "rounds": [d for r in runs for d in r["rounds"]],
            "gaps": [g for r in runs for g in r["gaps"]],
            "failed_rounds": sum(r["failed_rounds"] for r in runs),
            "ticks": sum(r["ticks"] for r in runs), "events": events, "logged": logged,
            "machine_busy": max(r["machine_busy"] for r in runs)}))
    return out


def _line(m: dict[str, Any]) -> str:
    trouble = "".join(f"; {what}: {m[key]}" for what, key in (
        ("events while measured", "events"), ("logged while measured", "logged"))
        if m.get(key))
    failed = f", {m['failed_rounds']} FAILED" if m.get("failed_rounds") else ""
    return (f"engine {m['engine']}: {m['owned']} hosts, CPU {m['share'] * 100:.1f}% of one core "
            f"({m['per_1000'] * 100:.2f}% per 1,000 hosts); full rounds median "
            f"{m['median_round']:.2f} s, p99 {m['p99_round']:.2f} s, max {m['max_round']:.2f} s "
            f"for a {m['interval']:.0f} s interval ({len(m['rounds'])} rounds{failed}, "
            f"{'all on time' if m['on_time'] else 'NOT all on time'}; longest start-to-start "
            f"{m['max_gap']:.2f} s); hosts {m['statuses']}{trouble}")


def run() -> dict[str, Any]:
    hard, count, per_farm = plan()
    m = measure(count, per_farm)
    (solo,), trio = merged(m["solo"]), merged(m["trio"])
    (solo_small,), trio_small = merged(m["solo_small"]), merged(m["trio_small"])
    ratios = [sum(e["cpu"] / e["wall"] for e in t) / (s["cpu"] / s["wall"])
              for (s,), t in zip(m["solo"], m["trio"])]
    together = sum(e["share"] for e in trio)
    owned = sum(e["owned"] for e in trio)
    all_up = (solo["statuses"] == {"up": count}
              and all(e["statuses"] == {"up": e["owned"]} for e in trio))
    ratio = together / solo["share"]
    largest = max(e["share"] for e in trio)
    met = (count == WANTED and owned == count and all_up and solo["on_time"]
           and all(e["on_time"] for e in trio) and largest < 0.5 and ratio <= LINEAR)
    lines = [
        f"N={count} hosts (open files: hard limit {hard} per process, which the farm and "
        f"the engines raise their soft limit to; a farm host needs 2, an engine 1 per host "
        f"it heartbeats; farm processes of {per_farm} hosts)"
        + ("" if count == WANTED else f"; N reduced from {WANTED} by that limit"),
        f"PostgreSQL {_server_version()} on this machine, one database; heartbeat interval "
        f"{INTERVAL} s, timeout {HB_TIMEOUT} s, mutual TLS; EngineLeaseInSec 10 s (default); each phase "
        f"measured for {SECONDS:.0f} s after 2 warm-up rounds, its engines over the same span; "
        f"one engine then three, {PAIRS} times in turn, figures over all turns",
        f"1 engine x {count}: " + _line(solo),
        *(f"3 engines x {count}: " + _line(e) for e in trio),
        f"3 engines together: {together * 100:.1f}% of one core for {owned} hosts (shares "
        f"{', '.join(str(e['owned']) for e in trio)}), {ratio:.3f}x the single engine's "
        f"{solo['share'] * 100:.1f}%, {', '.join(f'{r:.2f}x' for r in ratios)} in the "
        f"{len(ratios)} turns; the busiest engine {largest * 100:.1f}%",
        f"the machine ({os.cpu_count()} cores) was busy up to {solo['machine_busy']:.2f} cores "
        f"while the single engine was measured, up to "
        f"{max(e['machine_busy'] for e in trio):.2f} while the three were (the busiest turn; "
        f"the engines, the farm, PostgreSQL, and whatever else ran on it): round durations "
        f"wait for a core when it is near {os.cpu_count()}, CPU shares do not",
    ]
    # Where the difference between three engines and one goes.
    quiet = merged(m["trio_small_quiet"])
    fixed = sum(e["share"] for e in trio_small) - solo_small["share"]
    answering = sum(e["share"] for e in trio_small) - sum(e["share"] for e in quiet)
    ring = ring_cost(count)
    rate = sum(e["ticks"] / e["wall"] for e in trio) / len(trio)
    extra = together - solo["share"]
    rest = extra - fixed - 3 * rate * ring
    lines.append(
        f"the same over {SMALL} hosts (what an engine costs whatever its share): 1 engine "
        f"{_pct(solo_small['share'])}, 3 engines {', '.join(_pct(e['share']) for e in trio_small)}; "
        f"3 engines with their second-opinion loop idle "
        f"{', '.join(_pct(e['share']) for e in quiet)} of one core")
    analysis = (
        f"Three engines together spend {_pct(extra)} of a core more than one engine alone on "
        f"the same {count} hosts. Two costs do not shrink with an engine's share. (1) The "
        f"second-opinion loop: an engine with peers looks in the database for their probes "
        f"every {ANSWER_EVERY:g} s (`Monitor._answer_loop`, idle when the engine is alone); it "
        f"is {_pct(answering)} of the three engines' "
        f"{_pct(sum(e['share'] for e in trio_small))} with {SMALL} hosts (an engine alone: "
        f"{_pct(solo_small['share'])}), so the three engines' fixed costs come to "
        f"{_pct(fixed)} more than one engine's. (2) The hash ring: every monitor round, full "
        f"or of connecting hosts only ({rate:.2f} a second), looks up the owner of every host "
        f"in the inventory, not only of its own (`Monitor._owned`): {ring * 1000:.1f} ms for "
        f"{count} hosts with three engines (a lone engine skips the ring), {_pct(rate * ring)} "
        f"of a core per engine, {_pct(3 * rate * ring)} for the three. Measured apart, the two "
        f"come to {_pct(fixed + 3 * rate * ring)}; the remainder, {_pct(abs(rest))}, is what "
        f"the heartbeats of three engines cost {'less' if rest < 0 else 'more'} than those of "
        f"one engine for the same hosts. Both costs could go: an engine's hosts only change "
        f"when the live engines or the inventory do (the gateway knows both), and peers' "
        f"probes could be looked for less often, or be announced by PostgreSQL's "
        f"LISTEN/NOTIFY.")
    return {"name": "Monitoring across engines",
            "goal": f"3 engines x 10,000 hosts: linear (together at most {LINEAR:g}x one "
                    f"engine alone), each engine under half of one core, rounds on time",
            "met": met, "lines": lines, "analysis": analysis}


def _pct(share: float) -> str:
    return f"{share * 100:.1f}%"


def _server_version() -> str:
    with psycopg.connect(PG_ADMIN_DSN, connect_timeout=10) as conn:
        return str(conn.execute("SHOW server_version").fetchone()[0]).split()[0]  # type: ignore[index]


if __name__ == "__main__":
    result = run()
    for line in result["lines"]:
        print(line)
    print(result["analysis"])
