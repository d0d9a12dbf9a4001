"""The conventions services are written in: repository, service, router, errors, envelope."""

from core.bases.deps import DatabaseDep, OutboxDep, SessionDep, SnapshotDep, TransactionDep
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
from core.bases.pagination import Page, PageRequest, max_page
from core.bases.permissions import Permissions, allow_if, deny
from core.bases.repository import BaseRepository
from core.bases.responses import error_responses
from core.bases.router import BaseRouter
from core.bases.schemas import Envelope, ListEnvelope, PageMeta
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
    "DatabaseDep",
    "Envelope",
    "EventOutbox",
    "FieldError",
    "ForbiddenError",
    "ListEnvelope",
    "NotFoundError",
    "OutboxDep",
    "Page",
    "PageMeta",
    "PageRequest",
    "Permission",
    "Permissions",
    "SessionDep",
    "SnapshotDep",
    "TooManyRequestsError",
    "TransactionDep",
    "UnauthorizedError",
    "ValidationError",
    "allow_if",
    "deny",
    "error_responses",
    "install_exception_handlers",
    "max_page",
]
