"""Several fence agents per host (DESIGN.md, "Several agents per host").

Agents with the same `order` form a concurrent group (the two power supplies
of one server, each on its own PDU). Groups are tried in order; a group that
cannot give a verified answer hands over to the next one. Within a group:

* stop succeeds only when every agent verified off;
* start succeeds when one agent reports on;
* status is on if any agent says on, off only if every agent says off, and
  unknown if some say off while others fail.
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
