"""The gates before a non-responsive host is fenced automatically, in the
order DESIGN.md gives them. Pure: the caller gathers the facts."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from enum import StrEnum

from hostpower.model.inventory import Cluster, Host, HostStatus


class Gate(StrEnum):
    IN_FLOW = "in_flow"
    STARTUP_WINDOW = "startup_window"
    JUST_WATCHED = "just_watched"
    CLUSTER_FENCING_DISABLED = "cluster_fencing_disabled"
    CONNECTIVITY_BROKEN = "connectivity_broken"
    QUIET_TIME = "quiet_time"
    PM_DISABLED = "pm_disabled"
    AUTOMATIC_PM_OFF = "automatic_pm_off"
    NO_AGENTS = "no_agents"


@dataclass(frozen=True)
class Facts:
    host: Host
    cluster: Cluster
    cluster_hosts: Sequence[Host]      # every host of the cluster, the target included
    now: float
    engine_started_at: float
    startup_window: float              # DisableFenceAtStartupInSec
    quiet_time: float                  # FenceQuietTimeBetweenOperationsInSec
    last_operation_at: float | None    # end of the host's last power operation
    in_flow: bool                      # a fence flow for the host is running
    agent_count: int
    # When this engine began to watch the host (it started, or took the host
    # over from another engine), and the grace it gives a host it found
    # unresponsive then (TimeoutToResetHostInSeconds): ownership moving is
    # never a reason to fence.
    watched_since: float | None = None
    grace: float = 0.0


@dataclass(frozen=True)
class Decision:
    fence: bool
    gate: Gate | None = None
    reason: str = ""


UNREACHABLE = (HostStatus.CONNECTING, HostStatus.NON_RESPONSIVE)


def decide(f: Facts) -> Decision:
    """Fence, or the first gate that says no and why."""
    if f.in_flow:
        return Decision(False, Gate.IN_FLOW, "a fence flow for this host is already running; joined it")
    since_start = f.now - f.engine_started_at
    if since_start < f.startup_window:
        return Decision(False, Gate.STARTUP_WINDOW,
                        f"engine started {since_start:.0f} s ago; no automatic fencing during the "
                        f"first {f.startup_window:.0f} s (DisableFenceAtStartupInSec)")
    if f.watched_since is not None and f.now - f.watched_since < f.grace:
        return Decision(False, Gate.JUST_WATCHED,
                        f"this engine began watching the host {f.now - f.watched_since:.0f} s ago "
                        f"(it started or took the host over); it judges the host afresh for "
                        f"{f.grace:.0f} s (TimeoutToResetHostInSeconds) before fencing it")
    policy = f.cluster.fencing_policy
    if not policy.enabled:
        return Decision(False, Gate.CLUSTER_FENCING_DISABLED,
                        f"fencing is disabled for cluster {f.cluster.name}")
    conn = policy.skip_if_connectivity_broken
    if conn.enabled and f.cluster_hosts:
        lost = sum(h.status in UNREACHABLE for h in f.cluster_hosts)
        share = 100.0 * lost / len(f.cluster_hosts)
        if share >= conn.threshold:
            return Decision(False, Gate.CONNECTIVITY_BROKEN,
                            f"{lost} of {len(f.cluster_hosts)} hosts of cluster {f.cluster.name} "
                            f"({share:.0f}%) are unreachable, at or above the {conn.threshold}% "
                            f"threshold: the engine's own network is the likelier culprit")
    if f.last_operation_at is not None and f.now - f.last_operation_at < f.quiet_time:
        ago = f.now - f.last_operation_at
        return Decision(False, Gate.QUIET_TIME,
                        f"last power operation {ago:.0f} s ago; quiet time is {f.quiet_time:.0f} s "
                        f"(FenceQuietTimeBetweenOperationsInSec)")
    pm = f.host.power_management
    if not pm.enabled:
        return Decision(False, Gate.PM_DISABLED, "power management is not enabled for the host")
    if not pm.automatic_pm_enabled:
        return Decision(False, Gate.AUTOMATIC_PM_OFF, "automatic power management is off for the host")
    if f.agent_count == 0:
        return Decision(False, Gate.NO_AGENTS, "the host has no fence agent")
    return Decision(True)
