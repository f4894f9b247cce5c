"""The MLflow registry backend (private modules; the public names are re-exported by hybridml.registry)."""
