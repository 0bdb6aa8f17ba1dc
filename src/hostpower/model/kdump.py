"""kdump detection, the pure part: the fence_kdump message and the timing rules.

A host whose kernel crashed boots a capture kernel (kdump) that writes the
crash dump and then reboots the host. Its initramfs runs `fence_kdump_send`
(ClusterLabs fence-agents), which sends a small UDP datagram every few
seconds to the addresses it was given, port 7410 by default, for as long as
the dump lasts. The datagram is two 32-bit words in the sender's byte order:
the magic 0x1B302A40 and the version 1 (8 bytes).

The engine's listener (kdumplistener.py) stores, per host, the time of the
first and the last message of the current *session*: messages less than
`KdumpFinishedTimeout` apart belong to one session; a longer silence ends
it (the dump is over). The precaution (fencing/kdump.py) reads that record
and follows `observe` below. Times are seconds; nothing here reads a clock.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from enum import StrEnum

MAGIC = 0x1B302A40
VERSION = 1
MESSAGE_SIZE = 8
DEFAULT_PORT = 7410


def encode_message(byteorder: str = "little") -> bytes:
    """A version-1 message as fence_kdump_send sends it from a host of that byte order."""
    return struct.pack("<II" if byteorder == "little" else ">II", MAGIC, VERSION)


def message_problem(data: bytes) -> str | None:
    """None for a valid fence_kdump message; otherwise what is wrong with it.

    Accepted: at least 8 bytes (like oVirt's listener, bytes after the
    eighth are ignored), the magic then version 1, both little-endian (x86,
    ARM) or both big-endian (s390x, POWER) — the sender writes them in its
    own byte order."""
    if len(data) < MESSAGE_SIZE:
        return f"{len(data)} bytes, a message has {MESSAGE_SIZE}"
    for fmt in ("<II", ">II"):
        magic, version = struct.unpack_from(fmt, data)
        if magic == MAGIC:
            if version != VERSION:
                return f"version {version}, only {VERSION} is known"
            return None
    return f"no fence_kdump magic (starts with {data[:4].hex()})"


@dataclass(frozen=True)
class KdumpTiming:
    """The configuration that drives detection, in seconds."""

    started_timeout: float    # KdumpStartedTimeout: wait this long for a first message
    finished_after: float     # KdumpFinishedTimeout: this long without a message ends a dump
    reboot_within: float      # KdumpRebootTimeout: after the dump, time to come back

    @classmethod
    def from_config(cls, config) -> "KdumpTiming":  # type: ignore[no-untyped-def]
        return cls(float(config["KdumpStartedTimeout"]), float(config["KdumpFinishedTimeout"]),
                   float(config["KdumpRebootTimeout"]))


def same_session(since_last: float | None, finished_after: float) -> bool:
    """Whether a message arriving `since_last` seconds after the previous one
    (None: there was none) continues that session; otherwise it starts a new one."""
    return since_last is not None and since_last < finished_after


def listener_alive(since_heartbeat: float | None, timeout: float) -> bool:
    """A listener that reported within FenceKdumpListenerTimeout counts as running."""
    return since_heartbeat is not None and since_heartbeat < timeout


def heartbeat_interval(listener_timeout: float) -> float:
    """How often a listener reports: a third of FenceKdumpListenerTimeout
    (oVirt: 30 s for 90 s), between 1 and 30 seconds."""
    return min(30.0, max(1.0, listener_timeout / 3))


class Watch(StrEnum):
    """Where the detection for one non-responsive host stands."""

    AWAITING = "awaiting"          # no message yet; waiting up to KdumpStartedTimeout
    DUMPING = "dumping"            # messages keep coming: the host is writing its dump
    REBOOTING = "rebooting"        # the dump is over: the host should come back
    NOT_DETECTED = "not_detected"  # final: no message in time -> the treatment goes on
    CAME_BACK = "came_back"        # final: the host answers again -> no power action
    NO_REBOOT = "no_reboot"        # final: not back in time after its dump -> the treatment goes on

    @property
    def final(self) -> bool:
        return self in (Watch.NOT_DETECTED, Watch.CAME_BACK, Watch.NO_REBOOT)


def observe(watch: Watch, waited: float, since_last: float | None, answering: bool,
            timing: KdumpTiming) -> Watch:
    """The next state of a detection that stands at `watch`.

    `waited`: seconds since the detection began; `since_last`: seconds since
    the host's last fence_kdump message (None: no record); `answering`: the
    host's agent answers again (its status is no longer non-responsive)."""
    if watch.final:
        return watch
    if answering:
        return Watch.CAME_BACK                     # an agent that answers is never "dumping"
    if since_last is not None and since_last < timing.finished_after:
        return Watch.DUMPING                       # a message within the window: dumping
    # The dump ended (last message + KdumpFinishedTimeout) this long ago:
    ended_ago = None if since_last is None else since_last - timing.finished_after
    if watch is Watch.AWAITING:
        if ended_ago is not None and ended_ago < timing.reboot_within:
            # It dumped and finished before we looked: it may be rebooting now.
            return Watch.REBOOTING
        return Watch.NOT_DETECTED if waited >= timing.started_timeout else Watch.AWAITING
    if ended_ago is None or ended_ago >= timing.reboot_within:
        return Watch.NO_REBOOT
    return Watch.REBOOTING


def reboot_left(since_last: float | None, timing: KdumpTiming) -> float:
    """Seconds the host still has to come back after its dump."""
    if since_last is None:
        return 0.0
    return max(0.0, timing.finished_after + timing.reboot_within - since_last)


def next_look(watch: Watch, waited: float, since_last: float | None, timing: KdumpTiming,
              every: float) -> float:
    """Seconds until the detection looks again: every `every` seconds
    (FenceKdumpMessageInterval), sooner when a deadline falls earlier, so a
    timeout ends when it says and not at the next multiple of the interval."""
    deadlines = []
    if watch is Watch.AWAITING:
        deadlines.append(timing.started_timeout - waited)
    if since_last is not None:
        if watch is Watch.DUMPING:
            deadlines.append(timing.finished_after - since_last)
        elif watch is Watch.REBOOTING:
            deadlines.append(reboot_left(since_last, timing))
    return max(0.05, min([every, *(d + 0.05 for d in deadlines)]))

