"""`hostpower serve` and `hostpower demo`."""

from __future__ import annotations

import argparse
import logging
import os
import secrets
import sys

from hostpower.cli.common import open_context
from hostpower.inventory_file import load_document
from hostpower.model import validate
from hostpower.model.errors import NotFoundError
from hostpower.store.configstore import ConfigStore
from hostpower.store.inventory import Inventory
from hostpower.store.users import Users


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("serve", help="run the engine (REST API)")
    p.add_argument("--bind", default="127.0.0.1:8080", help="ADDRESS:PORT (default %(default)s)")
    p.set_defaults(func=serve)
    d = sub.add_parser("demo", help="the engine with the lab's hosts under var/demo (Ctrl-C stops)")
    d.add_argument("--bind", default="127.0.0.1:8080", help="ADDRESS:PORT (default %(default)s)")
    d.add_argument("--loopback", action="store_true", help="lab on 127.x addresses, even as root")
    d.set_defaults(func=demo)


def parse_bind(text: str) -> tuple[str, int]:
    return validate.bind_address(text, "127.0.0.1:8080")


def run_engine(bind: str) -> int:
    import uvicorn

    from hostpower.api.app import create_app
    from hostpower.runtime import EngineRuntime

    host, port = parse_bind(bind)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    ctx = open_context()
    app = create_app(ctx, EngineRuntime(ctx))
    shown = f"[{host}]" if ":" in host else host
    print(f"hostpower engine: database {ctx.db.engine.url.render_as_string(hide_password=True)}")
    print(f"hostpower engine listening on http://{shown}:{port}/  (API /api, docs /api/docs)",
          flush=True)
    uvicorn.run(app, host=host, port=port, log_level="warning")
    ctx.close()
    return 0


def serve(args: argparse.Namespace) -> int:
    return run_engine(args.bind)


# Quicker than production defaults, so a person watching the demo sees a
# dead host fenced within a minute instead of after the 5-minute start-up window.
DEMO_CONFIG = {
    "DisableFenceAtStartupInSec": "20", "TimeoutToResetHostInSeconds": "10",
    "HostHeartbeatTimeoutInSec": "2", "FenceQuietTimeBetweenOperationsInSec": "60",
    "FenceStopStatusDelayBetweenRetriesInSec": "1", "FenceStartStatusDelayBetweenRetriesInSec": "1",
}


def demo(args: argparse.Namespace) -> int:
    """Engine on SQLite under var/demo, the lab's default topology loaded into
    it, an admin user; Ctrl-C stops everything and leaves nothing behind."""
    from hostpower.lab.runner import load_topology, start_lab
    from hostpower.settings import Settings

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
                      f"{load_document(inv, ConfigStore(s), topo.inventory_document())}")
            for key, value in DEMO_CONFIG.items():
                ConfigStore(s).set(key, value)
            users = Users(s)
            password = secrets.token_urlsafe(12)
            try:
                users.set_password("admin", password)
            except NotFoundError:
                users.add("admin", "admin", password)
        ctx.close()
        host, port = parse_bind(args.bind)
        home = os.environ["HOSTPOWER_HOME"]
        print(f"demo: engine home {home}")
        print(f"demo: open http://{host}:{port}/ and log in as admin / {password}")
        print("demo: kill a host's agent and watch it be fenced through its proxy chain:")
        print(f"        HOSTPOWER_HOME={home} {sys.argv[0]} lab fault c1-h2 agent_crash")
        print(f"        HOSTPOWER_HOME={home} {sys.argv[0]} events --follow")
        print("demo: Ctrl-C stops the engine and the lab", flush=True)
        return run_engine(args.bind)
    finally:
        print("demo: stopping the lab", flush=True)
        lab.stop()
        print("demo: stopped, nothing left behind", flush=True)
