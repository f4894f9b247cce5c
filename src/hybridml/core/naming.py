"""One naming rule for model (and endpoint) names, valid everywhere a name ends up.

A registered model's name becomes an MLflow registered-model name, a Kubernetes object name (an
InferenceService, and the Deployments, Services and Knative revisions KServe derives from it) and a
SageMaker endpoint, endpoint-config and model name. The strictest of those places decide the rule:

- Kubernetes Services need a DNS-1035 label: lower-case letters, digits and '-', starting with a letter and
  ending with a letter or digit, at most 63 characters;
- KServe appends suffixes such as ``-predictor-canary`` (17 characters) and Knative revisions
  ``-predictor-00001`` to the InferenceService name, and those names must still be labels;
- SageMaker names allow ``[a-zA-Z0-9](-*[a-zA-Z0-9])*`` up to 63 characters, and the SageMaker target
  derives endpoint-config and model names as ``NAME-v<version>-<14-digit timestamp>`` (up to 22 more).

So a name is at most 40 characters of that DNS-1035 alphabet. It is checked when a model is registered
and before ``run`` starts, so an approved model never fails at deploy for its name.
"""

from __future__ import annotations

import re

from hybridml.errors import InvalidInputError

MAX_NAME_LENGTH = 40
_NAME = re.compile(r"[a-z]([-a-z0-9]*[a-z0-9])?")  # fullmatch: "$" would accept a trailing newline

RULE = (
    f"1-{MAX_NAME_LENGTH} characters of lower-case letters, digits and '-', starting with a letter and ending"
    " with a letter or digit (it becomes a Kubernetes object name and a SageMaker endpoint name)"
)


def check_model_name(name: object) -> str:
    """Return ``name`` if it follows the naming rule, else raise naming the rule.

    Raises:
        InvalidInputError: ``name`` is not a string of :data:`RULE`.
    """
    if not isinstance(name, str) or len(name) > MAX_NAME_LENGTH or not _NAME.fullmatch(name):
        shown = repr(name) if not isinstance(name, str) or len(name) <= 80 else repr(name[:77] + "...")
        raise InvalidInputError(f"invalid model name {shown}: use {RULE}")
    return name


def suggest_model_name(text: str) -> str:
    """A name that follows the rule, derived from ``text`` (for messages that propose a fix)."""
    lowered = re.sub(r"[^a-z0-9-]+", "-", text.lower()).strip("-")
    lowered = re.sub(r"-{2,}", "-", lowered)
    if not lowered or not lowered[0].isalpha():
        lowered = f"m-{lowered}".rstrip("-")
    return lowered[:MAX_NAME_LENGTH].rstrip("-")
