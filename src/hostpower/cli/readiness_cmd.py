"""`hostpower readiness`: can each host be fenced now, and through which
proxies (what the PM health check found).

Reads the database directly, like `hostpower engines`, so it answers the
same as every engine's API, and while every engine is down.
"""

from __future__ import annotations

import argparse
import json
from datetime import UTC, datetime

from hostpower.cli.common import open_existing_context, table
from hostpower.model.readiness import HostReadiness, Readiness
from hostpower.store.inventory import Inventory
from hostpower.store.readiness import ReadinessStore


def register(sub: argparse._SubParsersAction) -> None:
    r = sub.add_parser("readiness", help="can each host be fenced now, through which proxies "
                                         "(the PM health check's findings; reads the database)")
    r.add_argument("--host", help="only this host (name, address or id), with each of its paths")
    r.add_argument("--readiness", choices=[s.value for s in Readiness],
                   help="only hosts in this state")
    r.add_argument("--json", action="store_true", help="as the API gives it (GET /api/readiness)")
    r.set_defaults(func=readiness)


def _time(value: datetime | None) -> str:
    return f"{value.astimezone(UTC):%Y-%m-%dT%H:%M:%S}Z" if value else "-"


def readiness(args: argparse.Namespace) -> int:
    ctx = open_existing_context()
    try:
        with ctx.db.session() as s:
            host_id = Inventory(s, ctx.box).find_host(args.host).id if args.host else None
            found = ReadinessStore(s).report(host_id)
    finally:
        ctx.close()
    if args.readiness:
        found = [r for r in found if r.readiness.value == args.readiness]
    if args.json:
        print(json.dumps([r.as_dict() for r in found], indent=2))
        return 0
    print(table([_row(r) for r in found], ("HOST", "READINESS", "PATHS", "FAILING", "CHECKED")))
    if args.host:
        for r in found:
            print(f"\n{r.message}")
            if r.checks:
                print()
                print(table([(c.proxy, c.source, c.agent, c.state.value, c.message)
                             for c in r.checks], ("PROXY", "SOURCE", "AGENT", "STATE", "DETAIL")))
    return 0


def _row(r: HostReadiness) -> tuple[object, ...]:
    checked = r.readiness is not Readiness.UNKNOWN
    return (r.host_name, r.readiness.value, r.paths if checked else "-",
            ", ".join(r.failing) or "-", _time(r.checked_at))
