"""Profile the measured phase of benchmark 2 or 6 with py-spy.

    python -m bench.profile 2|6 [--pg] [--limit C] [--flows N] [--rate R] [--out FILE]

runs the benchmark's workload in a child process: set-up and warm-up first
(lab or BMC farm, database, engine, the first restarts), then, once the child
says it is warm, `py-spy record --gil --format raw --nonblocking` attaches to it, the child
runs the measured phase (bench 2: N restarts of one host one after another;
bench 6: 200 restarts at once with concurrency limit C, one engine), and
py-spy is stopped as soon as the phase ends. So imports, set-up and warm-up
are not in the profile. `--gil` samples only the thread holding the GIL: the
shares are of the Python CPU time the engine process spent, whichever thread
spent it (the engine's event loop, the database threads); how many samples
there were against rate x seconds tells how much of the phase the process
was running Python at all. `--idle` samples every thread instead, running
or waiting: where the flows wait.

Prints the top functions by inclusive and self share (bench/pyspy_agg.py) and
writes the raw profile to FILE (default /tmp/hostpower-profile-B[-pg].txt),
which `python -m bench.pyspy_agg FILE --under TEXT` reads again. The BMCs
(bench 6) and the lab's agents (bench 2) run in other processes and are not
profiled.
"""

from __future__ import annotations

import argparse
import json
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path

from bench.childproc import Lines, close, say
from bench.pyspy_agg import Profile, aggregate, report

SET_UP_WITHIN = 300.0  # seconds for the child's set-up and warm-up
PHASE_WITHIN = 600.0
ATTACH_WITHIN = 20.0  # seconds for py-spy to say it samples


@contextmanager
def restart_overhead(pg: bool, flows: int) -> Iterator[Callable[[], object]]:
    """Bench 2's workload: one host restarted through one proxy agent."""
    from bench.b2_flow_overhead import WARM_UP, restarter
    from bench.pgdb import fresh_database

    with ExitStack() as stack:
        url = stack.enter_context(fresh_database()) if pg else None
        restart = stack.enter_context(restarter(url))
        for _ in range(WARM_UP):
            restart()
        yield lambda: [restart() for _ in range(flows)]


@contextmanager
def mass_failure(pg: bool, limit: int) -> Iterator[Callable[[], object]]:
    """Bench 6's workload: 200 restarts at once on one engine."""
    from bench.b6_mass_failure import COMMAND_DELAY, FARM_PROCESSES, HOSTS, _prepare, _timed_restarts
    from bench.bmcfarm import BmcFarm
    from bench.pgdb import fresh_database
    from enginekit import EngineThread
    from hostpower.context import EngineContext
    from hostpower.settings import Settings

    with ExitStack() as stack:
        farm = stack.enter_context(BmcFarm(HOSTS, COMMAND_DELAY, FARM_PROCESSES))
        tmp = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="hostpower-bench-")))
        url = stack.enter_context(fresh_database()) if pg else f"sqlite:///{tmp / 'e.db'}"
        ctx = EngineContext.open(Settings(tmp / "home", url))
        stack.callback(ctx.close)
        ids = _prepare(ctx, farm.endpoints, limit)
        engine = stack.enter_context(EngineThread(ctx))
        _timed_restarts(engine, ids[:1])  # warm up pools and IPMI sessions
        yield lambda: _timed_restarts(engine, ids)


def child(bench: str, pg: bool, limit: int, flows: int) -> int:
    """Set up, say "warm", run the phase on "go", answer its seconds, wait for EOF."""
    workload = restart_overhead(pg, flows) if bench == "2" else mass_failure(pg, limit)
    with workload as phase:
        print("warm", flush=True)
        if sys.stdin.readline().strip() != "go":
            return 1
        started = time.monotonic()
        phase()
        print(json.dumps({"seconds": time.monotonic() - started}), flush=True)
        sys.stdin.read()  # until the parent has stopped py-spy
    return 0


def _py_spy() -> str:
    found = shutil.which("py-spy") or str(Path(sys.executable).parent / "py-spy")
    if not Path(found).exists():
        raise SystemExit("py-spy not found: install the test extras (pip install -e '.[test]')")
    return found


def profile(bench: str, pg: bool, limit: int, flows: int, rate: int, out: Path,
            idle: bool = False, nonblocking: bool = False) -> str:
    """The report of `record` as text."""
    what, found = record(bench, pg, limit, flows, rate, out, idle, nonblocking)
    return report(found, title=what)


def record(bench: str, pg: bool, limit: int, flows: int, rate: int, out: Path,
           idle: bool = False, nonblocking: bool = True) -> tuple[str, Profile]:
    """Run the workload, profile its measured phase: (what was measured, the profile)."""
    args = ["--pg"] if pg else []
    proc = subprocess.Popen(
        [sys.executable, "-m", "bench.profile", bench, "--child", "--limit", str(limit),
         "--flows", str(flows), *args],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
        cwd=Path(__file__).resolve().parent.parent)
    spy: subprocess.Popen[bytes] | None = None
    try:
        lines = Lines(proc)
        if lines.get(SET_UP_WITHIN) != "warm":
            raise SystemExit(f"the workload did not start (exit code {proc.poll()})")
        log = out.with_suffix(".py-spy.log")
        with log.open("w") as err:
            mode = ["--idle"] if idle else ["--gil"]
            if nonblocking:  # py-spy does not pause the process to sample: less perturbation
                mode.append("--nonblocking")
            spy = subprocess.Popen([_py_spy(), "record", "--pid", str(proc.pid), *mode,
                                    "--format", "raw", "-r", str(rate), "-o", str(out)],
                                   stdout=err, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + ATTACH_WITHIN
        while "Sampling" not in log.read_text():
            if spy.poll() is not None or time.monotonic() > deadline:
                raise SystemExit(f"py-spy did not attach: {log.read_text()[-2000:]}")
            time.sleep(0.1)
        say(proc, "go")
        answer = lines.get(PHASE_WITHIN)
        if not answer or not answer.startswith("{"):
            raise SystemExit(f"the workload failed (exit code {proc.poll()})")
        seconds = json.loads(answer)["seconds"]
        spy.send_signal(signal.SIGINT)  # py-spy writes its output on Ctrl-C
        spy.wait(60)
    finally:
        if spy is not None and spy.poll() is None:
            spy.kill()
            spy.wait()
        close(proc, wait=60)
    with out.open() as f:
        found = aggregate(f)
    restarts = flows if bench == "2" else 200
    held = (f"; samples found a thread holding the GIL {100 * found.total / (rate * seconds):.0f} % "
            f"of the phase (the rest: the process waited), about "
            f"{found.total / rate / restarts * 1000:.0f} ms of Python per restart" if not idle else
            "; every thread sampled, idle or not (shares of thread time)")
    what = (f"bench {bench}, {'PostgreSQL' if pg else 'SQLite'}, "
            + (f"{flows} restarts one after another" if bench == "2" else f"200 restarts, C={limit}")
            + f": measured phase {seconds:.2f} s, py-spy {mode[0]} at {rate} Hz, raw profile "
            + f"{out}{held}" + (" (non-blocking)" if nonblocking else ""))
    return what, found


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("bench", choices=("2", "6"))
    p.add_argument("--pg", action="store_true", help="PostgreSQL (a fresh database) instead of SQLite")
    p.add_argument("--limit", type=int, default=10, help="bench 6: FenceConcurrencyLimit")
    p.add_argument("--flows", type=int, default=40, help="bench 2: restarts profiled")
    p.add_argument("--rate", type=int, default=250, help="samples per second")
    p.add_argument("--out", type=Path, help="raw profile file")
    p.add_argument("--idle", action="store_true",
                   help="sample every thread, idle or not (where flows wait), instead of --gil")
    p.add_argument("--blocking", action="store_true",
                   help="py-spy pauses the process at each sample (consistent stacks, but the "
                        "phase runs about twice as slow); by default it reads without pausing")
    p.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    a = p.parse_args(argv)
    if a.child:
        return child(a.bench, a.pg, a.limit, a.flows)
    out = a.out or Path(tempfile.gettempdir()) / f"hostpower-profile-{a.bench}{'-pg' if a.pg else ''}.txt"
    print(profile(a.bench, a.pg, a.limit, a.flows, a.rate, out, a.idle, not a.blocking))
    return 0


if __name__ == "__main__":
    sys.exit(main())
