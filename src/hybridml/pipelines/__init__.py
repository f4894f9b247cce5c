"""The pipeline DAG (one definition, run by kfp.local on a laptop and compiled for Kubeflow)."""

from hybridml.pipelines.training import PIPELINE_NAME, compile_to, training_pipeline

__all__ = ["PIPELINE_NAME", "compile_to", "training_pipeline"]
