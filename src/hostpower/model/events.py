"""Events: what the engine did and why, for operators (table, API and log)."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum
from typing import Any


class Severity(StrEnum):
    INFO = "info"
    WARNING = "warning"
    ERROR = "error"


@dataclass(frozen=True)
class Event:
    severity: Severity
    kind: str                 # e.g. fence.attempt, fence.failed, treatment.skipped, host.status
    message: str
    host_id: int | None = None
    host_name: str | None = None
    operation_id: int | None = None
    details: dict[str, Any] = field(default_factory=dict)
    id: int | None = None
    created_at: datetime | None = None
    user: str | None = None   # the engine user who did it or whom it is about
    engine: str | None = None  # the engine that wrote it (several engines share a database)
