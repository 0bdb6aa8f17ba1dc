"""Shared fixtures: a database on each backend, an engine context, API clients."""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from hostpower.context import EngineContext
from hostpower.settings import Settings

# The HA scenarios' fixtures (ha_lab, ha_world) live beside the kit they use.
pytest_plugins = ["clusterkit"]

PG_ADMIN_DSN = os.environ.get("HOSTPOWER_TEST_PG", "postgresql://postgres@127.0.0.1:5432/postgres")
IN_CI = bool(os.environ.get("CI"))


def require(condition: bool, why: str) -> None:
    """Skip with a reason on a developer machine; fail in CI, where nothing may be skipped."""
    if condition:
        return
    if IN_CI:
        pytest.fail(f"required in CI: {why}")
    pytest.skip(why)


@pytest.fixture(scope="session")
def pg_server() -> Iterator[str]:
    """DSN of the PostgreSQL server on 127.0.0.1:5432 (skips only outside CI)."""
    import psycopg

    try:
        with psycopg.connect(PG_ADMIN_DSN, connect_timeout=5):
            pass
    except psycopg.OperationalError as exc:
        require(False, f"PostgreSQL at {PG_ADMIN_DSN} not reachable: {exc}")
    yield PG_ADMIN_DSN


def _create_pg_database(admin_dsn: str) -> str:
    import psycopg

    name = f"hostpower_test_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(admin_dsn, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    return name


def _drop_pg_database(admin_dsn: str, name: str) -> None:
    import psycopg

    with psycopg.connect(admin_dsn, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture
def pg_url(pg_server: str) -> Iterator[str]:
    """A fresh, empty PostgreSQL database, dropped after the test."""
    name = _create_pg_database(pg_server)
    yield f"postgresql+psycopg://postgres@127.0.0.1:5432/{name}"
    _drop_pg_database(pg_server, name)


@pytest.fixture(params=["sqlite", "postgres"])
def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """Each storage test runs on the embedded SQLite and on real PostgreSQL."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'hostpower.db'}"
    return request.getfixturevalue("pg_url")


@pytest.fixture
def ctx(db_url: str, tmp_path: Path) -> Iterator[EngineContext]:
    context = EngineContext.open(Settings(home=tmp_path / "home", db_url=db_url))
    yield context
    context.close()


@pytest.fixture
def sqlite_ctx(tmp_path: Path) -> Iterator[EngineContext]:
    """For tests whose subject is not the database."""
    context = EngineContext.open(
        Settings(home=tmp_path / "home", db_url=f"sqlite:///{tmp_path / 'hp.db'}"))
    yield context
    context.close()
