"""4. Monitoring scale: the engine heartbeating N simulated hosts at a 3 s
interval. The hosts are a heartbeat farm (many TLS endpoints, one process);
the engine's monitor runs alone in another process so that its CPU time is
its own. Reported per N: CPU share of one core, per 1,000 hosts, and the
round durations (a round on time completes within the interval)."""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
from pathlib import Path

from bench.heartbeat_farm import PER_PROCESS, PORT, address
from bench.stats import pct
from hostpower.context import EngineContext
from hostpower.settings import Settings
from hostpower.store.configstore import ConfigStore
from hostpower.store.inventory import HostInput, Inventory
from hostpower.model.inventory import HostStatus

INTERVAL = 3.0


def _prepare(tmp: Path, count: int) -> tuple[Path, str]:
    home, db = tmp / "home", f"sqlite:///{tmp / 'engine.db'}"
    ctx = EngineContext.open(Settings(home, db))
    with ctx.db.session() as s:
        inv = Inventory(s, ctx.box)
        dc = inv.add_data_center("farm")
        clusters = [inv.add_cluster(f"farm-{c}", dc.id) for c in range((count + 99) // 100)]
        for i in range(count):
            inv.add_host(HostInput(f"farm-{i}", address(i), clusters[i // 100].id,
                                   HostStatus.UP, agent_port=PORT))
        ConfigStore(s).set("DisableFenceAtStartupInSec", "86400")
        ConfigStore(s).set("HostHeartbeatTimeoutInSec", "3")
    ctx.close()
    return home, db


def measure(count: int, seconds: float = 15) -> dict[str, object]:
    with tempfile.TemporaryDirectory(prefix="hostpower-bench-") as t:
        tmp = Path(t)
        home, db = _prepare(tmp, count)
        farm_log = (tmp / "farm.log").open("w")
        farms = [subprocess.Popen([sys.executable, "-m", "bench.heartbeat_farm", "--first", str(first),
                                   "--count", str(min(PER_PROCESS, count - first)),
                                   "--pki", str(home / "pki")],
                                  stdout=subprocess.PIPE, stderr=farm_log, text=True)
                 for first in range(0, count, PER_PROCESS)]
        try:
            for farm in farms:
                assert farm.stdout is not None and farm.stdout.readline().strip() == "ready"
            probe = subprocess.run([sys.executable, "-m", "bench.monitor_probe", "--home", str(home),
                                    "--db", db, "--seconds", str(seconds), "--interval", str(INTERVAL)],
                                   capture_output=True, text=True, timeout=seconds * 10 + 120)
            assert probe.returncode == 0, probe.stderr[-2000:]
            result = json.loads(probe.stdout.strip().splitlines()[-1])
        finally:
            for farm in farms:
                farm.terminate()
                farm.wait(20)
            farm_log.close()
    rounds = result["rounds"]
    share = result["cpu"] / result["wall"]
    return {"count": count, "share": share, "per_1000": share / count * 1000,
            "median_round": sorted(rounds)[len(rounds) // 2], "max_round": max(rounds),
            "p99_round": pct(rounds, 99), "on_time": max(rounds) <= INTERVAL,
            "statuses": result["statuses"]}


def run(counts: tuple[int, ...] = (1000, 2500, 5000, 10000)) -> dict[str, object]:
    lines, largest, at_10k = [], 0, None
    for n in counts:
        m = measure(n)
        lines.append(f"N={n}: engine CPU {m['share'] * 100:.0f}% of one core "
                     f"({m['per_1000'] * 100:.1f}% per 1,000 hosts); rounds median "
                     f"{m['median_round']:.2f} s, max {m['max_round']:.2f} s "
                     f"({'on time' if m['on_time'] else 'LATE'}); hosts {m['statuses']}")
        if m["on_time"] and m["statuses"].get("up") == n:
            largest = max(largest, n)
        if n == 10000:
            at_10k = m
    lines.append(f"largest N measured with every round on time: {largest}")
    met = at_10k is not None and at_10k["share"] < 0.5 and at_10k["on_time"]  # type: ignore[index]
    return {"name": "Monitoring scale", "goal": "10,000 hosts under half of one core",
            "met": met, "lines": [f"heartbeat interval {INTERVAL:.0f} s, mutual TLS, pooled "
                                  f"connections; each N measured for 15 s after 2 warm-up rounds"] + lines}


if __name__ == "__main__":
    for line in run()["lines"]:  # type: ignore[union-attr]
        print(line)
