"""Virtual IPMI BMCs served from child processes, for benchmark 6.

    python -m bench.bmcfarm --count N [--first I] [--delay 0.05]

starts N `VirtualBmc`s (BMC number I to I+N-1 of the benchmark, on loopback
addresses 127.19.x.y), prints their `[address, port]` pairs as one JSON line
once every one is serving, then answers on stdin:

    "stats"        one JSON line: each BMC's max_in_flight, the chassis
                   commands handled since the last "stats" and how long each
                   took inside the BMC (ms), and this process's CPU seconds
    "stop" or EOF  stops every BMC and exits

Why a child process: pyghmi's RMCP+ server (session set-up, HMAC and AES of
every packet, one thread per session) is Python code. Served from threads of
the benchmark's own process, 200 BMCs competed for the GIL with the engine,
and their CPU was charged to the engine. `BmcFarm` is the benchmark's side:
it starts one or more such processes and kills them on exit, whatever
happens.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from bench.childproc import Lines, close, say
from hostpower.lab.bmc import VirtualBmc

USER, PASSWORD = "admin", "bench-password"
READY_WITHIN = 60.0  # seconds for a farm process to have every BMC serving


def address(index: int) -> str:
    """The loopback address of the benchmark's BMC number `index` (0..399)."""
    return f"127.19.{200 + index // 200}.{index % 200 + 1}"


class TimedBmc(VirtualBmc):
    """A VirtualBmc that records how long each chassis command took inside it:
    `command_delay` plus whatever the farm's own load added (GIL waits, the
    reply's encryption). That overrun is what would make the 50 ms dishonest."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.durations: list[float] = []

    def control_chassis(self, request: dict, session: Any) -> None:  # type: ignore[type-arg]
        started = time.perf_counter()
        try:
            super().control_chassis(request, session)
        finally:
            took = time.perf_counter() - started
            with self._lock:
                self.durations.append(took)


def _cpu() -> float:
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def _stats(bmcs: list[TimedBmc]) -> dict[str, object]:
    durations: list[float] = []
    for b in bmcs:
        with b._lock:
            durations.extend(b.durations)
            b.durations.clear()
    return {"max_in_flight": [b.max_in_flight for b in bmcs],
            "command_ms": [round(d * 1000, 3) for d in durations], "cpu": _cpu()}


def serve(count: int, first: int, delay: float) -> int:
    bmcs: list[TimedBmc] = []
    try:
        for i in range(first, first + count):
            bmcs.append(TimedBmc(address(i), 0, USER, PASSWORD, state="on",
                                 command_delay=delay).start())
        print(json.dumps([[b.address, b.port] for b in bmcs]), flush=True)
        for line in sys.stdin:
            word = line.strip()
            if word == "stop":
                break
            if word == "stats":
                print(json.dumps(_stats(bmcs)), flush=True)
    finally:
        for b in bmcs:
            b.stop()
    return 0


class FarmError(RuntimeError):
    """A farm process did not start its BMCs or stopped answering."""


class BmcFarm:
    """`count` BMCs over `processes` child processes (context manager).

    `endpoints` lists (address, port) in BMC order; `stats()` merges the
    processes' answers. Every process is told to stop on exit (EOF) and is
    killed if it does not within a few seconds."""

    def __init__(self, count: int, delay: float, processes: int = 1) -> None:
        self.count, self.delay, self.processes = count, delay, processes
        self.children: list[tuple[subprocess.Popen[str], Lines]] = []
        self.endpoints: list[tuple[str, int]] = []

    def __enter__(self) -> "BmcFarm":
        try:
            share = -(-self.count // self.processes)
            for first in range(0, self.count, share):
                proc = subprocess.Popen(
                    [sys.executable, "-m", "bench.bmcfarm", "--count",
                     str(min(share, self.count - first)), "--first", str(first),
                     "--delay", str(self.delay)],
                    stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
                    cwd=Path(__file__).resolve().parent.parent)
                self.children.append((proc, Lines(proc)))
            for proc, lines in self.children:
                self.endpoints.extend((a, int(p)) for a, p in json.loads(self._answer(proc, lines)))
        except BaseException:
            self.__exit__()
            raise
        return self

    @staticmethod
    def _answer(proc: subprocess.Popen[str], lines: Lines) -> str:
        line = lines.get(READY_WITHIN)
        if not line:
            raise FarmError(f"BMC farm process {proc.pid} stopped (exit code {proc.poll()})")
        return line

    def stats(self) -> dict[str, Any]:
        """max_in_flight per BMC, chassis command durations (ms) since the last
        call, and each process's CPU seconds so far."""
        merged: dict[str, Any] = {"max_in_flight": [], "command_ms": [], "cpu": []}
        for proc, lines in self.children:
            say(proc, "stats")
            answer = json.loads(self._answer(proc, lines))
            merged["max_in_flight"] += answer["max_in_flight"]
            merged["command_ms"] += answer["command_ms"]
            merged["cpu"].append(answer["cpu"])
        return merged

    def __exit__(self, *exc: object) -> None:
        for proc, _ in self.children:
            close(proc, wait=10)


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--count", type=int, required=True)
    p.add_argument("--first", type=int, default=0, help="number of the first BMC (its address)")
    p.add_argument("--delay", type=float, default=0.05, help="seconds per chassis command")
    a = p.parse_args(argv)
    return serve(a.count, a.first, a.delay)


if __name__ == "__main__":
    sys.exit(main())
