"""`hostpower serve` and `hostpower demo`."""

from __future__ import annotations

import argparse
import logging
import os
import secrets
import socket
import sys

from hostpower.cli.common import open_context
from hostpower.hostagent.pki import CA_CERT_FILE
from hostpower.cli.transport import (
    Transport, choose_transport, uvicorn_tls_options, with_engine_certificate,
)
from hostpower.inventory_file import load_document
from hostpower.store.db import read_only_sqlite_file
from hostpower.membership import EngineRefused, Identity, Membership
from hostpower.model import validate
from hostpower.model.errors import NotFoundError, StorageUnavailable, ValidationError
from hostpower.store.configstore import ConfigStore
from hostpower.store.inventory import Inventory
from hostpower.store.users import Users


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "serve", help="run the engine (REST API and web console, HTTPS)",
        description="Run the engine. It serves HTTPS: with --tls-cert/--tls-key, else with a "
                    "certificate it issues from its own CA (clients trust "
                    "HOSTPOWER_HOME/pki/ca.crt).")
    p.add_argument("--bind", default="127.0.0.1:8080", help="ADDRESS:PORT (default %(default)s)")
    p.add_argument("--tls-cert", metavar="FILE",
                   help="PEM certificate (and chain) to serve instead of the engine-issued one")
    p.add_argument("--tls-key", metavar="FILE",
                   help="unencrypted PEM private key of --tls-cert, mode 0600")
    _add_plain_http(p)
    p.add_argument("--engine-name", type=_engine_name, metavar="NAME",
                   help="this engine's name among the engines sharing the database "
                        "(default HOSTNAME:PORT)")
    p.add_argument("--metrics-bind", metavar="ADDRESS:PORT",
                   help="also serve GET /metrics (Prometheus) in plain HTTP without login on "
                        "this address, e.g. a management network's (docs/metrics.md)")
    p.set_defaults(func=serve)
    d = sub.add_parser("demo", help="the engine with the lab's hosts under var/demo "
                                    "(Ctrl-C stops); plain HTTP on loopback")
    d.add_argument("--bind", default="127.0.0.1:8080", help="ADDRESS:PORT (default %(default)s)")
    d.add_argument("--loopback", action="store_true", help="lab on 127.x addresses, even as root")
    _add_plain_http(d)
    d.set_defaults(func=demo)


def _add_plain_http(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--plain-http", action="store_true",
        help="serve plain HTTP, no TLS. On a loopback address (127.0.0.0/8, ::1) that is "
             "harmless; on any other it sends passwords and tokens in clear (a WARNING says so)")


def _engine_name(text: str) -> str:
    try:
        return validate.engine_name(text)
    except ValidationError as exc:
        raise argparse.ArgumentTypeError(exc.message) from None


def parse_bind(text: str) -> tuple[str, int]:
    return validate.bind_address(text, "127.0.0.1:8080")


def configure_logging() -> None:
    logging.basicConfig(level=logging.INFO,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")


def run_engine(bind: str, transport: Transport, engine_name: str | None = None,
               metrics_bind: str | None = None) -> int:
    """Serve the engine on `bind` over `transport` (decided and checked by the
    caller), named `engine_name` (default HOSTNAME:PORT) among the engines
    sharing its database. Exit 2, with nothing started, when the database
    is SQLite and another engine runs on it, or the name is in use."""
    import uvicorn

    from hostpower.api.app import create_app
    from hostpower.cli.notifyingserver import NotifyingServer
    from hostpower.runtime import EngineRuntime

    host, port = parse_bind(bind)
    shown = f"[{host}]" if ":" in host else host
    ctx = open_context()
    issued = transport.engine_issued
    transport = with_engine_certificate(transport, ctx.settings, host)
    me = Identity(engine_name or f"{socket.gethostname()}:{port}",
                  f"{transport.scheme}://{shown}:{port}")
    membership: Membership | None = None
    read_only = read_only_sqlite_file(ctx.db.url)
    if read_only is not None:
        # Nothing can be written there, by this engine or another: serve
        # reads without joining (joining is a write), every write answers 503.
        print(f"hostpower serve: {read_only} is on a read-only file system: serving reads "
              f"only (writes answer 503) until it is writable and the engine restarts",
              file=sys.stderr, flush=True)
    else:
        try:
            membership = Membership.join(ctx.db, me)
        except (EngineRefused, StorageUnavailable) as exc:
            ctx.close()
            print(f"hostpower serve: {exc}", file=sys.stderr)
            return 2 if isinstance(exc, EngineRefused) else 1
    try:
        # Bound before "listening" is printed: whoever reads that line may
        # connect at once (the connection waits until the engine has started).
        listener = listening_socket(host, port)
    except OSError as exc:
        if membership is not None:
            membership.leave()
        ctx.close()
        print(f"hostpower serve: cannot listen on {bind}: {exc.strerror or exc}", file=sys.stderr)
        return 1
    runtime = EngineRuntime(ctx, membership=membership)
    app = create_app(ctx, runtime)
    metrics_server = None
    if metrics_bind is not None:
        from prometheus_client import start_http_server

        m_host, m_port = validate.bind_address(metrics_bind, "127.0.0.1:9464", "--metrics-bind")
        try:
            metrics_server, _thread = start_http_server(m_port, m_host,
                                                        registry=runtime.metrics.registry)
        except OSError as exc:
            listener.close()
            if membership is not None:
                membership.leave()
            ctx.close()
            print(f"hostpower serve: cannot serve metrics on {metrics_bind}: "
                  f"{exc.strerror or exc}", file=sys.stderr)
            return 1
    print(f"hostpower engine: database {ctx.db.engine.url.render_as_string(hide_password=True)}")
    if membership is not None:
        print(f"hostpower engine: {me.name}, generation {membership.generation}, "
              f"lease {membership.terms.seconds:g} s")
    if issued:
        print(f"hostpower engine: TLS certificate {transport.cert_file} issued by the engine CA; "
              f"clients trust {ctx.settings.pki_dir / CA_CERT_FILE}")
    elif transport.tls:
        print(f"hostpower engine: TLS certificate {transport.cert_file}")
    if transport.warning:
        print(transport.warning, file=sys.stderr, flush=True)
        logging.getLogger("hostpower.serve").warning("plain HTTP off loopback on %s", host)
    if metrics_server is not None:
        print(f"hostpower engine: metrics on http://{metrics_bind}/metrics")
    print(f"hostpower engine listening on {transport.scheme}://{shown}:{port}/  "
          f"(API /api, docs /api/docs)", flush=True)
    config = uvicorn.Config(app, log_level="warning", **uvicorn_tls_options(transport))
    try:
        NotifyingServer(config).run(sockets=[listener])
    except KeyboardInterrupt:
        pass  # Ctrl-C: uvicorn shut down cleanly, then re-raised the signal (as uvicorn.run does)
    finally:
        if metrics_server is not None:
            metrics_server.shutdown()
    ctx.close()
    return 0


def listening_socket(host: str, port: int) -> socket.socket:
    # IPPROTO_TCP named: asyncio turns Nagle's algorithm off only on sockets
    # that say they are TCP. Without it every answer of the API written in two
    # parts (headers, body) waited for the client's delayed ACK: 40 ms a request.
    sock = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_STREAM,
                         socket.IPPROTO_TCP)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host, port))
        sock.listen(2048)
    except OSError:
        sock.close()
        raise
    return sock


def serve(args: argparse.Namespace) -> int:
    configure_logging()
    host, _port = parse_bind(args.bind)
    transport = choose_transport(host, plain_http=args.plain_http, tls_cert=args.tls_cert,
                                 tls_key=args.tls_key)
    if args.metrics_bind is not None:  # bad input: exit 2 before anything starts
        validate.bind_address(args.metrics_bind, "127.0.0.1:9464", "--metrics-bind")
    return run_engine(args.bind, transport, args.engine_name, args.metrics_bind)


# Quicker than production defaults, so a person watching the demo sees a
# dead host fenced within a minute instead of after the 5-minute start-up window.
DEMO_CONFIG = {
    "DisableFenceAtStartupInSec": "20", "TimeoutToResetHostInSeconds": "10",
    "HostHeartbeatTimeoutInSec": "2", "FenceQuietTimeBetweenOperationsInSec": "60",
    "FenceStopStatusDelayBetweenRetriesInSec": "1", "FenceStartStatusDelayBetweenRetriesInSec": "1",
    # The PM health check on, every 30 s: the Readiness page fills within a minute.
    "PMHealthCheckEnabled": "true", "PMHealthCheckIntervalInSec": "30",
}


def demo(args: argparse.Namespace) -> int:
    """Engine on SQLite under var/demo, the lab's default topology loaded into
    it, an admin user; Ctrl-C stops everything and leaves nothing behind."""
    from hostpower.lab.runner import load_topology, start_lab
    from hostpower.settings import Settings

    configure_logging()
    host, port = parse_bind(args.bind)
    # Decided before the lab starts: a refused address leaves nothing behind.
    transport = choose_transport(host, plain_http=args.plain_http, plain_by_default=True)
    os.environ.setdefault("HOSTPOWER_HOME", os.path.abspath("var/demo"))
    os.environ.pop("HOSTPOWER_DB_URL", None)
    settings = Settings.from_env()
    topo = load_topology(None, loopback=args.loopback)
    mode = ("network namespaces, management networks confined" if topo.namespaced else
            "loopback addresses WITHOUT confinement (run as root for namespaces)")
    print(f"demo: starting the lab: {len(topo.hosts)} hosts with virtual BMCs on {mode}", flush=True)
    lab = start_lab(settings, topo, log=lambda m: print(m, flush=True))
    try:
        ctx = open_context()
        with ctx.db.session() as s:
            inv = Inventory(s, ctx.box, ctx.known_agent_types())
            if not any(dc.name in topo.data_centers for dc in inv.data_centers()):
                print(f"demo: loaded the lab into the inventory: "
                      f"{load_document(inv, ConfigStore(s), lab.inventory_document())}")
            for key, value in DEMO_CONFIG.items():
                ConfigStore(s).set(key, value)
            # The engine trusts the lab's Redfish BMCs (the lab's device CA), as
            # its host agents do (the lab gives them --redfish-ca-bundle).
            ConfigStore(s).set("RedfishCaBundle", str(lab.redfish_ca_bundle))
            users = Users(s)
            password = secrets.token_urlsafe(12)
            try:
                users.set_password("admin", password)
            except NotFoundError:
                users.add("admin", "admin", password)
        ctx.close()
        home = os.environ["HOSTPOWER_HOME"]
        print(f"demo: engine home {home}")
        shown = f"[{host}]" if ":" in host else host
        print(f"demo: open {transport.scheme}://{shown}:{port}/ and log in as admin / {password}")
        print("demo: hang a host's agent and watch soft fencing restart it over SSH:")
        print(f"        HOSTPOWER_HOME={home} {sys.argv[0]} lab fault c1-h2 agent_hang")
        print("      with its SSH server down first (then no soft fencing), watch it be fenced")
        print("      through its proxy chain:")
        print(f"        HOSTPOWER_HOME={home} {sys.argv[0]} lab fault c1-h3 ssh_down")
        print(f"        HOSTPOWER_HOME={home} {sys.argv[0]} lab fault c1-h3 agent_hang")
        print(f"        HOSTPOWER_HOME={home} {sys.argv[0]} events --follow")
        dual = next((h for h in topo.hosts if len(h.outlets) == 2), None)
        if dual is not None:
            print(f"demo: {dual.name} has a {dual.bmcs[0].kind} BMC and two power supplies on "
                  f"two PDUs ({', '.join(map(str, dual.outlets))}); kill its BMC and watch the "
                  f"PDU group fence it:")
            print(f"        HOSTPOWER_HOME={home} {sys.argv[0]} lab fault {dual.name} "
                  f"bmc_unresponsive")
        if topo.namespaced:
            print("demo: cut a proxy's management network and watch the Readiness page (a "
                  "host left with one proxy is flagged):")
            print(f"        HOSTPOWER_HOME={home} {sys.argv[0]} lab fault c1-h2 mgmt_cut")
        print("demo: Ctrl-C stops the engine and the lab", flush=True)
        return run_engine(args.bind, transport)
    finally:
        print("demo: stopping the lab", flush=True)
        lab.stop()
        print("demo: stopped, nothing left behind", flush=True)
