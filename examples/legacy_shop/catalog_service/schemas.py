"""The shop's catalog contract, kept field for field: clients must not see the move."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field


class ProductIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    sku: str = Field(min_length=1, max_length=32)
    name: str = Field(min_length=1, max_length=200)
    price_cents: int = Field(ge=0)


class ProductOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)
    id: int
    sku: str
    name: str
    price_cents: int
