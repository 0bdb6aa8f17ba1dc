"""Is a host alive on its shared storage? The engine's judgement of what a
proxy host saw of the target's storage lease. Pure: no I/O, no clock.

Every host agent configured with the shared storage renews a lease file
there every few seconds and watches the other hosts' files
(hostagent/storagelease.py). A proxy reports, for the target:

* `watching`: whether the proxy itself is on the shared storage at all;
* `exists`: whether the target's lease file is there;
* `renewed_ago`: how long ago, at most, the proxy saw the lease renewed
  (its content change between two of its own scans), on the proxy's own
  monotonic clock; None if it saw no renewal;
* `watched_for`: how long the proxy has watched that file without a break.

No clock of one host is compared with another's: like sanlock's delta
leases as read by oVirt (VDSM's HOST_STATUS_LIVE: "renewed its lease in the
last 80 seconds"), a lease is alive if its reader saw it change recently.

    renewed within the window                   -> ALIVE   (do not power-cycle)
    no lease file                               -> ABSENT  (fence)
    watched at least the window, no renewal in it -> STALE (fence)
    anything else (proxy not on the storage,
    watched too briefly to tell)                -> UNKNOWN (ask another proxy)
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum


class LeaseState(StrEnum):
    ALIVE = "alive"
    STALE = "stale"
    ABSENT = "absent"
    UNKNOWN = "unknown"


@dataclass(frozen=True)
class LeaseJudgement:
    state: LeaseState
    reason: str  # what the proxy saw, for an event: "renewed 2 s ago", "no lease file", ...


def judge(*, watching: bool, exists: bool, renewed_ago: float | None, watched_for: float,
          window: float) -> LeaseJudgement:
    """The state of a lease as one proxy saw it; `window` is
    HostStorageLeaseAliveCheckingInterval in seconds."""
    if not watching:
        return LeaseJudgement(LeaseState.UNKNOWN, "it does not watch the shared storage")
    if renewed_ago is not None and renewed_ago <= window:
        return LeaseJudgement(LeaseState.ALIVE, f"renewed {_s(renewed_ago)} ago")
    if not exists:
        return LeaseJudgement(LeaseState.ABSENT, "no lease file on the shared storage")
    if watched_for >= window:
        since = renewed_ago if renewed_ago is not None else watched_for
        return LeaseJudgement(LeaseState.STALE, f"not renewed for {_s(since)}"
                              + ("" if renewed_ago is not None else " (all the time it watched)"))
    return LeaseJudgement(LeaseState.UNKNOWN, f"watched it for only {_s(watched_for)} of the "
                                              f"{_s(window)} needed to call it stale")


def _s(seconds: float) -> str:
    return f"{seconds:.0f} s" if seconds >= 10 else f"{seconds:.1f} s"
