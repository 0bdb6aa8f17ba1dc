"""One virtual Redfish BMC (lab/redfish.py, lab/redfishweb.py) in a process of its own.

sushy-tools' emulator is one Flask app per process, so each Redfish BMC of
a lab runs as `python -m hostpower.lab.redfishserver`, started by the lab
supervisor (inside the management network's namespace in namespace mode).
Protocol, one JSON object per line, as bmcserver.py's:

* stdin, first line: {"name", "address", "port", "system", "username",
  "password", "power", "power_delay", "max_sessions", "session_timeout",
  "cert", "key"}; the password never travels in argv.
* stdin, later lines: {"cmd": "answer", "answering": BOOL} (the "BMC not
  answering" fault), {"cmd": "restart"} (the BMC restarted: sessions
  forgotten), {"cmd": "power", "power": "on"|"off"} (a hand on the power
  button, not counted). End of stdin: the supervisor is gone, exit.
* stdout: {"event": "ready"} once it listens; {"event": "power", "bmc",
  "power"} on every power change; {"event": "command", "bmc", "command"}
  for every request counted (redfish.COMMANDS).
"""

from __future__ import annotations

import json
import signal
import sys
import threading
from pathlib import Path
from typing import Any

from hostpower.lab.redfish import RedfishBmc
from hostpower.lab.redfishweb import RedfishServer


class _Process:
    def __init__(self, spec: dict[str, Any]) -> None:
        self._out = threading.Lock()
        self.name = str(spec["name"])
        self.bmc = RedfishBmc(
            self.name, str(spec["system"]), str(spec["username"]), str(spec["password"]),
            power=str(spec.get("power", "on")), power_delay=float(spec.get("power_delay", 0)),
            max_sessions=int(spec.get("max_sessions", 8)),
            session_timeout=float(spec.get("session_timeout", 600)), emit=self.emit)
        self.server = RedfishServer(str(spec["address"]), int(spec["port"]), self.bmc,
                                    Path(spec["cert"]), Path(spec["key"]))

    def emit(self, **event: Any) -> None:
        with self._out:
            sys.stdout.write(json.dumps({**event, "bmc": self.name}) + "\n")
            sys.stdout.flush()

    def run(self) -> None:
        threading.Thread(target=self._read_commands, daemon=True).start()
        with self._out:
            sys.stdout.write(json.dumps({"event": "ready"}) + "\n")
            sys.stdout.flush()
        try:
            self.server.serve_forever(poll_interval=0.2)
        finally:
            self.bmc.close()

    def stop(self, *_: object) -> None:
        threading.Thread(target=self.server.shutdown, daemon=True).start()

    def _read_commands(self) -> None:
        for line in sys.stdin:
            try:
                cmd = json.loads(line)
            except ValueError:
                continue
            if cmd.get("cmd") == "answer":
                self.bmc.set_answering(bool(cmd.get("answering")))
            elif cmd.get("cmd") == "restart":
                self.bmc.restart()
            elif cmd.get("cmd") == "power" and cmd.get("power") in ("on", "off"):
                self.bmc.hand(str(cmd["power"]))
        self.stop()


def main() -> int:
    spec = json.loads(sys.stdin.readline())
    process = _Process(spec)
    signal.signal(signal.SIGTERM, process.stop)
    signal.signal(signal.SIGINT, process.stop)
    process.run()
    return 0


if __name__ == "__main__":
    sys.exit(main())
