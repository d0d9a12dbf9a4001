"""What an integer column can hold, the same on every backend.

A value the database cannot store must be refused before it reaches the driver: SQLite's
driver raises OverflowError past 64 bits and PostgreSQL refuses anything past the column's
width, and either would surface as a 500. The range is the SQL type's portable one, not the
widest a backend happens to accept (SQLite stores every INTEGER in 64 bits): a service then
refuses the same values on SQLite in development as on PostgreSQL in production.

    SmallInteger  int16    Integer  int32    BigInteger  int64

OFFSET and LIMIT are 64-bit on both backends: `BIGINT` bounds them.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any

from sqlalchemy import BigInteger, Integer, SmallInteger, inspect
from sqlalchemy.types import TypeDecorator, TypeEngine

from core.db.models import per_model


@dataclass(frozen=True, slots=True)
class IntRange:
    """Inclusive bounds of the integers a column holds."""

    low: int
    high: int

    def __contains__(self, value: object) -> bool:
        return isinstance(value, int) and self.low <= value <= self.high

    def describe(self) -> str:
        return f"must be between {self.low} and {self.high}"


SMALLINT = IntRange(-(2**15), 2**15 - 1)
INTEGER = IntRange(-(2**31), 2**31 - 1)
BIGINT = IntRange(-(2**63), 2**63 - 1)


def integer_range(column_type: TypeEngine[Any]) -> IntRange | None:
    """The range of an integer column type, None for any other type. A TypeDecorator counts as
    what it stores; a type with per-dialect variants counts as its base type (the variants of
    an integer are integers of the same or a wider backend type)."""
    while isinstance(column_type, TypeDecorator):
        column_type = column_type.impl_instance
    # Subclasses first: BigInteger and SmallInteger are Integers too.
    if isinstance(column_type, BigInteger):
        return BIGINT
    if isinstance(column_type, SmallInteger):
        return SMALLINT
    if isinstance(column_type, Integer):
        return INTEGER
    return None


@per_model
def integer_columns(model: type[Any]) -> Mapping[str, IntRange]:
    """The mapped integer attributes of `model` (by attribute name) and what each holds.
    Cached per model (a mapping does not change once configured): every create and update
    checks its values against it."""
    ranges: dict[str, IntRange] = {}
    for prop in inspect(model).column_attrs:
        found = integer_range(prop.columns[0].type)
        if found is not None:
            ranges[prop.key] = found
    return MappingProxyType(ranges)
