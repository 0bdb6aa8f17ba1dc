"""A virtual switched PDU: snmpsim answering as an APC Master Switch, whose
outlets the real `fence_apc_snmp` switches (its "APC Master Switch
(fallback)" model: status and control on one writable OID per outlet).

What snmpsim (PyPI) is given, and why:

* A `.snmprec` data file (`snmprec`): sysDescr, sysObjectID (an APC
  MasterSwitch id fence_apc_snmp has no special model for, so it uses the
  fallback), sysName, and per outlet its name (sPDUOutletName, what
  fence_apc_snmp lists) and its control (sPDUOutletCtl: read 1 on / 2 off;
  write 1 on, 2 off, 3 reboot). The control values come from the variation
  module `snmpvariation/laboutlet.py`, which snmpsim loads and calls for
  every GET and SET of an outlet's control: it asks `OUTLETS` (an `Outlets`,
  set up by the PDU process before snmpsim starts), which switches the
  outlet, counts, and reports at once (an event, no polling).
* The community (SNMP v1/v2c) is the data file's name, as snmpsim wants.

`Relay` stands in front of snmpsim on the PDU's address: it forwards each
datagram to snmpsim's own endpoint and back, and drops them all while the
PDU is made unreachable (fault `pdu_unresponsive`), so nothing a client sent
meanwhile is answered or acted on later.

Run by the lab supervisor as `python -m hostpower.lab.pduserver`.
"""

from __future__ import annotations

import select
import socket
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

# APC PowerNet-MIB, Master Switch (sPDU) outlet table.
OUTLET_CTL = "1.3.6.1.4.1.318.1.1.4.4.2.1.3"    # sPDUOutletCtl.N
OUTLET_NAME = "1.3.6.1.4.1.318.1.1.4.4.2.1.4"   # sPDUOutletName.N
SYS_OBJECT_ID = "1.3.6.1.4.1.318.1.3.4.1"       # an APC MasterSwitch
CTL_ON, CTL_OFF, CTL_REBOOT = 1, 2, 3
VARIATION = "laboutlet"
COMMANDS = ("status", "on", "off", "reboot")
# snmpsim listens on the PDU's address at the public port plus this; the relay on the public port.
INNER_PORT_OFFSET = 10000


class BadValue(Exception):
    """A SET of a value sPDUOutletCtl does not take (SNMP wrongValue)."""


@dataclass
class _Outlet:
    power: str = "on"


class Outlets:
    """The outlets of one PDU: their power, switched and read by SNMP requests."""

    def __init__(self, count: int, power: dict[int, str] | None = None,
                 emit: Callable[..., None] = lambda **e: None) -> None:
        self._lock = threading.Lock()
        self._outlets = {n: _Outlet((power or {}).get(n, "on")) for n in range(1, count + 1)}
        self.emit = emit

    def read(self, outlet: int) -> int:
        with self._lock:
            state = self._outlets[outlet].power
        self.emit(event="command", outlet=outlet, command="status")
        return CTL_ON if state == "on" else CTL_OFF

    def write(self, outlet: int, value: int) -> int:
        """SET sPDUOutletCtl.outlet = value; returns what a read gives afterwards."""
        changes = {CTL_ON: ["on"], CTL_OFF: ["off"], CTL_REBOOT: ["off", "on"]}.get(value)
        if changes is None or outlet not in self._outlets:
            raise BadValue(value)
        self.emit(event="command", outlet=outlet,
                  command={CTL_ON: "on", CTL_OFF: "off", CTL_REBOOT: "reboot"}[value])
        for state in changes:
            with self._lock:
                changed = self._outlets[outlet].power != state
                self._outlets[outlet].power = state
            if changed:
                self.emit(event="outlet", outlet=outlet, power=state)
        with self._lock:
            return CTL_ON if self._outlets[outlet].power == "on" else CTL_OFF

    def hand(self, outlet: int, power: str) -> None:
        """A hand on the outlet's switch (no SNMP request, nothing counted)."""
        with self._lock:
            changed = self._outlets[outlet].power != power
            self._outlets[outlet].power = power
        if changed:
            self.emit(event="outlet", outlet=outlet, power=power)


# Set by the PDU process before snmpsim loads the variation module.
OUTLETS: Outlets | None = None


def snmprec(name: str, outlets: dict[int, str]) -> str:
    """The data file: one `OID|TAG|VALUE` line per object, in OID order
    (snmpsim searches it). Tags: 4 OCTET STRING, 6 OBJECT IDENTIFIER,
    2 INTEGER; `2:laboutlet` hands the value to the variation module."""
    records = [
        ("1.3.6.1.2.1.1.1.0", "4", f"APC MasterSwitch (hostpower lab PDU {name})"),
        ("1.3.6.1.2.1.1.2.0", "6", SYS_OBJECT_ID),
        ("1.3.6.1.2.1.1.5.0", "4", name),
    ]
    for n, label in outlets.items():
        records.append((f"{OUTLET_CTL}.{n}", f"2:{VARIATION}", ""))
        records.append((f"{OUTLET_NAME}.{n}", "4", label))

    def key(record: tuple[str, str, str]) -> tuple[int, ...]:
        return tuple(int(p) for p in record[0].split("."))
    return "".join(f"{oid}|{tag}|{value}\n" for oid, tag, value in sorted(records, key=key))


class Relay:
    """UDP from (address, port) to snmpsim's endpoint and back, one upstream
    socket per client; everything dropped while `answering` is False."""

    IDLE = 60.0  # a client's upstream socket is closed after this long unused

    def __init__(self, address: str, port: int, inner_port: int,
                 on_drop: Callable[[], None] = lambda: None) -> None:
        self.address = address
        self.inner = (address, inner_port)
        self.answering = True
        self.on_drop = on_drop
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind((address, port))
        self._clients: dict[socket.socket, tuple[Any, float]] = {}
        self._by_client: dict[Any, socket.socket] = {}
        self._stop_r, self._stop_w = socket.socketpair()
        self._thread = threading.Thread(target=self._run, name="pdu-relay", daemon=True)

    def start(self) -> Relay:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop_w.send(b"x")
        self._thread.join(2)
        for s in [self.sock, self._stop_r, self._stop_w, *self._clients]:
            s.close()

    def _run(self) -> None:
        while True:
            readable, _, _ = select.select([self.sock, self._stop_r, *self._clients], [], [], 5)
            if self._stop_r in readable:
                return
            for s in readable:
                try:
                    data, source = s.recvfrom(65535)
                except OSError:
                    continue
                if not self.answering:
                    self.on_drop()
                    continue
                if s is self.sock:
                    self._upstream(source).sendto(data, self.inner)
                else:
                    client, _ = self._clients[s]
                    self._clients[s] = (client, time.monotonic())
                    self.sock.sendto(data, client)
            self._forget_idle()

    def _upstream(self, client: Any) -> socket.socket:
        up = self._by_client.get(client)
        if up is None:
            up = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            up.bind((self.address, 0))
            self._by_client[client] = up
        self._clients[up] = (client, time.monotonic())
        return up

    def _forget_idle(self) -> None:
        now = time.monotonic()
        for up, (client, used) in list(self._clients.items()):
            if now - used > self.IDLE:
                del self._clients[up]
                self._by_client.pop(client, None)
                up.close()
