"""hostpower: host power-management and fencing engine."""

__version__ = "0.1.0"
