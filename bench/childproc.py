"""Talking to the benchmarks' child processes line by line, every read bounded;
and the children's side: the parent's next line, the engines a child waits for."""

from __future__ import annotations

import asyncio
import queue
import subprocess
import sys
import threading
import time
from typing import Any


class Lines:
    """A process's stdout, line by line (stripped), each read bounded."""

    def __init__(self, proc: subprocess.Popen[str]) -> None:
        self.proc = proc
        self.lines: queue.Queue[str | None] = queue.Queue()
        threading.Thread(target=self._pump, daemon=True).start()

    def _pump(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.lines.put(line.strip())
        self.lines.put(None)

    def get(self, timeout: float) -> str | None:
        """The next line; None if the process closed its output; TimeoutError."""
        try:
            return self.lines.get(timeout=timeout)
        except queue.Empty:
            raise TimeoutError(f"no line from process {self.proc.pid} within {timeout:g} s") \
                from None


def say(proc: subprocess.Popen[str], line: str) -> None:
    assert proc.stdin is not None
    proc.stdin.write(line + "\n")
    proc.stdin.flush()


def close(proc: subprocess.Popen[str], wait: float = 30) -> None:
    """Close its stdin (the child's cue to stop cleanly), wait, kill if it lingers."""
    try:
        if proc.stdin is not None and not proc.stdin.closed:
            proc.stdin.close()
    except OSError:
        pass
    try:
        proc.wait(wait)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(10)


async def parent_line() -> str:
    """A child's side: the next line its parent wrote on its stdin (stripped)."""
    return (await asyncio.to_thread(sys.stdin.readline)).strip()


async def wait_for_engines(gateway: Any, engines: int, within: float,
                           name: str) -> tuple[Any, dict[str, int]]:
    """A child engine's side: the ownership ring once `engines` engines are
    alive (EngineGateway.ownership); SystemExit after `within` seconds."""
    deadline = time.monotonic() + within
    while len((found := await gateway.ownership())[1]) < engines:
        if time.monotonic() > deadline:
            raise SystemExit(f"{name}: fewer than {engines} engines alive after {within:g} s")
        await asyncio.sleep(0.2)
    return found
