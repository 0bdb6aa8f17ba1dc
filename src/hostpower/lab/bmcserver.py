"""All virtual BMCs of one management network, in one process.

Run by the lab supervisor (inside the network's namespace in namespace
mode) as `python -m hostpower.lab.bmcserver`. Protocol, one JSON object per
line:

* stdin, first line: {"username", "password", "bmcs": [{"name", "address",
  "port", "power"}]}; the password never travels in argv.
* stdin, later lines: {"cmd": "answer", "bmc": NAME, "answering": BOOL}
  (the "BMC not answering" fault); {"cmd": "power", "bmc": NAME, "power":
  "on"|"off"} (a hand on the power button, not counted). End of stdin: the
  supervisor is gone, exit.
* stdout: {"event": "ready"} once every BMC listens; {"event": "power",
  "bmc", "power"} on every power change; {"event": "command", "bmc",
  "command"} for every on/off/reset/status command received.
"""

from __future__ import annotations

import json
import signal
import sys
import threading
from dataclasses import asdict
from typing import Any

from hostpower.lab.bmc import VirtualBmc

_COMMANDS = ("on", "off", "reset", "status")
_POLL = 0.01


class BmcServer:
    def __init__(self, spec: dict[str, Any]) -> None:
        self._out = threading.Lock()
        self._done = threading.Event()
        self.bmcs: dict[str, VirtualBmc] = {}
        for b in spec["bmcs"]:
            self.bmcs[b["name"]] = VirtualBmc(
                address=b["address"], port=int(b["port"]), user=spec["username"],
                password=spec["password"], state=b.get("power", "on"),
                on_power_change=lambda state, name=b["name"]: self.emit(
                    event="power", bmc=name, power=state))

    def emit(self, **event: Any) -> None:
        with self._out:
            sys.stdout.write(json.dumps(event) + "\n")
            sys.stdout.flush()

    def run(self) -> None:
        for bmc in self.bmcs.values():
            bmc.start()
        threading.Thread(target=self._report_commands, daemon=True).start()
        threading.Thread(target=self._read_commands, daemon=True).start()
        self.emit(event="ready")
        self._done.wait()
        for bmc in self.bmcs.values():
            bmc.stop()

    def stop(self, *_: object) -> None:
        self._done.set()

    def _report_commands(self) -> None:
        """Counters are snapshots; each increment becomes one event."""
        seen = {name: dict.fromkeys(_COMMANDS, 0) for name in self.bmcs}
        while not self._done.wait(_POLL):
            for name, bmc in self.bmcs.items():
                counts = asdict(bmc.counters())
                for command in _COMMANDS:
                    for _ in range(counts[command] - seen[name][command]):
                        self.emit(event="command", bmc=name, command=command)
                    seen[name][command] = counts[command]

    def _read_commands(self) -> None:
        for line in sys.stdin:
            try:
                cmd = json.loads(line)
            except ValueError:
                continue
            bmc = self.bmcs.get(cmd.get("bmc"))
            if cmd.get("cmd") == "answer" and bmc is not None:
                bmc.answering = bool(cmd.get("answering"))
            elif cmd.get("cmd") == "power" and bmc is not None and cmd.get("power") in (
                    "on", "off"):
                if bmc.power_state != cmd["power"]:
                    bmc.power_state = cmd["power"]  # a hand on the power button: not counted
                    self.emit(event="power", bmc=cmd["bmc"], power=cmd["power"])
        self.stop()


def main() -> int:
    spec = json.loads(sys.stdin.readline())
    server = BmcServer(spec)
    signal.signal(signal.SIGTERM, server.stop)
    signal.signal(signal.SIGINT, server.stop)
    server.run()
    return 0


if __name__ == "__main__":
    sys.exit(main())
