"""`hostpower engines`: the engines sharing the database and their leases.

Reads the database directly, like `hostpower events`, so it answers while
every engine is down.
"""

from __future__ import annotations

import argparse
from datetime import UTC, datetime

from hostpower.cli.common import open_existing_context, table
from hostpower.store.engines import Engines


def register(sub: argparse._SubParsersAction) -> None:
    e = sub.add_parser("engines", help="the engines sharing the database: alive, expired or "
                                       "stopped (reads the database)")
    e.set_defaults(func=engines)


def _time(value: datetime) -> str:
    return f"{value.astimezone(UTC):%Y-%m-%dT%H:%M:%S}Z"


def engines(args: argparse.Namespace) -> int:
    ctx = open_existing_context()
    try:
        with ctx.db.session() as s:
            members = Engines(s).list()
            shares = Engines(s).host_shares(members)
    finally:
        ctx.close()
    rows = [(m.name, m.state.value, m.generation, shares[m.name], m.address,
             _time(m.started_at), _time(m.renewed_at), _time(m.lease_expires_at))
            for m in members]
    print(table(rows, ("NAME", "STATE", "GENERATION", "HOSTS", "ADDRESS", "STARTED", "RENEWED",
                       "LEASE EXPIRES")))
    return 0
