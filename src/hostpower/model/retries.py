"""How often a power command is sent and its result polled (docs/fencing.md,
"Retry semantics (as oVirt)").

The rules are oVirt's (SingleAgentFenceActionExecutor, HostFenceActionExecutor):

* after an off (on) is sent, the status is polled once, then up to
  `FenceStopStatusRetries` (`FenceStartStatusRetries`) more times, the delay
  between two polls: 1 + N polls;
* a verification ends as soon as the wanted state is seen; it fails when the
  polls are used up, or when more than UNKNOWN_ANSWERS_TOLERATED polls (in
  all, not only in a row) gave no verified answer;
* a start whose command failed, or whose verification failed, is sent once
  more; a stop never is (an off that did not work is not repeated blindly).

Pure: the flows (fencing/flows.py) ask, these functions answer.
"""

from __future__ import annotations

from collections.abc import Sequence
from enum import StrEnum

from hostpower.model.power import FenceAction, Outcome

# oVirt's SingleAgentFenceActionExecutor.UNKNOWN_RESULT_LIMIT: three polls
# without a verified answer are retried, the fourth ends the verification.
UNKNOWN_ANSWERS_TOLERATED = 3


class Verdict(StrEnum):
    """What the answers so far say about a verification."""

    VERIFIED = "verified"              # the last poll saw the wanted state
    POLL_AGAIN = "poll_again"          # wait the delay, poll once more
    EXHAUSTED = "exhausted"            # 1 + N polls, none saw the wanted state
    TOO_MANY_UNKNOWN = "too_many_unknown"  # too many polls gave no verified answer


def status_polls(retries: int) -> int:
    """Polls of one verification: the first one plus `retries` retries."""
    return 1 + max(0, retries)


def unverified(outcome: Outcome) -> bool:
    """A poll that says neither on nor off: agents disagreeing (unknown) or no
    proxy getting an answer at all (error)."""
    return outcome not in (Outcome.ON, Outcome.OFF)


def poll_verdict(answers: Sequence[Outcome], want: Outcome, retries: int,
                 unknown_tolerated: int = UNKNOWN_ANSWERS_TOLERATED) -> Verdict:
    """The verdict after the polls of one verification so far, oldest first."""
    if not answers:
        return Verdict.POLL_AGAIN
    if answers[-1] is want:
        return Verdict.VERIFIED
    if sum(unverified(a) for a in answers) > unknown_tolerated:
        return Verdict.TOO_MANY_UNKNOWN
    if len(answers) >= status_polls(retries):
        return Verdict.EXHAUSTED
    return Verdict.POLL_AGAIN


def switch_attempts(action: FenceAction) -> int:
    """How many times an on or off is sent to one agent group, at most: a
    start once more when it failed; a stop once."""
    return 2 if action is FenceAction.ON else 1


def attempts_left(action: FenceAction, journaled: int, verify_pending: bool) -> int:
    """Attempts a resumed flow may still make, given the commands of this kind
    its journal holds (each step is written before its command goes out).

    Resumed while verifying (`verify_pending`): every journaled command went
    out, so only what remains, possibly nothing. Resumed at the command's
    own phase: the last journaled one may or may not have gone out (the flow
    checks the device first and sends nothing if it worked), so it does not
    count; at least one attempt, as before the crash.
    """
    total = switch_attempts(action)
    if verify_pending:
        return max(0, total - journaled)
    return max(1, total - max(0, journaled - 1))
