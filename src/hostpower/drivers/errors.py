"""Why a driver cannot run something, as exceptions that carry the reason.

A reason is computed once, where it is found (a driver's `validate`), and
travels up in the exception; callers word their own message around it
instead of asking again why.
"""

from __future__ import annotations

from collections.abc import Iterable

from hostpower.model.errors import HostpowerError


class DriverError(HostpowerError):
    """A driver could not be used at all (not installed, bad options)."""


class UnsupportedSpec(DriverError):
    """This driver cannot run this agent definition; the message says why.

    Raised by `FenceDriver.validate` (and by `run`, before anything started).
    """

    @property
    def reason(self) -> str:
        return str(self)


class UnsupportedType(UnsupportedSpec):
    """This driver does not run agents of this type here at all: not
    installed, not implemented, or not a valid type name."""


class NoDriver(UnsupportedSpec):
    """No driver of this machine can run the agent definition.

    `refusals` holds every driver's refusal. `reasons` keeps the telling ones:
    those of drivers that run the agent type but not with these options (a
    driver that does not know the type at all has nothing to add).
    """

    def __init__(self, agent_type: str, refusals: Iterable[UnsupportedSpec]) -> None:
        self.agent_type = agent_type
        self.refusals = tuple(refusals)
        self.reasons = tuple(r.reason for r in self.refusals if not isinstance(r, UnsupportedType))
        super().__init__(self.describe(f"no driver for agent type {agent_type}"))

    def describe(self, headline: str) -> str:
        """The headline, followed by the reasons when there are any."""
        return f"{headline}: {'; '.join(self.reasons)}" if self.reasons else headline
