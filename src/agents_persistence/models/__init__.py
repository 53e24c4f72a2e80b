"""Declarative models of the stores (no I/O); import the public names from `agents_persistence`."""
