"""The API keeps its contract under a fuzzer: schemathesis over every
operation of /api/openapi.json with every check (examples, coverage, fuzzing
and stateful phases), bounded in examples and time, once with a fixed seed
and once with a random one (printed, to reproduce), against an engine served
for real on SQLite and on PostgreSQL. No server error, no schema violation,
no undeclared status; afterwards the engine answers and its data is whole.

The engine runs without its fencing service: the fuzzer creates hosts and
agents with arbitrary addresses, and a power operation on them would send
traffic beyond this machine. Power operations therefore answer 503 (declared);
their validation, authentication and error model are fuzzed all the same.
"""

from __future__ import annotations

import json
import os
import random
import subprocess
import sys
from pathlib import Path

import pytest
from sqlalchemy import text

from apikit import ADMIN, ADMIN_PASSWORD, ServedApp
from hostpower.store.db import head_revision, current_revision

HERE = Path(__file__).parent / "schemathesis"
SCHEMATHESIS = str(Path(sys.executable).with_name("schemathesis"))
MAX_EXAMPLES = 15
MAX_SECONDS = 45


def run_schemathesis(app: ServedApp, admin: dict[str, str], seed: int,
                     report: Path) -> subprocess.CompletedProcess[str]:
    token = admin["Authorization"].split()[1]
    env = {**os.environ, "SCHEMATHESIS_HOOKS": "hooks", "PYTHONPATH": str(HERE),
           "HOSTPOWER_ST_URL": app.url, "HOSTPOWER_ST_TOKEN": token,
           "HOSTPOWER_ST_USER": ADMIN, "HOSTPOWER_ST_PASSWORD": ADMIN_PASSWORD}
    cmd = [SCHEMATHESIS, "--no-color", "--config-file", str(HERE / "schemathesis.toml"), "run",
           f"{app.url}/api/openapi.json", "--checks", "all",
           "--phases", "examples,coverage,fuzzing,stateful",
           "--max-examples", str(MAX_EXAMPLES), "--max-time", str(MAX_SECONDS),
           "--seed", str(seed), "--workers", "1", "--generation-database", "none",
           "--request-timeout", "30", "--report", "ndjson",
           "--report-ndjson-path", str(report)]
    # In the test's own folder: schemathesis keeps a cache of crashes in its cwd.
    return subprocess.run(cmd, env=env, capture_output=True, text=True, cwd=report.parent,
                          timeout=MAX_SECONDS * 4 + 120)


def answered_statuses(report: Path) -> list[int]:
    """Every status code the engine answered during the run."""
    found = []
    for line in report.read_text().splitlines():
        for match in _statuses(json.loads(line)):
            found.append(match)
    return found


def _statuses(node: object) -> list[int]:
    if isinstance(node, dict):
        here = [node["status_code"]] if isinstance(node.get("status_code"), int) else []
        return here + [s for v in node.values() for s in _statuses(v)]
    if isinstance(node, list):
        return [s for v in node for s in _statuses(v)]
    return []


def assert_engine_whole(app: ServedApp, admin: dict[str, str]) -> None:
    """The engine answers with the run's own token, every listing and every
    listed object reads back, and the database is consistent. (Not with a
    new login: the fuzzer's failed logins may well have locked the address.)"""
    assert app.request("GET", "/api/health", {}).status_code == 200
    for path in ("/api/datacenters", "/api/clusters", "/api/config", "/api/capabilities",
                 "/api/operations", "/api/events", "/api/engines"):
        assert app.request("GET", path, admin).status_code == 200, path
    hosts = app.request("GET", "/api/hosts", admin)
    assert hosts.status_code == 200
    for host in hosts.json():
        for path in (host["href"], f"{host['href']}/fenceagents", f"{host['href']}/power_management"):
            assert app.request("GET", path, admin).status_code == 200, path
    assert current_revision(app.ctx.db.engine) == head_revision()
    with app.ctx.db.engine.connect() as conn:
        if app.ctx.db.url.startswith("sqlite"):
            assert conn.execute(text("PRAGMA integrity_check")).scalar() == "ok"
            assert conn.execute(text("PRAGMA foreign_key_check")).fetchall() == []
        orphans = conn.execute(text(
            "SELECT count(*) FROM hosts h LEFT JOIN clusters c ON c.id = h.cluster_id "
            "WHERE c.id IS NULL")).scalar()
        assert orphans == 0


@pytest.mark.parametrize("seed", [20261204, None], ids=["fixed-seed", "random-seed"])
def test_contract_schemathesis_finds_no_server_error_and_no_schema_violation(
        ctx, tmp_path: Path, seed: int | None) -> None:  # type: ignore[no-untyped-def]
    seed = seed if seed is not None else random.randrange(2**31)
    report = tmp_path / "schemathesis.ndjson"
    with ServedApp(ctx) as app:
        admin = app.admin_headers()
        done = run_schemathesis(app, admin, seed, report)
        tail = "\n".join(done.stdout.splitlines()[-60:])
        assert done.returncode == 0, f"schemathesis (seed {seed}) failed:\n{tail}\n{done.stderr[-2000:]}"
        statuses = answered_statuses(report)
        # The run really reached the API as the admin, not only its 401s.
        assert sum(200 <= s < 300 for s in statuses) >= 50, (seed, sorted(set(statuses)))
        assert not any(s >= 500 and s != 503 for s in statuses), (seed, sorted(set(statuses)))
        assert_engine_whole(app, admin)
