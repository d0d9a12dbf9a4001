"""Errors a caller can act on, each with its HTTP status, and the one place that maps them
(and FastAPI's, Starlette's and the database's own) to the standard error body.

Raise these from services and repositories; routes never build error responses by hand.
5xx answers never carry the exception's text: it is logged, the client gets a generic line
(unless the error class says its message is written for clients: `expose`).
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from http import HTTPStatus
from typing import Any, ClassVar

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from sqlalchemy.exc import DBAPIError, IntegrityError
from sqlalchemy.exc import TimeoutError as PoolTimeoutError
from starlette.exceptions import HTTPException as StarletteHTTPException

from core.bases.schemas import ErrorDetail, ErrorResponse, FieldProblem
from core.db.errors import constraint_violation, refused_value, unavailable

log = logging.getLogger(__name__)

_LOCATIONS = frozenset({"body", "query", "path", "header", "cookie"})


@dataclass(frozen=True, slots=True)
class FieldError:
    """One refused input field: which, why, and a machine-readable code."""

    field: str
    reason: str
    code: str = "invalid"
    location: str | None = None

    def problem(self) -> FieldProblem:
        return FieldProblem(field=self.field, reason=self.reason, code=self.code,
                            location=self.location)


class AppError(Exception):
    """Root of the application errors; each subclass is one HTTP status and error code."""

    status_code: ClassVar[int] = 500
    code: ClassVar[str] = "internal_error"
    default_message: ClassVar[str] = "Internal server error"
    expose: ClassVar[bool] = False
    """A 5xx whose message is written for clients (it names no internals): answered as is,
    with its code and headers, instead of the generic line."""

    def __init__(
        self,
        message: str | None = None,
        *,
        fields: Iterable[FieldError] = (),
        headers: Mapping[str, str] | None = None,
    ) -> None:
        self.message = message or self.default_message
        self.fields = tuple(fields)
        self.headers = dict(headers or {})
        super().__init__(self.message)


class ConfigurationError(AppError):
    """The service is wired wrongly (a programming error); answered as a plain 500."""

    code = "configuration_error"


class BadRequestError(AppError):
    """The request cannot be understood as sent."""

    status_code = 400
    code = "bad_request"
    default_message = "Bad request"


class ValidationError(AppError):
    """Input is well-formed but breaks a rule; `fields` say which and why."""

    status_code = 422
    code = "validation_error"
    default_message = "Invalid input"

    @classmethod
    def for_field(cls, field: str, reason: str, *, code: str = "invalid",
                  location: str | None = "body") -> ValidationError:
        return cls(f"{field}: {reason}", fields=[FieldError(field, reason, code, location)])


class UnauthorizedError(AppError):
    """No valid credentials were presented."""

    status_code = 401
    code = "unauthorized"
    default_message = "Authentication required"

    def __init__(self, message: str | None = None, **kwargs: Any) -> None:
        kwargs.setdefault("headers", {"WWW-Authenticate": "Bearer"})
        super().__init__(message, **kwargs)


class ForbiddenError(AppError):
    """The caller is known but may not do this."""

    status_code = 403
    code = "forbidden"
    default_message = "Not allowed"


class NotFoundError(AppError):
    """The resource does not exist (or is soft-deleted and hidden)."""

    status_code = 404
    code = "not_found"
    default_message = "Not found"


class ConflictError(AppError):
    """The request clashes with current state: a duplicate, a stale version, a rule."""

    status_code = 409
    code = "conflict"
    default_message = "Conflict with the current state"


class TooManyRequestsError(AppError):
    """The caller used up its rate limit; `headers` say when to come back (`Retry-After`)."""

    status_code = 429
    code = "rate_limited"
    default_message = "Too many requests"


def from_integrity_error(exc: IntegrityError, resource: str = "record") -> AppError:
    """Translate a database constraint violation into the error the client should see."""
    violation = constraint_violation(exc)
    columns = violation.columns or ("",)
    if violation.kind == "unique":
        named = ", ".join(c for c in violation.columns) or "these values"
        return ConflictError(
            f"A {resource} with this {named} already exists",
            fields=[FieldError(c, "already exists", "unique", "body") for c in columns if c])
    if violation.kind == "foreign_key":
        return ConflictError(f"The {resource} refers to, or is referred to by, other records")
    if violation.kind == "not_null":
        return ValidationError(
            "A required value is missing",
            fields=[FieldError(c, "may not be null", "not_null", "body") for c in columns if c])
    if violation.kind == "check":
        return ValidationError(f"The {resource} breaks rule {violation.constraint or '?'}")
    return ConflictError(f"The {resource} conflicts with existing data")


# --- HTTP mapping ---------------------------------------------------------------------------


def error_response(
    status: int,
    code: str,
    message: str,
    fields: Iterable[FieldError] = (),
    headers: Mapping[str, str] | None = None,
) -> JSONResponse:
    body = ErrorResponse(error=ErrorDetail(
        code=code, message=message, fields=[f.problem() for f in fields]))
    return JSONResponse(body.model_dump(mode="json"), status_code=status,
                        headers=dict(headers or {}))


def install_exception_handlers(app: FastAPI) -> None:
    """Map every error to the standard body, once per app."""
    app.add_exception_handler(AppError, _app_error)
    app.add_exception_handler(RequestValidationError, _request_validation_error)
    app.add_exception_handler(StarletteHTTPException, _http_exception)
    app.add_exception_handler(IntegrityError, _integrity_error)
    app.add_exception_handler(DBAPIError, _database_error)
    app.add_exception_handler(PoolTimeoutError, _database_error)
    app.add_exception_handler(ConnectionError, _database_error)
    app.add_exception_handler(Exception, _unexpected)


async def _app_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, AppError)
    if exc.status_code >= 500:
        log.error("%s on %s %s", type(exc).__name__, request.method, request.url.path,
                  exc_info=exc)
        if not exc.expose:
            return error_response(exc.status_code, "internal_error", AppError.default_message)
    return error_response(exc.status_code, exc.code, exc.message, exc.fields, exc.headers)


async def _request_validation_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestValidationError)
    errors = exc.errors()
    if any(err.get("type") == "json_invalid" for err in errors):
        # Not JSON at all is a request that cannot be understood (400), like a body FastAPI
        # cannot even decode; 422 is for well-formed input that breaks a rule.
        return error_response(BadRequestError.status_code, BadRequestError.code,
                              "The request body is not valid JSON",
                              [_json_error(err) for err in errors])
    fields = [_field_error(err) for err in errors]
    return error_response(422, ValidationError.code, ValidationError.default_message, fields)


def _json_error(err: Mapping[str, Any]) -> FieldError:
    loc = list(err.get("loc", ()))
    where = f" at character {loc[1]}" if len(loc) > 1 else ""
    reason = str((err.get("ctx") or {}).get("error") or err.get("msg", "invalid JSON"))
    return FieldError("body", f"{reason}{where}", "json_invalid", "body")


def _field_error(err: Mapping[str, Any]) -> FieldError:
    loc = [str(part) for part in err.get("loc", ())]
    location = loc[0] if loc and loc[0] in _LOCATIONS else None
    path = loc[1:] if location else loc
    return FieldError(".".join(path) or (location or ""), str(err.get("msg", "invalid")),
                      str(err.get("type", "invalid")), location)


async def _http_exception(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, StarletteHTTPException)
    phrase = HTTPStatus(exc.status_code).phrase if exc.status_code in _STATUSES else "Error"
    message = exc.detail if isinstance(exc.detail, str) else phrase
    code = phrase.lower().replace(" ", "_").replace("-", "_")
    return error_response(exc.status_code, code, message, headers=exc.headers)


async def _integrity_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, IntegrityError)
    log.info("constraint violation on %s %s: %s", request.method, request.url.path, exc.orig)
    app_error = from_integrity_error(exc)
    return await _app_error(request, app_error)


async def _database_error(request: Request, exc: Exception) -> JSONResponse:
    """A value the database refused as data (too long for its column, out of range, a NUL
    character on PostgreSQL) was the client's input: a 422, not a 500. Bounds checked earlier
    name the field; this is the net for what only the database knows. A database that cannot
    serve now (down, restarting, no free connection, SQLite locked) is a 503 with Retry-After:
    a condition that passes, so clients and the gateway's retries come back rather than
    report a broken service. Any other database error is the service's fault (500)."""
    if isinstance(exc, DBAPIError) and refused_value(exc):
        log.info("value refused by the database on %s %s: %s", request.method,
                 request.url.path, exc.orig)
        return error_response(422, ValidationError.code,
                              "A value cannot be stored as sent: too long, out of range, or "
                              "with characters the database refuses")
    if unavailable(exc):  # asyncpg reports a server that is down as a bare ConnectionError
        log.warning("database unavailable on %s %s: %r", request.method, request.url.path, exc)
        return error_response(503, "database_unavailable",
                              "The service's database is unavailable; retry shortly",
                              headers={"Retry-After": str(DATABASE_RETRY_AFTER_SECONDS)})
    return await _unexpected(request, exc)


DATABASE_RETRY_AFTER_SECONDS = 5


async def _unexpected(request: Request, exc: Exception) -> JSONResponse:
    log.error("unhandled error on %s %s", request.method, request.url.path, exc_info=exc)
    return error_response(500, "internal_error", AppError.default_message)


_STATUSES = frozenset(int(s) for s in HTTPStatus)
