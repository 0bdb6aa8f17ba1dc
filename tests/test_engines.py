"""Several `hostpower serve` processes on one database: membership, leases on
the database's clock, SQLite refused to a second engine, and an engine that
loses its database turning not ready without crashing.

Real processes (tests/servekit.py) on loopback, plain HTTP; PostgreSQL on
127.0.0.1:5432. Every engine a test starts is stopped by it; every wait is
bounded. The lease is 2 s so that expiry is quick to see.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

import httpx
import psycopg
import pytest

from conftest import PG_ADMIN_DSN
from helpers import free_port, wait_until
from hostpower.context import EngineContext
from hostpower.settings import Settings
from hostpower.store.configstore import ConfigStore
from hostpower.store.users import Users
from servekit import kill, run_hostpower, running_engine

LEASE = 2
USER, PASSWORD = "viewer1", "viewer-password"


def prepare(home: Path, db_url: str) -> dict[str, str]:
    """A database with a short lease and a viewer; the environment of its engines."""
    ctx = EngineContext.open(Settings(home=home, db_url=db_url))
    with ctx.db.session() as s:
        ConfigStore(s).set("EngineLeaseInSec", str(LEASE))
        Users(s).add(USER, "viewer", PASSWORD)
    ctx.close()
    return {**os.environ, "HOSTPOWER_HOME": str(home), "HOSTPOWER_DB_URL": db_url}


def token(url: str) -> dict[str, str]:
    r = httpx.post(f"{url}/api/auth/token", json={"username": USER, "password": PASSWORD},
                   timeout=10)
    assert r.status_code == 200, r.text
    return {"Authorization": f"Bearer {r.json()['access_token']}"}


def engines_api(url: str, headers: dict[str, str]) -> dict[str, dict]:
    r = httpx.get(f"{url}/api/engines", headers=headers, timeout=10)
    assert r.status_code == 200, r.text
    return {e["name"]: e for e in r.json()}


def engines_cli(env: dict[str, str]) -> dict[str, list[str]]:
    """`hostpower engines` as {name: [state, generation, address, ...]}."""
    r = run_hostpower(env, "engines")
    assert r.returncode == 0, r.stderr
    lines = r.stdout.splitlines()
    assert lines[0].split()[:3] == ["NAME", "STATE", "GENERATION"]
    return {line.split()[0]: line.split()[1:] for line in lines[1:]}


def test_engines_two_on_postgresql_see_each_other_renew_stop_and_expire(
        pg_url: str, tmp_path: Path) -> None:
    env = prepare(tmp_path / "home", pg_url)
    url_a, url_b = (f"http://127.0.0.1:{free_port()}" for _ in range(2))
    with running_engine(env, url_a, tmp_path / "a.log", "--plain-http", "--engine-name", "a"):
        with running_engine(env, url_b, tmp_path / "b.log", "--plain-http",
                            "--engine-name", "b") as proc_b:
            for url, me in ((url_a, "a"), (url_b, "b")):
                seen = engines_api(url, token(url))
                assert set(seen) == {"a", "b"}
                assert {n: e["self"] for n, e in seen.items()} == {"a": me == "a", "b": me == "b"}
                assert {e["state"] for e in seen.values()} == {"alive"}
                assert seen[me]["address"] == url
            cli = engines_cli(env)
            assert {n: row[0] for n, row in cli.items()} == {"a": "alive", "b": "alive"}
            # Each login was recorded by the engine that served it.
            logins = httpx.get(f"{url_a}/api/events", headers=token(url_a),
                               params={"user": USER}).json()
            assert {e["engine"] for e in logins if e["kind"] == "auth.login"} == {"a", "b"}

            headers = token(url_a)
            first = engines_api(url_a, headers)
            wait_until(lambda: all(
                e["renewed_at"] > first[n]["renewed_at"]
                and e["lease_expires_at"] > first[n]["lease_expires_at"]
                for n, e in engines_api(url_a, headers).items()), 3 * LEASE, "both to renew")

            proc_b.terminate()  # SIGTERM: a clean stop (uvicorn re-raises it once stopped)
            proc_b.wait(timeout=20)
            assert engines_api(url_a, headers)["b"]["state"] == "stopped"
            assert engines_cli(env)["b"][0] == "stopped"

        with running_engine(env, url_b, tmp_path / "b.log", "--plain-http",
                            "--engine-name", "b") as proc_b:
            again = engines_api(url_a, headers)["b"]
            assert again["state"] == "alive" and again["generation"] == 2
            kill(proc_b)  # SIGKILL: no goodbye, the lease runs out
            wait_until(lambda: engines_api(url_a, headers)["b"]["state"] == "expired",
                       LEASE + 2, "b's lease to expire")
            assert engines_api(url_a, headers)["a"]["state"] == "alive"
            assert engines_cli(env)["b"][0] == "expired"


def test_engines_a_second_on_one_sqlite_file_is_refused_until_the_first_dies(
        tmp_path: Path) -> None:
    env = prepare(tmp_path / "home", f"sqlite:///{tmp_path / 'hostpower.db'}")
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    with running_engine(env, url, tmp_path / "first.log", "--plain-http") as first:
        other = free_port()
        r = run_hostpower(env, "serve", "--plain-http", "--bind", f"127.0.0.1:{other}")
        assert r.returncode == 2, r.stdout + r.stderr
        assert "PostgreSQL" in r.stderr and "SQLite" in r.stderr, r.stderr
        assert "listening" not in r.stdout
        with pytest.raises(httpx.TransportError):  # nothing started
            httpx.get(f"http://127.0.0.1:{other}/api/health", timeout=2)
        # The same under another name: SQLite serves one engine, whatever its name.
        r = run_hostpower(env, "serve", "--plain-http", "--bind", f"127.0.0.1:{other}",
                          "--engine-name", "elsewhere")
        assert r.returncode == 2 and "PostgreSQL" in r.stderr, r.stderr
        (name, row), = engines_cli(env).items()
        assert row[:2] == ["alive", "1"]
        kill(first)  # a crash: its file lock is gone, its lease not yet
        assert engines_cli(env)[name][0] == "alive"
    # Restarted at once, well within the old lease: the stale lease is taken over.
    with running_engine(env, url, tmp_path / "second.log", "--plain-http"):
        assert engines_cli(env)[name][:2] == ["alive", "2"]


def _allow_connections(database: str, allowed: bool) -> None:
    with psycopg.connect(PG_ADMIN_DSN, autocommit=True) as conn:
        conn.execute(f'ALTER DATABASE "{database}" ALLOW_CONNECTIONS {str(allowed).lower()}')
        if not allowed:
            conn.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                         "WHERE datname = %s AND pid <> pg_backend_pid()", (database,))


def test_engines_losing_the_database_turns_health_not_ready_and_back(
        pg_url: str, tmp_path: Path) -> None:
    env = prepare(tmp_path / "home", pg_url)
    database = pg_url.rsplit("/", 1)[1]
    url = f"http://127.0.0.1:{free_port()}"

    def health() -> httpx.Response:
        return httpx.get(f"{url}/api/health", timeout=5)

    with running_engine(env, url, tmp_path / "engine.log", "--plain-http",
                        "--engine-name", "solo") as proc:
        headers = token(url)
        _allow_connections(database, False)  # superusers too: the database is gone
        try:
            down = wait_until(lambda: (r := health()).status_code == 503 and r, LEASE + 1,
                              "health to turn 503")
            assert down.json()["status"] == "not ready"
            assert "lease" in down.json()["detail"]
            # Past the lease: the engine goes on, not ready, and does not crash.
            time.sleep(LEASE + 1)
            assert proc.poll() is None
            assert health().status_code == 503
        finally:
            _allow_connections(database, True)
        up = wait_until(lambda: (r := health()).status_code == 200 and r, 10,
                        "health to be ok again")
        assert up.json()["status"] == "ok"
        solo = engines_api(url, headers)["solo"]
        # Its lease had expired: it came back as a new generation.
        assert solo["state"] == "alive" and solo["generation"] == 2 and solo["self"]
        assert proc.poll() is None
    log = (tmp_path / "engine.log").read_text()
    assert "cannot renew its lease" in log and "Traceback" not in log
