"""Domain exceptions. Services raise these; the HTTP layer maps them to the API's error shape in one place."""

from __future__ import annotations

from typing import Any


class FormworkError(Exception):
    status = 400
    code = "bad_request"

    def __init__(self, message: str, details: dict[str, Any] | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.details = details

    def to_dict(self) -> dict[str, Any]:
        err: dict[str, Any] = {"code": self.code, "message": self.message}
        if self.details:
            err["details"] = self.details
        return {"error": err}


class BadRequest(FormworkError):
    status = 400
    code = "bad_request"


class Unauthorized(FormworkError):
    status = 401
    code = "unauthorized"


class Forbidden(FormworkError):
    status = 403
    code = "forbidden"


class NotFound(FormworkError):
    status = 404
    code = "not_found"


class Conflict(FormworkError):
    status = 409
    code = "conflict"


class PreconditionFailed(FormworkError):
    status = 412
    code = "precondition_failed"

    def __init__(self, message: str, current: dict[str, Any] | None = None) -> None:
        super().__init__(message)
        self.current = current

    def to_dict(self) -> dict[str, Any]:
        out = super().to_dict()
        if self.current is not None:
            out["current"] = self.current
        return out


class TooLarge(FormworkError):
    status = 413
    code = "too_large"


class UnsupportedMediaType(FormworkError):
    status = 415
    code = "unsupported_media_type"


class ValidationFailed(FormworkError):
    status = 422
    code = "validation_error"

    @classmethod
    def from_details(cls, details: dict[str, list[str]]) -> ValidationFailed:
        n = len(details)
        if n == 1:
            key, msgs = next(iter(details.items()))
            msg = f"{key}: {msgs[0]}" if key else msgs[0]
        else:
            msg = f"{n} fields are invalid"
        return cls(msg, details)


class RateLimited(FormworkError):
    status = 429
    code = "rate_limited"


def field_error(key: str, message: str) -> ValidationFailed:
    return ValidationFailed.from_details({key: [message]})


def reject_unknown_args(args: Any, allowed: set[str] | frozenset[str]) -> None:
    """A query parameter nobody reads is a typo the caller should hear about (400)."""
    unknown = set(args) - set(allowed)
    if unknown:
        raise BadRequest(f"unknown query parameter(s): {', '.join(sorted(unknown))[:200]}")
