"""The virtual BMC against real IPMI clients: ipmitool (another process) and pyghmi.

Every BMC listens on its own 127.x.y.z address and a free port the kernel
picks (port 0), and is stopped by the test that started it.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from pyghmi.ipmi.command import Command

from hostpower.lab.bmc import VirtualBmc
from labkit import virtual_bmcs

USER = "admin"
PASSWORD = "vbmc-Secret-42"

StartBmc = Callable[..., VirtualBmc]


def require_ipmitool() -> str:
    from conftest import require

    path = shutil.which("ipmitool")
    require(path is not None, "ipmitool is not installed (apt-get install ipmitool)")
    assert path is not None
    return path


@pytest.fixture
def bmcs() -> Iterator[StartBmc]:
    """Start virtual BMCs on free ports; all are stopped after the test."""
    with virtual_bmcs(user=USER, password=PASSWORD) as start:
        yield start


@pytest.fixture
def password_file(tmp_path: Path) -> Path:
    path = tmp_path / "ipmi-password"
    path.write_text(PASSWORD)
    path.chmod(0o600)
    return path


def ipmitool(bmc: VirtualBmc | tuple[str, int], password_file: Path, *command: str,
             user: str = USER, retries: str = "2") -> subprocess.CompletedProcess[str]:
    """`ipmitool -I lanplus ... chassis power <x>`, the password from a file."""
    address, port = (bmc.address, bmc.port) if isinstance(bmc, VirtualBmc) else bmc
    return subprocess.run(
        [require_ipmitool(), "-I", "lanplus", "-H", address, "-p", str(port),
         "-U", user, "-f", str(password_file), "-R", retries, "-N", "1", *command],
        capture_output=True, text=True, timeout=30)


def pyghmi_client(bmc: VirtualBmc, password: str = PASSWORD) -> Command:
    # Bytes credentials: FIELD-NOTES pitfall 2.
    return Command(bmc=bmc.address, userid=USER.encode(), password=password.encode(),
                   port=bmc.port)


def test_ipmitool_reads_and_switches_power(bmcs: StartBmc, password_file: Path) -> None:
    bmc = bmcs("127.0.81.1", state="on")

    status = ipmitool(bmc, password_file, "chassis", "power", "status")
    assert status.returncode == 0, status.stderr
    assert status.stdout.strip() == "Chassis Power is on"

    off = ipmitool(bmc, password_file, "chassis", "power", "off")
    assert off.returncode == 0, off.stderr
    assert bmc.power_state == "off"
    assert ipmitool(bmc, password_file, "chassis", "power", "status").stdout.strip() == \
        "Chassis Power is off"

    on = ipmitool(bmc, password_file, "chassis", "power", "on")
    assert on.returncode == 0, on.stderr
    assert bmc.power_state == "on"

    counts = bmc.counters()
    assert (counts.status, counts.on, counts.off, counts.reset) == (2, 1, 1, 0)
    # ipmitool opens and closes one RMCP+ session per invocation.
    assert counts.logins == counts.logouts == 4
    assert bmc.session_count() == 0


def test_pyghmi_client_logs_in_with_its_sha256_first_proposal(bmcs: StartBmc) -> None:
    """pyghmi proposes SHA-256 first; the BMC refuses it and the client falls back to SHA-1."""
    bmc = bmcs("127.0.81.2", state="off")
    client = pyghmi_client(bmc)
    try:
        assert client.get_power() == {"powerstate": "off"}
        client.set_power("on", wait=False)
        assert bmc.power_state == "on"
        assert client.get_power() == {"powerstate": "on"}
        # A second client with the same (bytes) credentials shares the session.
        again = pyghmi_client(bmc)
        assert again.get_power() == {"powerstate": "on"}
        assert bmc.counters().logins == 1
    finally:
        client.ipmi_session.logout()
    deadline = time.monotonic() + 5
    while bmc.counters().logouts < 1 and time.monotonic() < deadline:
        time.sleep(0.01)
    assert bmc.counters().logouts == 1


def test_reset_and_cycle_are_counted_and_reported(bmcs: StartBmc, password_file: Path) -> None:
    changes: list[str] = []
    bmc = bmcs("127.0.81.3", state="on", on_power_change=changes.append)

    assert ipmitool(bmc, password_file, "chassis", "power", "cycle").returncode == 0
    assert ipmitool(bmc, password_file, "chassis", "power", "reset").returncode == 0
    assert changes == ["off", "on", "off", "on"]  # a simulated host sees each reboot
    assert bmc.power_state == "on"

    assert ipmitool(bmc, password_file, "chassis", "power", "off").returncode == 0
    # IPMI: power cycle of a chassis that is off is refused (completion code 0xD5).
    refused = ipmitool(bmc, password_file, "chassis", "power", "cycle")
    assert refused.returncode != 0
    assert bmc.power_state == "off"
    assert changes == ["off", "on", "off", "on", "off"]
    assert bmc.counters().reset == 3

    # Setting the state by hand is a power button, not a command: no callback, no count.
    bmc.power_state = "on"
    assert changes[-1] == "off" and bmc.counters().on == 0


def test_not_answering_drops_every_packet(bmcs: StartBmc, password_file: Path) -> None:
    bmc = bmcs("127.0.81.4", state="on")
    bmc.answering = False

    started = time.monotonic()
    failed = ipmitool(bmc, password_file, "chassis", "power", "status", retries="1")
    assert failed.returncode != 0
    assert time.monotonic() - started < 10
    counts = bmc.counters()
    assert counts.dropped > 0
    assert (counts.status, counts.logins) == (0, 0)

    bmc.answering = True
    healed = ipmitool(bmc, password_file, "chassis", "power", "status")
    assert healed.returncode == 0 and "is on" in healed.stdout


def test_wrong_password_and_unknown_user_fail_fast(bmcs: StartBmc, tmp_path: Path,
                                                   password_file: Path) -> None:
    bmc = bmcs("127.0.81.5", state="on")
    wrong = tmp_path / "wrong"
    wrong.write_text("not-the-password")

    started = time.monotonic()
    assert ipmitool(bmc, wrong, "chassis", "power", "status").returncode != 0
    assert ipmitool(bmc, password_file, "chassis", "power", "status",
                    user="nobody").returncode != 0
    assert time.monotonic() - started < 3
    assert bmc.counters().status == 0


def test_two_bmcs_on_one_port_keep_their_sessions_apart(bmcs: StartBmc) -> None:
    """pyghmi's own server routes sessions by client address only; ours by BMC too."""
    first = bmcs("127.0.81.6", state="on")
    second = VirtualBmc("127.0.81.7", first.port, USER, PASSWORD, state="off")
    try:
        second.start()
    except OSError:
        pytest.skip(f"port {first.port} already taken on 127.0.81.7")
    try:
        one, two = pyghmi_client(first), pyghmi_client(second)
        for _ in range(3):
            assert one.get_power()["powerstate"] == "on"
            assert two.get_power()["powerstate"] == "off"
        one.ipmi_session.logout()
        two.ipmi_session.logout()
    finally:
        second.stop()


def test_overlapping_power_commands_are_measured(bmcs: StartBmc, password_file: Path) -> None:
    bmc = bmcs("127.0.81.8", state="on", command_delay=0.5)

    assert ipmitool(bmc, password_file, "chassis", "power", "on").returncode == 0
    assert bmc.max_in_flight == 1

    results: list[int] = []
    threads = [threading.Thread(target=lambda c=c: results.append(
        ipmitool(bmc, password_file, "chassis", "power", c).returncode)) for c in ("off", "on")]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert results == [0, 0]
    assert bmc.max_in_flight == 2


def test_stop_is_prompt_and_leaves_no_thread_or_socket(bmcs: StartBmc) -> None:
    bmc = bmcs("127.0.81.9", state="on", command_delay=5)
    port = bmc.port
    client = pyghmi_client(bmc)  # an open session: one session thread
    assert client.get_power()["powerstate"] == "on"
    assert bmc.session_count() == 1
    # A power command sleeping in its 5 s delay must not hold stop() up.
    threading.Thread(target=lambda: _ignore(client.set_power, "off"), daemon=True).start()
    time.sleep(0.2)

    started = time.monotonic()
    bmc.stop()
    assert time.monotonic() - started < 1.5
    assert not bmc.running
    assert not [t.name for t in threading.enumerate()
                if t.name.startswith("vbmc-") and f"127.0.81.9:{port}" in t.name]
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.81.9", port))  # the port is free again


def _ignore(fn: Callable[..., object], *args: object) -> None:
    try:
        fn(*args)
    except Exception:
        pass


def test_runs_as_a_child_process_until_sigterm(tmp_path: Path, password_file: Path) -> None:
    """`python -m hostpower.lab.bmc`: password from a file, never in argv; stops on SIGTERM."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "hostpower.lab.bmc", "--address", "127.0.81.10", "--port", "0",
         "--user", USER, "--password-file", str(password_file), "--state", "on"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None
        ready = proc.stdout.readline().strip()  # "listening on A:P"
        assert ready.startswith("listening on 127.0.81.10:"), ready + proc.stderr.read()
        port = int(ready.rsplit(":", 1)[1])
        cmdline = Path(f"/proc/{proc.pid}/cmdline").read_bytes()
        assert PASSWORD.encode() not in cmdline

        status = ipmitool(("127.0.81.10", port), password_file, "chassis", "power", "status")
        assert status.returncode == 0 and "is on" in status.stdout

        started = time.monotonic()
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=5) == 0
        assert time.monotonic() - started < 5
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def test_child_process_reads_the_password_from_stdin() -> None:
    proc = subprocess.Popen(
        [sys.executable, "-m", "hostpower.lab.bmc", "--address", "127.0.81.11", "--port", "0",
         "--user", USER, "--password-file", "-"],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert proc.stdin is not None and proc.stdout is not None
        proc.stdin.write(PASSWORD + "\n")
        proc.stdin.close()
        ready = proc.stdout.readline().strip()
        assert ready.startswith("listening on 127.0.81.11:"), ready
        port = int(ready.rsplit(":", 1)[1])
        client = Command(bmc="127.0.81.11", userid=USER.encode(), password=PASSWORD.encode(),
                         port=port)
        assert client.get_power()["powerstate"] == "off"  # --state defaults to off
        client.ipmi_session.logout()
        os.kill(proc.pid, signal.SIGTERM)
        assert proc.wait(timeout=5) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
