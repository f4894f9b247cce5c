"""hybridml: one Kubeflow pipeline from a table to a KServe endpoint, on a laptop or a cluster."""

__version__ = "0.1.0"
