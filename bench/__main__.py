"""`python -m bench [NAME ...]`: run the benchmarks and write docs/benchmarks.md.

Without arguments every benchmark runs and the page is written anew. With
some (`python -m bench 7 8`), those run and replace their own row and
section of the page; the other benchmarks' figures stay as they were, and
each section rewritten this way says when it was run."""

from __future__ import annotations

import importlib
import os
import platform
import re
import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

BENCHES = [
    ("b1_status_latency", "1"), ("b2_flow_overhead", "2"), ("b3_locator", "3"),
    ("b4_monitoring", "4"), ("b5_detection", "5"), ("b6_mass_failure", "6"),
    ("b7_ha_monitoring", "7"), ("b8_failover", "8"), ("b9_device_turns", "9"),
    ("b10_redfish", "10"),
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
        if wanted:  # at once: a later benchmark that fails does not lose this one
            update([result])
            print(f"  wrote its section of {OUT}", flush=True)
    if not wanted:
        write(results)
        print(f"wrote {OUT}")
    return 0


def row(r: dict) -> str:  # type: ignore[type-arg]
    return (f"| {r['number']} | {r['name']} | {r['goal']} | "
            f"{'**met**' if r['met'] else '**missed**'} |")


def section(r: dict, alone: bool = False) -> str:  # type: ignore[type-arg]
    parts = [f"### {r['number']}. {r['name']}\n"]
    if alone:
        parts.append(f"Run alone (`python -m bench {r['number']}`) on "
                     f"{datetime.now(UTC):%Y-%m-%d %H:%M} UTC; machine: {machine()}.\n")
    parts.append(f"Goal: {r['goal']} — {'met' if r['met'] else 'missed'}.\n")
    parts.extend(f"* {line}" for line in r["lines"])
    if r.get("analysis"):
        parts.append(f"\n{r['analysis']}")
    return "\n".join(parts)


def page(header: str, rows: dict[str, str], sections: dict[str, str]) -> str:
    order = [number for _, number in BENCHES]
    ordered = sorted(rows, key=lambda n: order.index(n) if n in order else len(order))
    parts = ["# Benchmarks\n", header + "\n",
             METHOD.read_text() if METHOD.exists() else "",
             "\n## Results\n",
             "| # | benchmark | goal | result |", "|---|---|---|---|"]
    parts.extend(rows[n] for n in ordered)
    parts.extend("\n" + sections[n] for n in ordered if n in sections)
    return "\n".join(parts) + "\n"


def write(results: list[dict]) -> None:  # type: ignore[type-arg]
    header = f"Run by `make bench` on {datetime.now(UTC):%Y-%m-%d %H:%M} UTC; machine: {machine()}."
    OUT.write_text(page(header, {r["number"]: row(r) for r in results},
                        {r["number"]: section(r) for r in results}))


def update(results: list[dict]) -> None:  # type: ignore[type-arg]
    """Replace the rows and sections of `results` in the page, keep the others."""
    text = OUT.read_text() if OUT.exists() else ""
    header = next((line for line in text.splitlines() if line.startswith("Run by ")),
                  "Not yet run as a whole by `make bench`.")
    body = text.split("\n## Results\n", 1)[-1] if "\n## Results\n" in text else ""
    rows = {m.group(1): m.group(0) for m in re.finditer(r"^\| (\d+) \| .* \|$", body, re.M)}
    sections = {m.group(1): m.group(0).rstrip("\n")
                for m in re.finditer(r"^### (\d+)\. .*?(?=^### \d+\. |\Z)", body, re.M | re.S)}
    for r in results:
        rows[r["number"]] = row(r)
        sections[r["number"]] = section(r, alone=True)
    OUT.write_text(page(header, rows, sections))


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
