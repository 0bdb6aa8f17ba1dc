"""The host status state machine (model/liveness.py), table-driven and pure:
stored status, what the monitor remembered, the heartbeat, the time ->
the status change recorded and what is remembered next."""

from __future__ import annotations

import pytest

from hostpower.model.events import Severity
from hostpower.model.inventory import HostStatus as S
from hostpower.model.liveness import Heartbeat, Liveness, next_liveness

GRACE, ATTEMPTS = 10.0, 2
OK = Heartbeat(answered=True, boot_id="b1")
MISS = Heartbeat(answered=False, failure="agent 10.0.0.1:54321: cannot connect")

CASES = [
    # id, stored, remembered, beat, now -> change (status, severity) or None, misses, first_miss_at
    ("up answers: nothing to record", S.UP, Liveness(S.UP, boot_id="b1"), OK, 100,
     None, 0, None),
    ("up misses once: connecting", S.UP, Liveness(S.UP), MISS, 100,
     (S.CONNECTING, Severity.WARNING), 1, 100),
    ("connecting within the grace time: stays", S.CONNECTING,
     Liveness(S.CONNECTING, misses=1, first_miss_at=100), MISS, 105, None, 2, 100),
    ("connecting past the grace time but one miss short: stays", S.CONNECTING,
     Liveness(S.CONNECTING, misses=0, first_miss_at=100), MISS, 200, None, 1, 100),
    ("connecting past grace and attempts: non_responsive", S.CONNECTING,
     Liveness(S.CONNECTING, misses=1, first_miss_at=100), MISS, 110,
     (S.NON_RESPONSIVE, Severity.ERROR), 2, 100),
    ("non_responsive misses: no further change", S.NON_RESPONSIVE,
     Liveness(S.NON_RESPONSIVE, misses=5, first_miss_at=100), MISS, 300, None, 6, 100),
    ("connecting answers: up again", S.CONNECTING,
     Liveness(S.CONNECTING, misses=1, first_miss_at=100), OK, 101, (S.UP, Severity.INFO), 0, None),
    ("non_responsive answers: up again", S.NON_RESPONSIVE, Liveness(S.NON_RESPONSIVE), OK, 101,
     (S.UP, Severity.INFO), 0, None),
    ("down answers: up again", S.DOWN, Liveness(S.DOWN), OK, 101, (S.UP, Severity.INFO), 0, None),
    ("down misses: stays down", S.DOWN, Liveness(S.DOWN), MISS, 101, None, 1, 101),
    ("status set by someone else: misses count afresh", S.CONNECTING,
     Liveness(S.UP, misses=7, first_miss_at=1), MISS, 100, None, 1, 100),
    ("never seen before, stored up, misses: connecting", S.UP, Liveness(), MISS, 100,
     (S.CONNECTING, Severity.WARNING), 1, 100),
]


@pytest.mark.parametrize("stored, last, beat, now, change, misses, first_miss_at",
                         [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_liveness_transition(stored, last, beat, now, change, misses, first_miss_at) -> None:  # type: ignore[no-untyped-def]
    step = next_liveness("h1", stored, last, beat, now, GRACE, ATTEMPTS)
    got = (step.change.status, step.change.severity) if step.change else None
    assert got == change
    assert (step.liveness.misses, step.liveness.first_miss_at) == (misses, first_miss_at)
    assert step.liveness.status is (step.change.status if step.change else stored)


def test_liveness_messages_say_what_an_operator_needs() -> None:
    connecting = next_liveness("h1", S.UP, Liveness(S.UP), MISS, 100, GRACE, ATTEMPTS).change
    assert connecting is not None
    assert connecting.message == ("h1 missed a heartbeat: connecting "
                                  "(agent 10.0.0.1:54321: cannot connect)")
    gone = next_liveness("h1", S.CONNECTING, Liveness(S.CONNECTING, 1, 100.0), MISS, 112.5,
                         GRACE, ATTEMPTS).change
    assert gone is not None
    assert gone.message == "h1 is non_responsive: no answer for 12.5 s and 2 heartbeats"


@pytest.mark.parametrize("remembered, reported, rebooted", [
    (None, "b1", False),          # first answer: nothing to compare with
    ("b1", "b1", False),
    ("b1", "b2", True),
])
def test_liveness_reboot_is_a_new_boot_id(remembered, reported, rebooted) -> None:  # type: ignore[no-untyped-def]
    step = next_liveness("h1", S.UP, Liveness(S.UP, boot_id=remembered),
                         Heartbeat(answered=True, boot_id=reported), 100, GRACE, ATTEMPTS)
    assert step.rebooted is rebooted
    assert step.liveness.boot_id == reported
