"""The pure domain: inventory, power results, proxy chain grammar, policy.

Nothing in this package performs I/O or imports the database, web or network
layers; those layers import it.
"""
