"""Mirror approval between the project's registry and a SageMaker model package group, both ways, with history.

Each registered version has one model package in the group named like the model; the package's
``CustomerMetadataProperties`` say which version it is (``hybridml:version``) and which status hybridml last
wrote there (``hybridml:mirrored-status``). That last one tells the two sides apart: a package whose status
differs from it was changed on the AWS side (and can be pulled back); one whose status equals it was not,
however the registry moved since (push it instead). Every change, either way, is recorded in the version's
history with ``record_event(..., "mirror", ...)``.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from hybridml.adapters.aws import Caller
from hybridml.core.approval import STATUSES
from hybridml.core.naming import check_model_name
from hybridml.errors import NotFoundError
from hybridml.registry.protocol import ModelRegistry

META_MODEL = "hybridml:model"
META_VERSION = "hybridml:version"
META_MIRRORED = "hybridml:mirrored-status"
MIRROR_ACTOR = "sagemaker-mirror"


@dataclass(frozen=True)
class MirrorResult:
    """What one mirror call did.

    Attributes:
        model: registered model name (also the model package group's name).
        version: registered version.
        direction: ``push`` (registry -> SageMaker), ``pull`` (SageMaker -> registry) or ``none`` (in step).
        status: the status both sides have now (for ``none`` after a pull refused to act: the registry's).
        package_arn: the model package of this version.
        changed: whether anything was written.
        detail: one line for a person.
    """

    model: str
    version: int
    direction: str
    status: str
    package_arn: str
    changed: bool
    detail: str


class SageMakerMirror:
    """Push a version's approval status to SageMaker, or pull one set there back into the registry.

    Args:
        registry: the project's registry (its ``set_status`` and ``record_event`` write the history).
        sagemaker: a boto3 ``sagemaker`` client (standard AWS chain; ``AWS_ENDPOINT_URL`` for moto).
        sleep: sleep function for throttling backoff, injectable for tests.
        max_attempts: attempts per AWS call while it is throttled.
    """

    def __init__(
        self,
        registry: ModelRegistry,
        sagemaker: Any,
        *,
        sleep: Callable[[float], None] = time.sleep,
        max_attempts: int = 5,
    ) -> None:
        self.registry = registry
        self.sagemaker = sagemaker
        self._call = Caller(sleep, max_attempts)

    def push(self, name: str, version: int | str, *, actor: str | None = None) -> MirrorResult:
        """Write the registry's status of ``name``/``version`` to its model package (created with its group if missing).

        Raises:
            NotFoundError: no such registered version.
            InvalidInputError, NotReadyError: SageMaker refused or could not be reached.
        """
        info = self.registry.get_version(check_model_name(name), version)
        self._ensure_group(name)
        package = self._find(name, info.version)
        status = info.status
        metadata = {META_MODEL: name, META_VERSION: str(info.version), META_MIRRORED: status}
        if package is None:
            arn = self._call(
                self.sagemaker,
                "create_model_package",
                ModelPackageGroupName=name,
                ModelPackageDescription=f"hybridml {name} version {info.version}",
                ModelApprovalStatus=status,
                CustomerMetadataProperties=metadata,
            )["ModelPackageArn"]
            previous = "none"
        elif package.get("ModelApprovalStatus") != status:
            arn = package["ModelPackageArn"]
            previous = str(package.get("ModelApprovalStatus"))
            self._call(
                self.sagemaker,
                "update_model_package",
                ModelPackageArn=arn,
                ModelApprovalStatus=status,
                ApprovalDescription=f"mirrored from the hybridml registry ({name} version {info.version})",
                CustomerMetadataProperties={**package.get("CustomerMetadataProperties", {}), **metadata},
            )
        else:
            arn = package["ModelPackageArn"]
            detail = f"SageMaker model package already {status}"
            return MirrorResult(name, info.version, "none", status, arn, False, detail)
        detail = f"registry -> sagemaker: {previous} -> {status}"
        reason = json.dumps({"group": name, "package": arn, "previous": previous}, separators=(",", ":"))
        self.registry.record_event(name, info.version, "mirror", detail, reason=reason, actor=actor)
        return MirrorResult(name, info.version, "push", status, arn, True, detail)

    def pull(self, name: str, version: int | str, *, actor: str | None = None) -> MirrorResult:
        """Set the registry's status of ``name``/``version`` to the one set on its model package in SageMaker.

        Only a status changed on the AWS side since the last push is pulled; the registry change is a
        compare-and-set against the status read here, so a decision taken in the registry meanwhile wins
        (ConflictError) rather than being overwritten.

        Raises:
            NotFoundError: no such registered version, or it was never pushed (no model package).
            ConflictError: the registry refused the change, or changed in between.
        """
        info = self.registry.get_version(check_model_name(name), version)
        package = self._find(name, info.version)
        if package is None:
            raise NotFoundError(
                f"{name} version {info.version} has no model package in SageMaker group {name!r} (push it first)"
            )
        arn = package["ModelPackageArn"]
        aws_status = str(package.get("ModelApprovalStatus"))
        metadata = dict(package.get("CustomerMetadataProperties", {}))
        if aws_status == info.status:
            return MirrorResult(name, info.version, "none", aws_status, arn, False, f"both sides are {aws_status}")
        if aws_status == metadata.get(META_MIRRORED) or aws_status not in STATUSES:
            detail = (
                f"SageMaker still has {aws_status}, as last pushed; the registry's {info.status} is newer (push it)"
                if aws_status in STATUSES
                else f"SageMaker status {aws_status!r} has no registry equivalent"
            )
            return MirrorResult(name, info.version, "none", info.status, arn, False, detail)
        note = " ".join(str(package.get("ApprovalDescription") or "").split())[:200]
        reason = f"set in SageMaker model package {arn} (group {name})" + (f": {note}" if note else "")
        self.registry.set_status(
            name, info.version, aws_status, reason=reason, actor=actor or MIRROR_ACTOR, expected=info.status
        )
        self._call(
            self.sagemaker,
            "update_model_package",
            ModelPackageArn=arn,
            ModelApprovalStatus=aws_status,
            CustomerMetadataProperties={**metadata, META_MIRRORED: aws_status},
        )
        detail = f"sagemaker -> registry: {info.status} -> {aws_status}"
        figures = json.dumps({"group": name, "package": arn, "previous": info.status}, separators=(",", ":"))
        self.registry.record_event(name, info.version, "mirror", detail, reason=figures, actor=actor or MIRROR_ACTOR)
        return MirrorResult(name, info.version, "pull", aws_status, arn, True, detail)

    def _ensure_group(self, name: str) -> None:
        found = self._call(self.sagemaker, "describe_model_package_group", missing_ok=True, ModelPackageGroupName=name)
        if found is None:
            self._call(
                self.sagemaker,
                "create_model_package_group",
                ModelPackageGroupName=name,
                ModelPackageGroupDescription=f"hybridml model {name} (approval mirrored from the hybridml registry)",
            )

    def _find(self, name: str, version: int) -> dict[str, Any] | None:
        """The model package of ``version`` in group ``name`` (described), or None."""
        token: str | None = None
        while True:
            params: dict[str, Any] = {"ModelPackageGroupName": name, **({"NextToken": token} if token else {})}
            page = self._call(self.sagemaker, "list_model_packages", missing_ok=True, **params)
            if page is None:
                return None  # no group yet
            for summary in page.get("ModelPackageSummaryList", []):
                package = self._call(
                    self.sagemaker, "describe_model_package", ModelPackageName=summary["ModelPackageArn"]
                )
                if package.get("CustomerMetadataProperties", {}).get(META_VERSION) == str(version):
                    return dict(package)
            token = page.get("NextToken")
            if not token:
                return None
