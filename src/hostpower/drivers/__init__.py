"""Fence drivers: one small interface, several implementations."""
