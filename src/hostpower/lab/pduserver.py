"""One virtual switched PDU (lab/pdu.py) in a process of its own: snmpsim's
command responder run in this process, behind a relay that can drop
everything (the PDU unreachable).

Started by the lab supervisor as `python -m hostpower.lab.pduserver`
(inside the management network's namespace in namespace mode). Protocol, one
JSON object per line, as bmcserver.py's:

* stdin, first line: {"name", "address", "port", "community", "outlets":
  {N: label}, "power": {N: "on"|"off"}}; the community never travels in argv.
* stdin, later lines: {"cmd": "answer", "answering": BOOL} (fault
  `pdu_unresponsive`); {"cmd": "outlet", "outlet": N, "power": "on"|"off"}
  (a hand on the outlet's switch, not counted). End of stdin: the
  supervisor is gone, exit.
* stdout: {"event": "ready"} once snmpsim listens; {"event": "outlet",
  "pdu", "outlet", "power"} on every outlet power change; {"event":
  "command", "pdu", "outlet", "command"} for every outlet GET (status) or
  SET (on, off, reboot); {"event": "command", "pdu", "outlet": null,
  "command": "dropped"} for each datagram dropped while unreachable.

As root, snmpsim insists on dropping its privileges: it runs as
nobody/nogroup (FIELD-NOTES), so its data and cache directory (a private
temporary directory) belong to nobody. Everything it needs from Python is
imported before that, while root can still read it.
"""

from __future__ import annotations

import grp
import json
import os
import pwd
import shutil
import signal
import sys
import tempfile
import threading
import time
from importlib import resources
from pathlib import Path
from typing import Any

from snmpsim.commands import responder

# What snmpsim imports only once it runs as nobody, who may not read this
# Python's files: its index of the data file is a dbm (the first one found),
# whose keys it encodes as Latin-1.
for _module in ("dbm.gnu", "dbm.ndbm", "dbm.dumb", "encodings.latin_1"):
    try:
        __import__(_module)
    except ImportError:
        pass

from hostpower.lab import pdu

USER, GROUP = "nobody", "nogroup"
_out = threading.Lock()


def emit(**event: Any) -> None:
    with _out:
        sys.stdout.write(json.dumps(event) + "\n")
        sys.stdout.flush()


def _listening(address: str, port: int) -> bool:
    """Whether a UDP socket is bound to address:port in this network namespace."""
    want = f"{''.join(f'{int(b):02X}' for b in reversed(address.split('.')))}:{port:04X}"
    try:
        lines = Path("/proc/net/udp").read_text().splitlines()[1:]
    except OSError:
        return False
    return any(line.split()[1] == want for line in lines)


def _interrupt(*_: object) -> None:
    raise KeyboardInterrupt


def main() -> int:
    spec = json.loads(sys.stdin.readline())
    name, address, port = str(spec["name"]), str(spec["address"]), int(spec["port"])
    outlets = {int(n): str(label) for n, label in spec["outlets"].items()}
    power = {int(n): str(p) for n, p in (spec.get("power") or {}).items()}

    def emit_pdu(**event: Any) -> None:
        emit(**event, pdu=name)

    pdu.OUTLETS = pdu.Outlets(max(outlets), power, emit=emit_pdu)
    work = Path(tempfile.mkdtemp(prefix="hostpower-pdu-"))
    data, cache = work / "data", work / "cache"
    data.mkdir()
    cache.mkdir()
    (data / f"{spec['community']}.snmprec").write_text(pdu.snmprec(name, outlets))
    (work / "args").write_text(f"--agent-udpv4-endpoint={address}:{port + pdu.INNER_PORT_OFFSET}\n")
    args = ["snmpsim-command-responder", f"--data-dir={data}", f"--cache-dir={cache}",
            f"--variation-modules-dir={resources.files('hostpower.lab') / 'snmpvariation'}",
            f"--args-from-file={work / 'args'}", "--log-level=error"]
    if os.geteuid() == 0:
        uid, gid = pwd.getpwnam(USER).pw_uid, grp.getgrnam(GROUP).gr_gid
        for path in (work, data, cache, *data.iterdir(), work / "args"):
            os.chown(path, uid, gid)
        args += [f"--process-user={USER}", f"--process-group={GROUP}"]

    relay = pdu.Relay(address, port, port + pdu.INNER_PORT_OFFSET,
                      on_drop=lambda: emit_pdu(event="command", outlet=None, command="dropped"))

    def read_commands() -> None:
        for line in sys.stdin:
            try:
                cmd = json.loads(line)
            except ValueError:
                continue
            if cmd.get("cmd") == "answer":
                relay.answering = bool(cmd.get("answering"))
            elif cmd.get("cmd") == "outlet" and cmd.get("power") in ("on", "off"):
                pdu.OUTLETS.hand(int(cmd["outlet"]), str(cmd["power"]))
        # The supervisor is gone: stop as on SIGTERM (snmpsim's loop has no stop of its own).
        os.kill(os.getpid(), signal.SIGTERM)

    def announce() -> None:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            if _listening(address, port + pdu.INNER_PORT_OFFSET):
                relay.start()
                emit(event="ready")
                return
            time.sleep(0.02)

    # SIGTERM (the supervisor stopping the lab) ends snmpsim's loop the way it
    # expects to be ended, so the temporary directory is removed below.
    signal.signal(signal.SIGTERM, _interrupt)
    threading.Thread(target=read_commands, daemon=True).start()
    threading.Thread(target=announce, daemon=True).start()
    sys.argv = args
    try:
        return responder.main()
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
