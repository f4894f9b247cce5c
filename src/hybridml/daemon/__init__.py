"""A warm process per home that serves `hybridml` commands and pipeline steps by forking (stdlib-only to import)."""
