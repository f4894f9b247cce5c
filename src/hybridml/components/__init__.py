"""Thin KFP components: each imports one hybridml step and calls it. Compiled into the pipeline's IR YAML."""

from hybridml.components.image import IMAGE
from hybridml.components.release import (
    approve,
    deploy,
    inference,
    register,
    sagemaker_bridge,
    summarize,
    wait_ready,
)
from hybridml.components.training import evaluate, hpo_best, hpo_plan, hpo_worker, preprocess, train

__all__ = [
    "IMAGE",
    "approve",
    "deploy",
    "evaluate",
    "hpo_best",
    "hpo_plan",
    "hpo_worker",
    "inference",
    "preprocess",
    "register",
    "sagemaker_bridge",
    "summarize",
    "train",
    "wait_ready",
]
