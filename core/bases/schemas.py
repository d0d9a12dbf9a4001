"""The shapes every service answers with: one success envelope, one error body.

    {"data": {...}, "message": "Widget created"}
    {"data": [...], "message": null, "meta": {"page": 1, "size": 20, "total": 42, "pages": 3}}
    {"error": {"code": "not_found", "message": "...", "fields": [...]}}
"""

from __future__ import annotations

from typing import Generic, TypeVar

from pydantic import BaseModel, Field

T = TypeVar("T")


class PageMeta(BaseModel):
    """Where a list page sits in the whole result."""

    page: int = Field(description="1-based page number (offset // size + 1).")
    size: int = Field(description="Items per page (the limit).")
    total: int = Field(description="Items matching the query, over all pages.")
    pages: int = Field(description="Number of pages at this size.")


class Envelope(BaseModel, Generic[T]):
    """A single item (or nothing) and an optional human-readable message."""

    data: T
    message: str | None = None


class ListEnvelope(BaseModel, Generic[T]):
    """One page of items with its pagination meta."""

    data: list[T]
    message: str | None = None
    meta: PageMeta


class FieldProblem(BaseModel):
    """Why one input field was refused."""

    field: str = Field(description="Dotted path inside `location`, e.g. 'address.city'.")
    reason: str
    code: str = Field(description="Machine-readable reason, e.g. 'missing', 'unique'.")
    location: str | None = Field(default=None, description="body, query, path or header.")


class ErrorDetail(BaseModel):
    code: str
    message: str
    fields: list[FieldProblem] = Field(default_factory=list)


class ErrorResponse(BaseModel):
    """The body of every error response."""

    error: ErrorDetail
