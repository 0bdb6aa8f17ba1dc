"""The storage lease without the lab: the lease file and its name, renewing
and watching on a fake clock, the engine's judgement, an agent answering
over mutual TLS, the daemon renewing until it stops, and the precaution
walking the proxy chain against a fake client. The scenarios against the
lab are in test_storage_lease.py."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from helpers import wait_until
from hostpower.context import EngineContext
from hostpower.fencing.escalation import Verdict
from hostpower.fencing.gateway import EngineGateway
from hostpower.fencing.storagelease import MAX_PROXIES_ASKED, StorageLease as Precaution
from hostpower.hostagent.client import AgentProtocolError, AgentUnreachable
from hostpower.hostagent.storagelease import (
    FORMAT, MAX_LEASE_BYTES, LeaseRecord, StorageLease, lease_file_name, lease_path, read_lease,
    write_lease,
)
from hostpower.hostagent.wire import StorageLeaseAnswer
from hostpower.model.errors import EngineNotReady, ValidationError
from hostpower.model.inventory import FencingPolicy, Host, HostStatus, PowerManagement
from hostpower.model.storagelease import LeaseState, judge
from hostpower.store.configstore import ConfigStore
from hostpower.store.events import Events
from hostpower.store.inventory import HostInput, Inventory
from test_hostagent import SRC, Lab, StartAgent, agents, lab  # noqa: F401 - fixtures

# --------------------------------------------------------------------------- the file


@pytest.mark.parametrize("name", ["c1-h1", "host7.example.com", "H_2", "a" * 255])
def test_slease_a_host_name_names_a_lease_file_in_the_directory(name: str, tmp_path: Path) -> None:
    assert lease_file_name(name) == f"{name}.lease"
    assert lease_path(tmp_path, name).parent == tmp_path


@pytest.mark.parametrize("name", ["", ".", "..", "../x", "../../etc/passwd", ".hidden", "a/b",
                                  "/etc/passwd", "a\x00b", "a b", "-x", "a" * 256, None, 7])
def test_slease_a_name_that_could_leave_the_directory_is_refused(name: object) -> None:
    with pytest.raises(ValidationError) as refused:
        lease_file_name(name)  # type: ignore[arg-type]
    assert refused.value.field == "host"


def test_slease_a_record_reads_back_as_written_and_names_its_host() -> None:
    record = LeaseRecord("c1-h1", "4e0c-boot", 42, 1733300000.125, 2.0)
    data = record.to_bytes()
    assert data.endswith(b"\n") and data.count(b"\n") == 1 and len(data) < 200
    assert json.loads(data)["format"] == FORMAT
    assert LeaseRecord.from_bytes(data) == record
    assert LeaseRecord.from_bytes(data, "c1-h1") == record
    with pytest.raises(ValueError, match="another host"):
        LeaseRecord.from_bytes(data, "c1-h2")  # a lease copied under another name


def _record(**changes: object) -> bytes:
    body = {"format": FORMAT, "host": "h1", "boot_id": "b", "counter": 1, "written_at": 1.5,
            "interval": 2.0}
    body.update(changes)
    return json.dumps({k: v for k, v in body.items() if v is not ...}).encode()


@pytest.mark.parametrize(("data", "why"), [
    (b"", "JSON"),
    (b"\xff\xfe", "JSON"),
    (b"[1, 2]", "record"),
    (_record(format="sanlock/1"), "record"),
    (_record(host="../h1"), "host"),
    (_record(host=...), "host"),
    (_record(boot_id=""), "boot_id"),
    (_record(boot_id="x" * 65), "boot_id"),
    (_record(counter=True), "counter"),
    (_record(counter=-1), "counter"),
    (_record(counter=1.5), "counter"),
    (_record(written_at="now"), "written_at"),
    (_record(written_at=float("nan")), "written_at"),
    (_record(interval=0), "interval"),
    (b" " * (MAX_LEASE_BYTES + 1), "larger"),
])
def test_slease_a_malformed_lease_file_is_refused_with_the_reason(data: bytes, why: str) -> None:
    with pytest.raises(ValueError, match=why):
        LeaseRecord.from_bytes(data)


def test_slease_renewal_replaces_the_file_whole_and_leaves_no_temporary(tmp_path: Path) -> None:
    write_lease(tmp_path, LeaseRecord("h1", "b", 1, 10.0, 2.0))
    inode = os.stat(tmp_path / "h1.lease").st_ino
    write_lease(tmp_path, LeaseRecord("h1", "b", 2, 12.0, 2.0))
    assert os.listdir(tmp_path) == ["h1.lease"]
    assert os.stat(tmp_path / "h1.lease").st_ino != inode  # renamed over, never rewritten in place
    data, mtime = read_lease(tmp_path / "h1.lease")
    assert LeaseRecord.from_bytes(data).counter == 2 and abs(time.time() - mtime) < 60


def test_slease_a_symbolic_link_is_not_followed(tmp_path: Path) -> None:
    secret = tmp_path / "secret"
    secret.write_text("not a lease")
    (tmp_path / "h1.lease").symlink_to(secret)
    with pytest.raises(OSError):
        read_lease(tmp_path / "h1.lease")
    (tmp_path / ".h2.lease.tmp").symlink_to(secret)  # a planted temporary file
    with pytest.raises(OSError):
        write_lease(tmp_path, LeaseRecord("h2", "b", 1, 10.0, 2.0))
    assert secret.read_text() == "not a lease"


# --------------------------------------------------------------------------- renewing and watching


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def pair(tmp_path: Path, interval: float = 2.0) -> tuple[StorageLease, StorageLease, Clock]:
    clock = Clock()
    writer = StorageLease(tmp_path, "h1", "boot-1", interval, clock=clock)
    reader = StorageLease(tmp_path, "h2", "boot-2", interval, clock=clock)
    return writer, reader, clock


def rounds(clock: Clock, *leases: StorageLease, n: int = 1, step: float = 2.0) -> None:
    for _ in range(n):
        clock.now += step
        for lease in leases:
            lease.tick()


def test_slease_a_renewal_is_a_change_between_two_scans_of_the_reader(tmp_path: Path) -> None:
    writer, reader, clock = pair(tmp_path)
    rounds(clock, writer, reader)
    first = reader.observe("h1")
    assert (first.watching, first.exists, first.renewed_ago, first.counter) == (True, True, None, 1)
    rounds(clock, writer, reader)
    clock.now += 0.5
    seen = reader.observe("h1")
    # Renewed after the previous scan (2.5 s ago) and before the last one (0.5 s ago).
    assert seen.renewed_ago == pytest.approx(2.5)
    assert seen.watched_for == pytest.approx(2.5)
    assert (seen.counter, seen.boot_id, seen.interval) == (2, "boot-1", 2.0)
    assert judge(watching=True, exists=True, renewed_ago=seen.renewed_ago,
                 watched_for=seen.watched_for, window=10).state is LeaseState.ALIVE


def test_slease_a_lease_no_longer_renewed_grows_stale(tmp_path: Path) -> None:
    writer, reader, clock = pair(tmp_path)
    rounds(clock, writer, reader, n=3)
    rounds(clock, reader, n=5)  # the writer's agent died: the reader goes on watching
    seen = reader.observe("h1")
    assert seen.renewed_ago == pytest.approx(12.0) and seen.watched_for == pytest.approx(14.0)
    verdict = judge(watching=True, exists=True, renewed_ago=seen.renewed_ago,
                    watched_for=seen.watched_for, window=10)
    assert verdict.state is LeaseState.STALE and verdict.reason == "not renewed for 12 s"


def test_slease_a_change_seen_across_a_gap_proves_nothing(tmp_path: Path) -> None:
    """The reader was frozen (SIGSTOP) for a minute: the record changed meanwhile,
    but when is unknown, so it watches anew rather than calling the lease fresh."""
    writer, reader, clock = pair(tmp_path)
    rounds(clock, writer, reader, n=2)
    clock.now += 60
    writer.tick()
    rounds(clock, reader, step=0.5)
    seen = reader.observe("h1")
    assert seen.renewed_ago is None and seen.watched_for == 0.0
    assert judge(watching=True, exists=True, renewed_ago=None, watched_for=0.0,
                 window=10).state is LeaseState.UNKNOWN


def test_slease_an_unreadable_moment_is_not_a_renewal(tmp_path: Path) -> None:
    writer, reader, clock = pair(tmp_path)
    rounds(clock, writer, reader, n=2)
    good = (tmp_path / "h1.lease").read_bytes()
    (tmp_path / "h1.lease").write_bytes(b"garbage")
    rounds(clock, reader)
    assert "malformed" in reader.observe("h1").detail
    (tmp_path / "h1.lease").write_bytes(good)  # the same record as before: no renewal
    rounds(clock, reader, n=4)
    # The last renewal is still the one between the first two scans (at 1002 and 1004).
    assert reader.observe("h1").renewed_ago == pytest.approx(1014.0 - 1002.0)


def test_slease_absent_new_and_unwatched_leases(tmp_path: Path) -> None:
    _writer, reader, clock = pair(tmp_path)
    rounds(clock, reader, n=3)
    absent = reader.observe("nobody")
    assert (absent.watching, absent.exists, absent.watched_for) == (True, False, 4.0)
    assert judge(watching=True, exists=False, renewed_ago=None, watched_for=4.0,
                 window=90).state is LeaseState.ABSENT
    write_lease(tmp_path, LeaseRecord("h3", "b", 1, 1.0, 2.0))  # after the last scan
    assert reader.observe("h3").watched_for == 0.0
    lonely = StorageLease(tmp_path / "not-mounted", "h9", "b", clock=clock)
    lonely.tick()
    blind = lonely.observe("h1")
    assert not blind.watching and "cannot read the shared storage" in blind.detail


def test_slease_a_reader_whose_own_round_is_stuck_cannot_tell(tmp_path: Path) -> None:
    """Its storage hangs in its own renewal: what it saw gets old while the
    lease it is asked about may be renewed all along."""
    writer, reader, clock = pair(tmp_path)
    rounds(clock, writer, reader, n=3)
    clock.now += 4.9  # 2.45 intervals since its last scan: still in step
    assert reader.observe("h1").watching
    clock.now += 0.2
    late = reader.observe("h1")
    assert not late.watching and late.detail == "this host's watch of the shared storage is 3 s late"


def test_slease_a_bad_name_or_interval_is_refused_at_start(tmp_path: Path) -> None:
    with pytest.raises(ValidationError):
        StorageLease(tmp_path, "../h1", "b")
    with pytest.raises(ValidationError):
        StorageLease(tmp_path, "h1", "b", interval=0.0)
    with pytest.raises(ValidationError):
        StorageLease(tmp_path, "h1", "b").observe("../h2")


@pytest.mark.parametrize(("watching", "exists", "renewed", "watched", "state"), [
    (False, False, None, 0.0, LeaseState.UNKNOWN),
    (True, True, 3.0, 500.0, LeaseState.ALIVE),
    (True, True, 90.0, 500.0, LeaseState.ALIVE),
    (True, False, 3.0, 500.0, LeaseState.ALIVE),   # renewed, then removed: renewed all the same
    (True, True, 90.5, 500.0, LeaseState.STALE),
    (True, True, None, 90.0, LeaseState.STALE),
    (True, True, None, 89.0, LeaseState.UNKNOWN),  # watched too briefly to tell
    (True, False, None, 0.0, LeaseState.ABSENT),
    (True, False, 120.0, 500.0, LeaseState.ABSENT),
])
def test_slease_judgement(watching: bool, exists: bool, renewed: float | None, watched: float,
                          state: LeaseState) -> None:
    assert judge(watching=watching, exists=exists, renewed_ago=renewed, watched_for=watched,
                 window=90).state is state


# --------------------------------------------------------------------------- the agent


def test_slease_an_agent_answers_over_mutual_tls(lab: Lab, agents: StartAgent,  # noqa: F811
                                                 tmp_path: Path) -> None:
    shared = tmp_path / "shared"
    shared.mkdir()
    a = agents("node1", "127.88.20.1", storage_lease_dir=shared, storage_lease_interval=0.5)
    b = agents("node2", "127.88.20.2", storage_lease_dir=shared, storage_lease_interval=0.5)
    c = agents("node3", "127.88.20.3")  # on no shared storage

    async def ask(client, server, host: str) -> StorageLeaseAnswer:  # type: ignore[no-untyped-def]
        return await client.storage_lease(server.address[0], server.address[1], host, 5)

    async def scenario() -> None:
        async with lab.client() as client:
            seen = await wait_for(lambda: ask(client, b, "node1"),
                                  lambda x: x.renewed_ago is not None)
            assert seen.watching and seen.exists and seen.renewed_ago < 2
            assert seen.boot_id == a.agent.boot_id
            absent = await ask(client, b, "node7")
            assert absent.watching and not absent.exists
            blind = await ask(client, c, "node1")
            assert not blind.watching and blind.detail == "this host is on no shared storage"
            with pytest.raises(AgentProtocolError) as refused:
                await ask(client, b, "../node1")
            assert refused.value.status == 400 and refused.value.field == "host"
            a.stop(timeout=5)
            a.agent.close()  # the agent stops: so do its renewals
            stale = await wait_for(lambda: ask(client, b, "node1"),
                                   lambda x: x.renewed_ago is not None and x.renewed_ago > 1.5)
            assert stale.exists and stale.counter == (await ask(client, b, "node1")).counter

    asyncio.run(scenario())


async def wait_for(ask, done, timeout: float = 10.0):  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while True:
        answer = await ask()
        if done(answer):
            return answer
        assert time.monotonic() < deadline, f"last answer: {answer}"
        await asyncio.sleep(0.1)


def test_slease_the_daemon_renews_until_it_stops(lab: Lab, tmp_path: Path) -> None:  # noqa: F811
    cert_dir = lab.enroll("daemon2", "127.88.20.9")
    shared = tmp_path / "shared"
    shared.mkdir()
    env = dict(os.environ, PYTHONPATH=str(SRC) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    argv = [sys.executable, "-m", "hostpower.hostagent.daemon", "--bind", "127.88.20.9:0",
            "--host-name", "daemon2", "--cert-dir", str(cert_dir),
            "--storage-lease-dir", str(shared), "--storage-lease-interval", "0.2"]
    process = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                               env=env)
    lease = shared / "daemon2.lease"

    def counter() -> int:
        try:
            return LeaseRecord.from_bytes(lease.read_bytes()).counter
        except (OSError, ValueError):
            return 0

    try:
        wait_until(lambda: counter() >= 3, 20, "the daemon to renew its lease")
        process.send_signal(signal.SIGSTOP)  # a hung host renews nothing
        time.sleep(0.3)
        frozen = counter()
        time.sleep(0.6)
        assert counter() == frozen
        process.send_signal(signal.SIGCONT)
        wait_until(lambda: counter() > frozen, 10, "renewals to resume")
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=15) == 0
        last = counter()
        time.sleep(0.6)
        assert counter() == last
    finally:
        if process.poll() is None:
            process.kill()
            process.wait(10)
    bad = subprocess.run(argv[:5] + ["--host-name", "bad/name"] + argv[7:], env=env,
                         capture_output=True, text=True, timeout=60)
    assert bad.returncode == 2 and "host" in bad.stderr


# --------------------------------------------------------------------------- the precaution


@dataclass
class FakeClient:
    """Answers per proxy address: a StorageLeaseAnswer factory, or an exception."""

    answers: dict[str, object]
    asked: list[tuple[str, str]] = field(default_factory=list)

    async def storage_lease(self, address: str, port: int, host: str,
                            timeout: float) -> StorageLeaseAnswer:
        self.asked.append((address, host))
        answer = self.answers.get(address, AgentUnreachable("cannot connect", address, port))
        if isinstance(answer, Exception):
            raise answer
        return answer  # type: ignore[return-value]


def alive(host: str = "t1") -> StorageLeaseAnswer:
    return StorageLeaseAnswer(host, True, exists=True, renewed_ago=1.5, watched_for=300.0,
                              counter=7, boot_id="b")


def stale(host: str = "t1") -> StorageLeaseAnswer:
    return StorageLeaseAnswer(host, True, exists=True, renewed_ago=None, watched_for=300.0,
                              counter=7, boot_id="b")


def blind(host: str = "t1") -> StorageLeaseAnswer:
    return StorageLeaseAnswer(host, False, detail="this host is on no shared storage")


def world(ctx: EngineContext, policy: bool = True, chain: str = "") -> Host:
    """Cluster c (t1 the target, p1 p2 p3 up, p4 down), cluster d of the same data
    center (q1 up), and another data center (r1 up); addresses 127.0.0.<n>."""
    with ctx.db.session() as s:
        inv = Inventory(s, ctx.box)
        dc, other = inv.add_data_center("dc"), inv.add_data_center("dc2")
        c = inv.add_cluster("c", dc.id, fencing_policy=FencingPolicy(skip_if_sd_active=policy))
        d = inv.add_cluster("d", dc.id)
        r = inv.add_cluster("r", other.id)
        target = inv.add_host(HostInput("t1", "127.0.0.10", c.id, HostStatus.NON_RESPONSIVE))
        for i, (name, cluster, status) in enumerate([
                ("p1", c, HostStatus.UP), ("p2", c, HostStatus.UP), ("p3", c, HostStatus.UP),
                ("p4", c, HostStatus.DOWN), ("q1", d, HostStatus.UP), ("r1", r, HostStatus.UP)]):
            inv.add_host(HostInput(name, f"127.0.0.{i + 1}", cluster.id, status))
        target = inv.update_host(target.id, power_management=PowerManagement(
            True, True, False, chain))
        ConfigStore(s).set("HostStorageLeaseAliveCheckingInterval", "60")
        return target


ADDRESS = {"p1": "127.0.0.1", "p2": "127.0.0.2", "p3": "127.0.0.3", "p4": "127.0.0.4",
           "q1": "127.0.0.5", "r1": "127.0.0.6"}
NAME = {a: n for n, a in ADDRESS.items()}


def consider(ctx: EngineContext, target: Host, client: FakeClient, times: int = 1,
             gateway: EngineGateway | None = None):  # type: ignore[no-untyped-def]
    async def run():  # type: ignore[no-untyped-def]
        gw = gateway or EngineGateway(ctx)
        precaution = Precaution(gw, client)
        steps = []
        for _ in range(times):
            steps.append(await precaution.consider(await gw.host(target.id), await gw.config()))
        return steps
    return asyncio.run(run())


def story(ctx: EngineContext) -> list[tuple[str, str, str]]:
    with ctx.db.session() as s:
        return [(e.severity.value, e.kind, e.message) for e in Events(s).query()]


def test_slease_policy_off_asks_nobody(sqlite_ctx: EngineContext) -> None:
    target = world(sqlite_ctx, policy=False)
    client = FakeClient({ADDRESS["p1"]: alive()})
    [step] = consider(sqlite_ctx, target, client)
    assert step.verdict is Verdict.PROCEED and client.asked == [] and story(sqlite_ctx) == []


def test_slease_a_live_lease_spares_the_host_and_is_told_once(sqlite_ctx: EngineContext) -> None:
    target = world(sqlite_ctx)
    client = FakeClient({ADDRESS["p1"]: alive()})
    steps = consider(sqlite_ctx, target, client, times=3)
    assert [s.verdict for s in steps] == [Verdict.SPARED] * 3
    assert steps[0].reason == ("its storage lease was renewed 1.5 s ago (seen by proxy p1): "
                               "it is alive but cut off from this engine")
    assert client.asked == [(ADDRESS["p1"], "t1")] * 3  # asked every time, told once
    [(severity, kind, message)] = story(sqlite_ctx)
    assert (severity, kind) == ("info", "storage_lease.alive")
    assert "renewed 1.5 s ago, seen by proxy p1 (cluster)" in message
    assert "HostStorageLeaseAliveCheckingInterval (60 s)" in message


def test_slease_proxies_that_cannot_tell_hand_over_through_the_chain(
        sqlite_ctx: EngineContext) -> None:
    target = world(sqlite_ctx)
    client = FakeClient({ADDRESS["p1"]: AgentUnreachable("cannot connect", "127.0.0.1", 1),
                         ADDRESS["p2"]: blind(),
                         ADDRESS["p3"]: StorageLeaseAnswer("t1", True, exists=True,
                                                           watched_for=5.0),
                         ADDRESS["q1"]: stale()})
    [step] = consider(sqlite_ctx, target, client)
    assert step.verdict is Verdict.PROCEED
    # cluster (p4 is down, t1 the target), then dc; never the engine
    assert [NAME[a] for a, _ in client.asked] == ["p1", "p2", "p3", "q1"]
    [(severity, kind, message)] = story(sqlite_ctx)
    assert (severity, kind) == ("info", "storage_lease.stale")
    assert "not renewed for 300 s (all the time it watched), seen by proxy q1 (dc)" in message
    with sqlite_ctx.db.session() as s:
        [event] = Events(s).query(kind="storage_lease.stale")
    assert [(a["proxy"], a["outcome"]) for a in event.details["asked"]] == [
        ("p1", "error"), ("p2", "unknown"), ("p3", "unknown"), ("q1", "stale")]


def test_slease_an_absent_lease_lets_fencing_go_on(sqlite_ctx: EngineContext) -> None:
    target = world(sqlite_ctx)
    client = FakeClient({ADDRESS["p1"]: StorageLeaseAnswer("t1", True, exists=False,
                                                           watched_for=1.0)})
    [step] = consider(sqlite_ctx, target, client)
    assert step.verdict is Verdict.PROCEED
    assert "no lease file on the shared storage" in story(sqlite_ctx)[0][2]


def test_slease_nobody_able_to_tell_lets_fencing_go_on_with_a_warning(
        sqlite_ctx: EngineContext) -> None:
    target = world(sqlite_ctx)
    client = FakeClient({})  # every proxy unreachable
    [step] = consider(sqlite_ctx, target, client)
    assert step.verdict is Verdict.PROCEED
    assert [NAME[a] for a, _ in client.asked] == ["p1", "p2", "p3", "q1"]
    [(severity, kind, message)] = story(sqlite_ctx)
    assert (severity, kind) == ("warning", "storage_lease.unknown")
    assert "no proxy could tell" in message
    assert "p1 (cluster): agent 127.0.0.1:54321: cannot connect" in message
    assert "as oVirt does when it cannot check" in message


def test_slease_the_chain_is_the_hosts_own(sqlite_ctx: EngineContext) -> None:
    target = world(sqlite_ctx, chain="r1,engine")
    with sqlite_ctx.db.session() as s:
        ConfigStore(s).set("FenceProxyImplicitPreferences", "")
    client = FakeClient({ADDRESS["p1"]: alive()})
    [step] = consider(sqlite_ctx, target, client)
    assert step.verdict is Verdict.PROCEED and [NAME[a] for a, _ in client.asked] == ["r1"]
    assert "no proxy could tell" in story(sqlite_ctx)[0][2]


def test_slease_no_eligible_proxy_is_said(sqlite_ctx: EngineContext) -> None:
    target = world(sqlite_ctx, chain="engine")
    with sqlite_ctx.db.session() as s:
        ConfigStore(s).set("FenceProxyImplicitPreferences", "")
    [step] = consider(sqlite_ctx, target, FakeClient({}))
    assert step.verdict is Verdict.PROCEED
    assert "no eligible proxy host in chain engine" in story(sqlite_ctx)[0][2]


def test_slease_at_most_a_few_proxies_are_asked(sqlite_ctx: EngineContext) -> None:
    target = world(sqlite_ctx)
    with sqlite_ctx.db.session() as s:
        inv = Inventory(s, sqlite_ctx.box)
        for i in range(20):
            inv.add_host(HostInput(f"z{i:02}", f"127.0.1.{i + 1}", target.cluster_id,
                                   HostStatus.UP))
    client = FakeClient({})
    consider(sqlite_ctx, target, client)
    assert len(client.asked) == MAX_PROXIES_ASKED


def test_slease_an_engine_that_may_not_act_asks_nobody(sqlite_ctx: EngineContext) -> None:
    target = world(sqlite_ctx)
    gateway = EngineGateway(sqlite_ctx)

    def not_ready() -> None:
        raise EngineNotReady("lease uncertain")
    gateway.check_may_act = not_ready  # type: ignore[method-assign]
    client = FakeClient({ADDRESS["p1"]: alive()})
    with pytest.raises(EngineNotReady):
        consider(sqlite_ctx, target, client, gateway=gateway)
    assert client.asked == []


# --------------------------------------------------------------------------- the policy


def test_slease_the_policy_is_set_and_shown_through_the_api(sqlite_ctx: EngineContext) -> None:
    from fastapi.testclient import TestClient

    from helpers import bearer
    from hostpower.api.app import create_app
    from hostpower.store.users import Users

    with sqlite_ctx.db.session() as s:
        Users(s).add("root", "admin", "admin-password")
    with TestClient(create_app(sqlite_ctx)) as api:
        admin = bearer(api, "root", "admin-password")
        dc = api.post("/api/datacenters", json={"name": "dc1"}, headers=admin).json()
        c = api.post("/api/clusters", json={"name": "c1", "data_center": {"id": dc["id"]}},
                     headers=admin).json()
        assert c["fencing_policy"]["skip_if_sd_active"] == {"enabled": False}
        policy = dict(c["fencing_policy"], skip_if_sd_active={"enabled": True})
        r = api.put(f"/api/clusters/{c['id']}", json={"fencing_policy": policy}, headers=admin)
        assert r.status_code == 200, r.text
        shown = api.get(f"/api/clusters/{c['id']}", headers=admin).json()["fencing_policy"]
        assert shown == policy
    with sqlite_ctx.db.session() as s:
        assert Inventory(s, sqlite_ctx.box).cluster(c["id"]).fencing_policy.skip_if_sd_active
