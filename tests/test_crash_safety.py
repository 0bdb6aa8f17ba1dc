"""Crash safety: the engine is killed with SIGKILL at every step of a
restart flow against the lab; the next engine resumes the journaled flow.
For every kill point the host ends up on, its BMC received exactly one off
and one on, and the events tell the whole story."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from helpers import bearer, free_port, wait_until
from enginekit import SCENARIO_TOPOLOGY, engine_context, host_id, reset
from hostpower.context import EngineContext
from hostpower.lab.runner import RunningLab
from hostpower.model.power import Outcome
from hostpower.settings import Settings
from hostpower.store.users import Users
from servekit import running_engine
from labkit import (
    counts, fence_via, load_yaml, require_lab_tools, start, wait_all_agents, wait_counts,
)

pytestmark = pytest.mark.lab
HOSTPOWER = str(Path(sys.executable).with_name("hostpower"))
KILL_POINTS = ["restart.after_check", "restart.before_off", "restart.after_off",
               "restart.after_verify_off", "restart.before_on", "restart.after_on",
               "restart.after_verify_on"]


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[RunningLab, Settings, EngineContext]]:
    require_lab_tools()
    tmp = tmp_path_factory.mktemp("crash")
    lab, settings = start(tmp, load_yaml(SCENARIO_TOPOLOGY))
    ctx = engine_context(lab, settings)
    with ctx.db.session() as s:
        Users(s).add("ops", "admin", "ops-password")
    try:
        yield lab, settings, ctx
    finally:
        ctx.close()
        lab.stop()


@contextmanager
def serving(settings: Settings, log: Path, failpoint: str | None = None) -> Iterator[Engine]:
    """`hostpower serve` as a separate process (servekit), killable like a real
    engine; with `failpoint`, it kills itself there."""
    env = {**os.environ, "HOSTPOWER_HOME": str(settings.home), "HOSTPOWER_DB_URL": settings.db_url}
    env.pop("HOSTPOWER_FAILPOINT", None)
    if failpoint:
        env["HOSTPOWER_FAILPOINT"] = failpoint
    url = f"http://127.0.0.1:{free_port()}"
    with running_engine(env, url, log, "--plain-http") as proc:  # loopback: plain is fine
        yield Engine(url, proc, bearer(httpx, "ops", "ops-password", base=url))


@dataclass
class Engine:
    url: str
    proc: subprocess.Popen[bytes]
    headers: dict[str, str]

    def api(self, method: str, path: str, **kw) -> httpx.Response:  # type: ignore[no-untyped-def]
        return httpx.request(method, self.url + path, headers=self.headers, timeout=30, **kw)


@pytest.mark.parametrize("kill_point", KILL_POINTS)
def test_crash_engine_killed_mid_restart_resumes_and_fences_exactly_once(
        world, kill_point: str, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    lab, settings, ctx = world
    reset(ctx, lab)
    target = "c1-h2"
    hid = host_id(ctx, target)
    before = counts(lab, f"{target}-bmc")
    with serving(settings, tmp_path / "engine.log", failpoint=kill_point) as first:
        r = first.api("POST", f"/api/hosts/{hid}/fence", json={"fence_type": "restart"})
        assert r.status_code == 202, r.text
        op_id = r.json()["id"]
        first.proc.wait(60)
        assert first.proc.returncode == -signal.SIGKILL, "the failpoint did not kill the engine"
    with serving(settings, tmp_path / "engine.log") as second:
        def finished() -> dict | None:  # type: ignore[type-arg]
            op = second.api("GET", f"/api/operations/{op_id}").json()
            return op if op["state"] != "running" else None
        op = wait_until(finished, 60, "the resumed flow to finish")
        assert op["state"] == "succeeded", op["message"]
        kinds = [e["kind"] for e in second.api("GET", "/api/events",
                                               params={"operation": op_id}).json()]
    after = wait_counts(lab, f"{target}-bmc", before, off=1, on=1)
    assert (after["off"] - before["off"], after["on"] - before["on"]) == (1, 1), kill_point
    assert lab.lab.status()["hosts"][target]["power"] == "on"
    assert kinds[0] == "fence.started" and kinds[-1] == "fence.succeeded"
    assert "fence.resumed" in kinds
    assert kinds.index("fence.resumed") < kinds.index("fence.succeeded")
    wait_all_agents(lab)
    assert fence_via(lab, "c1-h1", lab.topo.host(target).bmcs[0], "status").outcome is Outcome.ON
