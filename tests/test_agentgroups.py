"""Several agents per host: groups, and how a group's answers combine."""

from __future__ import annotations

from dataclasses import dataclass

import pytest

from hostpower.model.agentgroups import combine, conclusive, order_groups
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
