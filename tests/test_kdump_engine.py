"""kdump detection inside the engine, without the lab: the records on both
databases (store/kdump.py), the UDP listener on loopback (kdumplistener.py),
the precaution and its watchdog (fencing/kdump.py) with messages recorded
directly. The whole story against the lab and the real fence_kdump_send is
tests/test_kdump.py."""

from __future__ import annotations

import asyncio
import socket
import time
from collections.abc import Iterator

import pytest

from hostpower.config import Config
from hostpower.context import EngineContext
from hostpower.fencing.escalation import Verdict
from hostpower.fencing.gateway import EngineGateway
from hostpower.fencing.kdump import KdumpDetection
from hostpower.kdumplistener import KdumpListener, source_address
from hostpower.model.errors import ValidationError
from hostpower.model.events import Event
from hostpower.model.inventory import Host, HostStatus, PowerManagement
from hostpower.model.kdump import encode_message
from hostpower.store.configstore import ConfigStore
from hostpower.store.events import Events
from hostpower.store.inventory import HostInput, Inventory
from hostpower.store.kdump import KdumpStore, ListenerCounts


def udp_port(address: str = "127.0.0.1") -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind((address, 0))
        return s.getsockname()[1]


def _hosts(ctx: EngineContext, *specs: tuple[str, str, bool]) -> list[Host]:
    with ctx.db.session() as s:
        inv = Inventory(s, ctx.box)
        dc = inv.add_data_center("dc")
        cluster = inv.add_cluster("c", dc.id)
        return [inv.add_host(HostInput(name, address, cluster.id, HostStatus.NON_RESPONSIVE,
                                       power_management=PowerManagement(True, True, kdump)))
                for name, address, kdump in specs]


def _config(ctx: EngineContext, **values: object) -> None:
    with ctx.db.session() as s:
        for key, value in values.items():
            ConfigStore(s).set(key, str(value))


def _events(ctx: EngineContext, prefix: str = "kdump.") -> list[Event]:
    with ctx.db.session() as s:
        return [e for e in Events(s).query(limit=1000) if e.kind.startswith(prefix)]


def _status(ctx: EngineContext, host: Host) -> HostStatus:
    with ctx.db.session() as s:
        return Inventory(s, ctx.box).host(host.id).status


def _record(ctx: EngineContext, host: Host, count: int = 1, finished_after: float = 30) -> None:
    with ctx.db.session() as s:
        KdumpStore(s).record(host.id, "127.0.0.9", "local", count, finished_after)


def _alive_listener(ctx: EngineContext) -> None:
    with ctx.db.session() as s:
        KdumpStore(s).report("local", "0.0.0.0:7410", "listening", "", ListenerCounts())


# -- the records, on SQLite and PostgreSQL ----------------------------------------------------

def test_store_messages_close_together_make_one_session_a_silence_starts_another(
        ctx: EngineContext) -> None:
    [host] = _hosts(ctx, ("h1", "10.0.0.1", True))
    with ctx.db.session() as s:
        store = KdumpStore(s)
        assert store.session(host.id) is None
        store.record(host.id, "10.0.0.1", "e1", 2, finished_after=30)
    with ctx.db.session() as s:
        KdumpStore(s).record(host.id, "10.0.0.1", "e2", 1, finished_after=30)
    with ctx.db.session() as s:
        first = KdumpStore(s).session(host.id)
    assert first is not None
    assert (first.messages, first.engine, first.source) == (3, "e2", "10.0.0.1")
    assert 0 <= first.since_last <= first.since_first < 5
    time.sleep(0.3)
    with ctx.db.session() as s:  # 0.3 s of silence is more than 0.2 s: a new dump
        KdumpStore(s).record(host.id, "10.0.0.1", "e1", 1, finished_after=0.2)
        second = KdumpStore(s).session(host.id)
    assert second is not None and second.messages == 1 and second.first_at > first.first_at
    with ctx.db.session() as s:
        store = KdumpStore(s)
        assert not store.clear(host.id, older_than=60)   # not finished that long: kept
        assert store.clear(host.id)
        assert store.sessions() == []


def test_store_listener_reports_are_one_row_per_engine(ctx: EngineContext) -> None:
    with ctx.db.session() as s:
        store = KdumpStore(s)
        store.report("e1", "0.0.0.0:7410", "listening", "", ListenerCounts(3, 1, 1, 1, "10.9.9.9"))
        store.report("e1", "0.0.0.0:7410", "listening", "", ListenerCounts(5, 2, 2, 1, "10.9.9.8"))
        store.report("e2", "0.0.0.0:7410", "failed", "Address already in use", ListenerCounts())
    with ctx.db.session() as s:
        listeners = KdumpStore(s).listeners()
    assert [(lst.engine, lst.state, lst.counts.received, lst.counts.last_unknown)
            for lst in listeners] == [("e1", "listening", 5, "10.9.9.8"), ("e2", "failed", 0, "")]
    assert all(0 <= lst.since_heartbeat < 5 for lst in listeners)


def test_deleting_a_host_deletes_its_dump(ctx: EngineContext) -> None:
    [host] = _hosts(ctx, ("h1", "10.0.0.1", True))
    _record(ctx, host)
    with ctx.db.session() as s:
        Inventory(s, ctx.box).delete_host(host.id)
    with ctx.db.session() as s:
        assert KdumpStore(s).sessions() == []


def test_the_destination_address_is_an_ip_address_or_empty() -> None:
    from hostpower.config import lookup

    key = lookup("FenceKdumpDestinationAddress")
    assert key.canonical("") == "" and key.canonical(" 0.0.0.0 ") == "0.0.0.0"
    assert key.canonical("::") == "::" and key.canonical("198.18.0.1") == "198.18.0.1"
    with pytest.raises(ValidationError, match="not an IP address"):
        key.canonical("engine.example.com")


# -- the listener, on loopback ----------------------------------------------------------------

@pytest.fixture
def listening(sqlite_ctx: EngineContext) -> Iterator[tuple[EngineContext, int]]:
    port = udp_port()
    _config(sqlite_ctx, FenceKdumpDestinationAddress="127.0.0.1", FenceKdumpDestinationPort=port)
    yield sqlite_ctx, port


def _send(payload: bytes, port: int, source: str = "127.0.0.1", times: int = 1) -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind((source, 0))
        for _ in range(times):
            s.sendto(payload, ("127.0.0.1", port))


async def _until(predicate, timeout: float = 5.0):  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while not (value := predicate()):
        assert time.monotonic() < deadline, "timed out"
        await asyncio.sleep(0.05)
    return value


def test_listener_records_a_known_hosts_messages_and_counts_what_it_ignores(
        listening: tuple[EngineContext, int]) -> None:
    ctx, port = listening
    [host] = _hosts(ctx, ("h1", "127.0.0.1", True))

    async def run() -> None:
        listener = KdumpListener(EngineGateway(ctx), flush_every=0.05)
        await listener.start()
        try:
            assert listener.listening == f"127.0.0.1:{port}"
            _send(encode_message(), port, times=3)
            _send(encode_message("big"), port)
            _send(encode_message(), port, source="127.0.0.2")     # no host has that address
            _send(b"\x00" * 8, port)                             # not a fence_kdump message
            _send(b"hi", port, source="127.0.0.3")
            await _until(lambda: listener.counts.received == 7)
            await asyncio.sleep(0.3)  # a flush or two
        finally:
            await listener.stop()
        c = listener.counts
        assert (c.accepted, c.unknown, c.malformed, c.last_unknown) == (4, 1, 2, "127.0.0.2")

    asyncio.run(run())
    with ctx.db.session() as s:
        session = KdumpStore(s).session(host.id)
        [row] = KdumpStore(s).listeners()
    assert session is not None and (session.messages, session.source) == (4, "127.0.0.1")
    assert (row.engine, row.address, row.state) == ("local", f"127.0.0.1:{port}", "stopped")
    assert (row.counts.received, row.counts.accepted, row.counts.unknown,
            row.counts.malformed) == (7, 4, 1, 2)


def test_listener_on_a_busy_port_says_so_and_the_engine_goes_on(
        listening: tuple[EngineContext, int]) -> None:
    ctx, port = listening
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as squatter:
        squatter.bind(("127.0.0.1", port))

        async def run() -> KdumpListener:
            listener = KdumpListener(EngineGateway(ctx), flush_every=0.05)
            await listener.start()   # does not raise
            await asyncio.sleep(0.2)
            await listener.stop()
            return listener

        listener = asyncio.run(run())
    assert listener.listening is None
    [failed] = _events(ctx)
    assert failed.kind == "kdump.listener_failed" and failed.severity.value == "error"
    assert f"cannot listen on UDP 127.0.0.1:{port}" in failed.message
    assert "in use" in failed.message
    with ctx.db.session() as s:
        [row] = KdumpStore(s).listeners()
    assert "in use" in row.detail


def test_listener_follows_a_change_of_port(listening: tuple[EngineContext, int]) -> None:
    ctx, port = listening
    [host] = _hosts(ctx, ("h1", "127.0.0.1", True))
    other = udp_port()

    async def run() -> None:
        listener = KdumpListener(EngineGateway(ctx), flush_every=0.05)
        await listener.start()
        try:
            _config(ctx, FenceKdumpDestinationPort=other)
            await _until(lambda: listener.listening == f"127.0.0.1:{other}")
            _send(encode_message(), other)
            await _until(lambda: listener.counts.accepted == 1)
        finally:
            await listener.stop()

    asyncio.run(run())
    with ctx.db.session() as s:
        assert KdumpStore(s).session(host.id) is not None


def test_source_addresses_are_plain_ip_addresses() -> None:
    assert source_address(("::ffff:198.18.33.11", 5000, 0, 0)) == "198.18.33.11"
    assert source_address(("fe80::1%eth0", 5000, 0, 2)) == "fe80::1"
    assert source_address(("198.18.33.11", 5000)) == "198.18.33.11"


# -- the precaution, with messages recorded directly -------------------------------------------

FAST = {"KdumpStartedTimeout": 1, "KdumpFinishedTimeout": 1, "KdumpRebootTimeout": 2}


def _consider(ctx: EngineContext, host: Host, during=None):  # type: ignore[no-untyped-def]
    """The precaution's step for `host`; `during(detection)` runs beside it."""
    async def run():  # type: ignore[no-untyped-def]
        gateway = EngineGateway(ctx)
        detection = KdumpDetection(gateway, poll=0.05)
        fresh = await gateway.host(host.id)
        task = asyncio.create_task(detection.consider(fresh, await gateway.config()))
        if during is not None:
            await asyncio.to_thread(during, detection)
        return await asyncio.wait_for(task, 20)
    return asyncio.run(run())


def test_precaution_host_without_kdump_detection_goes_on_at_once(sqlite_ctx) -> None:  # type: ignore[no-untyped-def]
    [host] = _hosts(sqlite_ctx, ("h1", "10.0.0.1", False))
    began = time.monotonic()
    step = _consider(sqlite_ctx, host)
    assert step.verdict is Verdict.PROCEED and time.monotonic() - began < 1
    assert _events(sqlite_ctx) == []


def test_precaution_without_a_live_listener_goes_on_and_says_why(sqlite_ctx) -> None:  # type: ignore[no-untyped-def]
    [host] = _hosts(sqlite_ctx, ("h1", "10.0.0.1", True))
    step = _consider(sqlite_ctx, host)
    assert step.verdict is Verdict.PROCEED
    [down] = _events(sqlite_ctx)
    assert down.kind == "kdump.listener_down" and down.severity.value == "error"
    assert "no fence_kdump listener has reported for 90 s" in down.message


def test_precaution_no_message_in_time_goes_on(sqlite_ctx) -> None:  # type: ignore[no-untyped-def]
    [host] = _hosts(sqlite_ctx, ("h1", "10.0.0.1", True))
    _config(sqlite_ctx, **FAST)
    _alive_listener(sqlite_ctx)
    began = time.monotonic()
    step = _consider(sqlite_ctx, host)
    assert step.verdict is Verdict.PROCEED and 1 <= time.monotonic() - began < 3
    assert [e.kind for e in _events(sqlite_ctx)] == ["kdump.waiting", "kdump.not_detected"]
    assert _status(sqlite_ctx, host) is HostStatus.NON_RESPONSIVE


def test_precaution_a_dumping_host_is_kdumping_then_spared_when_it_comes_back(sqlite_ctx) -> None:  # type: ignore[no-untyped-def]
    [host] = _hosts(sqlite_ctx, ("h1", "10.0.0.1", True))
    _config(sqlite_ctx, **FAST)
    _alive_listener(sqlite_ctx)

    def dump_then_reboot(detection: KdumpDetection) -> None:
        for _ in range(12):  # a dump of 3 s, a message every 0.25 s
            _record(sqlite_ctx, host, finished_after=1)
            time.sleep(0.25)
        assert _status(sqlite_ctx, host) is HostStatus.KDUMPING
        assert host.id in detection.watching
        # the dump is over: non_responsive again, waiting for the reboot
        from helpers import wait_until
        wait_until(lambda: _status(sqlite_ctx, host) is HostStatus.NON_RESPONSIVE, 3,
                   "the end of the dump")
        with sqlite_ctx.db.session() as s:  # what the monitor does when the agent answers
            Inventory(s, sqlite_ctx.box).set_status(host.id, HostStatus.UP)

    step = _consider(sqlite_ctx, host, dump_then_reboot)
    assert step.verdict is Verdict.SPARED
    assert step.reason == "it came back by itself after its crash dump"
    events = _events(sqlite_ctx)
    assert [e.kind for e in events] == ["kdump.waiting", "kdump.started", "kdump.finished",
                                        "kdump.rebooted"]
    assert events[1].details["status"] == "kdumping" and events[1].severity.value == "warning"
    assert "is not power-cycled while they keep coming" in events[1].message
    assert events[2].details["status"] == "non_responsive"
    with sqlite_ctx.db.session() as s:
        assert KdumpStore(s).session(host.id) is None   # forgotten once it is up


def test_precaution_a_host_that_does_not_come_back_after_its_dump_goes_on(sqlite_ctx) -> None:  # type: ignore[no-untyped-def]
    [host] = _hosts(sqlite_ctx, ("h1", "10.0.0.1", True))
    _config(sqlite_ctx, **FAST)
    _alive_listener(sqlite_ctx)

    def dump(_: KdumpDetection) -> None:
        for _ in range(4):
            _record(sqlite_ctx, host, finished_after=1)
            time.sleep(0.25)

    began = time.monotonic()
    step = _consider(sqlite_ctx, host, dump)
    took = time.monotonic() - began
    assert step.verdict is Verdict.PROCEED
    # last message at ~0.75 s, + KdumpFinishedTimeout 1 s + KdumpRebootTimeout 2 s
    assert 3.5 <= took < 6, took
    assert [e.kind for e in _events(sqlite_ctx)] == ["kdump.waiting", "kdump.started",
                                                     "kdump.finished", "kdump.no_reboot"]
    assert _status(sqlite_ctx, host) is HostStatus.NON_RESPONSIVE   # hard fencing may follow


def test_watchdog_puts_a_stranded_kdumping_host_back_and_forgets_old_dumps(sqlite_ctx) -> None:  # type: ignore[no-untyped-def]
    stranded, watched, up = _hosts(sqlite_ctx, ("h1", "10.0.0.1", True),
                                   ("h2", "10.0.0.2", True), ("h3", "10.0.0.3", True))
    _config(sqlite_ctx, KdumpFinishedTimeout=1)
    with sqlite_ctx.db.session() as s:
        inv = Inventory(s, sqlite_ctx.box)
        inv.set_status(stranded.id, HostStatus.KDUMPING)
        inv.set_status(watched.id, HostStatus.KDUMPING)
        inv.set_status(up.id, HostStatus.UP)
    _record(sqlite_ctx, up, finished_after=1)
    _record(sqlite_ctx, watched, finished_after=1)
    time.sleep(1.1)

    async def run() -> None:
        detection = KdumpDetection(EngineGateway(sqlite_ctx))
        detection.watching.add(watched.id)
        await detection.tidy()
    asyncio.run(run())
    assert _status(sqlite_ctx, stranded) is HostStatus.NON_RESPONSIVE
    assert _status(sqlite_ctx, watched) is HostStatus.KDUMPING
    [recovered] = _events(sqlite_ctx)
    assert recovered.kind == "kdump.recovered" and recovered.host_name == "h1"
    with sqlite_ctx.db.session() as s:
        assert [d.host_id for d in KdumpStore(s).sessions()] == [watched.id]


def test_config_snapshot_has_every_kdump_key() -> None:
    config = Config({"KdumpRebootTimeout": "0"})
    assert config["KdumpRebootTimeout"] == 0


# -- what an operator sees and switches ----------------------------------------------------

def test_api_kdump_shows_listeners_counts_and_dumps(ctx: EngineContext) -> None:
    from fastapi.testclient import TestClient

    from helpers import bearer
    from hostpower.api.app import create_app
    from hostpower.store.users import Users

    [host] = _hosts(ctx, ("h1", "10.0.0.1", True))
    with ctx.db.session() as s:
        Users(s).add("watcher", "viewer", "viewer-password")
        store = KdumpStore(s)
        store.report("e1", "0.0.0.0:7410", "listening", "", ListenerCounts(9, 5, 3, 1, "10.9.9.9"))
        store.report("e2", "0.0.0.0:7410", "failed", "Address already in use", ListenerCounts())
        store.record(host.id, "10.0.0.1", "e1", 5, finished_after=30)
    with TestClient(create_app(ctx)) as api:
        assert api.get("/api/kdump").status_code == 401
        body = api.get("/api/kdump", headers=bearer(api, "watcher", "viewer-password")).json()
    e1, e2 = body["listeners"]
    assert (e1["engine"], e1["alive"], e1["received"], e1["accepted"], e1["unknown"],
            e1["malformed"], e1["last_unknown"]) == ("e1", True, 9, 5, 3, 1, "10.9.9.9")
    assert (e2["state"], e2["alive"], e2["detail"]) == ("failed", False, "Address already in use")
    [dump] = body["sessions"]
    assert (dump["host"], dump["state"], dump["messages"], dump["source"]) == (
        "h1", "dumping", 5, "10.0.0.1")


def test_the_consoles_kdump_switch_decides_whether_the_engine_waits(sqlite_ctx) -> None:  # type: ignore[no-untyped-def]
    """The console's "Kdump integration" box is PUT /api/hosts/{id}/power_management
    with kdump_detection: off, fencing goes on at once; on, it waits for messages."""
    from fastapi.testclient import TestClient

    from helpers import bearer
    from hostpower.api.app import create_app
    from hostpower.store.users import Users

    [host] = _hosts(sqlite_ctx, ("h1", "10.0.0.1", True))
    _config(sqlite_ctx, **FAST)
    _alive_listener(sqlite_ctx)
    with sqlite_ctx.db.session() as s:
        Users(s).add("root", "admin", "admin-password")
    pm = {"enabled": True, "automatic_pm_enabled": True, "kdump_detection": False,
          "pm_proxies": []}
    with TestClient(create_app(sqlite_ctx)) as api:
        admin = bearer(api, "root", "admin-password")
        r = api.put(f"/api/hosts/{host.id}/power_management", json=pm, headers=admin)
        assert r.status_code == 200 and r.json()["kdump_detection"] is False
    assert _consider(sqlite_ctx, host).reason == "kdump detection is off for the host"
    assert _events(sqlite_ctx) == []
    with TestClient(create_app(sqlite_ctx)) as api:
        admin = bearer(api, "root", "admin-password")
        r = api.put(f"/api/hosts/{host.id}/power_management",
                    json={**pm, "kdump_detection": True}, headers=admin)
        assert r.status_code == 200
    assert _consider(sqlite_ctx, host).reason == "no crash dump"
    assert [e.kind for e in _events(sqlite_ctx)] == ["kdump.waiting", "kdump.not_detected"]
