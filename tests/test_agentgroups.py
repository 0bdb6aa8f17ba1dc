"""Several agents per host: groups, and how a group's answers combine."""

from __future__ import annotations

from dataclasses import dataclass

import pytest

from hostpower.model.agentgroups import (
    combine, conclusive, goal_reached, hands_over, needs_status_check, order_groups,
)
from hostpower.model.power import FenceAction, Outcome

ON, OFF, UNKNOWN, ERROR = Outcome.ON, Outcome.OFF, Outcome.UNKNOWN, Outcome.ERROR


@dataclass
class Agent:
    name: str
    order: int


def test_same_order_forms_a_concurrent_group_and_groups_come_in_order() -> None:
    agents = [Agent("pdu-b", 2), Agent("psu1", 1), Agent("pdu-a", 2), Agent("psu2", 1)]
    assert [[a.name for a in g] for g in order_groups(agents)] == [["psu1", "psu2"], ["pdu-b", "pdu-a"]]


@pytest.mark.parametrize("action, outcomes, expected", [
    # stop: off only when every agent verified off
    (FenceAction.OFF, [OFF, OFF], OFF),
    (FenceAction.OFF, [OFF, ERROR], ERROR),
    (FenceAction.OFF, [OFF, ON], ON),
    (FenceAction.OFF, [ERROR, ERROR], ERROR),
    # start: one on is enough
    (FenceAction.ON, [ON, ERROR], ON),
    (FenceAction.ON, [ERROR, ERROR], ERROR),
    # status: on if any on; off only if all off; unknown if off and failures mix
    (FenceAction.STATUS, [ON, ERROR], ON),
    (FenceAction.STATUS, [OFF, ON], ON),
    (FenceAction.STATUS, [OFF, OFF], OFF),
    (FenceAction.STATUS, [OFF, ERROR], UNKNOWN),
    (FenceAction.STATUS, [ERROR, ERROR], ERROR),
    (FenceAction.STATUS, [], ERROR),
])
def test_group_answers_combine_as_the_design_says(action, outcomes, expected) -> None:  # type: ignore[no-untyped-def]
    assert combine(action, outcomes) is expected


def test_only_verified_answers_end_the_search_through_groups() -> None:
    assert conclusive(FenceAction.STATUS, OFF) and conclusive(FenceAction.STATUS, ON)
    assert not conclusive(FenceAction.STATUS, UNKNOWN)
    assert conclusive(FenceAction.OFF, OFF) and not conclusive(FenceAction.OFF, ON)
    assert conclusive(FenceAction.ON, ON) and not conclusive(FenceAction.ON, ERROR)


@pytest.mark.parametrize("action, outcome, reached", [
    # a start and a status are settled by one agent saying on (oVirt's isGoalReached)
    (FenceAction.ON, ON, True),
    (FenceAction.ON, ERROR, False),
    (FenceAction.STATUS, ON, True),
    (FenceAction.STATUS, OFF, False),
    (FenceAction.STATUS, ERROR, False),
    # a stop needs every agent: never settled early
    (FenceAction.OFF, OFF, False),
    (FenceAction.OFF, ON, False),
])
def test_one_answer_settles_a_start_or_status_never_a_stop(  # type: ignore[no-untyped-def]
        action, outcome, reached) -> None:
    assert goal_reached(action, outcome) is reached


@pytest.mark.parametrize("check, position, groups, asked, hands", [
    # the only group: not asked, never handed over
    (ERROR, 0, 1, False, False),
    # first of two: asked; a failed check hands over, a verified one does not
    (ERROR, 0, 2, True, True),
    (UNKNOWN, 0, 2, True, True),
    (ON, 0, 2, True, False),
    (OFF, 0, 2, True, False),
    (ERROR, 1, 3, True, True),
    # the last group gets the command whatever it would answer
    (ERROR, 1, 2, False, False),
])
def test_status_check_per_group_before_start_and_stop(  # type: ignore[no-untyped-def]
        check, position, groups, asked, hands) -> None:
    assert needs_status_check(position, groups) is asked
    assert hands_over(check, position, groups) is hands
