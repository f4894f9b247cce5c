"""The few exception types of hybridml, each mapped to an HTTP status and a CLI exit code at the edge."""

from __future__ import annotations


class HybridmlError(Exception):
    """Base error: a message a person can act on.

    Subclasses carry the HTTP status (for servers) and exit code (for the CLI) that the edges map them to;
    nothing inside the core turns an error into a status itself.
    """

    http_status = 500
    exit_code = 1

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message

    def __str__(self) -> str:
        return self.message


class InvalidInputError(HybridmlError):
    """The caller sent something malformed: data, payload, config, manifest or argument."""

    http_status = 400
    exit_code = 2


class NotFoundError(HybridmlError):
    """A file, model, version, alias or endpoint that was named does not exist."""

    http_status = 404
    exit_code = 3


class ConflictError(HybridmlError):
    """The request clashes with current state (e.g. deploying a version that is not Approved)."""

    http_status = 409
    exit_code = 4


class NotReadyError(HybridmlError):
    """A server or deployment is not (yet) ready, or did not become ready within its time budget."""

    http_status = 503
    exit_code = 5


class PermissionDeniedError(HybridmlError):
    """The caller's identity may not do what was asked (e.g. a Kubernetes RBAC refusal, HTTP 403)."""

    http_status = 403
    exit_code = 6


class PayloadTooLargeError(InvalidInputError):
    """A request body or batch exceeds the configured limit."""

    http_status = 413
