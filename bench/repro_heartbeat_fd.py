"""Reproduction of a bug found by benchmark 7 (not a benchmark):

    python -m bench.repro_heartbeat_fd

hostpower's HeartbeatChannel against a TLS agent stand-in, with heartbeat
timeouts around the TLS handshake's duration. After a timeout that ends a
just-completed handshake, the channel has closed a socket that asyncio's
transport still uses; a later connection given that descriptor number makes
get() raise RuntimeError (not an AgentError), and Monitor._beat catches only
AgentError, so the whole monitor round fails.

The cause: HeartbeatChannel._connect runs loop.create_connection(sock=sock,
ssl=...) under asyncio.timeout and calls sock.close() on TimeoutError. When
the timeout strikes after the handshake completed but before
create_connection returned, asyncio closes the new SSL transport gracefully
(it waits up to ssl_shutdown_timeout, 30 s, for the peer's close_notify), so
the socket transport underneath stays registered and active while
sock.close() frees its descriptor number. Prints the first RuntimeError, or
that none came."""

from __future__ import annotations

import asyncio
import ssl
import tempfile
from pathlib import Path

from hostpower.hostagent.client import client_ssl_context
from hostpower.hostagent.errors import AgentError
from hostpower.hostagent.heartbeat import HeartbeatChannel
from hostpower.hostagent.pki import CertificateAuthority, ensure_engine_certificate, write_bundle

ATTEMPTS = 3000


async def main(pki: Path) -> None:
    ca = CertificateAuthority.load_or_create(pki)
    agent = write_bundle(ca.issue("agent", ["127.0.0.1"], "agent"), pki / "agent")
    engine = ensure_engine_certificate(ca, pki / "engine")
    server_ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    server_ctx.load_cert_chain(agent.cert, agent.key)
    server_ctx.load_verify_locations(agent.ca)
    server_ctx.verify_mode = ssl.CERT_REQUIRED

    async def answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while await reader.readuntil(b"\r\n\r\n"):
                writer.write(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\n{}")
        except (OSError, asyncio.IncompleteReadError, ssl.SSLError):
            pass

    server = await asyncio.start_server(answer, "127.0.0.1", 0, ssl=server_ctx)
    port = server.sockets[0].getsockname()[1]
    channel = HeartbeatChannel(client_ssl_context(engine.ca, engine.cert, engine.key), 5.0)
    timeouts = 0
    for i in range(ATTEMPTS):
        timeout = 0.0005 + (i % 200) / 200 * 0.02  # 0.5 to 20 ms: around a handshake
        try:
            await channel.get("127.0.0.1", port, "/v1/heartbeat", timeout)
        except AgentError:
            timeouts += 1
        except RuntimeError as exc:
            print(f"attempt {i} (timeout {timeout * 1000:.1f} ms, {timeouts} AgentErrors "
                  f"before): RuntimeError: {exc}")
            return
        channel.forget("127.0.0.1", port)  # a new connection, and handshake, every time
    print(f"not reproduced in {ATTEMPTS} attempts ({timeouts} AgentErrors)")


if __name__ == "__main__":
    with tempfile.TemporaryDirectory() as tmp:
        asyncio.run(main(Path(tmp)))
