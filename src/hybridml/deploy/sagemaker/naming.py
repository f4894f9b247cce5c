"""Names and tags of the SageMaker resources of one endpoint (models and endpoint configs), derived, never stored.

A model resource is ``ENDPOINT-v<version>-<digest>`` and an endpoint config ``ENDPOINT-c<digest>``, the digests
taken over everything that makes the resource what it is. The same inputs give the same names, which is what
makes a re-deploy of the version in service change nothing. With an endpoint name of at most 40 characters
(the naming rule) both stay within SageMaker's 63.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Mapping, Sequence
from typing import Any

TAG_ENDPOINT = "hybridml:endpoint"
TAG_VERSION = "hybridml:version"
TAG_FEATURES = "hybridml:features"
TAG_SOURCE = "hybridml:artifact-uri"
TAG_SERVING = "hybridml:serving"
TAG_SHADOW_MODEL = "hybridml:shadow-model"
# Endpoint-config tags: which version each role serves (an endpoint config never changes, so neither do they).
ROLE_TAGS = {"stable": "hybridml:stable", "canary": "hybridml:canary", "shadow": "hybridml:shadow"}
_TAG_VALUE_MAX = 256
_VERSION_CHARS = re.compile(r"[^A-Za-z0-9]+")


def digest(payload: Any, length: int) -> str:
    """The first ``length`` hex digits of the sha256 of ``payload`` as canonical JSON."""
    text = json.dumps(payload, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()[:length]


def model_name(endpoint: str, version: str, spec: Mapping[str, Any]) -> str:
    """``ENDPOINT-v<version, at most 8 of its letters and digits>-<10 hex digits of spec>``."""
    short = _VERSION_CHARS.sub("", version)[:8] or "x"
    return f"{endpoint}-v{short}-{digest(spec, 10)}"


def config_name(endpoint: str, layout: Mapping[str, Any]) -> str:
    """``ENDPOINT-c<12 hex digits of the variant layout>``."""
    return f"{endpoint}-c{digest(layout, 12)}"


def features_tag(names: Sequence[str]) -> str:
    """A short digest of the feature names in order (a canary must match stable's)."""
    return digest(list(names), 16)


def tags(values: Mapping[str, str | None]) -> list[dict[str, str]]:
    """SageMaker's tag list of ``values`` (None left out; values cut to the 256-character limit)."""
    return [{"Key": key, "Value": value[:_TAG_VALUE_MAX]} for key, value in values.items() if value is not None]


def tag_map(tag_list: Sequence[Mapping[str, str]]) -> dict[str, str]:
    """``{key: value}`` of a SageMaker tag list."""
    return {tag["Key"]: tag["Value"] for tag in tag_list}
