"""Host status from heartbeats: the monitor's state machine, pure.

    up --miss--> connecting --(TimeoutToResetHostInSeconds and
                               HostAttemptsToResetCount misses)--> non_responsive
    connecting / non_responsive / down --answer--> up

The monitor keeps a Liveness per host and feeds it every heartbeat's answer;
`next_liveness` says what follows: the liveness to keep, the status change to
record (if any) and whether the host reports a new boot. No I/O, no clock:
the caller passes the time.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

from hostpower.model.events import Severity
from hostpower.model.inventory import HostStatus

# Statuses a missed heartbeat may lead out of, and an answer back to up from.
_RECOVERABLE = (HostStatus.CONNECTING, HostStatus.NON_RESPONSIVE, HostStatus.DOWN)


@dataclass(frozen=True)
class Liveness:
    """What the monitor remembers of a host between heartbeats."""

    status: HostStatus | None = None     # the status it last saw or set
    misses: int = 0                      # heartbeats missed in a row
    first_miss_at: float | None = None   # when the first of them was missed
    boot_id: str | None = None           # what the agent last reported


@dataclass(frozen=True)
class Heartbeat:
    """A heartbeat's outcome: answered (with the agent's boot id) or not (why)."""

    answered: bool
    boot_id: str | None = None
    failure: str = ""


@dataclass(frozen=True)
class StatusChange:
    status: HostStatus
    severity: Severity
    message: str


@dataclass(frozen=True)
class Transition:
    liveness: Liveness
    change: StatusChange | None = None
    rebooted: bool = False               # the agent reports another boot id than before


def next_liveness(name: str, stored: HostStatus, last: Liveness, beat: Heartbeat, now: float,
                  grace_seconds: float, attempts: int) -> Transition:
    """The next liveness of host `name`, whose stored status is `stored`.

    `grace_seconds` and `attempts` are TimeoutToResetHostInSeconds and
    HostAttemptsToResetCount: a connecting host becomes non_responsive only
    when both have passed since its first missed heartbeat."""
    if last.status is not stored:
        # Someone else (a flow, an operator) set the status: count afresh.
        last = replace(last, status=stored, misses=0, first_miss_at=None)
    if beat.answered:
        rebooted = bool(last.boot_id) and beat.boot_id != last.boot_id
        alive = Liveness(status=stored, boot_id=beat.boot_id)
        if stored in _RECOVERABLE:
            return Transition(replace(alive, status=HostStatus.UP),
                              StatusChange(HostStatus.UP, Severity.INFO, f"{name} answers again: up"),
                              rebooted)
        return Transition(alive, None, rebooted)
    missed = replace(last, misses=last.misses + 1,
                     first_miss_at=last.first_miss_at if last.first_miss_at is not None else now)
    if stored is HostStatus.UP:
        return Transition(replace(missed, status=HostStatus.CONNECTING), StatusChange(
            HostStatus.CONNECTING, Severity.WARNING,
            f"{name} missed a heartbeat: connecting ({beat.failure})"))
    if stored is HostStatus.CONNECTING:
        silent_for = now - (missed.first_miss_at or now)
        if silent_for >= grace_seconds and missed.misses >= attempts:
            return Transition(replace(missed, status=HostStatus.NON_RESPONSIVE), StatusChange(
                HostStatus.NON_RESPONSIVE, Severity.ERROR,
                f"{name} is non_responsive: no answer for {silent_for:.1f} s and "
                f"{missed.misses} heartbeats"))
    return Transition(missed)
