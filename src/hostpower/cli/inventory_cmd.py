"""`hostpower inventory load|hosts`."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import yaml

from hostpower.cli.common import CliError, open_context, table
from hostpower.inventory_file import load_document
from hostpower.store.configstore import ConfigStore
from hostpower.store.inventory import Inventory


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("inventory", help="data centers, clusters and hosts")
    isub = p.add_subparsers(dest="inventory_command", required=True, metavar="ACTION")
    load = isub.add_parser("load", help="create the inventory a YAML file describes (all or nothing)")
    load.add_argument("file", help="YAML file, or - for stdin")
    load.set_defaults(func=load_file)
    hosts = isub.add_parser("hosts", help="list hosts")
    hosts.set_defaults(func=list_hosts)


def read_document(name: str) -> object:
    try:
        text = sys.stdin.read() if name == "-" else Path(name).read_text()
    except OSError as exc:
        raise CliError(f"cannot read {name}: {exc.strerror}", 2) from None
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise CliError(f"{name} is not valid YAML: {exc}", 2) from None


def load_file(args: argparse.Namespace) -> int:
    doc = read_document(args.file)
    ctx = open_context()
    with ctx.db.session() as s:
        summary = load_document(Inventory(s, ctx.box, ctx.known_agent_types()), ConfigStore(s), doc)
    print(f"loaded {summary}")
    return 0


def list_hosts(_: argparse.Namespace) -> int:
    ctx = open_context()
    with ctx.db.session() as s:
        inv = Inventory(s, ctx.box)
        clusters = {c.id: c.name for c in inv.clusters()}
        rows = [(h.name, h.address, clusters[h.cluster_id], h.status.value,
                 "on" if h.power_management.enabled else "off",
                 h.power_management.pm_proxies or "(default)")
                for h in inv.hosts()]
    print(table(rows, ("HOST", "ADDRESS", "CLUSTER", "STATUS", "PM", "PROXIES")))
    return 0
