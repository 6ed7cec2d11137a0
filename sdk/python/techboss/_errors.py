"""Exceptions: every error the API answers becomes an APIError subclass."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Dict, List, Optional


@dataclass(frozen=True)
class FieldError:
    """One bad field of a request (a 422 names each)."""

    field: str
    reason: str


class TechBossError(Exception):
    """Base class of every exception this package raises."""


class APIError(TechBossError):
    """The API answered with an error: {"error": {"code", "message", "request_id", "fields"?}}.

    ``status_code`` is the HTTP status (0 for an ``error`` event inside a
    stream), ``code`` the API's error code (``invalid``, ``not_found``, ...),
    ``fields`` the bad fields of a 422.
    """

    def __init__(
        self,
        status_code: int,
        code: str,
        message: str,
        request_id: str = "",
        fields: Optional[List[FieldError]] = None,
        retry_after: Optional[float] = None,
    ) -> None:
        super().__init__(f"{status_code} {code}: {message}" if status_code else f"{code}: {message}")
        self.status_code = status_code
        self.code = code
        self.message = message
        self.request_id = request_id
        self.fields = fields or []
        self.retry_after = retry_after

    @property
    def field_names(self) -> List[str]:
        """The names of the bad fields, in the order the API gave them."""
        return [f.field for f in self.fields]


class BadRequestError(APIError):
    """400: the body could not be parsed."""


class AuthenticationError(APIError):
    """401: no valid token or session."""


class PaymentRequiredError(APIError):
    """402: an LLM budget is exhausted."""


class PermissionDeniedError(APIError):
    """403: not allowed."""


class NotFoundError(APIError):
    """404: no such thing, or it is someone else's."""


class ConflictError(APIError):
    """409: the state forbids it now (e.g. an active run)."""


class PayloadTooLargeError(APIError):
    """413: a body or file is above a limit."""


class ValidationError(APIError):
    """422: ``fields`` names each bad field."""


class RateLimitError(APIError):
    """429: slow down (``retry_after`` seconds when known)."""


class ServiceUnavailableError(APIError):
    """503: the database is unreachable, or a feature is not configured."""


class StreamError(TechBossError):
    """A stream ended and could not be resumed (the last error is ``__cause__``)."""


_BY_STATUS = {
    400: BadRequestError,
    401: AuthenticationError,
    402: PaymentRequiredError,
    403: PermissionDeniedError,
    404: NotFoundError,
    409: ConflictError,
    413: PayloadTooLargeError,
    422: ValidationError,
    429: RateLimitError,
    503: ServiceUnavailableError,
}


def error_from_body(status: int, body: Any, retry_after: Optional[str] = None) -> APIError:
    """Builds the exception for an error answer (body: the parsed JSON, or text)."""
    err: Dict[str, Any] = {}
    if isinstance(body, dict) and isinstance(body.get("error"), dict):
        err = body["error"]
    elif isinstance(body, dict):
        err = body
    code = str(err.get("code") or "http_%d" % status)
    message = str(err.get("message") or (body if isinstance(body, str) and body else "HTTP %d" % status))
    fields = [
        FieldError(field=str(f.get("field", "")), reason=str(f.get("reason", "")))
        for f in err.get("fields") or []
        if isinstance(f, dict)
    ]
    ra: Optional[float] = None
    if retry_after:
        try:
            ra = float(retry_after)
        except ValueError:
            ra = None
    cls = _BY_STATUS.get(status, APIError)
    return cls(status, code, message, str(err.get("request_id") or ""), fields, ra)
