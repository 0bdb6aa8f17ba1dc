"""A delivery that did not happen."""

from __future__ import annotations

from hostpower.model.errors import HostpowerError


class DeliveryError(HostpowerError):
    """One attempt failed; `retry`: another attempt may succeed (a refusal
    such as 400 or a rejected recipient would only be repeated)."""

    def __init__(self, message: str, retry: bool = True) -> None:
        super().__init__(message)
        self.retry = retry
