"""Several fence agents per host (DESIGN.md, "Several agents per host").

Agents with the same `order` form a concurrent group (the two power supplies
of one server, each on its own PDU). Groups are tried in order; a group that
cannot give a verified answer hands over to the next one. Within a group:

* stop succeeds only when every agent verified off;
* start succeeds when one agent reports on;
* status is on if any agent says on, off only if every agent says off, and
  unknown if some say off while others fail.

Before a start or a stop, each group but the last is asked its status first;
a group whose status check gives no verified answer hands over to the next
group without being sent the command (oVirt's HostFenceActionExecutor). The
last group is sent the command whatever its status check would say, so it is
not asked.

The agents of a group are commanded at once. As soon as one agent's answer
settles the group's (`goal_reached`: an on for a start or a status), the
commands still running are cancelled.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from itertools import groupby
from typing import TypeVar

from hostpower.model.power import FenceAction, Outcome

A = TypeVar("A")


def order_groups(agents: Iterable[A]) -> list[list[A]]:
    """Agents grouped by their `order`, lowest first; stable within a group."""
    ordered = sorted(agents, key=lambda a: a.order)  # type: ignore[attr-defined]
    return [list(g) for _, g in groupby(ordered, key=lambda a: a.order)]  # type: ignore[attr-defined]


def combine(action: FenceAction, outcomes: Sequence[Outcome]) -> Outcome:
    """The group's answer from its agents' answers to one action."""
    if not outcomes:
        return Outcome.ERROR
    on = sum(o is Outcome.ON for o in outcomes)
    off = sum(o is Outcome.OFF for o in outcomes)
    if action is FenceAction.OFF:
        # Off only when every supply was verified off; one still on is on.
        if off == len(outcomes):
            return Outcome.OFF
        return Outcome.ON if on else Outcome.ERROR
    if action in (FenceAction.ON, FenceAction.REBOOT):
        return Outcome.ON if on else Outcome.ERROR
    if on:
        return Outcome.ON
    if off == len(outcomes):
        return Outcome.OFF
    return Outcome.UNKNOWN if off else Outcome.ERROR


def conclusive(action: FenceAction, outcome: Outcome) -> bool:
    """Whether a group's answer ends the search (no hand-over to the next group)."""
    if action is FenceAction.STATUS:
        return outcome in (Outcome.ON, Outcome.OFF)
    if action is FenceAction.OFF:
        return outcome is Outcome.OFF
    return outcome is Outcome.ON


def goal_reached(action: FenceAction, outcome: Outcome) -> bool:
    """Whether one agent's answer settles its group's answer, so the other
    agents' commands still running can be cancelled: an on settles a start
    and a status; a stop needs every agent (oVirt's isGoalReached)."""
    if action is FenceAction.OFF:
        return False
    return outcome is Outcome.ON


def needs_status_check(position: int, groups: int) -> bool:
    """Whether the group at `position` (0-based) of `groups` is asked its
    status before a start or stop: every group but the last, since the last
    is sent the command whatever it answers."""
    return position < groups - 1


def hands_over(check: Outcome, position: int, groups: int) -> bool:
    """Whether a group whose status check answered `check` hands the start
    or stop over to the next group instead of being sent it: when the check
    gave no verified answer and a next group exists."""
    return needs_status_check(position, groups) and not conclusive(FenceAction.STATUS, check)
