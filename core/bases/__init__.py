"""The conventions services are written in: repository, service, router, errors, envelope."""

from core.bases.errors import (
    AppError,
    BadRequestError,
    ConfigurationError,
    ConflictError,
    FieldError,
    ForbiddenError,
    NotFoundError,
    TooManyRequestsError,
    UnauthorizedError,
    ValidationError,
    install_exception_handlers,
)
from core.bases.pagination import Page, PageRequest
from core.bases.permissions import Permissions, allow_if, deny
from core.bases.repository import BaseRepository
from core.bases.responses import error_responses
from core.bases.router import BaseRouter
from core.bases.service import BaseService
from core.bases.types import EventOutbox, Permission

__all__ = [
    "AppError",
    "BadRequestError",
    "BaseRepository",
    "BaseRouter",
    "BaseService",
    "ConfigurationError",
    "ConflictError",
    "EventOutbox",
    "FieldError",
    "ForbiddenError",
    "NotFoundError",
    "Page",
    "PageRequest",
    "Permission",
    "Permissions",
    "TooManyRequestsError",
    "UnauthorizedError",
    "ValidationError",
    "allow_if",
    "deny",
    "error_responses",
    "install_exception_handlers",
]
