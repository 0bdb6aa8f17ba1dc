"""The host agent and the engine's client, over real mutual TLS on 127.x.y.z sockets.

Every server a test starts is stopped by the `agents` fixture, even when the
test fails. Waits poll a condition with a deadline; nothing sleeps blindly.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
import os
import queue
import signal
import socket
import ssl
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from hostpower.drivers.base import FenceDriver
from hostpower.hostagent import pki
from hostpower.hostagent.client import (
    AgentClient,
    AgentError,
    AgentProtocolError,
    AgentTimeout,
    AgentTLSError,
    AgentUnreachable,
    client_ssl_context,
)
from helpers import wait_until
from hostpower.hostagent.agent import AgentConfig, AgentStartError, HostAgent
from hostpower.hostagent.server import AgentServer, server_ssl_context
from hostpower.model.power import AgentSpec, FenceAction, FenceResult, Outcome
from hostpower.model.secret import Secret

pytestmark = pytest.mark.timeout(120)

FENCE_DUMMY = Path("/usr/sbin/fence_dummy")
PASSWORD = "pw-S3cret-4711-do-not-log"
SRC = Path(__file__).resolve().parents[1] / "src"



# --------------------------------------------------------------------------- a test driver


class FakeDriver(FenceDriver):
    """Switches an imaginary device; can be held mid-run to simulate a slow BMC."""

    name = "fake"
    native = True

    def __init__(self, types: tuple[str, ...] = ("wti",), message: str = "") -> None:
        self.types = set(types)
        self.message = message
        self.state = Outcome.ON
        self.calls: list[tuple[AgentSpec, FenceAction, float]] = []
        self.running = threading.Event()
        self.proceed = threading.Event()
        self.proceed.set()

    def agent_types(self) -> frozenset[str]:
        return frozenset(self.types)

    def run(self, spec: AgentSpec, action: FenceAction, timeout: float) -> FenceResult:
        self.calls.append((spec, action, timeout))
        self.running.set()
        if not self.proceed.wait(timeout):
            return FenceResult(action, Outcome.ERROR, "device did not answer", 1, timeout)
        if action == FenceAction.OFF:
            self.state = Outcome.OFF
        elif action in (FenceAction.ON, FenceAction.REBOOT):
            self.state = Outcome.ON
        return FenceResult(action, self.state, self.message, 0, 0.001)


def fake_spec(agent_type: str = "wti", **overrides: object) -> AgentSpec:
    values: dict[str, object] = dict(type=agent_type, address="127.0.0.1", username="admin",
                                     password=Secret(PASSWORD), port=623)
    values.update(overrides)
    return AgentSpec(**values)  # type: ignore[arg-type]


# --------------------------------------------------------------------------- PKI and servers


@dataclass
class Lab:
    tmp: Path
    ca: pki.CertificateAuthority
    engine: pki.BundlePaths

    def enroll(self, name: str, *addresses: str) -> Path:
        out = self.tmp / "hosts" / name
        pki.enroll_host(self.ca, name, list(addresses), out)
        return out

    def client(self, **kwargs: object) -> AgentClient:
        return AgentClient(self.engine.ca, self.engine.cert, self.engine.key, **kwargs)  # type: ignore[arg-type]

    def engine_context(self) -> ssl.SSLContext:
        return client_ssl_context(self.engine.ca, self.engine.cert, self.engine.key)


@pytest.fixture
def lab(tmp_path: Path) -> Lab:
    ca = pki.CertificateAuthority.load_or_create(tmp_path / "ca")
    return Lab(tmp_path, ca, pki.ensure_engine_certificate(ca, tmp_path / "engine"))


StartAgent = Callable[..., AgentServer]


@pytest.fixture
def agents(lab: Lab) -> Iterator[StartAgent]:
    """Starts agents on 127.x.y.z, port 0; stops every one of them at the end."""
    started: list[AgentServer] = []

    def start(name: str, address: str, drivers: list[FenceDriver] | None = None,
              cert_dir: Path | None = None, ssl_context: ssl.SSLContext | None = None,
              **config: object) -> AgentServer:
        cert_dir = cert_dir or lab.enroll(name, address)
        agent = HostAgent(AgentConfig(host_name=name, bind_address=address, port=0,
                                      cert_dir=cert_dir, **config),  # type: ignore[arg-type]
                          drivers if drivers is not None else [FakeDriver()])
        server = AgentServer(agent, ssl_context=ssl_context)
        started.append(server)
        return server.start()

    yield start
    for server in started:
        t0 = time.monotonic()
        assert server.stop(timeout=5), f"{server.agent.config.host_name} did not stop"
        assert time.monotonic() - t0 < 6
        server.agent.close()


def script_driver() -> FenceDriver:
    from conftest import require

    require(FENCE_DUMMY.exists(), "fence-agents (fence_dummy) is not installed")
    from hostpower.drivers.script import ScriptDriver

    return ScriptDriver(fence_agents_path="/usr/sbin")


def dummy_spec(status_file: Path) -> AgentSpec:
    return AgentSpec(type="dummy", address="127.0.0.1", username="admin",
                     password=Secret(PASSWORD),
                     options=(("type", "file"), ("status_file", str(status_file))))


# --------------------------------------------------------------------------- heartbeat and fence


def test_heartbeat_over_mutual_tls(lab: Lab, agents: StartAgent) -> None:
    server = agents("node1", "127.88.0.1", boot_id="3f1c7a52-9d44-4b8e-8a55-2d0c1e6f9b10")
    port = server.address[1]

    async def scenario() -> None:
        async with lab.client() as client:
            first = await client.heartbeat("127.88.0.1", port, timeout=5)
            second = await client.heartbeat("127.88.0.1", port, timeout=5)
        assert first.host == "node1"
        assert first.boot_id == second.boot_id == "3f1c7a52-9d44-4b8e-8a55-2d0c1e6f9b10"
        assert 0 <= first.uptime <= second.uptime
        assert first.agent_version
        assert "wti" in first.fence_agent_types
        assert 0 < second.round_trip < 5

    asyncio.run(scenario())


def test_boot_id_is_the_kernels_unless_one_is_given(lab: Lab, agents: StartAgent) -> None:
    """By default an agent reports the kernel's boot id, so restarting the
    agent service is not taken for a reboot; the lab gives each simulated
    host its own (--boot-id)."""
    a = agents("node1", "127.88.0.1")
    b = agents("node2", "127.88.0.2", boot_id="6b0d7e1a-52c4-4f0e-9a59-0c6f1d2b3a44")

    async def scenario() -> tuple[str, str, str]:
        async with lab.client() as client:
            one = await client.heartbeat("127.88.0.1", a.address[1], 5)
            two = await client.heartbeat("127.88.0.1", a.address[1], 5)
            other = await client.heartbeat("127.88.0.2", b.address[1], 5)
        return one.boot_id, two.boot_id, other.boot_id

    one, two, other = asyncio.run(scenario())
    kernel = Path("/proc/sys/kernel/random/boot_id").read_text().strip()
    assert one == two == kernel
    assert other == "6b0d7e1a-52c4-4f0e-9a59-0c6f1d2b3a44"


def test_fence_dummy_through_the_script_driver(lab: Lab, agents: StartAgent,
                                               tmp_path: Path) -> None:
    """The whole path: client -> mTLS -> agent -> ScriptDriver -> fence_dummy -> file."""
    driver = script_driver()
    status_file = tmp_path / "power"
    status_file.write_text("on")
    server = agents("proxy1", "127.88.1.1", drivers=[driver])
    port = server.address[1]
    spec = dummy_spec(status_file)

    async def scenario() -> None:
        async with lab.client() as client:
            beat = await client.heartbeat("127.88.1.1", port, 10)
            assert "dummy" in beat.fence_agent_types

            status = await client.fence("127.88.1.1", port, spec, FenceAction.STATUS, 20)
            assert status.outcome == Outcome.ON, status

            off = await client.fence("127.88.1.1", port, spec, FenceAction.OFF, 20)
            assert off.outcome == Outcome.OFF, off
            assert off.action == FenceAction.OFF
            assert status_file.read_text() == "off"

            verified = await client.fence("127.88.1.1", port, spec, FenceAction.STATUS, 20)
            assert verified.outcome == Outcome.OFF, verified
            assert verified.exit_code == 2  # fence-agents: status off

            on = await client.fence("127.88.1.1", port, spec, FenceAction.ON, 20)
            assert on.outcome == Outcome.ON, on
            assert status_file.read_text() == "on"

    asyncio.run(scenario())


def test_fence_with_an_in_process_driver(lab: Lab, agents: StartAgent) -> None:
    driver = FakeDriver()
    server = agents("node1", "127.88.0.1", drivers=[driver])
    spec = fake_spec(plug="outlet-3", options=(("lanplus", "1"),))

    async def scenario() -> FenceResult:
        async with lab.client() as client:
            return await client.fence("127.88.0.1", server.address[1], spec, FenceAction.OFF, 7.5)

    result = asyncio.run(scenario())
    assert result.outcome == Outcome.OFF and result.exit_code == 0
    received, action, timeout = driver.calls[0]
    assert received == spec and received.password.reveal() == PASSWORD
    assert action == FenceAction.OFF and timeout == 7.5


def test_no_driver_for_the_type_is_an_error_result(lab: Lab, agents: StartAgent) -> None:
    server = agents("node1", "127.88.0.1", drivers=[FakeDriver()])

    async def scenario() -> FenceResult:
        async with lab.client() as client:
            return await client.fence("127.88.0.1", server.address[1], fake_spec("apc"),
                                      FenceAction.STATUS, 5)

    result = asyncio.run(scenario())
    assert result.outcome == Outcome.ERROR
    assert result.message == "no driver for agent type apc on this host"


def test_no_driver_answer_says_why_a_driver_of_the_type_refused(lab: Lab, agents: StartAgent,
                                                              tmp_path: Path) -> None:
    from hostpower.drivers.ipmilan import NativeIpmiDriver
    from hostpower.drivers.script import ScriptDriver

    native = NativeIpmiDriver()
    server = agents("node1", "127.88.0.1", drivers=[native, ScriptDriver(str(tmp_path))])
    spec = fake_spec("ipmilan", options=(("method", "cycle"),))

    async def scenario() -> FenceResult:
        async with lab.client() as client:
            return await client.fence("127.88.0.1", server.address[1], spec,
                                      FenceAction.STATUS, 5)

    try:
        result = asyncio.run(scenario())
    finally:
        native.close()
    assert result.outcome == Outcome.ERROR
    assert result.message == ("no driver for agent type ipmilan on this host: native IPMI "
                              "cannot run this agent: method 'cycle' is not supported (onoff)")


@pytest.mark.parametrize(("change", "field"), [
    (lambda b: b.update(action="explode"), "action"),
    (lambda b: b.update(timeout=0), "timeout"),
    (lambda b: b.update(timeout="soon"), "timeout"),
    (lambda b: b["agent"].update(options=[["lanplus", "1\naction=off"]]), "agent.options"),
    (lambda b: b["agent"].update(options=[["password", "x"]]), "agent.options"),
    (lambda b: b["agent"].update(options=[["just-one"]]), "agent.options"),
    (lambda b: b["agent"].update(port=70000), "agent.port"),
    (lambda b: b["agent"].update(type="../../bin/sh"), "agent.type"),
    (lambda b: b["agent"].update(password=PASSWORD + "\n"), "agent.password"),
    (lambda b: b["agent"].update(colour="red"), "agent.colour"),
    (lambda b: b.pop("agent"), "agent"),
])
def test_bad_fence_requests_are_refused_naming_the_field(
        lab: Lab, agents: StartAgent, change: Callable[[dict], object], field: str) -> None:
    driver = FakeDriver()
    server = agents("node1", "127.88.0.1", drivers=[driver])
    body = {"agent": {"type": "wti", "address": "127.0.0.1", "port": 623, "username": "admin",
                      "password": PASSWORD, "plug": None, "options": []},
            "action": "status", "timeout": 5}
    change(body)
    with httpx.Client(verify=lab.engine_context(), trust_env=False) as http:
        response = http.post(f"{server.url}/v1/fence", json=body, timeout=10)
    assert response.status_code == 400
    answer = response.json()
    assert answer["field"] == field
    assert answer["detail"].startswith(field)
    assert PASSWORD not in response.text
    assert driver.calls == []


def test_invalid_json_and_oversized_bodies(lab: Lab, agents: StartAgent) -> None:
    server = agents("node1", "127.88.0.1")
    with httpx.Client(verify=lab.engine_context(), trust_env=False) as http:
        bad = http.post(f"{server.url}/v1/fence", content=b"{not json", timeout=10)
        huge = http.post(f"{server.url}/v1/fence", content=b"x" * 200_000, timeout=10)
    assert bad.status_code == 400 and bad.json()["field"] == "body"
    assert huge.status_code == 413


def test_refused_request_maps_to_protocol_error_without_the_password(
        lab: Lab, agents: StartAgent) -> None:
    server = agents("node1", "127.88.0.1")
    spec = fake_spec(options=(("lanplus", "1\r"),))  # rejected by the agent

    async def scenario() -> AgentProtocolError:
        async with lab.client() as client:
            with pytest.raises(AgentProtocolError) as caught:
                await client.fence("127.88.0.1", server.address[1], spec, FenceAction.STATUS, 5)
            return caught.value

    error = asyncio.run(scenario())
    assert error.status == 400 and error.field == "agent.options"
    assert "carriage return" in str(error)
    assert PASSWORD not in str(error) and PASSWORD not in repr(error)


# --------------------------------------------------------------------------- who may talk to whom


def _handshake_refused(address: str, port: int, context: ssl.SSLContext) -> str:
    """Raw TLS: the refused client gets the server's alert, in the handshake or on first read."""
    with socket.create_connection((address, port), timeout=10) as raw:
        try:
            with context.wrap_socket(raw, server_hostname=address) as tls:
                tls.sendall(b"GET /v1/heartbeat HTTP/1.1\r\nHost: x\r\n\r\n")
                data = tls.recv(4096)
        except ssl.SSLError as exc:
            return str(exc)
    raise AssertionError(f"not refused: {data!r}")


def test_client_certificate_of_another_ca_is_refused(lab: Lab, agents: StartAgent,
                                                     tmp_path: Path,
                                                     caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, logger="hostpower.hostagent")
    server = agents("node1", "127.88.2.1")
    rogue_ca = pki.CertificateAuthority.load_or_create(tmp_path / "rogue")
    rogue = pki.write_bundle(rogue_ca.issue("hostpower-engine", [], "engine"), tmp_path / "r")

    context = client_ssl_context(lab.engine.ca, rogue.cert, rogue.key)
    assert "unknown ca" in _handshake_refused("127.88.2.1", server.address[1], context)

    async def scenario() -> None:
        async with AgentClient(lab.engine.ca, rogue.cert, rogue.key) as client:
            with pytest.raises(AgentTLSError, match="refused our TLS handshake"):
                await client.heartbeat("127.88.2.1", server.address[1], 5)

    asyncio.run(scenario())
    # The client has its alert before the agent's thread counts the refusal.
    deadline = time.monotonic() + 5
    while server.gate.refused < 2 and time.monotonic() < deadline:
        time.sleep(0.01)
    assert server.gate.accepted == 0 and server.gate.refused == 2
    # The agent says why, for the administrator of the host.
    assert "TLS handshake failed (unable to get local issuer certificate)" in caplog.text


def test_agent_certificate_cannot_command_an_agent(lab: Lab, agents: StartAgent) -> None:
    """CA-signed but the wrong role: OpenSSL rejects its EKU during the handshake."""
    driver = FakeDriver()
    server = agents("node1", "127.88.2.1", drivers=[driver])
    peer_dir = lab.enroll("node2", "127.88.2.2")
    context = client_ssl_context(peer_dir / "ca.crt", peer_dir / "agent.crt",
                                 peer_dir / "agent.key")
    assert "unsupported certificate" in _handshake_refused("127.88.2.1", server.address[1],
                                                           context)

    async def scenario() -> None:
        async with AgentClient(peer_dir / "ca.crt", peer_dir / "agent.crt",
                               peer_dir / "agent.key") as client:
            with pytest.raises(AgentTLSError):
                await client.fence("127.88.2.1", server.address[1], fake_spec(),
                                   FenceAction.OFF, 5)

    asyncio.run(scenario())
    assert driver.calls == [] and server.gate.accepted == 0


def test_client_certificate_without_engine_role_gets_403(
        lab: Lab, agents: StartAgent, tmp_path: Path) -> None:
    """A CA-signed certificate that passes OpenSSL (clientAuth EKU) but is not the engine's."""
    driver = FakeDriver()
    server = agents("node1", "127.88.2.1", drivers=[driver])
    ca_key = serialization.load_pem_private_key((tmp_path / "ca" / "ca.key").read_bytes(), None)
    key = ec.generate_private_key(ec.SECP256R1())
    now = dt.datetime.now(dt.timezone.utc)
    cert = (x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.ORGANIZATIONAL_UNIT_NAME, "agent"),
                                     x509.NameAttribute(NameOID.COMMON_NAME, "node2")]))
            .issuer_name(lab.ca.cert.subject).public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(minutes=1))
            .not_valid_after(now + dt.timedelta(days=1))
            .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.CLIENT_AUTH]), False)
            .sign(ca_key, hashes.SHA256()))
    (tmp_path / "x.crt").write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    (tmp_path / "x.key").write_bytes(key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption()))

    async def scenario() -> None:
        async with AgentClient(lab.engine.ca, tmp_path / "x.crt", tmp_path / "x.key") as client:
            with pytest.raises(AgentProtocolError, match="is not an engine certificate") as caught:
                await client.fence("127.88.2.1", server.address[1], fake_spec(),
                                   FenceAction.OFF, 5)
            assert caught.value.status == 403

    asyncio.run(scenario())
    assert driver.calls == []
    assert server.gate.refused == 1 and server.gate.accepted == 0


def test_client_without_certificate_is_refused(lab: Lab, agents: StartAgent) -> None:
    server = agents("node1", "127.88.2.1")
    context = ssl.create_default_context(cafile=str(lab.engine.ca))
    reason = _handshake_refused("127.88.2.1", server.address[1], context)
    assert "certificate required" in reason
    with httpx.Client(verify=context, trust_env=False) as http:
        with pytest.raises(httpx.HTTPError):
            http.get(f"{server.url}/v1/heartbeat", timeout=5)
    assert server.gate.accepted == 0


def test_client_refuses_an_agent_whose_certificate_names_another_address(
        lab: Lab, agents: StartAgent) -> None:
    elsewhere = lab.enroll("node9", "127.88.3.9")  # issued for .9, served on .10
    server = agents("node10", "127.88.3.10", cert_dir=elsewhere)

    async def scenario() -> None:
        async with lab.client() as client:
            with pytest.raises(AgentTLSError, match="IP address mismatch"):
                await client.heartbeat("127.88.3.10", server.address[1], 5)

    asyncio.run(scenario())


def test_client_refuses_an_engine_certificate_posing_as_agent(lab: Lab, agents: StartAgent,
                                                             tmp_path: Path) -> None:
    impostor = pki.write_bundle(lab.ca.issue("impostor", ["127.88.3.11"], "engine"),
                                tmp_path / "impostor")
    with pytest.raises(AgentStartError, match="not an agent certificate"):
        server_ssl_context(impostor.cert, impostor.key, impostor.ca)
    # Forced past our own start-up check, OpenSSL on the engine side still says no.
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(impostor.cert, impostor.key)
    context.load_verify_locations(impostor.ca)
    context.verify_mode = ssl.CERT_REQUIRED
    server = agents("impostor", "127.88.3.11", ssl_context=context)

    async def scenario() -> None:
        async with lab.client() as client:
            with pytest.raises(AgentTLSError, match="unsuitable certificate purpose"):
                await client.heartbeat("127.88.3.11", server.address[1], 5)

    asyncio.run(scenario())


def test_nothing_listening_is_unreachable(lab: Lab) -> None:
    with socket.socket() as probe:
        probe.bind(("127.88.4.1", 0))
        port = probe.getsockname()[1]  # closed again before the call: refused

    async def scenario() -> float:
        async with lab.client(connect_timeout=2) as client:
            t0 = time.monotonic()
            with pytest.raises(AgentUnreachable, match="Connection refused"):
                await client.heartbeat("127.88.4.1", port, 5)
            return time.monotonic() - t0

    assert asyncio.run(scenario()) < 2


# --------------------------------------------------------------------------- isolation and pooling


def test_hung_agent_costs_its_own_timeout_only(lab: Lab, agents: StartAgent) -> None:
    hung = agents("stuck", "127.88.5.1")
    healthy_driver = FakeDriver()
    healthy = agents("fine", "127.88.5.2", drivers=[healthy_driver])
    hung.agent.faults.hang()
    timeout = 1.5

    async def scenario() -> None:
        async with lab.client(max_connections_per_agent=2, fence_margin=0.5) as client:
            t0 = time.monotonic()

            async def timed(coro: object) -> tuple[float, object]:
                try:
                    result: object = await coro  # type: ignore[misc]
                except AgentError as exc:
                    result = exc
                return time.monotonic() - t0, result

            # More calls to the hung agent than its pool has connections.
            stuck_calls = [timed(client.heartbeat("127.88.5.1", hung.address[1], timeout))
                           for _ in range(4)]
            stuck_calls.append(timed(client.fence("127.88.5.1", hung.address[1], fake_spec(),
                                                  FenceAction.STATUS, timeout)))
            healthy_calls = [timed(client.heartbeat("127.88.5.2", healthy.address[1], timeout)),
                             timed(client.fence("127.88.5.2", healthy.address[1], fake_spec(),
                                                FenceAction.STATUS, timeout))]
            results = await asyncio.gather(*stuck_calls, *healthy_calls)

        stuck, fine = results[:5], results[5:]
        for elapsed, result in fine:
            assert not isinstance(result, Exception), result
            assert elapsed < 0.5 * timeout, f"healthy agent took {elapsed:.3f}s"
        for elapsed, result in stuck[:4]:
            assert isinstance(result, AgentTimeout), result
            assert timeout * 0.9 <= elapsed < timeout + 1.0, elapsed
        fence_elapsed, fence_result = stuck[4]
        assert isinstance(fence_result, AgentTimeout)
        assert fence_elapsed < timeout + client.fence_margin + 1.0

    asyncio.run(scenario())
    hung.agent.faults.release()


def test_slow_fence_does_not_delay_heartbeats(lab: Lab, agents: StartAgent) -> None:
    driver = FakeDriver()
    driver.proceed.clear()  # the device "thinks" until we let it go
    server = agents("node1", "127.88.6.1", drivers=[driver])
    port = server.address[1]

    async def scenario() -> None:
        async with lab.client() as client:
            fence = asyncio.create_task(
                client.fence("127.88.6.1", port, fake_spec(), FenceAction.OFF, 30))
            await asyncio.to_thread(driver.running.wait, 10)
            t0 = time.monotonic()
            for _ in range(3):
                await client.heartbeat("127.88.6.1", port, 5)
            assert time.monotonic() - t0 < 1.0
            assert not fence.done()
            driver.proceed.set()
            result = await fence
            assert result.outcome == Outcome.OFF

    asyncio.run(scenario())


def test_connections_are_reused(lab: Lab, agents: StartAgent) -> None:
    server = agents("node1", "127.88.7.1")
    port = server.address[1]

    async def scenario() -> list[float]:
        async with lab.client() as client:
            times = []
            for _ in range(20):
                times.append((await client.heartbeat("127.88.7.1", port, 5)).round_trip)
            await client.fence("127.88.7.1", port, fake_spec(), FenceAction.STATUS, 5)
            return times

    times = asyncio.run(scenario())
    # One TLS handshake for the 20 heartbeats (their own lean channel) and one
    # for the fence command (its own pooled channel): 2 handshakes for 21 requests.
    assert server.gate.accepted == 2
    assert sorted(times)[len(times) // 2] < 0.05


def test_fence_pool_bounds_connections_and_never_reuses_an_unanswered_one(
        lab: Lab, agents: StartAgent) -> None:
    """One connection allowed: a second command waits for it within its own
    deadline; a command that timed out leaves its connection closed, so its
    late answer is never taken for the next command's."""
    driver = FakeDriver()
    server = agents("node1", "127.88.7.2", drivers=[driver])
    port = server.address[1]

    async def scenario() -> None:
        async with lab.client(max_connections_per_agent=1, fence_margin=0.2) as client:
            driver.proceed.clear()  # the device holds the first command
            first = asyncio.create_task(
                client.fence("127.88.7.2", port, fake_spec(), FenceAction.OFF, 30))
            await asyncio.to_thread(driver.running.wait, 10)
            with pytest.raises(AgentTimeout, match="every connection to it stayed busy"):
                await client.fence("127.88.7.2", port, fake_spec(), FenceAction.STATUS, 0.3)
            queued = asyncio.create_task(
                client.fence("127.88.7.2", port, fake_spec(), FenceAction.ON, 30))
            driver.proceed.set()
            assert (await first).outcome == Outcome.OFF
            assert (await queued).outcome == Outcome.ON  # on the connection the first freed
            assert server.gate.accepted == 1

            server.agent.faults.hang()  # the agent holds the next command unanswered
            with pytest.raises(AgentTimeout, match="no answer"):
                await client.fence("127.88.7.2", port, fake_spec(), FenceAction.OFF, 0.1)
            server.agent.faults.release()  # it now answers "off" to a closed connection
            result = await client.fence("127.88.7.2", port, fake_spec(), FenceAction.ON, 30)
            assert result.action == FenceAction.ON and result.outcome == Outcome.ON
            assert server.gate.accepted == 2

    asyncio.run(scenario())


def test_a_pooled_connection_the_agent_closed_is_not_reused(lab: Lab,
                                                             agents: StartAgent) -> None:
    """The agent restarts between two commands, before the engine's event loop
    has run: the second command goes on a new connection, not the dead one."""
    first = agents("node1", "127.88.7.3")
    port = first.address[1]

    async def scenario() -> None:
        async with lab.client() as client:
            await client.fence("127.88.7.3", port, fake_spec(), FenceAction.STATUS, 5)
            assert first.stop(timeout=5)  # blocks the loop: it cannot see the close
            second = AgentServer(first.agent, bind_address="127.88.7.3", port=port).start()
            try:
                result = await client.fence("127.88.7.3", port, fake_spec(), FenceAction.OFF, 5)
                assert result.outcome == Outcome.OFF
                assert second.gate.accepted == 1
            finally:
                assert second.stop(timeout=5)

    asyncio.run(scenario())


def test_stop_is_bounded_with_held_requests_and_open_connections(lab: Lab,
                                                                 agents: StartAgent) -> None:
    server = agents("node1", "127.88.8.1")
    server.agent.faults.hang()
    errors: list[BaseException] = []

    async def pending_call() -> None:
        async with lab.client() as client:
            try:
                await client.heartbeat("127.88.8.1", server.address[1], 20)
            except AgentError as exc:
                errors.append(exc)

    caller = threading.Thread(target=asyncio.run, args=(pending_call(),))
    caller.start()
    wait_until(lambda: server.agent.faults.waiting == 1, 10, "a held request", step=0.005)
    t0 = time.monotonic()
    assert server.stop(timeout=5)
    assert time.monotonic() - t0 < 5
    caller.join(20)
    assert not caller.is_alive()


# --------------------------------------------------------------------------- secrets and the daemon


def test_password_never_reaches_the_logs(lab: Lab, agents: StartAgent, tmp_path: Path,
                                         caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    echoing = FakeDriver(types=("wti",), message=f"device said: bad password {PASSWORD}")
    server = agents("node1", "127.88.9.1", drivers=[echoing, script_driver()])
    status_file = tmp_path / "power"
    status_file.write_text("on")
    port = server.address[1]

    async def scenario() -> None:
        async with lab.client() as client:
            real = await client.fence("127.88.9.1", port, dummy_spec(status_file),
                                      FenceAction.OFF, 20)
            assert real.outcome == Outcome.OFF
            echoed = await client.fence("127.88.9.1", port, fake_spec(), FenceAction.STATUS, 5)
            assert PASSWORD not in echoed.message and "********" in echoed.message
            with pytest.raises(AgentProtocolError):
                await client.fence("127.88.9.1", port,
                                   fake_spec(options=(("x", "1\n"),)), FenceAction.STATUS, 5)

    asyncio.run(scenario())
    fence_lines = [r.getMessage() for r in caplog.records if r.getMessage().startswith("fence ")]
    assert any("type=dummy action=off outcome=off" in line for line in fence_lines), fence_lines
    assert any("fence refused" in line for line in fence_lines)
    for record in caplog.records:
        assert PASSWORD not in record.getMessage()
        assert PASSWORD not in repr(record.args)
    assert PASSWORD not in caplog.text


def _read_lines(stream: object, into: queue.Queue) -> None:
    for line in stream:  # type: ignore[attr-defined]
        into.put(line)
    into.put(None)


def test_daemon_serves_fences_and_stops_on_sigterm(lab: Lab, tmp_path: Path) -> None:
    """`python -m hostpower.hostagent.daemon` as the lab and a real host start it."""
    script_driver()  # skips or fails clearly if the fence agents are missing
    cert_dir = lab.enroll("daemon1", "127.88.10.1")
    status_file = tmp_path / "power"
    status_file.write_text("on")
    env = dict(os.environ, PYTHONPATH=str(SRC) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    process = subprocess.Popen(
        [sys.executable, "-m", "hostpower.hostagent.daemon", "--bind", "127.88.10.1:0",
         "--host-name", "daemon1", "--cert-dir", str(cert_dir), "--log-level", "DEBUG",
         "--fence-agents-path", str(FENCE_DUMMY.parent)],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env)
    lines: queue.Queue = queue.Queue()
    reader = threading.Thread(target=_read_lines, args=(process.stdout, lines), daemon=True)
    reader.start()
    output: list[str] = []
    try:
        port = None
        deadline = time.monotonic() + 30
        while port is None:
            line = lines.get(timeout=max(0.1, deadline - time.monotonic()))
            assert line is not None, "".join(output)
            output.append(line)
            if "listening on https://127.88.10.1:" in line:
                port = int(line.rsplit(":", 1)[1].strip().rstrip("/"))

        async def scenario() -> None:
            async with lab.client() as client:
                beat = await client.heartbeat("127.88.10.1", port, 10)
                assert beat.host == "daemon1" and "dummy" in beat.fence_agent_types
                off = await client.fence("127.88.10.1", port, dummy_spec(status_file),
                                         FenceAction.OFF, 20)
                assert off.outcome == Outcome.OFF

        asyncio.run(scenario())
        assert status_file.read_text() == "off"
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=15) == 0
    finally:
        if process.poll() is None:
            process.kill()
            process.wait(10)
    reader.join(10)
    while (line := lines.get_nowait()) is not None:
        output.append(line)
    text = "".join(output)
    assert "type=dummy action=off outcome=off" in text, text
    assert PASSWORD not in text


def test_daemon_refuses_to_start_without_certificates(tmp_path: Path) -> None:
    env = dict(os.environ, PYTHONPATH=str(SRC) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    done = subprocess.run(
        [sys.executable, "-m", "hostpower.hostagent.daemon", "--bind", "127.88.10.2:0",
         "--cert-dir", str(tmp_path / "none")],
        capture_output=True, text=True, env=env, timeout=60)
    assert done.returncode == 1
    assert "TLS setup" in done.stderr


def test_heartbeat_timeouts_around_the_tls_handshake_never_break_a_later_heartbeat() -> None:
    """Regression (found by bench 7): a timeout striking just as the TLS
    handshake completed closed a socket that asyncio's transport still owned;
    a later connection given that descriptor raised RuntimeError instead of
    an AgentError. bench/repro_heartbeat_fd.py reproduced it on its first
    attempt; it must now run its 3,000 attempts through."""
    import subprocess
    import sys

    done = subprocess.run([sys.executable, "-m", "bench.repro_heartbeat_fd"], capture_output=True,
                          text=True, timeout=240, cwd=Path(__file__).resolve().parent.parent)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "not reproduced in" in done.stdout, done.stdout[-2000:]


def test_daemon_tells_systemd_it_is_ready_alive_and_stopping(lab: Lab, tmp_path: Path) -> None:
    """Under `Type=notify` and `WatchdogSec=` (deploy/hostpower-agent.service)."""
    from servekit import NotifySocket

    cert_dir = lab.enroll("daemon3", "127.88.10.3")
    manager = NotifySocket(tmp_path / "notify")
    env = manager.env(dict(os.environ, PYTHONPATH=str(SRC) + os.pathsep
                           + os.environ.get("PYTHONPATH", "")), watchdog_usec=1_200_000)
    process = subprocess.Popen(
        [sys.executable, "-m", "hostpower.hostagent.daemon", "--bind", "127.88.10.3:0",
         "--host-name", "daemon3", "--cert-dir", str(cert_dir)],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env)
    try:
        manager.expect("READY=1")
        manager.expect("WATCHDOG=1", timeout=5)
        process.send_signal(signal.SIGTERM)
        manager.expect("STOPPING=1", timeout=15)
        assert process.wait(timeout=15) == 0
    finally:
        if process.poll() is None:
            process.kill()
            process.wait(10)
        manager.close()
