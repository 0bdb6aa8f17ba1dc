"""The `hostpower` command as an operator runs it: real processes, real exit codes."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from helpers import free_port
from servekit import engine_ca, running_engine

# The console script pip installed, as an operator runs it.
HOSTPOWER = [str(Path(sys.executable).with_name("hostpower"))]

INVENTORY = """
data_centers:
  - name: dc1
    clusters:
      - name: c1
        hosts:
          - {name: h1, address: 10.0.0.1, status: up,
             power_management: {enabled: true, pm_proxies: "10.0.0.3, cluster",
               agents: [{type: ipmilan, address: 10.1.0.1, username: admin, password: inv-secret-pw}]}}
          - {name: h2, address: 10.0.0.2, status: maintenance}
      - name: c2
        hosts:
          - {name: h3, address: 10.0.0.3, status: up}
  - name: dc2
    clusters:
      - name: c3
        hosts:
          - {name: h4, address: 10.0.0.4, status: up}
"""


@pytest.fixture
def env(tmp_path: Path, db_url: str) -> dict[str, str]:
    e = dict(os.environ)
    e.update(HOSTPOWER_HOME=str(tmp_path / "home"), HOSTPOWER_DB_URL=db_url)
    return e


@pytest.fixture
def sqlite_env(tmp_path: Path) -> dict[str, str]:
    e = dict(os.environ)
    e["HOSTPOWER_HOME"] = str(tmp_path / "home")
    e.pop("HOSTPOWER_DB_URL", None)
    return e


def run(env: dict[str, str], *args: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(HOSTPOWER + list(args), env=env, input=stdin, capture_output=True,
                          text=True, timeout=60)


@pytest.mark.parametrize("spec, expected", [
    ("engine,IP1,IP2", "engine,IP1,IP2,cluster,dc"),
    ("IP1,dc,IP2", "IP1,dc,IP2,engine,cluster"),
    ("", "cluster,dc,engine"),
    ("Other_DC , Engine", "other_dc,engine,cluster,dc"),
])
def test_normalize_prints_the_effective_chain(sqlite_env, spec: str, expected: str) -> None:  # type: ignore[no-untyped-def]
    r = run(sqlite_env, "proxies", "normalize", spec)
    assert (r.returncode, r.stdout) == (0, expected + "\n"), r.stderr


def test_normalize_refuses_a_bad_entry_with_exit_2(sqlite_env) -> None:  # type: ignore[no-untyped-def]
    r = run(sqlite_env, "proxies", "normalize", "cluster,clustr")
    assert r.returncode == 2
    assert "entry 2 'clustr' is an unknown word (did you mean 'cluster'?)" in r.stderr
    assert r.stdout == ""


def test_normalize_follows_the_configuration(env) -> None:  # type: ignore[no-untyped-def]
    assert run(env, "config", "set", "FenceProxyImplicitPreferences", "").returncode == 0
    assert run(env, "proxies", "normalize", "IP1").stdout == "IP1\n"
    assert run(env, "config", "set", "FenceProxyDefaultPreferences", "dc,other_dc").returncode == 0
    assert run(env, "proxies", "normalize", "").stdout == "dc,other_dc\n"


def test_config_list_get_set(env) -> None:  # type: ignore[no-untyped-def]
    listing = run(env, "config", "list")
    assert listing.returncode == 0
    assert "FenceQuietTimeBetweenOperationsInSec" in listing.stdout
    assert run(env, "config", "get", "FenceStopStatusRetries").stdout == "18\n"
    r = run(env, "config", "set", "FenceStopStatusRetries", "5")
    assert (r.returncode, r.stdout) == (0, "FenceStopStatusRetries = 5\n")
    assert run(env, "config", "get", "fencestopstatusretries").stdout == "5\n"


@pytest.mark.parametrize("args, message", [
    (("set", "NoSuchKey", "1"), "configuration key 'NoSuchKey' not found"),
    (("set", "FenceStopStatusRetries", "x"), "FenceStopStatusRetries: 'x' is not a whole number"),
    (("set", "FenceProxyDefaultPreferences", "cluster,clustr"), "did you mean 'cluster'"),
    (("get", "NoSuchKey"), "not found"),
])
def test_config_refuses_bad_input_with_exit_2_and_changes_nothing(env, args, message) -> None:  # type: ignore[no-untyped-def]
    before = run(env, "config", "list").stdout
    r = run(env, "config", *args)
    assert r.returncode == 2
    assert message in r.stderr
    assert run(env, "config", "list").stdout == before


def test_inventory_load_then_resolve_and_explain(env) -> None:  # type: ignore[no-untyped-def]
    r = run(env, "inventory", "load", "-", stdin=INVENTORY)
    assert r.returncode == 0, r.stderr
    assert "2 data center(s), 3 cluster(s), 4 host(s), 1 fence agent(s)" in r.stdout
    assert run(env, "proxies", "resolve", "h1").stdout == "10.0.0.3,cluster,engine,dc\n"
    assert run(env, "proxies", "resolve", "10.0.0.4").stdout == "cluster,dc,engine\n"
    r = run(env, "proxies", "explain", "h1", "--type", "nosuchagent")
    assert r.returncode == 0, r.stderr
    out = r.stdout
    assert "effective:  10.0.0.3,cluster,engine,dc" in out
    assert "#1   h3" in out
    assert "h2                       passed over: not up (status maintenance)" in out
    assert "h1                       passed over: the target itself" in out
    assert "engine                   passed over: cannot run fence_nosuchagent locally" in out
    assert "inv-secret-pw" not in out
    r = run(env, "proxies", "explain", "ghost")
    assert r.returncode == 2 and "host 'ghost' not found" in r.stderr


def test_inventory_load_is_all_or_nothing(env) -> None:  # type: ignore[no-untyped-def]
    bad = INVENTORY.replace('pm_proxies: "10.0.0.3, cluster"', 'pm_proxies: "h1"')
    r = run(env, "inventory", "load", "-", stdin=bad)
    assert r.returncode == 2
    assert "data_centers[0].clusters[0].hosts[0].power_management.pm_proxies: entry 1 'h1' is the host itself" in r.stderr
    assert run(env, "inventory", "hosts").stdout.count("\n") == 1  # header only


def test_user_add_reads_the_password_from_stdin(env) -> None:  # type: ignore[no-untyped-def]
    r = run(env, "user", "add", "alice", "--role", "viewer", stdin="alice-password\n")
    assert (r.returncode, r.stdout) == (0, "user alice added with role viewer\n")
    assert "alice-password" not in r.stdout + r.stderr
    r = run(env, "user", "add", "alice", "--role", "viewer", stdin="alice-password\n")
    assert r.returncode == 2 and "already exists" in r.stderr
    r = run(env, "user", "add", "bob", "--role", "root", stdin="bob-password\n")
    assert r.returncode == 2 and "invalid choice" in r.stderr
    r = run(env, "user", "add", "bob", "--role", "admin", stdin="short\n")
    assert r.returncode == 2 and "at least 8 characters" in r.stderr
    assert "alice" in run(env, "user", "list").stdout


def test_db_upgrade_reports_the_revision(env) -> None:  # type: ignore[no-untyped-def]
    from hostpower.store.db import head_revision
    head = head_revision()
    r = run(env, "db", "upgrade")
    assert r.returncode == 0 and f"database at revision {head} (head {head})" in r.stdout


def test_serve_answers_over_https_and_keeps_secrets_out_of_its_log(env, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    assert run(env, "user", "add", "root", "--role", "admin", stdin="root-password\n").returncode == 0
    assert run(env, "inventory", "load", "-", stdin=INVENTORY).returncode == 0
    port = free_port()
    base = f"https://127.0.0.1:{port}"
    log = tmp_path / "engine.log"
    with running_engine(env, base, log):
        ca = engine_ca(tmp_path / "home")
        tok = httpx.post(f"{base}/api/auth/token", verify=ca,
                         json={"username": "root", "password": "root-password"}).json()["access_token"]
        hdr = {"Authorization": f"Bearer {tok}"}
        hosts = httpx.get(f"{base}/api/hosts", headers=hdr, verify=ca).json()
        assert sorted(h["name"] for h in hosts) == ["h1", "h2", "h3", "h4"]
        h1 = next(h for h in hosts if h["name"] == "h1")
        r = httpx.post(f"{base}/api/hosts/{h1['id']}/fenceagents", headers=hdr, verify=ca, json={
            "type": "ipmilan", "address": "10.1.0.7", "password": "serve-secret-pw"})
        assert r.status_code == 201
    text = log.read_text()
    assert f"listening on https://127.0.0.1:{port}/" in text
    for secret in ("serve-secret-pw", "inv-secret-pw", "root-password"):
        assert secret not in text


def test_serve_refuses_a_bad_bind_address(sqlite_env) -> None:  # type: ignore[no-untyped-def]
    r = run(sqlite_env, "serve", "--bind", "localhost")
    assert r.returncode == 2 and "--bind: 'localhost' is not ADDRESS:PORT" in r.stderr
