"""`hostpower db upgrade|revision`."""

from __future__ import annotations

import argparse

from hostpower.cli.common import open_context
from hostpower.store.db import current_revision, head_revision


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("db", help="database schema")
    dsub = p.add_subparsers(dest="db_command", required=True, metavar="ACTION")
    up = dsub.add_parser("upgrade", help="apply pending migrations")
    up.set_defaults(func=upgrade)
    rev = dsub.add_parser("revision", help="show the schema revision")
    rev.set_defaults(func=revision)


def upgrade(_: argparse.Namespace) -> int:
    ctx = open_context()  # applies migrations
    print(f"database at revision {current_revision(ctx.db.engine)} (head {head_revision()})")
    ctx.close()
    return 0


def revision(_: argparse.Namespace) -> int:
    from hostpower.settings import Settings
    from hostpower.store.db import make_engine
    engine = make_engine(Settings.from_env().db_url)
    print(f"current {current_revision(engine) or '(empty)'}, head {head_revision()}")
    engine.dispose()
    return 0
