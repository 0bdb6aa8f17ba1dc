"""Fencing: drivers, executor, flows, treatment, journal."""
