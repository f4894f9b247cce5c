"""The AWS edge (SageMaker target, registry mirror): clients from the standard chain, one call wrapper, error mapping.

Throttling is retried here, recognised by its error code (never its message), with exponential backoff on
the target's injected sleep; botocore's own retries are off so that one policy applies and tests can count
attempts. Validation and other errors are not retried. Errors leave as :mod:`hybridml.errors` types whose
messages carry the operation, the AWS error code and message, never request parameters or credentials.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from hybridml.errors import ConflictError, HybridmlError, InvalidInputError, NotFoundError, NotReadyError

# Error codes AWS uses for "slow down" (botocore's standard retry mode lists the same family).
THROTTLING_CODES = frozenset(
    {
        "Throttling",
        "ThrottlingException",
        "ThrottledException",
        "RequestThrottledException",
        "TooManyRequestsException",
        "ProvisionedThroughputExceededException",
        "TransactionInProgressException",
        "RequestLimitExceeded",
        "BandwidthLimitExceeded",
        "RequestThrottled",
        "SlowDown",
        "PriorRequestNotComplete",
        "EC2ThrottledException",
    }
)
FIRST_BACKOFF_S = 0.5
MAX_BACKOFF_S = 20.0
# SageMaker answers a missing resource with ValidationException "Could not find ..."; it has no other code
# for it, so here (and only here) the message decides, to tell "missing" from "refused".
_MISSING_MARKERS = ("could not find", "does not exist", "not found")


@dataclass(frozen=True)
class Clients:
    """The boto3 clients the target uses: ``sagemaker``, ``sagemaker-runtime`` and ``s3``."""

    sagemaker: Any
    runtime: Any
    s3: Any


def default_clients(region: str | None) -> Clients:
    """Clients from the standard AWS chain (profile, environment, ``AWS_ENDPOINT_URL``...) in ``region``.

    Raises:
        InvalidInputError: no region is configured anywhere.
    """
    import boto3
    from botocore.config import Config
    from botocore.exceptions import NoRegionError

    config = Config(retries={"total_max_attempts": 1}, connect_timeout=10, read_timeout=70)
    session = boto3.session.Session(region_name=region)
    try:
        return Clients(
            sagemaker=session.client("sagemaker", config=config),
            runtime=session.client("sagemaker-runtime", config=config),
            s3=session.client("s3", config=config),
        )
    except NoRegionError as exc:
        raise InvalidInputError("no AWS region: give --region or set AWS_REGION / AWS_DEFAULT_REGION") from exc


def error_code(exc: BaseException) -> str:
    """The AWS error code of a botocore ClientError ('' for anything else)."""
    response = getattr(exc, "response", None)
    if not isinstance(response, dict):
        return ""
    return str(response.get("Error", {}).get("Code", ""))


def _error_message(exc: BaseException) -> str:
    response = getattr(exc, "response", None)
    message = response.get("Error", {}).get("Message", "") if isinstance(response, dict) else ""
    return " ".join(str(message or exc).split())[:300]


def is_missing(exc: BaseException) -> bool:
    """Whether a ClientError says the named resource does not exist."""
    code = error_code(exc)
    if code in ("ResourceNotFound", "ResourceNotFoundException", "NoSuchKey", "NoSuchBucket", "404", "NotFound"):
        return True
    return code in ("ValidationException", "ValidationError") and any(
        marker in _error_message(exc).lower() for marker in _MISSING_MARKERS
    )


def mapped(exc: BaseException, operation: str) -> HybridmlError:
    """The hybridml error for a failed AWS call (the message names the operation and the AWS code)."""
    code = error_code(exc)
    text = f"SageMaker {operation} failed: {code or type(exc).__name__}: {_error_message(exc)}"
    if code in ("ResourceNotFound", "ResourceNotFoundException", "NoSuchKey", "NoSuchBucket"):
        return NotFoundError(text)
    if code in ("ValidationException", "ValidationError", "InvalidParameterValue", "MissingParameter"):
        return InvalidInputError(text)
    if code in ("ResourceInUse", "ConflictException"):
        return ConflictError(text)
    if code in ("AccessDeniedException", "AccessDenied", "UnrecognizedClientException", "InvalidClientTokenId"):
        return InvalidInputError(text)  # a configuration problem: the caller must fix role or credentials
    return NotReadyError(text)


class Caller:
    """Calls one AWS operation with throttling retried and every error mapped.

    Args:
        sleep: sleep function (the target's, injectable for tests).
        max_attempts: attempts per call while it is throttled (1: no retry).
    """

    def __init__(self, sleep: Callable[[float], None], max_attempts: int) -> None:
        self._sleep = sleep
        self.max_attempts = max_attempts

    def __call__(
        self,
        client: Any,
        method: str,
        *,
        missing_ok: bool = False,
        on_error: Callable[[BaseException], Exception] | None = None,
        **params: Any,
    ) -> Any:
        """``client.method(**params)``; with ``missing_ok`` a "no such resource" answer returns None.

        ``on_error`` maps an error that is not throttling (default: :func:`mapped`).

        Raises:
            HybridmlError: the mapped error (NotReadyError once throttled ``max_attempts`` times).
        """
        from botocore.exceptions import BotoCoreError, ClientError, NoCredentialsError

        operation = "".join(part.title() for part in method.split("_"))
        pause = FIRST_BACKOFF_S
        for attempt in range(1, self.max_attempts + 1):
            try:
                return getattr(client, method)(**params)
            except ClientError as exc:
                if missing_ok and is_missing(exc):
                    return None
                if error_code(exc) in THROTTLING_CODES:
                    if attempt < self.max_attempts:
                        self._sleep(pause)
                        pause = min(pause * 2, MAX_BACKOFF_S)
                        continue
                    raise NotReadyError(
                        f"SageMaker {operation} still throttled after {self.max_attempts} attempts:"
                        f" {error_code(exc)}: {_error_message(exc)}"
                    ) from exc
                raise (on_error(exc) if on_error is not None else mapped(exc, operation)) from exc
            except NoCredentialsError as exc:
                raise InvalidInputError(f"no AWS credentials for {operation} (set a profile or keys)") from exc
            except BotoCoreError as exc:
                raise NotReadyError(f"SageMaker {operation} failed: {type(exc).__name__}: {exc}") from exc
        raise AssertionError("unreachable")  # the loop returns or raises
