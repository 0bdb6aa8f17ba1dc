"""Prometheus metrics (metrics.py): what a scrape shows while the engine
monitors the lab's hosts and runs a restart flow, and how /metrics is served."""

from __future__ import annotations

import os
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from prometheus_client import generate_latest
from prometheus_client.parser import text_string_to_metric_families

from enginekit import EngineThread, host_id, scenario_world
from helpers import free_port
from hostpower.lab.runner import RunningLab
from hostpower.model.operations import FlowAction, Origin
from labkit import counts, wait_counts
from servekit import HOSTPOWER, run_hostpower, running_engine

pytestmark = pytest.mark.lab

Sample = dict[tuple[str, frozenset[tuple[str, str]]], float]


def parse(text: str) -> Sample:
    return {(s.name, frozenset(s.labels.items())): s.value
            for family in text_string_to_metric_families(text) for s in family.samples}


def value(samples: Sample, name: str, **labels: str) -> float:
    return samples.get((name, frozenset(labels.items())), 0.0)


def scrape(engine: EngineThread) -> Sample:
    return parse(generate_latest(engine.runtime.metrics.registry).decode())


def wait_for(engine: EngineThread, name: str, at_least: float, timeout: float = 30,
             **labels: str) -> Sample:
    deadline = time.monotonic() + timeout
    while True:
        samples = scrape(engine)
        if value(samples, name, **labels) >= at_least:
            return samples
        if time.monotonic() > deadline:
            pytest.fail(f"{name}{labels} stayed below {at_least}: "
                        f"{value(samples, name, **labels)}")
        time.sleep(0.2)


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[RunningLab, EngineThread]]:
    with scenario_world(tmp_path_factory.mktemp("metrics"), monitor=True) as world:
        yield world


def test_metrics_show_the_monitored_hosts_and_the_rounds(world) -> None:  # type: ignore[no-untyped-def]
    lab, engine = world
    samples = wait_for(engine, "hostpower_heartbeat_round_duration_seconds_count", 2)
    hosts = len(lab.topo.hosts)
    samples = wait_for(engine, "hostpower_hosts", hosts, status="up")
    assert sum(v for (n, _), v in samples.items() if n == "hostpower_hosts") == hosts
    assert value(samples, "hostpower_heartbeats_total", result="answered") >= hosts
    assert value(samples, "hostpower_engine_ready") == 1
    assert value(samples, "hostpower_engines_alive") == 1
    assert value(samples, "hostpower_database_errors_total") == 0
    assert 0 <= value(samples, "hostpower_heartbeat_round_lag_seconds") < 3
    assert value(samples, "process_cpu_seconds_total") > 0


def test_metrics_count_a_restart_flow_and_its_proxy_attempts(world) -> None:  # type: ignore[no-untyped-def]
    lab, engine = world
    bmc = lab.topo.host("c2-h1").bmcs[0].name
    before_counts = counts(lab, bmc)
    before = scrape(engine)
    op, _ = engine.call(engine.service.request(host_id(engine.ctx, "c2-h1"), FlowAction.RESTART,
                                               Origin.API))
    during = scrape(engine)   # the flow is under way: not counted as ended yet
    assert value(during, "hostpower_fence_operations_total", action="restart",
                 result="succeeded", origin="api") == value(
        before, "hostpower_fence_operations_total", action="restart", result="succeeded",
        origin="api")
    done = engine.call(engine.service.wait(op.id, 60))
    assert done.state == "succeeded", done.message
    wait_counts(lab, bmc, before_counts, off=1, on=1)
    after = scrape(engine)

    def moved(name: str, **labels: str) -> float:
        return value(after, name, **labels) - value(before, name, **labels)

    assert moved("hostpower_fence_operations_total", action="restart", result="succeeded",
                 origin="api") == 1
    assert moved("hostpower_fence_operation_duration_seconds_count", action="restart") == 1
    # The default chain finds a proxy in the host's own cluster for each command.
    for action, outcome in (("off", "off"), ("on", "on")):
        assert moved("hostpower_proxy_attempts_total", source="cluster", action=action,
                     outcome=outcome) >= 1, (action, after)
    assert moved("hostpower_proxy_attempt_duration_seconds_count", action="off") >= 1
    assert moved("hostpower_events_total", severity="info") >= 3


def test_metrics_listener_is_open_and_the_api_route_needs_a_login(tmp_path: Path) -> None:
    """`--metrics-bind` serves the scrape without login (Prometheus's usual
    way, on an address the operator chooses); /metrics on the API wants a user."""
    env = {**os.environ, "HOSTPOWER_HOME": str(tmp_path / "home"),
           "HOSTPOWER_DB_URL": f"sqlite:///{tmp_path / 'hostpower.db'}"}
    added = subprocess.run(HOSTPOWER + ["user", "add", "prom", "--role", "viewer"], env=env,
                           input="s3cret-password\n", capture_output=True, text=True, timeout=60)
    assert added.returncode == 0, added.stderr
    url = f"http://127.0.0.1:{free_port()}"
    metrics = f"127.0.0.1:{free_port()}"
    with running_engine(env, url, tmp_path / "engine.log", "--plain-http",
                        "--metrics-bind", metrics):
        open_scrape = httpx.get(f"http://{metrics}/metrics", timeout=5)
        assert open_scrape.status_code == 200
        assert value(parse(open_scrape.text), "hostpower_engine_ready") == 1
        assert httpx.get(f"{url}/metrics", timeout=5).status_code == 401
        token = httpx.post(f"{url}/api/auth/token", timeout=5, json={
            "username": "prom", "password": "s3cret-password"}).json()["access_token"]
        api_scrape = httpx.get(f"{url}/metrics", timeout=5,
                               headers={"Authorization": f"Bearer {token}"})
        assert api_scrape.status_code == 200
        assert api_scrape.headers["content-type"].startswith("text/plain")
        assert "# TYPE hostpower_fence_operations_total counter" in api_scrape.text


def test_metrics_bind_that_is_not_an_address_is_refused(tmp_path: Path) -> None:
    env = {**os.environ, "HOSTPOWER_HOME": str(tmp_path / "home"),
           "HOSTPOWER_DB_URL": f"sqlite:///{tmp_path / 'hostpower.db'}"}
    r = run_hostpower(env, "serve", "--plain-http", "--bind", f"127.0.0.1:{free_port()}",
                      "--metrics-bind", "somewhere")
    assert r.returncode == 2 and "--metrics-bind" in r.stderr
