"""Login throttling policy: how long a user name or a client address waits
after failed logins in a row. Pure: the store keeps the counts
(store/logins.py), the API applies the policy (api/login.py)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import timedelta
from enum import StrEnum
from typing import Any


class Subject(StrEnum):
    """What failed logins are counted for."""

    USER = "user"        # the user name tried, whether it exists or not
    ADDRESS = "address"  # the client address the attempt came from


@dataclass(frozen=True)
class LoginPolicy:
    backoff: timedelta          # after the first failure; doubles with each further one
    max_backoff: timedelta
    user_lockout_failures: int
    address_lockout_failures: int
    lockout: timedelta          # also: failures further apart than this are forgotten

    @classmethod
    def from_config(cls, config: Mapping[str, Any]) -> LoginPolicy:
        """From the engine configuration (hostpower.config.Config)."""
        return cls(
            backoff=timedelta(milliseconds=config["LoginFailureBackoffInMs"]),
            max_backoff=timedelta(seconds=config["LoginFailureBackoffMaxInSec"]),
            user_lockout_failures=config["LoginLockoutFailuresPerUser"],
            address_lockout_failures=config["LoginLockoutFailuresPerAddress"],
            lockout=timedelta(seconds=config["LoginLockoutInSec"]),
        )

    def lockout_failures(self, subject: Subject) -> int:
        return (self.user_lockout_failures if subject is Subject.USER
                else self.address_lockout_failures)

    def locks_out(self, subject: Subject, failures: int) -> bool:
        return failures >= self.lockout_failures(subject)

    def wait_after(self, subject: Subject, failures: int) -> timedelta | None:
        """How long the subject waits after its `failures`-th failure in a row
        (None: not at all)."""
        if self.locks_out(subject, failures):
            return self.lockout
        if not self.backoff or failures < 1:
            return None
        # Bounded exponent: 2**40 ms is already far beyond any maximum.
        return min(self.backoff * 2 ** min(failures - 1, 40), self.max_backoff)
