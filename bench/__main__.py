"""`python -m bench [NAME ...]`: run the benchmarks and write docs/benchmarks.md."""

from __future__ import annotations

import importlib
import os
import platform
import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

BENCHES = [
    ("b1_status_latency", "1"), ("b2_flow_overhead", "2"), ("b3_locator", "3"),
    ("b4_monitoring", "4"), ("b5_detection", "5"), ("b6_mass_failure", "6"),
]
OUT = Path(__file__).resolve().parent.parent / "docs" / "benchmarks.md"
METHOD = Path(__file__).resolve().parent / "method.md"


def machine() -> str:
    cpu = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                if line.startswith("model name")), platform.processor())
    mem = int(next(line.split()[1] for line in Path("/proc/meminfo").read_text().splitlines()
                   if line.startswith("MemTotal"))) // 1024 // 1024
    fence = subprocess.run(["dpkg-query", "-W", "-f=${Version}", "fence-agents"],
                           capture_output=True, text=True).stdout or "?"
    return (f"{os.cpu_count()} cores ({cpu}), {mem} GiB, {platform.system()} {platform.release()}, "
            f"Python {platform.python_version()}, fence-agents {fence}")


def main(argv: list[str]) -> int:
    wanted = set(argv)
    results = []
    for module, number in BENCHES:
        if wanted and module not in wanted and number not in wanted:
            continue
        print(f"bench {number}: {module} ...", flush=True)
        started = time.monotonic()
        result = importlib.import_module(f"bench.{module}").run()
        result["number"], result["seconds"] = number, time.monotonic() - started
        for line in result["lines"]:
            print(f"  {line}")
        print(f"  goal: {result['goal']}: {'MET' if result['met'] else 'MISSED'} "
              f"({result['seconds']:.0f} s)", flush=True)
        results.append(result)
    if not wanted:
        write(results)
        print(f"wrote {OUT}")
    return 0


def write(results: list[dict]) -> None:  # type: ignore[type-arg]
    parts = ["# Benchmarks\n",
             f"Run by `make bench` on {datetime.now(UTC):%Y-%m-%d %H:%M} UTC; machine: {machine()}.\n",
             METHOD.read_text() if METHOD.exists() else "",
             "\n## Results\n",
             "| # | benchmark | goal | result |", "|---|---|---|---|"]
    for r in results:
        parts.append(f"| {r['number']} | {r['name']} | {r['goal']} | "
                     f"{'**met**' if r['met'] else '**missed**'} |")
    for r in results:
        parts.append(f"\n### {r['number']}. {r['name']}\n\nGoal: {r['goal']} — "
                     f"{'met' if r['met'] else 'missed'}.\n")
        parts.extend(f"* {line}" for line in r["lines"])
        if r.get("analysis"):
            parts.append(f"\n{r['analysis']}")
    OUT.write_text("\n".join(parts) + "\n")


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
