"""The fence driver interface.

A driver switches power of one PM device. The engine and the host agent call
drivers only through this interface and never know which one they drive:
what a caller needs to know about a driver (is it native, which agent types
it runs, whether it can run a given agent definition and why not) is
declared here, not found out by looking at its class.
Drivers are synchronous; callers that must not block run them in a thread.
"""

from __future__ import annotations

from abc import ABC, abstractmethod

from hostpower.drivers.errors import UnsupportedType
from hostpower.model.power import AgentSpec, FenceAction, FenceResult


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

    @property
    @abstractmethod
    def native(self) -> bool:
        """True when the driver speaks the device's protocol in-process; False
        when it runs the standard fence-agents program. The configuration
        (PreferNativeFenceDrivers) chooses between the two kinds.
        Drivers declare it as a class attribute."""

    @abstractmethod
    def agent_types(self) -> frozenset[str]:
        """The agent types this driver can run on this machine."""

    def validate(self, spec: AgentSpec) -> None:
        """Return if this driver can run this agent definition, else raise
        UnsupportedSpec saying why. Nothing is run; no device is contacted.

        The default accepts every spec of a type in `agent_types`; a driver
        that honours only some options refines it."""
        if spec.type not in self.agent_types():
            raise UnsupportedType(f"{self.name or type(self).__name__} does not run "
                                  f"agent type {spec.type}")

    @abstractmethod
    def run(self, spec: AgentSpec, action: FenceAction, timeout: float) -> FenceResult:
        """Execute one action and report what the device answered.

        Raises DriverError (UnsupportedSpec where `validate` would) only when
        nothing was started."""

    def close(self) -> None:
        """Release pooled sessions; the default holds none."""
