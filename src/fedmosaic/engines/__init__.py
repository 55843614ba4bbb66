"""Engines run any Algorithm: local (in-process simulation, the default); Flower and files later."""
