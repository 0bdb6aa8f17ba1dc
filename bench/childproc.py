"""Talking to the benchmarks' child processes line by line, every read bounded."""

from __future__ import annotations

import queue
import subprocess
import threading


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
