"""The one error tree of medcycle.

Every error a user can meet is a :class:`MedcycleError`: it carries a message (what went wrong),
a hint (what to do next), an HTTP status and a process exit code. The CLI maps it to an exit code
and the API to one JSON shape, each in one place (``cli/errors.py`` and ``api/errors.py``)::

    MedcycleError                       exit 1   HTTP 500
    ├── ConfigError                     exit 78  HTTP 500   bad settings, refused defaults
    ├── UsageError                      exit 2   HTTP 400   bad input from the caller
    │   └── ValidationFailed            exit 2   HTTP 422
    ├── NotFound                        exit 4   HTTP 404
    ├── Conflict                        exit 5   HTTP 409   already exists / wrong state
    ├── AuthError                       exit 6   HTTP 401   missing or unknown token
    │   └── PermissionDenied            exit 6   HTTP 403   role does not allow it
    ├── IntegrityError                  exit 7   HTTP 500   stored bytes do not match their digest
    ├── QueueFull                       exit 8   HTTP 429   backpressure, retry after N seconds
    └── BackendUnavailable              exit 9   HTTP 503   database / object store / queue unreachable
"""

from __future__ import annotations

from typing import Any, ClassVar


class MedcycleError(Exception):
    """Base of every error medcycle raises on purpose.

    Args:
        message: what went wrong, in one sentence, naming the thing concerned.
        hint: what the user can do next (often a command to run).
        details: machine-readable extras put in the JSON error body.
    """

    code: ClassVar[str] = "error"
    http_status: ClassVar[int] = 500
    exit_code: ClassVar[int] = 1

    def __init__(self, message: str, *, hint: str | None = None, **details: Any) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint
        self.details = details

    def to_dict(self) -> dict[str, Any]:
        """The one JSON error shape used by the API and by ``--json`` output."""
        return {"error": {"code": self.code, "message": self.message, "hint": self.hint, "details": self.details}}

    def __str__(self) -> str:
        return self.message if not self.hint else f"{self.message}\nHint: {self.hint}"


class ConfigError(MedcycleError):
    """A setting is missing or wrong (or a backend is not supported); fix the configuration, nothing ran."""

    code = "config_error"
    exit_code = 78


class UsageError(MedcycleError):
    """The request or command line asks for something that cannot be done as given."""

    code = "bad_request"
    http_status = 400
    exit_code = 2


class ValidationFailed(UsageError):
    """Input data failed validation (a file, a schema, a policy); the message names what and where."""

    code = "validation_failed"
    http_status = 422


class PayloadTooLarge(UsageError):
    """A request, file or archive over the configured limits."""

    code = "too_large"
    http_status = 413


class UnsupportedMediaType(UsageError):
    """A request body of a content type the endpoint does not take."""

    code = "unsupported_media_type"
    http_status = 415


class LengthRequired(UsageError):
    """An upload without Content-Length: its size must be known before it is read."""

    code = "length_required"
    http_status = 411


class NotFound(MedcycleError):
    """A named thing (dataset, version, model, job, object …) does not exist."""

    code = "not_found"
    http_status = 404
    exit_code = 4


class Conflict(MedcycleError):
    """The thing exists in another state (immutable version, name taken, referenced data)."""

    code = "conflict"
    http_status = 409
    exit_code = 5


class AuthError(MedcycleError):
    """No valid token or session."""

    code = "unauthorized"
    http_status = 401
    exit_code = 6


class PermissionDenied(AuthError):
    """Authenticated, but the role does not allow this."""

    code = "forbidden"
    http_status = 403


class IntegrityError(MedcycleError):
    """Stored bytes or rows are not what their digest or invariants say; run `medcycle store fsck`."""

    code = "integrity_error"
    http_status = 500
    exit_code = 7


class QueueFull(MedcycleError):
    """The queue is at its bound; ``retry_after`` says how many seconds to wait."""

    code = "queue_full"
    http_status = 429
    exit_code = 8

    def __init__(self, message: str, *, retry_after: int = 1, hint: str | None = None, **details: Any) -> None:
        super().__init__(message, hint=hint or f"Retry after {retry_after} s.", retry_after=retry_after, **details)
        self.retry_after = retry_after


class BackendUnavailable(MedcycleError):
    """The database, queue or object store cannot be reached; check it runs and the URL."""

    code = "backend_unavailable"
    http_status = 503
    exit_code = 9
