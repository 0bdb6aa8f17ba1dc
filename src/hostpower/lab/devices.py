"""The lab's device processes: virtual BMCs and PDUs, each a child process
speaking one JSON object a line (bmcserver.py, redfishserver.py,
pduserver.py): its spec as the first line of its stdin (secrets never in
argv), commands on later lines; events on its stdout, {"event": "ready"}
first. Started inside the management network's namespace in namespace mode.
"""

from __future__ import annotations

import json
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import IO, Any

from hostpower.lab.errors import LabError


class DeviceProcesses:
    def __init__(self, run_dir: Path, child_env: dict[str, str] | None,
                 on_event: Callable[[dict[str, Any]], None]) -> None:
        self.run_dir = run_dir
        self.child_env = child_env
        self.on_event = on_event
        self.procs: dict[str, subprocess.Popen[bytes]] = {}
        self._ready: dict[str, threading.Event] = {}

    def start(self, key: str, prefix: list[str], module: str, spec: dict[str, Any]) -> None:
        """Start `python -m module` (after `prefix`, e.g. `ip netns exec NS`) as
        device process `key`; its stderr goes to <run dir>/<key>.log."""
        log = (self.run_dir / f"{key}.log").open("ab")
        proc = subprocess.Popen(prefix + [sys.executable, "-m", module],
                                stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=log,
                                start_new_session=True, env=self.child_env)
        assert proc.stdin is not None and proc.stdout is not None
        proc.stdin.write((json.dumps(spec) + "\n").encode())
        proc.stdin.flush()
        self.procs[key] = proc
        self._ready[key] = threading.Event()
        threading.Thread(target=self._read_events, args=(key, proc.stdout),
                         name=f"device-events-{key}", daemon=True).start()

    def wait_ready(self, deadline: float) -> None:
        for key, ready in self._ready.items():
            while not ready.wait(max(0.0, min(0.1, deadline - time.monotonic()))):
                if self.procs[key].poll() is not None or time.monotonic() >= deadline:
                    raise LabError(f"device process {key} did not start "
                                   f"(see {self.run_dir / (key + '.log')})")

    def command(self, key: str, command: dict[str, Any]) -> None:
        proc = self.procs.get(key)
        if proc is None or proc.stdin is None:
            raise LabError(f"no device process {key}")
        try:
            proc.stdin.write((json.dumps(command) + "\n").encode())
            proc.stdin.flush()
        except OSError as exc:
            raise LabError(f"device process {key} is gone ({exc})") from None

    def _read_events(self, key: str, stream: IO[bytes]) -> None:
        for line in stream:
            try:
                event = json.loads(line)
            except ValueError:
                continue
            if event.get("event") == "ready":
                self._ready[key].set()
            else:
                self.on_event(event)
