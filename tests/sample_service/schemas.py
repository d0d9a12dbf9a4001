"""What clients send and receive; separate from the stored model."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

Status = Literal["draft", "active", "retired"]


class WidgetCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str = Field(min_length=1, max_length=100)
    sku: str = Field(pattern=r"^[A-Z0-9-]{3,32}$")
    price_cents: int = Field(ge=0)
    status: Status = "draft"
    note: str | None = Field(default=None, max_length=200)


class WidgetUpdate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str | None = Field(default=None, min_length=1, max_length=100)
    sku: str | None = Field(default=None, pattern=r"^[A-Z0-9-]{3,32}$")
    price_cents: int | None = Field(default=None, ge=0)
    status: Status | None = None
    note: str | None = Field(default=None, max_length=200)


class WidgetPublic(BaseModel):
    id: uuid.UUID
    name: str
    sku: str
    price_cents: int
    status: str
    note: str | None
    created_at: datetime
    updated_at: datetime
    deleted_at: datetime | None
