"""One command at a time per device across engines: two `hostpower serve`
processes on one PostgreSQL database (tests/clusterkit.py), each stopping
one of two hosts whose fence agents point at the same lab BMC. (Stops, not
restarts: one engine's "on" sent between the other's "off" and its status
polls would leave that stop unverified — a race between the two flows on one
machine, which the turns do not and need not order.)

Each engine takes its turns at the device in the `device_turns` table
(store/deviceturns.py); every command's event records its turn on the
database's clock (`device_turn`). The BMC's commands, heard here through
the lab, each fall in exactly one turn, and the turns of both engines are
DeviceCommandIntervalInMs apart."""

from __future__ import annotations

import threading
import time
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest

from clusterkit import Engine, configure, engines, events
from helpers import wait_until
from hostpower.context import EngineContext
from hostpower.lab.runner import RunningLab
from hostpower.model.devices import device_key
from hostpower.model.inventory import PowerManagement
from hostpower.settings import Settings
from hostpower.store.inventory import AgentInput, Inventory

pytestmark = [pytest.mark.lab, pytest.mark.postgres]
INTERVAL = 0.8
HEARD_WITHIN = INTERVAL / 2   # the BMC reports its commands within this (tests/test_device_lab.py)


def _share_bmc(settings: Settings, host: str, like: str, lab: RunningLab) -> Any:
    """`host`'s fence agent pointed at `like`'s BMC; returns that BMC."""
    bmc = lab.topo.host(like).bmcs[0]
    ctx = EngineContext.open(settings)
    try:
        with ctx.db.session() as s:
            inv = Inventory(s, ctx.box)
            h = inv.find_host(host)
            agent = inv.agents(h.id)[0]
            inv.update_agent(h.id, agent.id, AgentInput(
                type="ipmilan", address=bmc.address, port=bmc.port, username=agent.username,
                password=None, options=None))
            for name in (host, like):
                found = inv.find_host(name)
                pm = found.power_management
                inv.update_host(found.id, power_management=PowerManagement(
                    pm.enabled, pm.automatic_pm_enabled, pm.kdump_detection, "cluster"))
    finally:
        ctx.close()
    return bmc


def _finished(engine: Engine, op_id: int, timeout: float) -> dict[str, Any]:
    def done() -> dict[str, Any] | None:
        op = engine.api("GET", f"/api/operations/{op_id}").json()
        return op if op["state"] != "running" else None
    return wait_until(done, timeout, f"operation {op_id} to finish", step=0.2)


def test_device_two_engines_stopping_two_hosts_on_one_bmc_take_turns(
        ha_world: tuple[RunningLab, Settings], tmp_path: Path) -> None:
    lab, settings = ha_world
    bmc = _share_bmc(settings, "c1-h2", "c1-h1", lab)
    key = device_key("ipmilan", bmc.address, bmc.port)
    configure(settings, DisableFenceAtStartupInSec="3600", FenceProxyImplicitPreferences="",
              FenceCommandTimeoutInSec="20", DeviceCommandIntervalInMs=str(int(INTERVAL * 1000)))
    heard: list[tuple[float, str]] = []
    lock = threading.Lock()
    listening = True

    def on_lab(event: dict[str, Any]) -> None:
        if listening and event.get("event") == "command" and event.get("bmc") == bmc.name:
            with lock:
                heard.append((time.time(), str(event.get("command"))))
    lab.lab.add_listener(on_lab)
    try:
        with engines(settings, tmp_path) as cluster:
            e1, e2 = cluster.start_engine("e1"), cluster.start_engine("e2")
            ids = {h["name"]: h["id"] for h in e1.api("GET", "/api/hosts").json()}
            ops = {}
            for engine, host in ((e1, "c1-h1"), (e2, "c1-h2")):
                r = engine.api("POST", f"/api/hosts/{ids[host]}/fence",
                               json={"fence_type": "stop"})
                assert r.status_code == 202, r.text
                ops[engine.name] = r.json()["id"]
            done = {name: _finished(engine, ops[name], 120)
                    for name, engine in (("e1", e1), ("e2", e2))}
            assert all(op["state"] == "succeeded" for op in done.values()), {
                name: (op["state"], op.get("message")) for name, op in done.items()}
            time.sleep(HEARD_WITHIN)
            turns = sorted(
                (datetime.fromisoformat(e["details"]["device_turn"][0]).timestamp(),
                 datetime.fromisoformat(e["details"]["device_turn"][1]).timestamp(),
                 e["engine"], e["message"])
                for e in events(e1) if e["kind"] == "fence.attempt"
                and e["details"].get("device") == key.text)
    finally:
        listening = False
    assert {t[2] for t in turns} == {"e1", "e2"}, turns
    for before, after in zip(turns, turns[1:]):
        assert after[0] - before[1] >= INTERVAL - 0.005, (before, after)
    with lock:
        commands = list(heard)
    assert commands
    served: dict[str, int] = {"e1": 0, "e2": 0}
    for at, command in commands:
        owners = [t for t in turns if t[0] <= at <= t[1] + HEARD_WITHIN]
        assert len(owners) == 1, f"{command} heard at {at} outside every turn: {turns}"
        served[owners[0][2]] += 1
    assert all(served.values()), served   # the device heard both engines, in turns
