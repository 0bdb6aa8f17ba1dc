"""The fence driver interface.

A driver switches power of one PM device. The engine and the host agent call
drivers only through this interface and never know which one they drive.
Drivers are synchronous; callers that must not block run them in a thread.
"""

from __future__ import annotations

from abc import ABC, abstractmethod

from hostpower.model.errors import HostpowerError
from hostpower.model.power import AgentSpec, FenceAction, FenceResult


class DriverError(HostpowerError):
    """A driver could not be used at all (not installed, bad options)."""


class FenceDriver(ABC):
    """Runs fence actions against a PM device.

    Contract, the same for every driver:
    * `status` answers Outcome.ON or Outcome.OFF as the device reports it.
    * `off` answers Outcome.OFF only after the device was verified off;
      `on` answers Outcome.ON only after it was verified on; `reboot` answers
      Outcome.ON once the device is back on.
    * Any failure (unreachable, auth, timeout) answers Outcome.ERROR with a
      message; drivers do not raise for device failures.
    * The whole call returns within `timeout` seconds (plus a small margin).
    * The password never reaches a log, argv or a child's environment.
    """

    #: short name, e.g. "script" or "native-ipmilan"
    name: str = ""

    @abstractmethod
    def can_run(self, agent_type: str) -> bool:
        """Whether this machine can run agents of that type with this driver."""

    def handles(self, spec: AgentSpec) -> bool:
        """Whether this driver can run this particular agent definition."""
        return self.can_run(spec.type)

    @abstractmethod
    def run(self, spec: AgentSpec, action: FenceAction, timeout: float) -> FenceResult:
        """Execute one action and report what the device answered."""

    def close(self) -> None:
        """Release pooled sessions; the default holds none."""
