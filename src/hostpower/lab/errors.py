"""The lab's one error type."""


class LabError(Exception):
    """The lab could not start, or a request to it was invalid."""
