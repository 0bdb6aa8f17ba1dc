"""The lab's `kernel_crash_kdump` fault: a host whose kernel crashed writes a
crash dump and says so with the real `fence_kdump_send`.

Injecting it kills the host's agent (the crashed kernel took it down, the
power stays on) and runs Debian's `/usr/libexec/fence-agents/fence_kdump_send`
inside the host's network namespace towards the engine, as a kdump kernel
would, so its messages leave from the host's front address:

    ip netns exec hplN-hI fence_kdump_send -p PORT -i INTERVAL -c COUNT ENGINE_ADDRESS

Options (all optional): `port` (7410), `interval` in seconds between
messages (1), `duration` in seconds of the dump (30; 0: until cleared),
`address` to send to (the engine's front address), `reboot` (false): when
true the host boots again by itself once the dump is written, as kdump's
default final action does; otherwise it stays dead until the fault is
cleared (it "reboots": a new agent, a new boot id) or its power is cycled.
Needs namespace mode: on loopback every message would come from 127.0.0.1.
"""

from __future__ import annotations

import math
import os
import signal
import subprocess
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from hostpower.lab.errors import LabError

FENCE_KDUMP_SEND = "/usr/libexec/fence-agents/fence_kdump_send"
DUMPING, DUMPED = "kdumping", "dumped"   # the agent column of `hostpower lab status`


@dataclass(frozen=True)
class KdumpOptions:
    port: int = 7410
    interval: int = 1
    duration: float = 30.0
    address: str | None = None
    reboot: bool = False

    @classmethod
    def parse(cls, options: Mapping[str, Any] | None) -> "KdumpOptions":
        options = dict(options or {})
        unknown = set(options) - {"port", "interval", "duration", "address", "reboot"}
        if unknown:
            raise LabError(f"kernel_crash_kdump has no option {', '.join(sorted(unknown))} "
                           f"(port, interval, duration, address, reboot)")
        try:
            port = int(options.get("port", cls.port))
            interval = int(options.get("interval", cls.interval))
            duration = float(options.get("duration", cls.duration))
        except (TypeError, ValueError):
            raise LabError("kernel_crash_kdump: port and interval are whole numbers, "
                           "duration a number of seconds") from None
        reboot = options.get("reboot", False)
        if isinstance(reboot, str):
            reboot = reboot.lower() in ("1", "true", "yes", "on")
        if not 1 <= port <= 65535 or interval < 1 or duration < 0:
            raise LabError("kernel_crash_kdump: port 1-65535, interval >= 1 s, duration >= 0 s")
        address = options.get("address")
        return cls(port, interval, duration, str(address) if address else None, bool(reboot))

    @property
    def count(self) -> int:
        """fence_kdump_send's -c: messages at 0, i, 2i, … up to `duration` (0: forever)."""
        return 0 if self.duration == 0 else math.floor(self.duration / self.interval) + 1


def sender_command(prefix: list[str], address: str, opts: KdumpOptions) -> list[str]:
    return [*prefix, FENCE_KDUMP_SEND, "-p", str(opts.port), "-i", str(opts.interval),
            "-c", str(opts.count), address]


@dataclass
class _Dump:
    process: subprocess.Popen[bytes]
    options: KdumpOptions
    address: str


class KdumpFaults:
    """The dumps under way in one lab. Every method is called with the lab's
    lock held; `on_written` (a host's dump ended by itself) takes it."""

    def __init__(self, run_dir: Path, child_env: dict[str, str] | None,
                 lock: threading.RLock, on_written: Callable[[str, bool], None]) -> None:
        self.run_dir = run_dir
        self.child_env = child_env
        self.lock = lock
        self.on_written = on_written
        self._dumps: dict[str, _Dump] = {}

    def start(self, host: str, prefix: list[str], default_address: str,
              options: Mapping[str, Any] | None) -> KdumpOptions:
        opts = KdumpOptions.parse(options)
        if not Path(FENCE_KDUMP_SEND).exists():
            raise LabError(f"{FENCE_KDUMP_SEND} is missing: install Debian's fence-agents")
        self.stop(host)
        address = opts.address or default_address
        log = (self.run_dir / f"kdump-{host}.log").open("ab")
        process = subprocess.Popen(sender_command(prefix, address, opts),
                                   stdin=subprocess.DEVNULL, stdout=log, stderr=log,
                                   start_new_session=True, env=self.child_env)
        dump = _Dump(process, opts, address)
        self._dumps[host] = dump
        threading.Thread(target=self._wait, args=(host, dump), name=f"kdump-{host}",
                         daemon=True).start()
        return opts

    def _wait(self, host: str, dump: _Dump) -> None:
        dump.process.wait()
        with self.lock:
            if self._dumps.get(host) is not dump:
                return  # stopped: cleared, power lost, lab stopping
            del self._dumps[host]
        self.on_written(host, dump.options.reboot)

    def sending(self, host: str) -> bool:
        dump = self._dumps.get(host)
        return dump is not None and dump.process.poll() is None

    def stop(self, host: str) -> None:
        """End the host's dump, if one runs (cleared, power lost)."""
        dump = self._dumps.pop(host, None)
        if dump is not None and dump.process.poll() is None:
            try:
                os.killpg(dump.process.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            dump.process.wait(timeout=5)

    def stop_all(self) -> None:
        for host in list(self._dumps):
            self.stop(host)

    def status(self, host: str) -> dict[str, Any] | None:
        dump = self._dumps.get(host)
        if dump is None:
            return None
        return {"sending": dump.process.poll() is None, "to": f"{dump.address}:{dump.options.port}",
                "interval": dump.options.interval, "duration": dump.options.duration,
                "reboot": dump.options.reboot}
