"""The words of fence operations, one spelling each: what a flow does, which
phase it is in, how it ended, and where it was asked for. Used by the
journal, the flows, the API schemas and the CLI."""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum


class FlowAction(StrEnum):
    """A journaled power operation (a status answers at once: no flow)."""

    START = "start"
    STOP = "stop"
    RESTART = "restart"


class Phase(StrEnum):
    """Where a flow is, written before the external action it names:

        restart: begin -> check -> stop -> stop_verify -> start -> start_verify -> done
        stop:    begin -> stop -> stop_verify -> done
        start:   begin -> start -> start_verify -> done
    """

    BEGIN = "begin"
    CHECK = "check"
    STOP = "stop"
    STOP_VERIFY = "stop_verify"
    START = "start"
    START_VERIFY = "start_verify"
    DONE = "done"


class OperationState(StrEnum):
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"


class Origin(StrEnum):
    """Who started the operation: an API request (its user is `requested_by`)
    or the monitor's automatic treatment."""

    API = "api"
    AUTOMATIC = "automatic"


class FenceType(StrEnum):
    """What a power request asks (oVirt's fence_type): a status answered at
    once, a flow, or manual (the operator rebooted the host by hand)."""

    STATUS = "status"
    START = "start"
    STOP = "stop"
    RESTART = "restart"
    MANUAL = "manual"

    @property
    def flow(self) -> FlowAction | None:
        """The flow this request starts, if any."""
        return None if self in (FenceType.STATUS, FenceType.MANUAL) else FlowAction(self.value)


@dataclass(frozen=True)
class Runner:
    """An engine incarnation that runs flows: its name and the generation of
    its lease (model/lease.py). A flow's reservation names its runner."""

    name: str
    generation: int

    def __str__(self) -> str:
        return self.name
