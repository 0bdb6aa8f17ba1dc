"""`hostpower serve` and `hostpower demo`."""

from __future__ import annotations

import argparse
import ipaddress
import logging
import os
import secrets
from importlib import resources

import yaml

from hostpower.cli.common import CliError, open_context
from hostpower.inventory_file import load_document
from hostpower.model.errors import NotFoundError
from hostpower.store.configstore import ConfigStore
from hostpower.store.inventory import Inventory
from hostpower.store.users import Users


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("serve", help="run the engine (REST API)")
    p.add_argument("--bind", default="127.0.0.1:8080", help="ADDRESS:PORT (default %(default)s)")
    p.set_defaults(func=serve)
    d = sub.add_parser("demo", help="run the engine with a sample inventory under var/demo")
    d.add_argument("--bind", default="127.0.0.1:8080", help="ADDRESS:PORT (default %(default)s)")
    d.set_defaults(func=demo)


def parse_bind(text: str) -> tuple[str, int]:
    host, sep, port = text.rpartition(":")
    host = host.strip("[]")
    try:
        ipaddress.ip_address(host)
        number = int(port)
        if not sep or not 0 < number < 65536:
            raise ValueError
    except ValueError:
        raise CliError(f"--bind: {text!r} is not ADDRESS:PORT (e.g. 127.0.0.1:8080)", 2) from None
    return host, number


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


def demo(args: argparse.Namespace) -> int:
    os.environ.setdefault("HOSTPOWER_HOME", os.path.abspath("var/demo"))
    ctx = open_context()
    with ctx.db.session() as s:
        inv = Inventory(s, ctx.box, ctx.known_agent_types())
        if not inv.data_centers():
            doc = yaml.safe_load(resources.files("hostpower").joinpath("sample_inventory.yaml").read_text())
            print(f"demo: loaded sample inventory: {load_document(inv, ConfigStore(s), doc)}")
        users = Users(s)
        password = secrets.token_urlsafe(12)
        try:
            users.set_password("admin", password)
        except NotFoundError:
            users.add("admin", "admin", password)
    ctx.close()
    print(f"demo: engine home {os.environ['HOSTPOWER_HOME']}")
    print(f"demo: log in as admin / {password}")
    print("demo: e.g. curl -s -X POST http://127.0.0.1:8080/api/auth/token "
          "-H 'content-type: application/json' "
          f"-d '{{\"username\":\"admin\",\"password\":\"{password}\"}}'")
    return run_engine(args.bind)
