"""A virtual IPMI BMC: one simulated chassis that ipmitool, fence_ipmilan and pyghmi can drive.

Built on pyghmi's `Bmc`, which implements the IPMI 2.0 / RMCP+ protocol
(cipher suite 3 only: clients must use lanplus). Two things differ from a
plain `Bmc` subclass, and both are why this module exists:

* Transport. `IpmiServer.__init__` binds its socket into pyghmi's
  process-wide I/O loop, which has no way to stop one server, routes server
  sessions through a global table keyed by the client's address (two BMCs on
  one port would overwrite each other's sessions), and cannot drop packets on
  purpose. So `VirtualBmc` does not call it: it owns its socket, receives in
  its own thread, and hands each RMCP+ session to a thread of its own.
* Pitfall 1 of FIELD-NOTES. pyghmi's server accepts whatever algorithms the
  client proposes in the open-session request and then uses SHA-1 anyway;
  pyghmi's client proposes SHA-256 first and crashes on the SHA-1 answer.
  This BMC refuses any proposal other than cipher suite 3 (HMAC-SHA1 auth,
  HMAC-SHA1-96 integrity, AES-CBC-128) with an RMCP+ error status, so the
  client retries with SHA-1. ipmitool proposes suite 3 itself.

Only loopback (127.0.0.0/8) or an address inside a network namespace is
meant to be used. Run in a child process (e.g. under `ip netns exec`) with
`python -m hostpower.lab.bmc --address A --port P --user U --password-file F`.
"""

from __future__ import annotations

import argparse
import logging
import queue
import select
import signal
import socket
import struct
import sys
import threading
import uuid
from collections.abc import Callable
from dataclasses import dataclass

from pyghmi.ipmi.bmc import Bmc
from pyghmi.ipmi.private import constants
from pyghmi.ipmi.private import session as ipmisession
from pyghmi.ipmi.private.serversession import ServerSession

log = logging.getLogger(__name__)

POWER_STATES = ("on", "off")

# RMCP+ algorithm numbers of cipher suite 3, the only one pyghmi's server speaks.
_AUTH_HMAC_SHA1 = 1
_INTEGRITY_HMAC_SHA1_96 = 1
_CONFIDENTIALITY_AES_CBC_128 = 1
# RMCP+ status codes (IPMI 2.0 table 13-15).
_RMCP_NO_CIPHER_SUITE_MATCH = 0x11
_RMCP_UNAUTHORIZED_NAME = 0x0D
# IPMI completion code: "request not supported in present state".
_CC_NOT_IN_PRESENT_STATE = 0xD5
# A session nobody talks to for this long is forgotten (real BMCs: about 60 s).
SESSION_IDLE_TIMEOUT = 60.0
# How long stop() waits for each thread before giving up on it.
_JOIN_TIMEOUT = 2.0


@dataclass(frozen=True)
class BmcCounters:
    """What the BMC was asked, as a consistent snapshot."""

    status: int = 0    # Get Chassis Status
    on: int = 0        # chassis control: power up
    off: int = 0       # chassis control: power down or soft shutdown
    reset: int = 0     # chassis control: hard reset or power cycle
    logins: int = 0    # RMCP+ sessions established (RAKP 4 sent)
    logouts: int = 0   # Close Session received
    dropped: int = 0   # packets ignored while not answering


class _RmcpSession(ServerSession):
    """pyghmi's server session, with pitfall 1 fixed and logins/logouts reported."""

    # ServerSession reads these before ever setting them on some paths.
    k1 = None
    accepted = False
    closed = False

    def create_open_session_response(self, request: bytearray) -> bytearray:
        # Request layout (IPMI 2.0 table 13-9): tag, role, 2 reserved, console
        # session id (4), then auth/integrity/confidentiality payloads of 8
        # bytes each with the algorithm number in their fifth byte.
        proposal = (request[12], request[20], request[28]) if len(request) >= 32 else None
        if proposal != (_AUTH_HMAC_SHA1, _INTEGRITY_HMAC_SHA1_96, _CONFIDENTIALITY_AES_CBC_128):
            self.accepted = False
            return bytearray([request[0], _RMCP_NO_CIPHER_SUITE_MATCH, 0, 0]) + bytearray(
                request[4:8])
        self.accepted = True
        return super().create_open_session_response(request)

    def _got_rakp1(self, data: bytearray) -> None:
        # pyghmi ignores an unknown user, so the client waits for its timeout;
        # a real BMC answers "unauthorized name" at once.
        name = bytes(data[28:]).decode("utf-8", "replace")
        if data[27] and self.authdata.get(name) is None:
            refusal = bytearray([data[0], _RMCP_UNAUTHORIZED_NAME, 0, 0]) + self.clientsessionid
            self.send_payload(refusal, constants.payload_types["rakp2"], retry=False)
            return
        super()._got_rakp1(data)

    def _send_rakp4(self, tagvalue: int, statuscode: int) -> None:
        super()._send_rakp4(tagvalue, statuscode)
        self.bmc._count("logins")

    def close_server_session(self) -> None:
        self.closed = True
        self.bmc._count("logouts")


class _SessionWorker:
    """Handles the packets of one client session in order, in its own thread.

    One thread per session lets a slow power command of one client overlap
    with another client's (that is what `max_in_flight` measures) while the
    packets of one session, whose state pyghmi does not lock, stay serial.
    """

    def __init__(self, bmc: VirtualBmc, session: _RmcpSession, addr: tuple) -> None:
        self.bmc = bmc
        self.session = session
        self.addr = addr
        self.packets: queue.SimpleQueue[bytes | None] = queue.SimpleQueue()
        self.thread = threading.Thread(
            target=self._run, daemon=True,
            name=f"vbmc-session-{bmc.address}:{bmc.port}<-{addr[0]}:{addr[1]}")

    def _run(self) -> None:
        while True:
            try:
                data = self.packets.get(timeout=SESSION_IDLE_TIMEOUT)
            except queue.Empty:
                break
            if data is None:
                break
            try:
                self.session._handle_ipmi_packet(bytearray(data), sockaddr=self.addr)
            except Exception:  # a malformed packet must not kill the session thread
                log.exception("virtual BMC %s:%s: bad packet from %s",
                              self.bmc.address, self.bmc.port, self.addr)
            if self.session.closed:
                break
        self.bmc._forget(self)

    def stop(self) -> None:
        self.packets.put(None)


class VirtualBmc(Bmc):
    """A simulated chassis behind an IPMI 2.0 BMC on (address, port).

    Power state is "on" or "off". `counters()` tells what was asked;
    `answering = False` makes it drop every packet (a dead BMC);
    `on_power_change(new_state)` is called (in a BMC thread, keep it quick)
    whenever a power command changes the state; `command_delay` seconds are
    spent in every chassis control command, so that overlapping commands
    show up in `max_in_flight`. Port 0 picks a free port: read `.port`
    after `start()`.
    """

    def __init__(self, address: str = "127.0.0.1", port: int = 0, user: str = "admin",
                 password: str = "password", state: str = "off",
                 on_power_change: Callable[[str], None] | None = None,
                 command_delay: float = 0.0) -> None:
        if state not in POWER_STATES:
            raise ValueError(f"state must be 'on' or 'off', not {state!r}")
        # IpmiServer.__init__ is deliberately not called (see the module
        # docstring); these are the attributes pyghmi's Bmc code reads.
        self.address = address
        self.port = port
        self.authdata = {user: password}
        self.uuid = uuid.uuid4()
        self.kg = None
        self.revision = 0
        self.deviceid = 0x20
        self.firmwaremajor = 1
        self.firmwareminor = 0
        self.ipmiversion = 2
        self.additionaldevices = 0
        self.mfgid = 0
        self.prodid = 0
        self.timeout = 60
        # Get Channel Authentication Capabilities answer: completion code,
        # channel 1, IPMI 2.0 extended capabilities, per-message auth with
        # non-null user names, IPMI 2.0 only, no OEM data.
        self.authcap = struct.pack("9B", 0, 1, 0b10000000, 0b00000100, 0b00000010, 0, 0, 0, 0)
        self.serversocket: socket.socket | None = None

        self.answering = True
        self.on_power_change = on_power_change
        self.command_delay = command_delay
        self._state = state
        self._lock = threading.Lock()
        self._counts = dict.fromkeys(BmcCounters.__dataclass_fields__, 0)
        self._in_flight = 0
        self._max_in_flight = 0
        self._workers: dict[tuple, _SessionWorker] = {}
        self._stopping = threading.Event()
        self._thread: threading.Thread | None = None
        self._wake_r: socket.socket | None = None
        self._wake_w: socket.socket | None = None

    # -- life cycle ---------------------------------------------------------

    def start(self) -> VirtualBmc:
        """Bind the socket and serve in a daemon thread; returns self."""
        if self._thread is not None:
            raise RuntimeError("virtual BMC already started")
        family, _, _, _, sockaddr = socket.getaddrinfo(
            self.address, self.port, 0, socket.SOCK_DGRAM)[0]
        sock = socket.socket(family, socket.SOCK_DGRAM)
        try:
            sock.bind(sockaddr)
        except OSError:
            sock.close()
            raise
        self.port = sock.getsockname()[1]
        self.serversocket = sock
        self._wake_r, self._wake_w = socket.socketpair()
        self._stopping.clear()
        self._thread = threading.Thread(target=self._serve, daemon=True,
                                        name=f"vbmc-{self.address}:{self.port}")
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop serving, end every session thread and close the socket (bounded)."""
        if self._thread is None:
            return
        self._stopping.set()
        assert self._wake_w is not None
        try:
            self._wake_w.send(b"x")
        except OSError:
            pass
        self._thread.join(_JOIN_TIMEOUT)
        with self._lock:
            workers = list(self._workers.values())
            self._workers.clear()
        for worker in workers:
            worker.stop()
        for worker in workers:
            worker.thread.join(_JOIN_TIMEOUT)
        for sock in (self.serversocket, self._wake_r, self._wake_w):
            if sock is not None:
                sock.close()
        self.serversocket = self._wake_r = self._wake_w = None
        self._thread = None

    def __enter__(self) -> VirtualBmc:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def running(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    # -- observation ----------------------------------------------------------

    @property
    def power_state(self) -> str:
        with self._lock:
            return self._state

    @power_state.setter
    def power_state(self, state: str) -> None:
        """Set the state from outside (a hand on the power button): no callback, no count."""
        if state not in POWER_STATES:
            raise ValueError(f"state must be 'on' or 'off', not {state!r}")
        with self._lock:
            self._state = state

    def counters(self) -> BmcCounters:
        with self._lock:
            return BmcCounters(**self._counts)

    @property
    def max_in_flight(self) -> int:
        """The most chassis control commands this BMC was handling at one time."""
        with self._lock:
            return self._max_in_flight

    def session_count(self) -> int:
        """Client sessions currently open."""
        with self._lock:
            return len(self._workers)

    def _count(self, name: str) -> None:
        with self._lock:
            self._counts[name] += 1

    # -- the chassis (pyghmi Bmc hooks) ----------------------------------------

    def get_power_state(self) -> str:
        with self._lock:
            self._counts["status"] += 1
            return self._state

    def power_on(self) -> int:
        return self._switch("on", "on")

    def power_off(self) -> int:
        return self._switch("off", "off")

    def power_shutdown(self) -> int:
        # A simulated host obeys a soft shutdown at once.
        return self._switch("off", "off")

    def power_reset(self) -> int:
        return self._restart()

    def power_cycle(self) -> int:
        return self._restart()

    def _switch(self, new_state: str, counter: str) -> int:
        with self._lock:
            self._counts[counter] += 1
            changed = self._state != new_state
            self._state = new_state
        if changed:
            self._notify(new_state)
        return 0

    def _restart(self) -> int:
        # IPMI 2.0 section 28.3 recommends refusing a power cycle of a chassis
        # that is off; this BMC does the same for a reset.
        with self._lock:
            self._counts["reset"] += 1
            if self._state != "on":
                return _CC_NOT_IN_PRESENT_STATE
        self._notify("off")
        self._notify("on")
        return 0

    def _notify(self, new_state: str) -> None:
        callback = self.on_power_change
        if callback is None:
            return
        try:
            callback(new_state)
        except Exception:
            log.exception("virtual BMC %s:%s: on_power_change failed", self.address, self.port)

    def control_chassis(self, request: dict, session: ServerSession) -> None:
        with self._lock:
            self._in_flight += 1
            self._max_in_flight = max(self._max_in_flight, self._in_flight)
        try:
            if self.command_delay > 0:
                self._stopping.wait(self.command_delay)
            super().control_chassis(request, session)
        finally:
            with self._lock:
                self._in_flight -= 1

    # -- the network ---------------------------------------------------------------

    def _serve(self) -> None:
        sock, wake = self.serversocket, self._wake_r
        assert sock is not None and wake is not None
        while not self._stopping.is_set():
            try:
                readable, _, _ = select.select([sock, wake], [], [])
            except (OSError, ValueError):
                break
            if wake in readable or self._stopping.is_set():
                break
            while True:
                try:
                    # pyghmi's send path makes the socket blocking: ask for a
                    # non-blocking receive explicitly.
                    data, addr = sock.recvfrom(4096, socket.MSG_DONTWAIT)
                except (BlockingIOError, InterruptedError):
                    break
                except OSError:
                    if self._stopping.is_set():
                        return
                    break
                try:
                    self._dispatch(data, addr)
                except Exception:
                    log.exception("virtual BMC %s:%s: bad packet from %s",
                                  self.address, self.port, addr)

    def _dispatch(self, data: bytes, addr: tuple) -> None:
        """Route one datagram: drop it, open a session, feed a session, or answer it."""
        if not self.answering:
            self._count("dropped")
            return
        if len(data) < 16 or data[0] != 6 or data[2:4] != b"\xff\x07":
            return  # not RMCP/IPMI
        if data[4] == 6:  # RMCP+ framing
            payload_type = data[5] & 0x3F
            if payload_type == constants.payload_types["rmcpplusopenreq"]:
                self._open_session(data, addr)
                return
            session_id = struct.unpack("<I", data[6:10])[0]
            if session_id or payload_type in (constants.payload_types["rakp1"],
                                              constants.payload_types["rakp3"]):
                with self._lock:
                    worker = self._workers.get(addr)
                if worker is not None:
                    worker.packets.put(data)
                return
        # Outside a session: channel authentication capabilities, cipher suites.
        self.sessionless_data(data, addr)

    def _open_session(self, data: bytes, addr: tuple) -> None:
        with self._lock:
            old = self._workers.pop(addr, None)
        if old is not None:
            old.stop()
        session = _RmcpSession(self.authdata, self.kg, addr, self.serversocket,
                               bytearray(data[16:]), self.uuid, bmc=self)
        _forget_globally(session, addr, self.port)
        if not session.accepted:
            return
        worker = _SessionWorker(self, session, addr)
        with self._lock:
            if self._stopping.is_set():
                return
            self._workers[addr] = worker
        worker.thread.start()

    def _forget(self, worker: _SessionWorker) -> None:
        with self._lock:
            if self._workers.get(worker.addr) is worker:
                del self._workers[worker.addr]


def _forget_globally(session: ServerSession, addr: tuple, port: int) -> None:
    """Undo ServerSession's registration in pyghmi's process-wide routing table.

    Packets reach our sessions through `VirtualBmc._dispatch`, never through
    pyghmi's loop; leaving the entry would leak it and could shadow a pyghmi
    client session of this process.
    """
    handlers = ipmisession.Session.bmc_handlers.get(addr)
    if handlers is not None and handlers.get(port) is session:
        del handlers[port]
        if not handlers:
            ipmisession.Session.bmc_handlers.pop(addr, None)


# -- running in a process of its own -------------------------------------------------


def _read_password(path: str) -> str:
    """First line of the file ('-' for stdin), without its line end."""
    if path == "-":
        line = sys.stdin.readline()
    else:
        with open(path, encoding="utf-8") as f:
            line = f.readline()
    return line.rstrip("\r\n")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m hostpower.lab.bmc",
        description="Run a virtual IPMI BMC until SIGTERM. The password is read from a "
                    "file (or stdin with '-'), never from the command line.")
    parser.add_argument("--address", required=True, help="address to listen on, e.g. 127.0.0.5")
    parser.add_argument("--port", type=int, default=623, help="UDP port (0: any free port)")
    parser.add_argument("--user", required=True)
    parser.add_argument("--password-file", required=True, help="file holding the password, or -")
    parser.add_argument("--state", choices=POWER_STATES, default="off")
    parser.add_argument("--command-delay", type=float, default=0.0,
                        help="seconds each chassis control command takes")
    parser.add_argument("-v", "--verbose", action="store_true", help="print power changes")
    args = parser.parse_args(argv)

    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())

    def report(state: str) -> None:
        print(f"power {state}", flush=True)

    bmc = VirtualBmc(args.address, args.port, args.user, _read_password(args.password_file),
                     state=args.state, command_delay=args.command_delay,
                     on_power_change=report if args.verbose else None)
    try:
        bmc.start()
    except OSError as exc:
        print(f"cannot listen on {args.address}:{args.port}: {exc.strerror}", file=sys.stderr)
        return 1
    print(f"listening on {args.address}:{bmc.port}", flush=True)
    try:
        while not stop.wait(1.0):
            pass
    finally:
        bmc.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
