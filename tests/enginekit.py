"""An engine (store + fencing service) beside a running lab, for scenario tests."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable, Coroutine, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, TypeVar

from hostpower.context import EngineContext
from hostpower.inventory_file import load_document
from hostpower.lab.runner import RunningLab
from hostpower.model.inventory import HostStatus, PowerManagement
from hostpower.runtime import EngineRuntime
from hostpower.settings import Settings
from hostpower.store.configstore import ConfigStore
from hostpower.store.events import Events
from hostpower.store.inventory import Inventory
from hostpower.store.journal import Journal

T = TypeVar("T")

SCENARIO_TOPOLOGY = """
name: scenarios
boot_delay: 0.3
data_centers:
  - name: dc1
    clusters:
      - name: c1
        management: {extra_hosts: [c2-h1, c3-h2]}
        hosts: [{name: c1-h1}, {name: c1-h2}, {name: c1-h3, power_supplies: 2}]
      - name: c2
        hosts: [{name: c2-h1}, {name: c2-h2}]
  - name: dc2
    clusters:
      - name: c3
        management: {engine_access: true}
        hosts: [{name: c3-h1}, {name: c3-h2}]
"""


def _udp_port() -> int:
    import socket

    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind(("0.0.0.0", 0))
        return int(sock.getsockname()[1])


FAST = {
    # kdump detection: no wait for fence_kdump messages (tests/test_kdump.py
    # sets its own), and a listener port of this test process's own, not
    # 7410, which a demo or another test run on the machine may hold.
    "KdumpStartedTimeout": "0", "FenceKdumpDestinationPort": str(_udp_port()),
    "FenceStopStatusRetries": "5", "FenceStopStatusDelayBetweenRetriesInSec": "0",
    "FenceStartStatusRetries": "5", "FenceStartStatusDelayBetweenRetriesInSec": "0",
    "FindFenceProxyRetries": "0", "FindFenceProxyDelayBetweenRetriesInSec": "0",
    "DisableFenceAtStartupInSec": "0", "FenceQuietTimeBetweenOperationsInSec": "0",
    "FenceCommandTimeoutInSec": "4", "HostHeartbeatIntervalInSec": "1",
    "HostHeartbeatTimeoutInSec": "1", "TimeoutToResetHostInSeconds": "2",
    "HostAttemptsToResetCount": "2",
}


def engine_context(lab: RunningLab, settings: Settings,
                   ssh_access: bool = False) -> EngineContext:
    """The engine shares the lab's home: same CA, so it may command the agents
    (and the same SSH key, which every lab host lets in). With `ssh_access`
    the hosts have SSH access, their host keys pinned: soft fencing applies."""
    ctx = EngineContext.open(settings)
    with ctx.db.session() as s:
        load_document(Inventory(s, ctx.box, ctx.known_agent_types()), ConfigStore(s),
                      lab.inventory_document(ssh_access))
        for key, value in FAST.items():
            ConfigStore(s).set(key, value)
        # The engine trusts the lab's device CA for Redfish BMCs (read at start).
        ConfigStore(s).set("RedfishCaBundle", str(lab.redfish_ca_bundle))
    return ctx


class EngineThread:
    """Runs an EngineRuntime on an event loop of its own thread, as `serve` would."""

    def __init__(self, ctx: EngineContext, monitor: bool = False) -> None:
        self.ctx = ctx
        self.runtime = EngineRuntime(ctx, monitor=monitor)
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)

    def __enter__(self) -> "EngineThread":
        self.thread.start()
        self.call(self.runtime.start())
        return self

    def __exit__(self, *exc: object) -> None:
        self.call(self.runtime.stop())
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)
        self.loop.close()

    def call(self, coro: Coroutine[Any, Any, T], timeout: float = 120) -> T:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    @property
    def service(self):  # type: ignore[no-untyped-def]
        assert self.runtime.service is not None
        return self.runtime.service


def host_id(ctx: EngineContext, name: str) -> int:
    with ctx.db.session() as s:
        return Inventory(s, ctx.box).find_host(name).id


def set_status(ctx: EngineContext, name: str, status: HostStatus) -> None:
    with ctx.db.session() as s:
        Inventory(s, ctx.box).set_status(host_id(ctx, name), status)


def set_chain(ctx: EngineContext, name: str, chain: str) -> None:
    with ctx.db.session() as s:
        inv = Inventory(s, ctx.box)
        h = inv.find_host(name)
        pm = h.power_management
        inv.update_host(h.id, power_management=PowerManagement(
            pm.enabled, pm.automatic_pm_enabled, pm.kdump_detection, chain))


def set_config(ctx: EngineContext, **values: str) -> None:
    with ctx.db.session() as s:
        for k, v in values.items():
            ConfigStore(s).set(k, v)


def events(ctx: EngineContext, name: str | None = None, kind: str | None = None,
           since_id: int = 0):  # type: ignore[no-untyped-def]
    with ctx.db.session() as s:
        hid = host_id(ctx, name) if name else None
        return [e for e in Events(s).query(hid, kind=kind, limit=5000) if (e.id or 0) > since_id]


def last_event_id(ctx: EngineContext) -> int:
    with ctx.db.session() as s:
        found = Events(s).query(limit=1)
    return found[-1].id if found else 0  # type: ignore[return-value]


def operation(ctx: EngineContext, op_id: int):  # type: ignore[no-untyped-def]
    with ctx.db.session() as s:
        return Journal(s).get(op_id)


def status_of(ctx: EngineContext, name: str) -> HostStatus:
    with ctx.db.session() as s:
        return Inventory(s, ctx.box).find_host(name).status


def reset(ctx: EngineContext, lab: RunningLab) -> None:
    """Every host up in the inventory, default chains, fast configuration."""
    with ctx.db.session() as s:
        inv = Inventory(s, ctx.box)
        for h in inv.hosts():
            inv.update_host(h.id, status=HostStatus.UP, power_management=PowerManagement(
                True, True, True, ""))
        store = ConfigStore(s)
        for key in ("FenceProxyImplicitPreferences", "FenceProxyDefaultPreferences"):
            store.reset(key)
        for key, value in FAST.items():
            store.set(key, value)


Listener = Callable[[dict[str, Any]], None]


def settings_for(tmp: Path) -> Settings:
    return Settings(home=tmp / "home", db_url=f"sqlite:///{tmp / 'engine.db'}")


@contextmanager
def scenario_world(tmp: Path, monitor: bool, ssh_access: bool = False,
                   topology: str = SCENARIO_TOPOLOGY) -> Iterator[tuple[RunningLab, EngineThread]]:
    """The lab of `topology` (default SCENARIO_TOPOLOGY) and an engine beside
    it (with or without the monitor, with or without SSH access to the
    hosts), both stopped on exit."""
    from labkit import load_yaml, require_lab_tools, start

    require_lab_tools()
    lab, settings = start(tmp, load_yaml(topology))
    ctx = engine_context(lab, settings, ssh_access)
    try:
        with EngineThread(ctx, monitor=monitor) as engine:
            yield lab, engine
    finally:
        ctx.close()
        lab.stop()


@contextmanager
def served_world(tmp: Path, monitor: bool = False) -> Iterator[tuple[RunningLab, Any]]:
    """The lab of SCENARIO_TOPOLOGY and an engine beside it whose API is served
    for real (apikit.ServedApp, its runtime started by the server), for tests
    that drive the engine through HTTP clients; both stopped on exit."""
    from apikit import ServedApp
    from labkit import load_yaml, require_lab_tools, start

    require_lab_tools()
    lab, settings = start(tmp, load_yaml(SCENARIO_TOPOLOGY))
    ctx = engine_context(lab, settings)
    try:
        with ServedApp(ctx, EngineRuntime(ctx, monitor=monitor)) as served:
            yield lab, served
    finally:
        ctx.close()
        lab.stop()
