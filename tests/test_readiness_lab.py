"""The PM health check against the lab: real host agents as proxies, real
virtual BMCs on confined management networks, the engine's own native IPMI
driver for the `engine` proxy.

SCENARIO_TOPOLOGY (tests/enginekit.py): c3-h1's chain (cluster,dc,engine by
default) has two candidates that work, its cluster peer c3-h2 and the engine
(c3's management network has an engine leg); dc2 holds no other host. Cut
c3-h2's management network (the lab fault `mgmt_cut`) and c3-h1 is left
with the engine alone: a single point of failure."""

from __future__ import annotations

import os
import subprocess
import time
from collections.abc import Iterator

import pytest

from enginekit import EngineThread, events, last_event_id, scenario_world, set_config
from hostpower.fencing.readiness import ReadinessChecker
from hostpower.lab.runner import RunningLab
from hostpower.model.readiness import HostReadiness, PathState, Readiness
from hostpower.model.power import Outcome
from labkit import HOSTPOWER, fence_via, run

pytestmark = pytest.mark.lab


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[RunningLab, EngineThread]]:
    with scenario_world(tmp_path_factory.mktemp("readiness"), monitor=False) as world:
        # A path that does not answer fails after this long; a round takes a
        # few of these (the failing paths of one device are tried in turn).
        set_config(world[1].ctx, FenceCommandTimeoutInSec="2")
        yield world


@pytest.fixture(scope="module")
def checker(world) -> ReadinessChecker:  # type: ignore[no-untyped-def]
    return ReadinessChecker(world[1].service)


def check(engine: EngineThread, checker: ReadinessChecker) -> dict[str, HostReadiness]:
    return {v.host_name: v for v in engine.call(checker.round())}


def check_until(engine: EngineThread, checker: ReadinessChecker, host: str,
                readiness: Readiness, timeout: float = 60) -> HostReadiness:
    """Rounds until the host's verdict is `readiness`. After a fault is
    cleared a proxy's native IPMI driver may still wait a few seconds on the
    session that timed out meanwhile ("still busy"): a later round, as the
    periodic check would run, finds the path again."""
    deadline = time.monotonic() + timeout
    while (found := check(engine, checker)[host]).readiness is not readiness:
        assert time.monotonic() < deadline, found.message
        time.sleep(1)
    return found


def states(r: HostReadiness) -> list[tuple[str, str]]:
    return [(c.proxy, c.state.value) for c in r.checks if c.state is not PathState.NOT_TRIED]


def cli(engine: EngineThread, *args: str) -> str:
    env = {**os.environ, "HOSTPOWER_HOME": str(engine.ctx.settings.home),
           "HOSTPOWER_DB_URL": engine.ctx.db.url}
    done = subprocess.run([HOSTPOWER, "readiness", *args], env=env, capture_output=True,
                          text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    return done.stdout


def row(table: str, host: str) -> list[str]:
    return next(line.split() for line in table.splitlines() if line.split()[:1] == [host])


def test_readiness_lab_every_host_checked_through_every_candidate(
        world, checker: ReadinessChecker) -> None:  # type: ignore[no-untyped-def]
    lab, engine = world
    started = time.monotonic()
    found = check(engine, checker)
    took = time.monotonic() - started
    assert set(found) == {h.name for h in lab.topo.hosts}
    c3h1 = found["c3-h1"]
    assert (c3h1.readiness, c3h1.paths) == (Readiness.READY, 2)
    assert states(c3h1) == [("c3-h2", "works"), ("engine", "works")]
    # c1-h1: both cluster peers and c2-h1 (which has a leg on c1's network)
    # work; c2-h2 and the engine have no way to c1's BMCs.
    c1h1 = found["c1-h1"]
    assert states(c1h1) == [("c1-h2", "works"), ("c1-h3", "works"), ("c2-h1", "works"),
                            ("c2-h2", "fails"), ("engine", "fails")]
    assert (c1h1.readiness, c1h1.paths) == (Readiness.READY, 3)
    # A BMC and two power supplies on PDU outlets, each through the same three proxies.
    c1h3 = found["c1-h3"]
    assert (c1h3.readiness, c1h3.paths) == (Readiness.READY, 3)
    assert len({c.agent for c in c1h3.checks}) == 3
    # c2's hosts have only each other: a single point of failure, from the first round.
    assert (found["c2-h2"].readiness, found["c2-h2"].working) == (Readiness.SINGLE_PATH, ["c2-h1"])
    warned = {e.host_name for e in events(engine.ctx, kind="readiness.changed")}
    assert warned == {"c2-h1", "c2-h2"}
    assert took < 60, took


def test_readiness_lab_cutting_a_proxys_management_network_leaves_one_path_with_a_warning(
        world, checker: ReadinessChecker) -> None:  # type: ignore[no-untyped-def]
    lab, engine = world
    assert check(engine, checker)["c3-h1"].readiness is Readiness.READY
    assert row(cli(engine), "c3-h1")[1:4] == ["ready", "2", "-"]
    since = last_event_id(engine.ctx)
    lab.lab.fault("c3-h2", "mgmt_cut")
    try:
        after = check(engine, checker)["c3-h1"]
        assert (after.readiness, after.paths) == (Readiness.SINGLE_PATH, 1)
        assert (after.working, after.failing) == (["engine"], ["c3-h2"])
        [cut] = [c for c in after.checks if c.proxy == "c3-h2"]
        assert cut.state is PathState.FAILS and cut.message
        [warning] = events(engine.ctx, "c3-h1", "readiness.changed", since)
        assert warning.severity.value == "warning"
        assert "c3-h1 can be fenced only through engine: a single point of failure" in warning.message
        assert "c3-h2 (cluster)" in warning.message
        assert row(cli(engine), "c3-h1")[1:4] == ["single_path", "1", "c3-h2"]
        # Only the management leg is cut: c3-h2's agent still answers, it
        # cannot reach the BMCs any more, and the engine can still fence c3-h2.
        h2 = lab.topo.host("c3-h2")
        assert run(lambda c: c.heartbeat(h2.front_address, h2.agent_port, 5), lab)
        bmc = lab.topo.host("c3-h1").bmcs[0]
        assert fence_via(lab, "c3-h2", bmc, "status", timeout=2).outcome is Outcome.ERROR
        assert check(engine, checker)["c3-h2"].working == ["c3-h1", "engine"]
    finally:
        lab.lab.fault("c3-h2", "mgmt_cut", clear=True)
    since = last_event_id(engine.ctx)
    back = check_until(engine, checker, "c3-h1", Readiness.READY)
    assert back.working == ["c3-h2", "engine"]
    [info] = events(engine.ctx, "c3-h1", "readiness.changed", since)
    assert info.severity.value == "info" and "can be fenced again through 2 proxies" in info.message


def test_readiness_lab_a_dead_bmc_makes_its_host_unfenceable_with_an_error(
        world, checker: ReadinessChecker) -> None:  # type: ignore[no-untyped-def]
    lab, engine = world
    since = last_event_id(engine.ctx)
    lab.lab.fault("c3-h1", "bmc_unresponsive")
    try:
        dead = check(engine, checker)["c3-h1"]
        assert (dead.readiness, dead.paths) == (Readiness.UNFENCEABLE, 0)
        assert dead.failing == ["c3-h2", "engine"]
        [error] = events(engine.ctx, "c3-h1", "readiness.changed", since)
        assert error.severity.value == "error" and "c3-h1 cannot be fenced" in error.message
        detail = cli(engine, "--host", "c3-h1")
        assert "c3-h1 cannot be fenced" in detail and "fails" in detail
    finally:
        lab.lab.fault("c3-h1", "bmc_unresponsive", clear=True)
    assert check_until(engine, checker, "c3-h1", Readiness.READY).working == ["c3-h2", "engine"]
