"""Engines run any Algorithm: local (in-process, the default), flower (deployment), files (folders)."""
