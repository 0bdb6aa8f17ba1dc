"""Errors of the domain: every one names the field it concerns."""

from __future__ import annotations


class HostpowerError(Exception):
    """Base of every error hostpower raises on purpose. The tree:

    HostpowerError
    ├── ValidationError          bad input, names the field (API 400/422, CLI exit 2)
    ├── NotFoundError            a named object does not exist (404)
    ├── ConflictError            clashes with stored state, also a lost race (409)
    ├── StorageUnavailable       the database cannot be written or reached (503)
    ├── EngineNotReady           the engine's lease is not certain: no external action (503)
    ├── DeviceBusy               a command's PM device stayed busy too long: not sent
    ├── SecretKeyError           store/crypto.py: the secret key file is unusable
    ├── AlreadyRunning           store/journal.py: a flow holds the host; join it
    ├── ReservationLost          store/journal.py: another engine took the flow over
    ├── FlowFailed               fencing/flows.py: a step of a flow failed
    ├── DriverError              drivers/: a fence driver could not run
    ├── AgentError               hostagent/errors.py: talking to a host agent failed
    │   ├── AgentUnreachable, AgentTimeout, AgentTLSError, AgentProtocolError
    ├── AgentStartError          hostagent/agent.py: the agent cannot serve
    ├── PKIError                 hostagent/pki.py: a CA or certificate problem
    ├── LabError, NetnsError     lab/: the lab could not be built or driven
    ├── EngineRefused            membership.py: another engine holds the SQLite database or the name
    └── CliError                 cli/common.py: a command's error with its exit code
    """


class ValidationError(HostpowerError):
    """Bad input: names the field and the problem. Nothing was stored."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"{field}: {message}")
        self.field = field
        self.message = message


class NotFoundError(HostpowerError):
    """A named object (host, cluster, key, ...) does not exist."""

    def __init__(self, kind: str, ident: object) -> None:
        super().__init__(f"{kind} {ident!r} not found")
        self.kind = kind
        self.ident = ident


class ConflictError(HostpowerError):
    """The request clashes with existing state (duplicate name, object in use)."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"{field}: {message}")
        self.field = field
        self.message = message


class StorageUnavailable(HostpowerError):
    """The database cannot be written (disk full, read-only) or reached.
    Nothing of the request was stored; the same request may succeed later."""

    def __init__(self, cause: str) -> None:
        super().__init__(f"the engine's database is unavailable: {cause}")
        self.cause = cause


class EngineNotReady(HostpowerError):
    """The engine may not start an external action now: it cannot be sure of
    its lease (the database is unreachable, or the engine was paused), or it
    joined again since the work began. Nothing was sent; the work waits."""

    def __init__(self, reason: str) -> None:
        super().__init__(f"this engine may not act now: {reason}")
        self.reason = reason


class DeviceBusy(HostpowerError):
    """A command waited too long for its turn at a PM device (the device
    gate, fencing/devicegate.py) and was not sent."""

    def __init__(self, device: str, holder: str, waited: float) -> None:
        super().__init__(f"device {device} stayed busy for {waited:.1f} s "
                         f"(held by {holder}): the command was not sent")
        self.device = device
        self.holder = holder
        self.waited = waited
