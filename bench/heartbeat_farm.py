"""Many lightweight host agents in one process, for the monitoring benchmark.

Each simulated host gets its own loopback address (127.21.x.y) and answers
GET /v1/heartbeat over mutual TLS with certificates of the engine's CA, like
the real agent, from one asyncio loop. Only heartbeats: no fence commands.

    python -m bench.heartbeat_farm --first F --count N --pki DIR   (prints "ready" when listening)

Each simulated host costs two file descriptors (listener and connection), so
large farms run as several processes of at most PER_PROCESS hosts.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import ssl
import sys
import uuid
from pathlib import Path

from hostpower.hostagent.pki import CertificateAuthority, write_bundle
from hostpower.hostagent.wire import HeartbeatAnswer

PORT = 54321
GROUP = 250  # addresses per certificate (127.21.g.1-250)
PER_PROCESS = 5000


def address(i: int) -> str:
    return f"127.21.{i // GROUP}.{i % GROUP + 1}"


class Heartbeat(asyncio.Protocol):
    def __init__(self, host: str) -> None:
        self.host = host
        self.buffer = b""
        # The same answer every time, in the agent's own wire format.
        self.body = json.dumps(HeartbeatAnswer(
            host=host, boot_id=BOOT_ID, uptime=1.0, agent_version="farm",
            fence_agent_types=frozenset({"ipmilan"})).to_body()).encode()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        while b"\r\n\r\n" in self.buffer:
            _, self.buffer = self.buffer.split(b"\r\n\r\n", 1)
            body = self.body
            self.transport.write(b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\n"  # type: ignore[attr-defined]
                                 b"content-length: " + str(len(body)).encode() + b"\r\n\r\n" + body)


BOOT_ID = str(uuid.uuid4())


def contexts(pki: Path, first: int, count: int) -> dict[int, ssl.SSLContext]:
    """One server certificate per group of GROUP addresses."""
    ca = CertificateAuthority.load_or_create(pki)
    out = {}
    for g in range(first // GROUP, (first + count + GROUP - 1) // GROUP):
        sans = [address(i) for i in range(g * GROUP, (g + 1) * GROUP)]
        paths = write_bundle(ca.issue(f"farm-{g}", sans, "agent"), pki / f"farm-{g}")
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.load_cert_chain(paths.cert, paths.key)
        ctx.load_verify_locations(paths.ca)
        ctx.verify_mode = ssl.CERT_REQUIRED
        out[g] = ctx
    return out


async def serve(first: int, count: int, pki: Path) -> None:
    ctxs = contexts(pki, first, count)
    loop = asyncio.get_running_loop()
    for i in range(first, first + count):
        host = f"farm-{i}"
        await loop.create_server(lambda h=host: Heartbeat(h), address(i), PORT,
                                 ssl=ctxs[i // GROUP], backlog=64)
    print("ready", flush=True)
    await asyncio.Event().wait()


def main() -> None:
    import resource
    # Two descriptors per simulated host (listener and connection): as root,
    # raise the hard limit too; otherwise take what the hard limit allows.
    for limit in (65536, resource.getrlimit(resource.RLIMIT_NOFILE)[1]):
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (limit, limit))
            break
        except (ValueError, OSError):
            continue
    p = argparse.ArgumentParser()
    p.add_argument("--first", type=int, default=0)
    p.add_argument("--count", type=int, required=True)
    p.add_argument("--pki", type=Path, required=True)
    args = p.parse_args()
    try:
        asyncio.run(serve(args.first, args.count, args.pki))
    except KeyboardInterrupt:
        pass


if __name__ == "__main__":
    sys.exit(main())
