"""The one error tree of spark-grpc.

Service and data code raise these; a single boundary (``spark_grpc.interceptors``) turns
them into gRPC statuses with ``google.rpc.ErrorInfo`` and, for bad input,
``google.rpc.BadRequest`` field violations. Nothing else builds a status code.

    SparkError
    ├── InvalidArgumentError        INVALID_ARGUMENT  (carries field violations)
    ├── NotFoundError               NOT_FOUND
    ├── AlreadyExistsError          ALREADY_EXISTS
    ├── FailedPreconditionError     FAILED_PRECONDITION
    ├── ResourceExhaustedError      RESOURCE_EXHAUSTED (carries a retry delay)
    ├── UnauthenticatedError        UNAUTHENTICATED  (no key, bad key, revoked key)
    ├── PermissionDeniedError       PERMISSION_DENIED (the key's scope does not allow it)
    ├── UnavailableError            UNAVAILABLE
    │   └── DatabaseUnavailableError    Postgres cannot be reached
    ├── ConfigurationError          INTERNAL: a setting is missing or wrong (start-up)
    └── SourceError                 a call to a LangFlow / Agents / Hive source failed
        ├── SourceUnreachableError      connection refused, DNS, reset  -> UNAVAILABLE
        ├── SourceTimeoutError          no answer in time               -> DEADLINE_EXCEEDED
        ├── SourceAuthError             401 / 403                       -> FAILED_PRECONDITION
        ├── SourceNotFoundError         404 for a named remote flow     -> NOT_FOUND
        └── SourceResponseError         other 4xx/5xx or malformed body -> FAILED_PRECONDITION
"""

from __future__ import annotations

from dataclasses import dataclass

import grpc

DOMAIN = "spark.automagik.dev"


@dataclass(frozen=True)
class FieldViolation:
    """One bad field of a request.

    Attributes:
        field: dotted path of the field in the request message, e.g. ``source.url``.
        description: what is wrong and what would be accepted.
    """

    field: str
    description: str


class SparkError(Exception):
    """Root of every error the service raises on purpose.

    Attributes:
        message: an English, actionable sentence; safe to show to a client.
        reason: an UPPER_SNAKE_CASE machine-readable cause, sent as ErrorInfo.reason.
        metadata: extra string context, sent as ErrorInfo.metadata.
    """

    code: grpc.StatusCode = grpc.StatusCode.INTERNAL
    default_reason = "INTERNAL"

    def __init__(
        self, message: str, *, reason: str | None = None, metadata: dict[str, str] | None = None
    ) -> None:
        super().__init__(message)
        self.message = message
        self.reason = reason or self.default_reason
        self.metadata = dict(metadata or {})


class InvalidArgumentError(SparkError):
    """The request is malformed; nothing was written."""

    code = grpc.StatusCode.INVALID_ARGUMENT
    default_reason = "INVALID_ARGUMENT"

    def __init__(
        self,
        message: str,
        *,
        violations: list[FieldViolation] | None = None,
        reason: str | None = None,
        metadata: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message, reason=reason, metadata=metadata)
        self.violations = list(violations or [])


class NotFoundError(SparkError):
    """The named resource does not exist."""

    code = grpc.StatusCode.NOT_FOUND
    default_reason = "NOT_FOUND"


class AlreadyExistsError(SparkError):
    """A resource with the same identity exists already."""

    code = grpc.StatusCode.ALREADY_EXISTS
    default_reason = "ALREADY_EXISTS"


class FailedPreconditionError(SparkError):
    """The system is not in a state that allows the operation."""

    code = grpc.StatusCode.FAILED_PRECONDITION
    default_reason = "FAILED_PRECONDITION"


class ResourceExhaustedError(SparkError):
    """A limit was hit; the client may retry after ``retry_after_s``."""

    code = grpc.StatusCode.RESOURCE_EXHAUSTED
    default_reason = "RESOURCE_EXHAUSTED"

    def __init__(
        self,
        message: str,
        *,
        retry_after_s: float = 1.0,
        reason: str | None = None,
        metadata: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message, reason=reason, metadata=metadata)
        self.retry_after_s = retry_after_s


class UnauthenticatedError(SparkError):
    """The caller did not prove who it is."""

    code = grpc.StatusCode.UNAUTHENTICATED
    default_reason = "UNAUTHENTICATED"


class PermissionDeniedError(SparkError):
    """The caller is known but may not do this."""

    code = grpc.StatusCode.PERMISSION_DENIED
    default_reason = "PERMISSION_DENIED"


class UnavailableError(SparkError):
    """A dependency is down; the same call may succeed later."""

    code = grpc.StatusCode.UNAVAILABLE
    default_reason = "UNAVAILABLE"


class DatabaseUnavailableError(UnavailableError):
    """Postgres cannot be reached right now."""

    default_reason = "DATABASE_UNAVAILABLE"


class ConfigurationError(SparkError):
    """A setting is missing or invalid (a start-up error, or a secret no key decrypts)."""

    code = grpc.StatusCode.INTERNAL
    default_reason = "CONFIGURATION"


class SourceError(SparkError):
    """A call to a workflow source (LangFlow, Agents, Hive) failed.

    Attributes:
        retryable: whether the same call may succeed later (connection errors, timeouts,
            5xx, 429); used by the task retry policy.
        http_status: the source's HTTP status, when it answered.
        retry_after_s: the source's Retry-After, when it sent one.
    """

    code = grpc.StatusCode.FAILED_PRECONDITION
    default_reason = "SOURCE_ERROR"
    retryable = False

    def __init__(
        self,
        message: str,
        *,
        http_status: int | None = None,
        retry_after_s: float | None = None,
        retryable: bool | None = None,
        reason: str | None = None,
        metadata: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message, reason=reason, metadata=metadata)
        self.http_status = http_status
        self.retry_after_s = retry_after_s
        if retryable is not None:
            self.retryable = retryable
        if http_status is not None:
            self.metadata.setdefault("http_status", str(http_status))


class SourceUnreachableError(SourceError):
    """The source could not be connected to."""

    code = grpc.StatusCode.UNAVAILABLE
    default_reason = "SOURCE_UNREACHABLE"
    retryable = True


class SourceTimeoutError(SourceError):
    """The source did not answer in time."""

    code = grpc.StatusCode.DEADLINE_EXCEEDED
    default_reason = "SOURCE_TIMEOUT"
    retryable = True


class SourceAuthError(SourceError):
    """The source refused the stored API key."""

    default_reason = "SOURCE_UNAUTHENTICATED"


class SourceNotFoundError(SourceError):
    """The source does not have the named remote flow."""

    code = grpc.StatusCode.NOT_FOUND
    default_reason = "REMOTE_FLOW_NOT_FOUND"


class SourceResponseError(SourceError):
    """The source answered with an error status or a body we cannot read."""

    default_reason = "SOURCE_BAD_RESPONSE"
