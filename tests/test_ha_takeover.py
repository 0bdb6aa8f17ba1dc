"""Several engines on one PostgreSQL database beside the lab: who watches
which host, and who finishes a flow when its engine dies or freezes.

Each scenario runs real `hostpower serve` processes (tests/clusterkit.py) on
a fresh database holding the lab's inventory, with a 3 s engine lease, and
checks what an operator sees: `GET /api/engines`, the events and which
engine wrote them, the operation, and the commands each lab BMC received.
"""

from __future__ import annotations

import threading
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from clusterkit import LEASE, Engine, configure, engines, events, hosts
from helpers import wait_until
from hostpower.lab.runner import RunningLab
from hostpower.model.ownership import Ownership
from hostpower.settings import Settings
from labkit import counts, wait_counts

pytestmark = [pytest.mark.lab, pytest.mark.postgres]
TARGET = "c1-h2"
KILL_POINTS = ["restart.after_check", "restart.before_off", "restart.after_off",
               "restart.after_verify_off", "restart.before_on", "restart.after_on",
               "restart.after_verify_on"]
# A survivor resumes a dead engine's flow once the lease has expired and its
# next monitor round (1 s apart) runs; the flow itself takes about a second.
TAKEOVER = LEASE + 15


def _host_ids(engine: Engine) -> dict[str, int]:
    return {name: h["id"] for name, h in hosts(engine).items()}


def _finished(engine: Engine, op_id: int, timeout: float) -> dict[str, Any]:
    def done() -> dict[str, Any] | None:
        op = engine.api("GET", f"/api/operations/{op_id}").json()
        return op if op["state"] != "running" else None
    return wait_until(done, timeout, f"operation {op_id} to finish", step=0.2)


def _status_writers(engine: Engine, since: str) -> dict[str, set[str]]:
    """For each host, the engines that recorded a status change since `since`."""
    writers: dict[str, set[str]] = {}
    for e in events(engine, since=since):
        if e["kind"] == "host.status":
            writers.setdefault(e["host"], set()).add(e["engine"])
    return writers


def _silence_every_agent(lab: RunningLab, engine: Engine) -> dict[str, set[str]]:
    """Hang every agent until each host was seen connecting, then let them
    answer again; returns who recorded each host's status changes meanwhile."""
    since = datetime.now(UTC).isoformat()
    names = [h.name for h in lab.topo.hosts]
    for name in names:
        lab.lab.fault(name, "agent_hang")
    try:
        wait_until(lambda: set(_status_writers(engine, since)) >= set(names), 10,
                   "every host to be seen connecting", step=0.2)
    finally:
        for name in names:
            lab.lab.fault(name, "agent_hang", clear=True)
    up = lambda: all(h["status"] == "up" for h in engine.api("GET", "/api/hosts").json())  # noqa: E731
    wait_until(up, 10, "every host to be up again", step=0.2)
    return _status_writers(engine, since)


def test_ha_three_engines_each_watch_their_share_which_moves_when_one_stops_or_joins(
        ha_world: tuple[RunningLab, Settings], tmp_path: Path) -> None:
    lab, settings = ha_world
    # Statuses change here, never a power: no automatic fencing at all.
    configure(settings, DisableFenceAtStartupInSec="3600")
    with engines(settings, tmp_path) as cluster:
        a = cluster.start_engine("a")
        cluster.start_engine("b")
        c = cluster.start_engine("c")
        ids = _host_ids(a)

        def shares_are(names: list[str]) -> dict[str, Any] | None:
            seen = cluster.engines_seen(via=a)
            alive = sorted(n for n, row in seen.items() if row["state"] == "alive")
            expected = Ownership(names).shares(ids.values())
            got = {n: seen[n]["hosts"] for n in expected}
            return seen if alive == sorted(names) and got == expected else None

        seen = wait_until(lambda: shares_are(["a", "b", "c"]), 10, "three shares", step=0.2)
        assert sum(row["hosts"] for row in seen.values()) == len(ids)
        ring = Ownership(["a", "b", "c"])
        writers = _silence_every_agent(lab, a)
        assert writers == {name: {ring.owner(hid)} for name, hid in ids.items()}, \
            "each host is watched by its owner alone"

        c.stop()  # a clean stop: its hosts move at once
        seen = wait_until(lambda: shares_are(["a", "b"]), 10, "c's share to move", step=0.2)
        assert seen["c"]["state"] == "stopped" and seen["c"]["hosts"] == 0
        ring = Ownership(["a", "b"])
        writers = _silence_every_agent(lab, a)
        assert writers == {name: {ring.owner(hid)} for name, hid in ids.items()}
        moved = {n for n, hid in ids.items() if Ownership(["a", "b", "c"]).owner(hid) == "c"}
        assert moved and all(writers[n] <= {"a", "b"} for n in moved)

        cluster.start_engine("d")  # a newcomer takes only its own share
        wait_until(lambda: shares_are(["a", "b", "d"]), 10, "d's share", step=0.2)
        ring = Ownership(["a", "b", "d"])
        writers = _silence_every_agent(lab, a)
        assert writers == {name: {ring.owner(hid)} for name, hid in ids.items()}
        # Ownership moving is no reason to fence: nothing was.
        assert not [e for e in events(a) if e["kind"].startswith("fence.")]


@pytest.mark.parametrize("kill_point", KILL_POINTS)
def test_ha_engine_killed_mid_restart_a_survivor_resumes_it_exactly_once(
        ha_world: tuple[RunningLab, Settings], kill_point: str, tmp_path: Path) -> None:
    lab, settings = ha_world
    bmc = f"{TARGET}-bmc"
    before = counts(lab, bmc)
    with engines(settings, tmp_path) as cluster:
        survivor = cluster.start_engine("survivor")
        doomed = cluster.start_engine("doomed", failpoint=kill_point)
        hid = _host_ids(survivor)[TARGET]
        r = doomed.api("POST", f"/api/hosts/{hid}/fence", json={"fence_type": "restart"})
        assert r.status_code == 202, r.text
        op_id = r.json()["id"]
        doomed.proc.wait(30)
        assert not doomed.running, "the failpoint did not kill the engine"
        died_at = time.monotonic()
        op = _finished(survivor, op_id, TAKEOVER)
        took = time.monotonic() - died_at
        assert op["state"] == "succeeded", op["message"]
        story = events(survivor, operation=op_id)
    after = wait_counts(lab, bmc, before, off=1, on=1)
    assert (after["off"] - before["off"], after["on"] - before["on"]) == (1, 1), kill_point
    assert lab.lab.status()["hosts"][TARGET]["power"] == "on"
    kinds = [e["kind"] for e in story]
    assert kinds[0] == "fence.started" and story[0]["engine"] == "doomed"
    resumed = [e for e in story if e["kind"] == "fence.resumed"]
    assert len(resumed) == 1 and resumed[0]["engine"] == "survivor"
    assert "takes over restart of c1-h2" in resumed[0]["message"]
    assert "from engine doomed" in resumed[0]["message"]
    assert kinds[-1] == "fence.succeeded" and story[-1]["engine"] == "survivor"
    assert took < TAKEOVER


def test_ha_frozen_engine_overtaken_mid_restart_sends_nothing_when_it_wakes(
        ha_world: tuple[RunningLab, Settings], tmp_path: Path) -> None:
    lab, settings = ha_world
    bmc = f"{TARGET}-bmc"
    before = counts(lab, bmc)
    with engines(settings, tmp_path) as cluster:
        peer = cluster.start_engine("peer")
        # It stops itself (SIGSTOP) right after sending the off: a paused VM.
        sleeper = cluster.start_engine("sleeper", failpoint="restart.after_off:pause")
        hid = _host_ids(peer)[TARGET]
        r = sleeper.api("POST", f"/api/hosts/{hid}/fence", json={"fence_type": "restart"})
        assert r.status_code == 202, r.text
        op_id = r.json()["id"]
        wait_until(lambda: _state(sleeper) == "T", 20, "the sleeper to stop itself")
        op = _finished(peer, op_id, TAKEOVER)
        assert op["state"] == "succeeded", op["message"]
        taken = wait_counts(lab, bmc, before, off=1, on=1)
        assert lab.lab.status()["hosts"][TARGET]["power"] == "on"

        sleeper.thaw()
        wait_until(lambda: sleeper.health().status_code == 200, 3 * LEASE,
                   "the sleeper to be ready again")
        paused = wait_until(lambda: [e for e in events(peer, operation=op_id)
                                     if e["kind"] == "fence.paused"], 10,
                            "the sleeper to say it paused the flow")
        assert paused[0]["engine"] == "sleeper"
        time.sleep(2)  # anything it still had queued would have gone out by now
        assert counts(lab, bmc) == taken, "the woken engine sent another command"
        story = events(peer, operation=op_id)
    resumed = [e for e in story if e["kind"] == "fence.resumed"]
    assert [e["engine"] for e in resumed] == ["peer"]
    assert [e["engine"] for e in story if e["kind"] == "fence.succeeded"] == ["peer"]
    assert (taken["off"] - before["off"], taken["on"] - before["on"]) == (1, 1)


def test_ha_same_restart_asked_of_two_engines_at_once_runs_one_flow(
        ha_world: tuple[RunningLab, Settings], tmp_path: Path) -> None:
    lab, settings = ha_world
    bmc = f"{TARGET}-bmc"
    before = counts(lab, bmc)
    with engines(settings, tmp_path) as cluster:
        a, b = cluster.start_engine("a"), cluster.start_engine("b")
        hid = _host_ids(a)[TARGET]
        assert a.headers and b.headers  # logged in beforehand: the two requests leave together
        for engine in (a, b):  # and each engine's fencing path warmed by a status
            r = engine.api("POST", f"/api/hosts/{hid}/fence", json={"fence_type": "status"})
            assert r.status_code == 200, r.text
        answers: dict[str, Any] = {}
        gate = threading.Barrier(2)

        def ask(engine: Engine) -> None:
            gate.wait()
            answers[engine.name] = engine.api("POST", f"/api/hosts/{hid}/fence",
                                              json={"fence_type": "restart"})
        threads = [threading.Thread(target=ask, args=(e,)) for e in (a, b)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(30)
        codes = sorted(r.status_code for r in answers.values())
        assert codes == [200, 202], {n: r.text for n, r in answers.items()}
        ids = {r.json()["id"] for r in answers.values()}
        assert len(ids) == 1
        joined = next(r.json() for r in answers.values() if r.status_code == 200)
        assert joined["joined"] is True
        op = _finished(a, ids.pop(), 30)
        assert op["state"] == "succeeded", op["message"]
        # Every engine answers the same about it.
        assert b.api("GET", f"/api/operations/{op['id']}").json()["state"] == "succeeded"
    after = wait_counts(lab, bmc, before, off=1, on=1)
    assert (after["off"] - before["off"], after["on"] - before["on"]) == (1, 1)


def _state(engine: Engine) -> str:
    """The process state letter of /proc/PID/stat (T: stopped)."""
    stat = Path(f"/proc/{engine.proc.pid}/stat").read_text()
    return stat.rsplit(")", 1)[1].split()[0]
