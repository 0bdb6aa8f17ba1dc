"""Alembic migrations: they match the tables, and upgrading keeps every row."""

from __future__ import annotations

import subprocess
import sys

import pytest
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import text

from hostpower.store.db import Database, current_revision, head_revision, upgrade
from hostpower.store.tables import Base


def test_migrations_produce_exactly_the_declared_schema(db_url: str) -> None:
    db = Database(db_url)
    db.upgrade()
    with db.engine.connect() as conn:
        diff = compare_metadata(MigrationContext.configure(conn, opts={"compare_type": True}),
                                Base.metadata)
    db.dispose()
    assert diff == []


def test_database_of_an_older_revision_upgrades_without_losing_rows(db_url: str) -> None:
    db = Database(db_url)
    upgrade(db.engine, "0001")
    assert current_revision(db.engine) == "0001"
    with db.engine.begin() as conn:
        conn.execute(text("INSERT INTO data_centers (id, name, description) VALUES (1, 'dc', '')"))
        conn.execute(text(
            "INSERT INTO clusters (id, name, data_center_id, description, fencing_enabled, "
            "skip_if_connectivity_broken, connectivity_threshold, skip_if_sd_active) "
            "VALUES (1, 'c', 1, '', true, true, 50, false)"))
        conn.execute(text(
            "INSERT INTO hosts (id, name, address, cluster_id, status, pm_enabled, pm_automatic, "
            "pm_kdump_detection, pm_proxy_preferences) "
            "VALUES (1, 'h1', '10.0.0.1', 1, 'up', true, true, true, 'engine,cluster')"))
        conn.execute(text("INSERT INTO config (key, value) VALUES ('FenceStopStatusRetries', '4')"))
    db.upgrade()
    assert current_revision(db.engine) == head_revision()
    with db.engine.connect() as conn:
        host = conn.execute(text("SELECT name, pm_proxy_preferences FROM hosts")).one()
        value = conn.execute(text("SELECT value FROM config")).scalar_one()
        users = conn.execute(text("SELECT count(*) FROM users")).scalar_one()
    db.dispose()
    assert tuple(host) == ("h1", "engine,cluster")
    assert value == "4"
    assert users == 0


def test_upgrade_is_idempotent(db_url: str) -> None:
    db = Database(db_url)
    db.upgrade()
    db.upgrade()
    assert current_revision(db.engine) == head_revision()
    db.dispose()


def test_0005_splits_the_requesting_user_out_of_the_origin(db_url: str) -> None:
    """Before 0005 an API request was stored as origin "api:<user>"."""
    db = Database(db_url)
    upgrade(db.engine, "0004")
    with db.engine.begin() as conn:
        for n, origin in enumerate(("api:alice", "automatic"), start=1):
            conn.execute(text(
                "INSERT INTO operations (id, host_id, host_name, action, origin, state, phase, "
                "message, created_at, updated_at) VALUES (:id, 1, 'h1', 'stop', :origin, "
                "'succeeded', 'done', '', CURRENT_TIMESTAMP, CURRENT_TIMESTAMP)"),
                {"id": n, "origin": origin})
    db.upgrade()
    with db.engine.connect() as conn:
        rows = conn.execute(text("SELECT origin, requested_by FROM operations ORDER BY id")).all()
    db.dispose()
    assert [tuple(r) for r in rows] == [("api", "alice"), ("automatic", None)]


@pytest.mark.postgres
def test_engines_starting_at_once_upgrade_one_postgres_database_once(pg_url: str) -> None:
    """Three processes upgrade the same empty database at the same moment (as
    engines started together by systemd do): each succeeds, the schema is
    migrated once, nobody trips over another's half-created tables."""
    script = ("import sys\nfrom hostpower.store.db import Database\n"
              "db = Database(sys.argv[1]); db.upgrade(); db.dispose()\n")
    procs = [subprocess.Popen([sys.executable, "-c", script, pg_url],
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
             for _ in range(3)]
    outputs = [p.communicate(timeout=120)[0] for p in procs]
    assert [p.returncode for p in procs] == [0, 0, 0], outputs
    db = Database(pg_url)
    assert current_revision(db.engine) == head_revision()
    db.dispose()
