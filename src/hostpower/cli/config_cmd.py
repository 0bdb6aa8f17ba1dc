"""`hostpower config list|get|set|reset`: the engine-config of hostpower."""

from __future__ import annotations

import argparse

from hostpower.cli.common import open_context, table
from hostpower.store.configstore import ConfigStore


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("config", help="engine configuration keys")
    csub = p.add_subparsers(dest="config_command", required=True, metavar="ACTION")
    ls = csub.add_parser("list", help="every key with its value and description")
    ls.set_defaults(func=list_keys)
    get = csub.add_parser("get", help="print one key's value")
    get.add_argument("key")
    get.set_defaults(func=get_key)
    st = csub.add_parser("set", help="validate and store a value")
    st.add_argument("key")
    st.add_argument("value")
    st.set_defaults(func=set_key)
    rs = csub.add_parser("reset", help="return a key to its default")
    rs.add_argument("key")
    rs.set_defaults(func=reset_key)


def list_keys(_: argparse.Namespace) -> int:
    ctx = open_context()
    with ctx.db.session() as s:
        rows = [(k.name, v, k.default, k.description) for k, v in ConfigStore(s).listing()]
    print(table(rows, ("KEY", "VALUE", "DEFAULT", "DESCRIPTION")))
    return 0


def get_key(args: argparse.Namespace) -> int:
    ctx = open_context()
    with ctx.db.session() as s:
        _, value = ConfigStore(s).get(args.key)
    print(value)
    return 0


def set_key(args: argparse.Namespace) -> int:
    ctx = open_context()
    with ctx.db.session() as s:
        key, value = ConfigStore(s).set(args.key, args.value)
    print(f"{key.name} = {value}")
    return 0


def reset_key(args: argparse.Namespace) -> int:
    ctx = open_context()
    with ctx.db.session() as s:
        key = ConfigStore(s).reset(args.key)
    print(f"{key.name} = {key.default} (default)")
    return 0
