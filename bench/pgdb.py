"""A fresh PostgreSQL database for a benchmark, dropped afterwards whatever
happens (the server of the tests: HOSTPOWER_TEST_PG, default
postgresql://postgres@127.0.0.1:5432/postgres)."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from contextlib import contextmanager

import psycopg

from conftest import PG_ADMIN_DSN


@contextmanager
def fresh_database(prefix: str = "hostpower_bench") -> Iterator[str]:
    """The SQLAlchemy URL of a new, empty database; dropped (connections
    forced out) on exit."""
    name = f"{prefix}_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(PG_ADMIN_DSN, autocommit=True, connect_timeout=10) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    info = psycopg.conninfo.conninfo_to_dict(PG_ADMIN_DSN)
    user, host, port = info.get("user", "postgres"), info.get("host", "127.0.0.1"), info.get("port", 5432)
    try:
        yield f"postgresql+psycopg://{user}@{host}:{port}/{name}"
    finally:
        with psycopg.connect(PG_ADMIN_DSN, autocommit=True, connect_timeout=10) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
