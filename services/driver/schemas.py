"""What clients send and receive; separate from the stored models."""

from __future__ import annotations

import uuid
from datetime import date, datetime
from typing import Literal

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, field_validator

Status = Literal["offline", "available", "busy"]

LICENCE_PATTERN = r"^[A-Z0-9][A-Z0-9-]{4,18}[A-Z0-9]$"
"""6 to 20 capital letters, digits and inner dashes (e.g. `DL-1234567`)."""
PLATE_PATTERN = r"^[A-Z0-9][A-Z0-9 -]{0,10}[A-Z0-9]$"


class Vehicle(BaseModel):
    model_config = ConfigDict(extra="forbid")

    make: str = Field(min_length=1, max_length=50)
    model: str = Field(min_length=1, max_length=50)
    plate: str = Field(pattern=PLATE_PATTERN, description="2-12 capitals, digits, spaces, dashes")
    colour: str = Field(min_length=1, max_length=30)
    year: int = Field(ge=1980, le=2100, description="Not after next year")

    @field_validator("make", "model", "colour")
    @classmethod
    def _not_blank(cls, value: str) -> str:
        if not value.strip():
            raise ValueError("must not be blank")
        return value.strip()


class DriverCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    licence_number: str = Field(pattern=LICENCE_PATTERN,
                                description="6-20 capitals, digits and inner dashes")
    licence_expiry: date = Field(description="Must be after today")
    vehicle: Vehicle


class StatusChange(BaseModel):
    model_config = ConfigDict(extra="forbid")

    status: Status


class LocationReport(BaseModel):
    model_config = ConfigDict(extra="forbid")

    lat: float = Field(ge=-90, le=90)
    lon: float = Field(ge=-180, le=180)
    recorded_at: AwareDatetime | None = Field(
        default=None, description="When the device took the fix (default: now); a report "
        "older than the stored one does not replace it. At most 30 s in the future.")


class VehiclePublic(BaseModel):
    make: str
    model: str
    plate: str
    colour: str
    year: int


class DriverPublic(BaseModel):
    id: uuid.UUID
    user_id: str
    licence_number: str | None = Field(
        description="Shown to the driver and to holders of drivers:write only (null to others)")
    licence_expiry: date
    vehicle: VehiclePublic
    status: Status
    created_at: datetime
    updated_at: datetime


class LocationPublic(BaseModel):
    driver_id: uuid.UUID
    lat: float
    lon: float
    cell: str
    recorded_at: datetime
    applied: bool = Field(description="False when a later location was already stored")


class NearbyDriver(BaseModel):
    driver_id: uuid.UUID
    user_id: str
    lat: float
    lon: float
    distance_km: float
    recorded_at: datetime
    vehicle: VehiclePublic


class NearbyPage(BaseModel):
    items: list[NearbyDriver]
    radius_km: float
