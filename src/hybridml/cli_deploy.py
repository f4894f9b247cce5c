"""`hybridml deploy`: roll a registered version out to a deploy target (local, sagemaker), as a canary or whole."""

from __future__ import annotations
