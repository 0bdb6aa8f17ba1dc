"""Retry semantics as oVirt's (model/retries.py): 1 + N status polls, a
failed start re-sent once and a stop never, and a bound on polls that give no
verified answer. The sequences in the tables are those of oVirt's
SingleAgentFenceActionExecutorTest, translated to our outcomes."""

from __future__ import annotations

import pytest

from hostpower.model.power import FenceAction, Outcome
from hostpower.model.retries import (
    UNKNOWN_ANSWERS_TOLERATED, Verdict, attempts_left, poll_verdict, status_polls,
    switch_attempts,
)

ON, OFF, UNKNOWN, ERROR = Outcome.ON, Outcome.OFF, Outcome.UNKNOWN, Outcome.ERROR
V, AGAIN, EXHAUSTED, TOO_MANY = (Verdict.VERIFIED, Verdict.POLL_AGAIN, Verdict.EXHAUSTED,
                                 Verdict.TOO_MANY_UNKNOWN)


@pytest.mark.parametrize("retries, polls", [(0, 1), (1, 2), (3, 4), (18, 19), (-1, 1)])
def test_a_verification_is_one_poll_plus_the_configured_retries(retries: int, polls: int) -> None:
    assert status_polls(retries) == polls


@pytest.mark.parametrize("answers, want, retries, verdict", [
    # nothing asked yet
    ([], ON, 1, AGAIN),
    # oVirt successfulStart: the first poll sees on
    ([ON], ON, 1, V),
    # oVirt successfulStartWithStatusRetry: off, then on at the retry
    ([OFF], ON, 1, AGAIN),
    ([OFF, ON], ON, 1, V),
    # oVirt failedStartStatusRetriesExceeded (FenceStartStatusRetries=1): two polls, then done
    ([OFF, OFF], ON, 1, EXHAUSTED),
    # the same for a stop
    ([ON, ON], OFF, 1, EXHAUSTED),
    ([ON, OFF], OFF, 1, V),
    # retries=0: one poll, no retry (our old meaning also gave one poll for 0)
    ([OFF], ON, 0, EXHAUSTED),
    # 18 retries (the default): the 19th poll is still asked, not a 20th
    ([OFF] * 18, ON, 18, AGAIN),
    ([OFF] * 19, ON, 18, EXHAUSTED),
    ([OFF] * 18 + [ON], ON, 18, V),
    # unknown answers: three are retried, the fourth ends the verification
    ([UNKNOWN] * 3, ON, 10, AGAIN),
    ([UNKNOWN] * 4, ON, 10, TOO_MANY),
    # a poll no proxy could answer counts as unknown too
    ([ERROR, UNKNOWN, ERROR, ERROR], OFF, 10, TOO_MANY),
    # counted over the verification, not only in a row (as oVirt's counter)
    ([UNKNOWN, OFF, UNKNOWN, OFF, UNKNOWN, OFF], ON, 10, AGAIN),
    ([UNKNOWN, OFF, UNKNOWN, OFF, UNKNOWN, OFF, UNKNOWN], ON, 10, TOO_MANY),
    # the wanted state ends it even after unknowns
    ([UNKNOWN, UNKNOWN, UNKNOWN, ON], ON, 10, V),
    # the fourth unknown on the last allowed poll: the unknowns are the reason given
    ([UNKNOWN] * 4, ON, 3, TOO_MANY),
    # the polls run out before the fourth unknown
    ([UNKNOWN, UNKNOWN], ON, 1, EXHAUSTED),
])
def test_poll_verdicts(answers: list[Outcome], want: Outcome, retries: int,
                       verdict: Verdict) -> None:
    assert poll_verdict(answers, want, retries) is verdict


def test_the_unknown_bound_is_ovirts_unknown_result_limit() -> None:
    assert UNKNOWN_ANSWERS_TOLERATED == 3
    # oVirt's own test lowers its limit to 0: then the first unknown ends it
    assert poll_verdict([UNKNOWN], ON, 5, unknown_tolerated=0) is TOO_MANY


def test_a_start_is_sent_at_most_twice_and_a_stop_once() -> None:
    assert switch_attempts(FenceAction.ON) == 2
    assert switch_attempts(FenceAction.OFF) == 1


@pytest.mark.parametrize("action, journaled, verify_pending, left", [
    # resumed while verifying: what went out counts
    (FenceAction.ON, 1, True, 1),
    (FenceAction.ON, 2, True, 0),
    (FenceAction.OFF, 1, True, 0),
    # resumed at the command's own phase: the last one journaled may not have gone out
    (FenceAction.ON, 1, False, 2),
    (FenceAction.ON, 2, False, 1),
    (FenceAction.OFF, 1, False, 1),
    # never less than one when resuming at the command's phase (as before the crash)
    (FenceAction.OFF, 0, False, 1),
    (FenceAction.ON, 5, False, 1),
])
def test_attempts_left_to_a_resumed_flow(action: FenceAction, journaled: int,
                                         verify_pending: bool, left: int) -> None:
    assert attempts_left(action, journaled, verify_pending) == left
