"""`hostpower proxies normalize|resolve|explain`."""

from __future__ import annotations

import argparse

from hostpower.cli.common import open_context, read_config
from hostpower.model.proxychain import format_chain, parse_chain
from hostpower.proxies import ProxyLocator, effective_chain
from hostpower.store.configstore import ConfigStore
from hostpower.store.inventory import Inventory


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("proxies", help="proxy preference chains")
    psub = p.add_subparsers(dest="proxies_command", required=True, metavar="ACTION")
    n = psub.add_parser("normalize", help="print the effective chain of SPEC (grammar only)")
    n.add_argument("spec", help="e.g. 'engine,10.0.0.7,cluster' ('' for no chain of its own)")
    n.set_defaults(func=normalize)
    r = psub.add_parser("resolve", help="print the effective chain of a defined host")
    r.add_argument("host", help="host name, address or id")
    r.set_defaults(func=resolve)
    e = psub.add_parser("explain", help="the proxies a host's fence commands would try, in order")
    e.add_argument("host", help="host name, address or id")
    e.add_argument("--type", dest="agent_type",
                   help="fence agent type (default: the type of the host's first agent)")
    e.set_defaults(func=explain)


def normalize(args: argparse.Namespace) -> int:
    config = read_config()
    chain = effective_chain(parse_chain(args.spec), config)
    print(format_chain(chain))
    return 0


def resolve(args: argparse.Namespace) -> int:
    ctx = open_context()
    with ctx.db.session() as s:
        config = ConfigStore(s).load()
        host = Inventory(s, ctx.box).find_host(args.host)
    print(format_chain(effective_chain(parse_chain(host.power_management.pm_proxies), config)))
    return 0


def explain(args: argparse.Namespace) -> int:
    ctx = open_context()
    with ctx.db.session() as s:
        config = ConfigStore(s).load()
        inv = Inventory(s, ctx.box)
        host = inv.find_host(args.host)
        snapshot = inv.snapshot()
        agents = inv.agents(host.id)
    agent_type = args.agent_type or (agents[0].type if agents else "ipmilan")
    own = parse_chain(host.power_management.pm_proxies)
    chain = effective_chain(own, config)
    cluster = snapshot.cluster(host.cluster_id)
    dc = next(d for d in snapshot.data_centers if d.id == cluster.data_center_id)
    print(f"host {host.name} ({host.address}), cluster {cluster.name}, data center {dc.name}")
    note = "" if (args.agent_type or agents) else " (the host has no fence agent)"
    print(f"agent type: {agent_type}{note}")
    print(f"own chain:  {format_chain(own) or '(none: FenceProxyDefaultPreferences applies)'}")
    print(f"effective:  {format_chain(chain)}")
    locator = ProxyLocator(snapshot, ctx.engine_agent_types())
    given = {e.key for e in (own or config["FenceProxyDefaultPreferences"])}
    label = "" if own else " (default)"
    rank = 0
    for i, plan in enumerate(locator.explain(host, agent_type, chain), 1):
        origin = label if plan.entry.key in given else " (implicit)"
        print(f"\n{i}. {plan.entry.text}{origin}")
        if not plan.candidates and not plan.passed_over:
            print("   (no hosts)")
        for c in plan.candidates:
            rank += 1
            status = "engine" if c.is_engine else c.host.status.value  # type: ignore[union-attr]
            print(f"   #{rank:<3} {c.name:<24} {status}")
        for p in plan.passed_over:
            print(f"   -    {p.name:<24} passed over: {p.reason}")
    if rank == 0:
        print("\nno eligible proxy: a fence command for this host would fail now")
    return 0
