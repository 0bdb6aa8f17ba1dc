"""Engine leases: the arithmetic, without a clock of its own.

Every engine holds a lease in the database (store/engines.py) and renews it
every third of `EngineLeaseInSec` (membership.py). The lease times stored in
the database are taken from the database's clock, so peers compare them with
that same clock and skew between engine machines does not matter. The engine
itself only measures durations on its own monotonic clock, from the moment it
*sent* a renewal: the database stamped the lease no earlier than that, so the
engine's idea of when its lease ends is never later than the database's.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum


class EngineState(StrEnum):
    """What a registered engine is, as its peers see it."""

    ALIVE = "alive"      # running, lease not expired
    EXPIRED = "expired"  # running by its own account, but it stopped renewing (crashed, cut off)
    STOPPED = "stopped"  # stopped cleanly and said so


class RowState(StrEnum):
    """What an engine row stores about itself (EngineState adds the clock)."""

    RUNNING = "running"
    STOPPED = "stopped"


@dataclass(frozen=True)
class LeaseTerms:
    """The timing that follows from one lease length (seconds)."""

    seconds: float

    @property
    def renew_every(self) -> float:
        """Renewals come three times per lease: one may fail without consequence."""
        return self.seconds / 3

    @property
    def margin(self) -> float:
        """How long before its lease ends an engine stops starting external
        actions: time for an action begun just before to be under way, so a
        peer never takes over work the old owner still performs."""
        return self.seconds / 4

    def act_until(self, renewal_sent_at: float) -> float:
        """Until when (same clock as `renewal_sent_at`) an engine whose last
        successful renewal was sent at `renewal_sent_at` may act."""
        return renewal_sent_at + self.seconds - self.margin

    def watch_for(self) -> float:
        """How long to watch another engine's unexpired lease before deciding
        that nobody renews it: a renewal interval and a half."""
        return self.renew_every * 1.5


def engine_state(row_state: RowState, lease_expires_at: datetime, now: datetime) -> EngineState:
    """Alive, expired or stopped, judged at `now` on the database's clock."""
    if row_state == RowState.STOPPED:
        return EngineState.STOPPED
    return EngineState.ALIVE if lease_expires_at > now else EngineState.EXPIRED


@dataclass(frozen=True)
class EngineMember:
    """One engine as registered in the database, judged at `now` (database clock)."""

    name: str
    address: str
    generation: int
    state: EngineState
    started_at: datetime
    renewed_at: datetime
    lease_expires_at: datetime
