"""Killing a lab's processes and waiting until they are really gone."""

from __future__ import annotations

import os
import signal
import subprocess
import time


def alive(pid: int) -> bool:
    """A zombie counts as gone: it holds no socket, address or namespace
    (and the machine's init may be slow to reap the orphans of a dead lab)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except (OSError, IndexError):
        return False


def kill_and_wait(pids: list[int], timeout: float = 5.0) -> list[int]:
    """SIGKILL each process; wait (bounded) until none is alive. Returns the
    pids that were signalled."""
    killed = []
    for pid in pids:
        try:
            os.kill(pid, signal.SIGKILL)
            killed.append(pid)
        except ProcessLookupError:
            pass
    deadline = time.monotonic() + timeout
    waiting = list(killed)
    while waiting and time.monotonic() < deadline:
        waiting = [p for p in waiting if alive(p)]
        if waiting:
            time.sleep(0.02)
    return killed


def signal_group(proc: "subprocess.Popen[bytes]", sig: int) -> None:
    """`sig` to the process group of `proc` (started with its own session),
    unless it has ended."""
    if proc.poll() is None:
        try:
            os.killpg(proc.pid, sig)
        except ProcessLookupError:
            pass


def stop_groups(procs: "list[subprocess.Popen[bytes]]", wait: float = 5.0) -> None:
    """Stop each process group: SIGCONT (a stopped one would not see the
    rest), SIGTERM, and SIGKILL for any still running `wait` seconds later."""
    for p in procs:
        signal_group(p, signal.SIGCONT)
        signal_group(p, signal.SIGTERM)
    for p in procs:
        try:
            p.wait(timeout=wait)
        except subprocess.TimeoutExpired:
            signal_group(p, signal.SIGKILL)
            p.wait(timeout=wait)
