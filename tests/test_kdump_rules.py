"""kdump detection, the pure rules (model/kdump.py): the fence_kdump message
and the timing of a detection, table-driven."""

from __future__ import annotations

import struct
import subprocess
import socket
from pathlib import Path

import pytest

from hostpower.config import Config
from hostpower.model.kdump import (
    MAGIC, KdumpTiming, Watch, encode_message, heartbeat_interval, listener_alive,
    message_problem, next_look, observe, reboot_left, same_session,
)

FENCE_KDUMP_SEND = Path("/usr/libexec/fence-agents/fence_kdump_send")


@pytest.mark.parametrize("data, problem", [
    (bytes.fromhex("402a301b01000000"), None),             # x86 / ARM sender
    (bytes.fromhex("1b302a4000000001"), None),             # s390x / POWER sender
    (bytes.fromhex("402a301b01000000") + b"extra", None),  # trailing bytes ignored, as oVirt
    (b"", "0 bytes, a message has 8"),
    (bytes.fromhex("402a301b010000"), "7 bytes, a message has 8"),
    (bytes.fromhex("402a301b02000000"), "version 2, only 1 is known"),
    (bytes.fromhex("402a301b00000001"), "version 16777216, only 1 is known"),  # mixed orders
    (b"GET / HTTP/1.0\r\n", "no fence_kdump magic (starts with 47455420)"),
])
def test_message_problem(data: bytes, problem: str | None) -> None:
    assert message_problem(data) == problem


def test_encoded_messages_are_what_a_sender_of_each_byte_order_sends() -> None:
    assert encode_message() == bytes.fromhex("402a301b01000000")
    assert encode_message("big") == struct.pack(">II", MAGIC, 1)
    assert message_problem(encode_message("big")) is None


def test_the_real_fence_kdump_send_sends_a_valid_message() -> None:
    """Debian's fence_kdump_send (fence-agents) against a socket: what the
    parser accepts is what the real sender sends."""
    if not FENCE_KDUMP_SEND.exists():
        pytest.skip("fence-agents is not installed")
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind(("127.0.0.1", 0))
        sock.settimeout(5)
        port = sock.getsockname()[1]
        subprocess.run([str(FENCE_KDUMP_SEND), "-p", str(port), "-c", "1", "127.0.0.1"],
                       check=True, timeout=10, capture_output=True)
        data, _ = sock.recvfrom(64)
    assert data == encode_message()
    assert message_problem(data) is None


def test_messages_closer_than_the_finished_timeout_make_one_session() -> None:
    assert same_session(5, 30) and not same_session(30, 30) and not same_session(None, 30)


def test_listener_liveness_and_heartbeat() -> None:
    assert listener_alive(10, 90) and not listener_alive(90, 90) and not listener_alive(None, 90)
    assert heartbeat_interval(90) == 30 and heartbeat_interval(3) == 1
    assert heartbeat_interval(600) == 30


T = KdumpTiming(started_timeout=30, finished_after=10, reboot_within=60)


@pytest.mark.parametrize("watch, waited, since_last, answering, expected", [
    # waiting for a first message
    (Watch.AWAITING, 0, None, False, Watch.AWAITING),
    (Watch.AWAITING, 29.9, None, False, Watch.AWAITING),
    (Watch.AWAITING, 30, None, False, Watch.NOT_DETECTED),
    (Watch.AWAITING, 5, 2, False, Watch.DUMPING),           # messages: dumping
    (Watch.AWAITING, 0, 9.9, False, Watch.DUMPING),         # a session already under way
    (Watch.AWAITING, 0, 15, False, Watch.REBOOTING),        # dumped before we looked: rebooting
    (Watch.AWAITING, 30, 15, False, Watch.REBOOTING),
    (Watch.AWAITING, 0, 70, False, Watch.AWAITING),         # an old dump does not count
    (Watch.AWAITING, 30, 70, False, Watch.NOT_DETECTED),
    (Watch.AWAITING, 3, None, True, Watch.CAME_BACK),       # it answers again
    # dumping
    (Watch.DUMPING, 600, 1, False, Watch.DUMPING),          # however long it takes
    (Watch.DUMPING, 600, 10, False, Watch.REBOOTING),       # silence: the dump is over
    (Watch.DUMPING, 600, 70, False, Watch.NO_REBOOT),       # silence for longer than both
    (Watch.DUMPING, 600, 1, True, Watch.CAME_BACK),         # an answering agent wins
    # rebooting after the dump
    (Watch.REBOOTING, 100, 30, False, Watch.REBOOTING),
    (Watch.REBOOTING, 100, 69.9, False, Watch.REBOOTING),
    (Watch.REBOOTING, 100, 70, False, Watch.NO_REBOOT),     # finished 10 + reboot 60
    (Watch.REBOOTING, 100, 30, True, Watch.CAME_BACK),
    (Watch.REBOOTING, 100, 2, False, Watch.DUMPING),        # messages again: dumping again
    (Watch.REBOOTING, 100, None, False, Watch.NO_REBOOT),   # the record is gone
    # final states stay
    (Watch.NO_REBOOT, 0, 1, True, Watch.NO_REBOOT),
    (Watch.CAME_BACK, 0, 1, False, Watch.CAME_BACK),
    (Watch.NOT_DETECTED, 0, 1, False, Watch.NOT_DETECTED),
])
def test_observe(watch: Watch, waited: float, since_last: float | None, answering: bool,
                 expected: Watch) -> None:
    assert observe(watch, waited, since_last, answering, T) is expected


def test_no_reboot_time_at_all_goes_on_as_soon_as_the_dump_ends() -> None:
    t = KdumpTiming(30, 10, 0)
    assert observe(Watch.DUMPING, 60, 10, False, t) is Watch.NO_REBOOT


def test_reboot_left_counts_from_the_end_of_the_dump() -> None:
    assert reboot_left(10, T) == 60
    assert reboot_left(40, T) == 30
    assert reboot_left(100, T) == 0
    assert reboot_left(None, T) == 0


def test_timing_comes_from_the_configuration_with_ovirts_defaults() -> None:
    config = Config()
    assert KdumpTiming.from_config(config) == KdumpTiming(30, 30, 600)
    assert config["FenceKdumpDestinationPort"] == 7410
    assert config["FenceKdumpMessageInterval"] == 5
    assert config["FenceKdumpListenerTimeout"] == 90
    assert config["FenceKdumpDestinationAddress"] == ""


@pytest.mark.parametrize("watch, waited, since_last, expected", [
    (Watch.AWAITING, 0, None, 5),             # every FenceKdumpMessageInterval
    (Watch.AWAITING, 28, None, 2.05),         # KdumpStartedTimeout ends in 2 s
    (Watch.AWAITING, 31, None, 0.05),
    (Watch.DUMPING, 100, 1, 5),
    (Watch.DUMPING, 100, 8, 2.05),            # the dump would be over in 2 s
    (Watch.REBOOTING, 100, 68, 2.05),         # KdumpRebootTimeout ends in 2 s
    (Watch.REBOOTING, 100, 20, 5),
])
def test_next_look_never_oversleeps_a_deadline(watch: Watch, waited: float,
                                               since_last: float | None, expected: float) -> None:
    assert next_look(watch, waited, since_last, T, 5) == pytest.approx(expected)


def test_lab_fault_options_and_the_sender_command() -> None:
    from hostpower.lab.errors import LabError
    from hostpower.lab.kdump import KdumpOptions, sender_command

    assert KdumpOptions.parse(None) == KdumpOptions(7410, 1, 30.0, None, False)
    opts = KdumpOptions.parse({"port": "7411", "interval": "2", "duration": "9",
                               "reboot": "true"})
    assert (opts.port, opts.interval, opts.duration, opts.reboot, opts.count) == (
        7411, 2, 9.0, True, 5)                      # messages at 0, 2, 4, 6, 8 s
    assert KdumpOptions.parse({"duration": 0}).count == 0   # until cleared
    assert sender_command(["ip", "netns", "exec", "hpl0-h2"], "198.18.0.1", opts) == [
        "ip", "netns", "exec", "hpl0-h2", "/usr/libexec/fence-agents/fence_kdump_send",
        "-p", "7411", "-i", "2", "-c", "5", "198.18.0.1"]
    for bad in ({"interval": 0}, {"port": 70000}, {"duration": -1}, {"port": "x"},
                {"colour": "red"}):
        with pytest.raises(LabError):
            KdumpOptions.parse(bad)
