"""The engine's fence_kdump listener: UDP datagrams from hosts writing a crash dump.

A host's kdump kernel runs `fence_kdump_send`, which sends a small datagram
(model/kdump.py) every few seconds while the dump lasts, to the engine's
`FenceKdumpDestinationAddress`:`FenceKdumpDestinationPort` (7410). Every
engine that runs its monitor listens (oVirt runs a separate service); each
maps a datagram's source address to the host with that address, and
records "messages from host H" in the database (store/kdump.py), so the
host's owner sees them whichever engine heard them. Datagrams that are not
fence_kdump messages, and messages from an address that is no host's, are
dropped and counted; the counts, where it listens and its heartbeat are
stored too (`GET /api/kdump`).

Datagrams are only counted and noted as they arrive (no I/O on the event
loop); a loop writes what arrived every half second, the listener's
heartbeat every third of `FenceKdumpListenerTimeout`, re-reads the address
and port (a change rebinds), and refreshes the address-to-host map when the
inventory changes. A port that cannot be bound (in use, no such address) is
an ERROR event and a log line; the engine goes on without kdump detection
(the precaution then sees no live listener and says so), and the listener
tries again every few seconds.
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import socket
import time
from dataclasses import dataclass, field

from hostpower.fencing.gateway import EngineGateway
from hostpower.model.errors import StorageUnavailable
from hostpower.model.events import Event, Severity
from hostpower.model.inventory import InventorySnapshot
from hostpower.model.kdump import heartbeat_interval, message_problem
from hostpower.store.kdump import KdumpStore, ListenerCounts

log = logging.getLogger("hostpower.kdump")

FLUSH_EVERY = 0.5        # seconds between writes of what arrived
RETRY_BIND_EVERY = 5.0   # seconds between attempts to bind after a failure
LOG_SOURCE_EVERY = 60.0  # a dropped datagram's source is logged at most this often
RESOLVE_TIMEOUT = 2.0    # a host address that is a name is resolved within this


@dataclass
class _Pending:
    count: int = 0
    source: str = ""


@dataclass
class _Counts:
    received: int = 0
    accepted: int = 0
    unknown: int = 0
    malformed: int = 0
    last_unknown: str = ""

    def frozen(self) -> ListenerCounts:
        return ListenerCounts(self.received, self.accepted, self.unknown, self.malformed,
                              self.last_unknown)


def source_address(addr: object) -> str:
    """The datagram's source as a plain IP address (an IPv4 address reached
    through a dual-stack socket loses its ::ffff: prefix)."""
    host = str(addr[0] if isinstance(addr, tuple) else addr).split("%", 1)[0]
    try:
        ip = ipaddress.ip_address(host)
    except ValueError:
        return host
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    return str(ip)


class _Protocol(asyncio.DatagramProtocol):
    def __init__(self, listener: "KdumpListener") -> None:
        self.listener = listener

    def datagram_received(self, data: bytes, addr: tuple[str | int, ...]) -> None:
        self.listener.received(data, source_address(addr))

    def error_received(self, exc: Exception) -> None:
        log.debug("fence_kdump listener: %s", exc)


@dataclass
class _Bound:
    address: str
    port: int
    transport: asyncio.DatagramTransport | None = None
    error: str = ""

    @property
    def where(self) -> str:
        host = f"[{self.address}]" if ":" in self.address else self.address
        return f"{host}:{self.port}"


class KdumpListener:
    def __init__(self, gateway: EngineGateway, flush_every: float = FLUSH_EVERY) -> None:
        self.gateway = gateway
        self.flush_every = flush_every
        self.counts = _Counts()
        self._pending: dict[int, _Pending] = {}
        self._hosts: dict[str, int] = {}            # source address -> host id
        self._hosts_key: tuple[tuple[int, str], ...] | None = None
        self._bound: _Bound | None = None
        self._last_try = 0.0
        self._reported: tuple[ListenerCounts, str] | None = None
        self._last_report = 0.0
        self._logged: dict[str, float] = {}         # source -> when last logged
        self._task: asyncio.Task[None] | None = None
        self._trouble: str | None = None            # the database error last logged

    # -- life cycle ------------------------------------------------------------------------

    async def start(self) -> None:
        """Bind (or note why not) and start the loop; never raises: kdump
        detection is not worth an engine that does not start."""
        try:
            await self._step()
        except Exception as exc:  # the loop tries again
            log.warning("fence_kdump listener could not start yet: %s", exc)
        self._task = asyncio.create_task(self._loop(), name="kdump-listener")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
        bound = self._bound
        self._close()
        if bound is not None:
            try:
                await self._flush()
                await self._report("stopped", bound, force=True)
            except StorageUnavailable:
                pass

    @property
    def listening(self) -> str | None:
        """ADDRESS:PORT while bound, else None."""
        b = self._bound
        return b.where if b is not None and b.transport is not None else None

    async def _loop(self) -> None:
        while True:
            await asyncio.sleep(self.flush_every)
            try:
                await self._step()
                if self._trouble is not None:
                    log.info("fence_kdump listener records again")
                    self._trouble = None
            except StorageUnavailable as exc:
                if self._trouble != str(exc):  # said once, not every half second
                    log.warning("fence_kdump listener cannot record what it receives: %s", exc)
                    self._trouble = str(exc)
            except Exception:
                log.exception("fence_kdump listener round failed")

    async def _step(self) -> None:
        snapshot, config = await self.gateway.state()
        await self._refresh_hosts(snapshot)
        want = (config["FenceKdumpDestinationAddress"] or "0.0.0.0",
                int(config["FenceKdumpDestinationPort"]))
        await self._bind(*want)
        await self._flush()
        bound = self._bound
        if bound is not None:
            every = heartbeat_interval(float(config["FenceKdumpListenerTimeout"]))
            await self._report("listening" if bound.transport else "failed", bound,
                               force=time.monotonic() - self._last_report >= every)

    # -- the socket ------------------------------------------------------------------------

    async def _bind(self, address: str, port: int) -> None:
        b = self._bound
        if b is not None and (b.address, b.port) == (address, port):
            if b.transport is not None or time.monotonic() - self._last_try < RETRY_BIND_EVERY:
                return
        moved = b is not None and (b.address, b.port) != (address, port)
        self._close()
        self._last_try = time.monotonic()
        new = _Bound(address, port)
        family = socket.AF_INET6 if ":" in address else socket.AF_INET
        try:
            transport, _ = await asyncio.get_running_loop().create_datagram_endpoint(
                lambda: _Protocol(self), local_addr=(address, port), family=family)
            new.transport = transport  # type: ignore[assignment]
        except OSError as exc:
            new.error = exc.strerror or str(exc)
        before = b.error if b is not None and not moved else None
        self._bound = new
        if new.transport is not None:
            log.info("listening for fence_kdump messages on UDP %s", new.where)
            if before:
                await self._event(Severity.INFO, "kdump.listening",
                                  f"the fence_kdump listener listens on UDP {new.where} again")
        elif new.error != before:
            await self._event(
                Severity.ERROR, "kdump.listener_failed",
                f"the fence_kdump listener cannot listen on UDP {new.where}: {new.error}; "
                f"kdump detection cannot hear this engine's hosts until it can (trying again "
                f"every {RETRY_BIND_EVERY:.0f} s)", {"address": new.where, "error": new.error})

    def _close(self) -> None:
        if self._bound is not None and self._bound.transport is not None:
            self._bound.transport.close()
            self._bound.transport = None

    # -- datagrams -------------------------------------------------------------------------

    def received(self, data: bytes, source: str) -> None:
        """One datagram (called on the event loop, no I/O: counted and noted)."""
        c = self.counts
        c.received += 1
        problem = message_problem(data)
        if problem is not None:
            c.malformed += 1
            self._log_dropped(source, f"dropped a datagram from {source} that is not a "
                                      f"fence_kdump message: {problem}")
            return
        host_id = self._hosts.get(source)
        if host_id is None:
            c.unknown += 1
            c.last_unknown = source
            self._log_dropped(source, f"ignored a fence_kdump message from {source}: no host "
                                      f"has that address")
            return
        c.accepted += 1
        pending = self._pending.setdefault(host_id, _Pending())
        pending.count += 1
        pending.source = source

    def _log_dropped(self, source: str, message: str) -> None:
        now = time.monotonic()
        if now - self._logged.get(source, -LOG_SOURCE_EVERY) < LOG_SOURCE_EVERY:
            return
        if len(self._logged) >= 1024:
            self._logged.clear()  # bounded, whatever a flood of forged sources does
        self._logged[source] = now
        log.warning("%s (logged once a minute per address; counted in GET /api/kdump)", message)

    # -- the database ----------------------------------------------------------------------

    async def _flush(self) -> None:
        if not self._pending:
            return
        pending, self._pending = self._pending, {}
        config = await self.gateway.config()
        finished_after = float(config["KdumpFinishedTimeout"])
        engine = self.gateway.runner.name

        def write(s) -> None:  # type: ignore[no-untyped-def]
            store = KdumpStore(s)
            for host_id, p in pending.items():
                store.record(host_id, p.source, engine, p.count, finished_after)
        try:
            await self.gateway.run(write)
        except StorageUnavailable:
            for host_id, p in pending.items():  # keep them for the next round
                mine = self._pending.setdefault(host_id, _Pending())
                mine.count += p.count
                mine.source = mine.source or p.source
            raise

    async def _report(self, state: str, bound: _Bound, force: bool = False) -> None:
        counts = self.counts.frozen()
        if not force and self._reported == (counts, state):
            return
        engine = self.gateway.runner.name
        await self.gateway.run(lambda s: KdumpStore(s).report(engine, bound.where, state,
                                                               bound.error, counts))
        self._reported = (counts, state)
        self._last_report = time.monotonic()

    async def _refresh_hosts(self, snapshot: InventorySnapshot) -> None:
        key = tuple((h.id, h.address) for h in snapshot.hosts)
        if key == self._hosts_key:
            return
        hosts: dict[str, int] = {}
        loop = asyncio.get_running_loop()
        for host_id, address in key:
            try:
                hosts[str(ipaddress.ip_address(address))] = host_id
                continue
            except ValueError:
                pass
            try:  # a name: every address it resolves to is the host's
                infos = await asyncio.wait_for(loop.getaddrinfo(
                    address, None, type=socket.SOCK_DGRAM), RESOLVE_TIMEOUT)
            except (OSError, asyncio.TimeoutError) as exc:
                log.warning("fence_kdump listener: cannot resolve host address %s: %s",
                            address, exc)
                continue
            for info in infos:
                hosts.setdefault(source_address(info[4]), host_id)
        self._hosts, self._hosts_key = hosts, key

    async def _event(self, severity: Severity, kind: str, message: str,
                     details: dict | None = None) -> None:  # type: ignore[type-arg]
        try:
            await self.gateway.emit(Event(severity, kind, message, details=details or {}))
        except StorageUnavailable:
            log.log(logging.ERROR if severity is Severity.ERROR else logging.INFO, "%s", message)
