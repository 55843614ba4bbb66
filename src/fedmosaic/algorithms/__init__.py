"""Algorithms: one module per method, each a config, a client half and a server half."""
