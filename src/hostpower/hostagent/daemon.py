"""The host agent daemon's command line: `python -m hostpower.hostagent.daemon`
(what `hostpower agent` and the lab run). Parses the options, builds the
agent and its server (server.py), serves until SIGTERM or SIGINT."""

from __future__ import annotations

import argparse
import logging
import signal
import socket
import sys
import threading
import time
import uuid
from collections.abc import Sequence
from pathlib import Path

from hostpower.drivers.registry import default_drivers
from hostpower.hostagent.agent import (
    DEFAULT_CERT_DIR, DEFAULT_FENCE_AGENTS_PATH, DEFAULT_PORT, AgentConfig, AgentStartError,
    HostAgent,
)
from hostpower.hostagent import sdnotify
from hostpower.hostagent.server import AgentServer
from hostpower.hostagent.storagelease import DEFAULT_INTERVAL as DEFAULT_LEASE_INTERVAL
from hostpower.model import validate
from hostpower.model.errors import ValidationError

log = logging.getLogger("hostpower.hostagent")

def parse_bind(text: str) -> tuple[str, int]:
    """ADDRESS:PORT, IPv6 in brackets: 127.0.0.5:54321, [::1]:54321."""
    try:
        return validate.bind_address(text, f"0.0.0.0:{DEFAULT_PORT}", allow_any_port=True)
    except ValidationError as exc:
        raise ValueError(str(exc)) from None


def redfish_ca_bundle(path: Path | None) -> str | None:
    """--redfish-ca-bundle as an absolute path to a readable file; ValueError saying what is wrong."""
    if path is None:
        return None
    try:
        with path.open("rb") as bundle:
            head = bundle.read(1 << 16)
    except OSError as exc:
        raise ValueError(f"--redfish-ca-bundle {path}: {exc.strerror}") from None
    if b"-----BEGIN CERTIFICATE-----" not in head:
        raise ValueError(f"--redfish-ca-bundle {path}: not a PEM certificate file")
    return str(path.resolve())


def _arguments(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m hostpower.hostagent.daemon",
        description="hostpower host agent: heartbeats and fence commands over mutual TLS")
    parser.add_argument("--bind", default=f"0.0.0.0:{DEFAULT_PORT}",
                        help="ADDRESS:PORT to listen on (default %(default)s)")
    parser.add_argument("--host-name", default=socket.gethostname(),
                        help="this host's name as the engine knows it (default: hostname)")
    parser.add_argument("--cert-dir", type=Path, default=DEFAULT_CERT_DIR,
                        help="directory with agent.crt, agent.key, ca.crt (default %(default)s)")
    parser.add_argument("--fence-agents-path", default=DEFAULT_FENCE_AGENTS_PATH,
                        help="where the fence_* programs are (default %(default)s)")
    parser.add_argument("--boot-id", default=None,
                        help="boot id (UUID) to report (default: the kernel's, "
                             "/proc/sys/kernel/random/boot_id)")
    parser.add_argument("--no-native", action="store_true",
                        help="run fence-agents scripts even where a native driver exists")
    parser.add_argument("--max-parallel-fence", type=int, default=8,
                        help="fence commands run at once (default %(default)s)")
    parser.add_argument("--storage-lease-dir", type=Path, default=None,
                        help="a directory on the storage all hosts share: renew this host's "
                             "lease there (HOST-NAME.lease) and watch the others' (default: "
                             "none, the host is on no shared storage)")
    parser.add_argument("--storage-lease-interval", type=float,
                        default=DEFAULT_LEASE_INTERVAL,
                        help="seconds between renewals of the storage lease "
                             "(default %(default)s)")
    parser.add_argument("--redfish-ca-bundle", type=Path, default=None, metavar="PATH",
                        help="PEM file of the CA certificates trusted for Redfish BMCs, by "
                             "the native driver and by fence_redfish (default: the system "
                             "trust store)")
    parser.add_argument("--log-level", default="INFO",
                        choices=["DEBUG", "INFO", "WARNING", "ERROR"])
    return parser.parse_args(argv)


def run_agent(argv: Sequence[str] | None = None) -> int:
    """The daemon: serve until SIGTERM or SIGINT, then shut down cleanly. Returns the exit code."""
    args = _arguments(argv)
    logging.basicConfig(level=args.log_level,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        address, port = parse_bind(args.bind)
        boot_id = None if args.boot_id is None else str(uuid.UUID(args.boot_id))
        ca_bundle = redfish_ca_bundle(args.redfish_ca_bundle)
    except ValueError as exc:
        print(f"hostagent: {exc}", file=sys.stderr)
        return 2
    config = AgentConfig(host_name=args.host_name, bind_address=address, port=port,
                         cert_dir=args.cert_dir, boot_id=boot_id,
                         fence_agents_path=args.fence_agents_path,
                         prefer_native=not args.no_native,
                         max_parallel_fence=max(1, args.max_parallel_fence),
                         storage_lease_dir=args.storage_lease_dir,
                         storage_lease_interval=args.storage_lease_interval)
    drivers = default_drivers(config.fence_agents_path, config.prefer_native, ca_bundle)
    try:
        agent = HostAgent(config, drivers)
    except ValidationError as exc:  # a host name that cannot name a lease, a bad interval
        print(f"hostagent: {exc}", file=sys.stderr)
        for driver in drivers:
            driver.close()
        return 2
    server = AgentServer(agent)

    stop = threading.Event()
    previous = {sig: signal.signal(sig, lambda *_: stop.set())
                for sig in (signal.SIGTERM, signal.SIGINT)}
    code = 0
    try:
        server.start()
        print(f"hostpower agent {config.host_name} listening on {server.url}", flush=True)
        sdnotify.notify("READY=1")
        watchdog = sdnotify.watchdog_interval()
        pinged = time.monotonic()
        while not stop.wait(0.5):
            if not server.running:
                log.error("agent host=%s: server thread ended unexpectedly", config.host_name)
                code = 1
                break
            if watchdog is not None and time.monotonic() - pinged >= watchdog:
                sdnotify.notify("WATCHDOG=1")  # the server thread is alive (checked above)
                pinged = time.monotonic()
    except AgentStartError as exc:
        print(f"hostagent: {exc}", file=sys.stderr)
        code = 1
    finally:
        sdnotify.notify("STOPPING=1")
        if not server.stop() and code == 0:
            code = 1
        agent.close()
        for driver in drivers:
            driver.close()
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    log.info("agent host=%s stopped", config.host_name)
    return code


def main() -> None:
    sys.exit(run_agent())


if __name__ == "__main__":
    main()
