"""A test-owned TCP relay in front of the database, which a test can cut.

`Relay` listens on a loopback (host, port) or on a unix socket path and pipes
every connection to `target` (PostgreSQL on 127.0.0.1:5432 by default). It
runs on an asyncio loop in a daemon thread, so a test drives it with plain
calls: `cut()` drops every relayed connection at once and refuses new ones
until `restore()`. As a context manager it always stops, closing everything.

Why a unix socket: an engine the test runs in a network namespace of its own
(only `lo`) cannot reach 127.0.0.1:5432 of the root namespace, but it shares
the file system. A relay listening on `DIR/.s.PGSQL.5432` (the name libpq
looks for) lets it reach the database with `?host=DIR` in its URL
(`url_for`), and a cut of that relay cuts that engine alone.
"""

from __future__ import annotations

import asyncio
import ipaddress
import os
import threading
from pathlib import Path

from sqlalchemy.engine import URL, make_url

CONNECT_TIMEOUT = 5.0   # seconds to reach the target before the client is dropped
CHUNK = 64 * 1024
PG_SOCKET_PREFIX = ".s.PGSQL."
UNIX_PATH_MAX = 107     # sun_path holds 108 bytes with the final NUL
MAX_CONNECTIONS = 200   # bounded: a runaway client cannot pile up connections


class Relay:
    """Pipes connections from `listen` to `target`.

    `listen` is a loopback (host, port) (port 0: any free port, see `address`)
    or a unix socket path; that path must be short (UNIX_PATH_MAX), so put it
    under a short temporary directory rather than pytest's tmp_path."""

    def __init__(self, target: tuple[str, int] = ("127.0.0.1", 5432),
                 listen: tuple[str, int] | str | Path = ("127.0.0.1", 0)) -> None:
        self.target = target
        self.unix_path = None if isinstance(listen, tuple) else Path(listen)
        self._tcp_listen = listen if isinstance(listen, tuple) else None
        if self._tcp_listen is not None and not ipaddress.ip_address(
                self._tcp_listen[0]).is_loopback:
            raise ValueError(f"tests listen on loopback only, not {self._tcp_listen[0]}")
        if self.unix_path is not None and len(os.fsencode(self.unix_path)) > UNIX_PATH_MAX:
            raise ValueError(f"unix socket path too long ({len(str(self.unix_path))} > "
                             f"{UNIX_PATH_MAX}): {self.unix_path}")
        self.relayed = 0   # connections piped to the target
        self.refused = 0   # connections dropped at once: cut, or MAX_CONNECTIONS open
        self._cut = False
        self._live: set[tuple[asyncio.StreamWriter, asyncio.StreamWriter]] = set()
        self._handlers: set[asyncio.Task[None]] = set()
        self._server: asyncio.AbstractServer | None = None
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True,
                                        name="db-relay")
        self.address: tuple[str, int] | None = None  # the TCP address once started

    # -- life cycle -----------------------------------------------------------------------

    def start(self) -> "Relay":
        self._thread.start()
        try:
            self._call(self._listen())
        except BaseException:
            self.stop()
            raise
        return self

    def stop(self) -> None:
        """Close the listener and every connection, end the loop and its thread."""
        if self._thread.is_alive():
            try:
                self._call(self._shutdown())
            finally:
                self._loop.call_soon_threadsafe(self._loop.stop)
                self._thread.join(10)
        if not self._loop.is_running():
            self._loop.close()
        if self.unix_path is not None:
            self.unix_path.unlink(missing_ok=True)  # Python 3.11 leaves the socket file

    def __enter__(self) -> "Relay":
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -- faults ---------------------------------------------------------------------------

    def cut(self) -> None:
        """Drop every relayed connection now, and every new one until `restore()`.

        New connections are accepted and closed at once rather than left
        unanswered (black-holed) or refused by closing the listener: a client
        then fails immediately with "server closed the connection", like
        against a database that went away, instead of hanging until its own
        connect timeout; and the listener keeps its address (a TCP port
        nobody else can take meanwhile, a unix socket file that stays)."""
        self._call(self._cut_all())

    def restore(self) -> None:
        """Relay new connections again (dropped ones stay dropped)."""
        self._call(self._set_cut(False))

    @property
    def is_cut(self) -> bool:
        return self._cut

    @property
    def open_connections(self) -> int:
        return len(self._live)

    # -- where clients connect --------------------------------------------------------------

    def url_for(self, db_url: str) -> str:
        """`db_url` (an SQLAlchemy PostgreSQL URL) rewritten to go through this relay.

        Over a unix socket libpq connects to `DIR/.s.PGSQL.PORT` given
        `host=DIR` (and `port=PORT`) as query parameters, with no host in
        the URL's authority: `postgresql+psycopg://postgres@/DB?host=DIR`."""
        url = make_url(db_url)
        if self.unix_path is None:
            assert self.address is not None, "start the relay first"
            return url.set(host=self.address[0], port=self.address[1]).render_as_string(
                hide_password=False)
        name = self.unix_path.name
        if not name.startswith(PG_SOCKET_PREFIX):
            raise ValueError(f"libpq only connects to sockets named {PG_SOCKET_PREFIX}PORT, "
                             f"not {name}")
        query = {**url.query, "host": str(self.unix_path.parent),
                 "port": name[len(PG_SOCKET_PREFIX):]}
        # URL.set() takes None as "unchanged": build the URL without host and port.
        return URL.create(url.drivername, url.username, url.password, None, None, url.database,
                          query).render_as_string(hide_password=False)

    # -- on the relay's loop -------------------------------------------------------------

    def _call(self, coro, timeout: float = 10):  # type: ignore[no-untyped-def]
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result(timeout)

    async def _listen(self) -> None:
        if self.unix_path is not None:
            self._server = await asyncio.start_unix_server(self._accept, path=str(self.unix_path))
            os.chmod(self.unix_path, 0o777)  # like PostgreSQL's own socket
        else:
            assert self._tcp_listen is not None
            self._server = await asyncio.start_server(self._accept, *self._tcp_listen)
            self.address = self._server.sockets[0].getsockname()[:2]

    async def _set_cut(self, cut: bool) -> None:
        self._cut = cut

    async def _cut_all(self) -> None:
        self._cut = True
        for pair in list(self._live):
            for writer in pair:
                writer.transport.abort()
        self._live.clear()  # gone now, not once their handlers have noticed

    async def _shutdown(self) -> None:
        await self._cut_all()
        if self._server is not None:
            self._server.close()
        # Every connection is aborted: the handlers end by themselves. Cancel
        # only what a stuck target connect still holds.
        if self._handlers:
            await asyncio.wait(list(self._handlers), timeout=CONNECT_TIMEOUT + 1)
        for task in list(self._handlers):
            task.cancel()
        await asyncio.gather(*self._handlers, return_exceptions=True)

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._handlers.add(task)
        try:
            await self._relay(reader, writer)
        except asyncio.CancelledError:
            writer.transport.abort()  # the relay stops; asyncio's stream callback wants no error
        finally:
            self._handlers.discard(task)

    async def _relay(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if self._cut or len(self._live) >= MAX_CONNECTIONS:
            self.refused += 1
            writer.transport.abort()
            return
        try:
            up_reader, up_writer = await asyncio.wait_for(
                asyncio.open_connection(*self.target), CONNECT_TIMEOUT)
        except (OSError, asyncio.TimeoutError):
            writer.transport.abort()
            return
        pair = (writer, up_writer)
        if self._cut:  # cut while we were connecting
            self.refused += 1
            for w in pair:
                w.transport.abort()
            return
        self.relayed += 1
        self._live.add(pair)
        pumps = [asyncio.create_task(_pump(reader, up_writer)),
                 asyncio.create_task(_pump(up_reader, writer))]
        try:
            # Either side closing ends the relayed connection: PostgreSQL's
            # protocol has no use for a half-closed connection.
            await asyncio.wait(pumps, return_when=asyncio.FIRST_COMPLETED)
        finally:
            self._live.discard(pair)
            for w in pair:
                w.transport.abort()
            for p in pumps:
                p.cancel()
            await asyncio.gather(*pumps, return_exceptions=True)


async def _pump(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        while data := await reader.read(CHUNK):
            writer.write(data)
            await writer.drain()
    except (ConnectionError, OSError):
        pass  # the other end went away, or the relay was cut: the connection ends
