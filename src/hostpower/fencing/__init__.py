"""Fencing: executor, flows, treatment, journal (the drivers are in hostpower.drivers)."""
