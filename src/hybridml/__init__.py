"""hybridml."""
