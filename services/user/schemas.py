"""What clients send and receive, separate from the stored model.

Input is strict (`extra="forbid"`): a misspelt field is a 422 naming it, not a silent no-op.
"""

from __future__ import annotations

import re
import uuid
from datetime import datetime
from typing import Annotated, Literal, Self

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    HttpUrl,
    UrlConstraints,
    field_validator,
    model_validator,
)

from services.user.models import DISPLAY_NAME_LENGTH, URL_LENGTH

Channel = Literal["email", "sms", "push"]
LANGUAGE_PATTERN = r"^[a-z]{2,3}(-[A-Z]{2})?$"
_PHONE = re.compile(r"^\+[1-9][0-9]{6,14}$")
_PHONE_PUNCTUATION = re.compile(r"[\s().-]")


def normalize_phone(value: str) -> str:
    """An international number as E.164 (`+` and 7 to 15 digits, no leading 0), from what
    people type: spaces, dots, dashes and parentheses are dropped, `00` becomes `+`."""
    digits = _PHONE_PUNCTUATION.sub("", value)
    if digits.startswith("00"):
        digits = "+" + digits[2:]
    if not _PHONE.fullmatch(digits):
        raise ValueError("an international number, like +44 20 7946 0958 (E.164: a + and "
                         "7 to 15 digits, the first not 0)")
    return digits


def _clean_name(value: str) -> str:
    value = " ".join(value.split())
    if not value:
        raise ValueError("may not be blank")
    if any(ord(ch) < 32 for ch in value):
        raise ValueError("may not contain control characters")
    return value


Phone = Annotated[str, Field(max_length=32, examples=["+44 20 7946 0958"],
                             description="International format; stored as E.164."),
                  AfterValidator(normalize_phone)]
DisplayName = Annotated[str, Field(min_length=1, max_length=DISPLAY_NAME_LENGTH),
                        AfterValidator(_clean_name)]
AvatarUrl = Annotated[HttpUrl, UrlConstraints(max_length=URL_LENGTH,
                                              allowed_schemes=["http", "https"])]


def _email_only() -> list[Channel]:
    return ["email"]


class Preferences(BaseModel):
    """A user's preferences, as stored and answered. Unknown stored keys are ignored, so an
    older row still reads after a key is retired."""

    model_config = ConfigDict(extra="ignore")

    language: str = Field(default="en", pattern=LANGUAGE_PATTERN,
                          description="BCP 47 language, optionally with a region: en, pt-BR.")
    marketing_opt_in: bool = False
    notification_channels: list[Channel] = Field(default_factory=_email_only, max_length=3)

    @field_validator("notification_channels")
    @classmethod
    def _distinct(cls, channels: list[Channel]) -> list[Channel]:
        return list(dict.fromkeys(channels))


class PreferencesUpdate(BaseModel):
    """The preferences to change; the others keep their value."""

    model_config = ConfigDict(extra="forbid")

    language: str | None = Field(default=None, pattern=LANGUAGE_PATTERN)
    marketing_opt_in: bool | None = None
    notification_channels: list[Channel] | None = Field(default=None, max_length=3)

    @model_validator(mode="after")
    def _no_nulls(self) -> Self:
        _refuse_null(self, self.model_fields_set)
        return self


class ProfileUpdate(BaseModel):
    """A partial update: only the fields sent change. `phone` and `avatar_url` may be null
    (removed); `display_name` and `preferences` may not."""

    model_config = ConfigDict(extra="forbid")

    display_name: DisplayName | None = None
    phone: Phone | None = None
    avatar_url: AvatarUrl | None = None
    preferences: PreferencesUpdate | None = None

    @model_validator(mode="after")
    def _no_nulls(self) -> Self:
        _refuse_null(self, self.model_fields_set & {"display_name", "preferences"})
        return self


def _refuse_null(model: BaseModel, fields: set[str]) -> None:
    nulls = sorted(name for name in fields if getattr(model, name) is None)
    if nulls:
        raise ValueError(f"may not be null: {', '.join(nulls)}")


class ProfileCreate(BaseModel):
    """A new profile, from auth's `auth.user_registered` (never from a client)."""

    model_config = ConfigDict(extra="forbid")

    id: uuid.UUID
    email: str
    display_name: str
    preferences: dict[str, object] = Field(
        default_factory=lambda: Preferences().model_dump(mode="json"))


class ProfilePublic(BaseModel):
    """A profile as its owner, admins and other services see it (also the cached value)."""

    id: uuid.UUID
    email: str
    display_name: str
    phone: str | None
    avatar_url: str | None
    preferences: Preferences
    created_at: datetime
    updated_at: datetime
