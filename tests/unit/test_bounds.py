"""Input bounded by what columns hold: integer ranges of SQL types, schemas limited to them,
the repository's own check, and which query parameters count as filters. No database."""

from __future__ import annotations

from typing import Literal

import pytest
from pydantic import BaseModel, Field
from pydantic import ValidationError as PydanticValidationError
from sqlalchemy import BigInteger, Integer, SmallInteger, String
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column
from sqlalchemy.types import TypeDecorator

from core.bases.bounds import bounded_schema, out_of_range
from core.bases.filters import coerce, meant_as_filters
from core.bases.pagination import MAX_OFFSET, PageRequest, max_page
from core.bases.responses import error_responses
from core.db.limits import BIGINT, INTEGER, SMALLINT, IntRange, integer_columns, integer_range
from core.db.models import ServiceBase, UUIDPrimaryKeyMixin


class Base(ServiceBase, DeclarativeBase):
    pass


class Cents(TypeDecorator[int]):
    impl = BigInteger
    cache_ok = True


class Item(UUIDPrimaryKeyMixin, Base):
    __tablename__ = "items"
    name: Mapped[str] = mapped_column(String(20))
    qty: Mapped[int]  # Integer
    big: Mapped[int] = mapped_column(BigInteger().with_variant(Integer(), "sqlite"))
    small: Mapped[int | None] = mapped_column(SmallInteger)
    cents: Mapped[int] = mapped_column(Cents)
    flag: Mapped[bool]


class ItemIn(BaseModel):
    """What a client sends."""

    name: str
    qty: int = Field(ge=0)
    big: int
    small: int | None = Field(default=None, gt=-5, le=10)
    cents: int = Field(lt=10**30)
    flag: bool = False


def test_integer_columns_and_their_ranges() -> None:
    assert integer_range(Integer()) == INTEGER == IntRange(-(2**31), 2**31 - 1)
    assert integer_range(SmallInteger()) == SMALLINT
    assert integer_range(BigInteger()) == BIGINT
    assert integer_range(String()) is None
    assert integer_columns(Item) == {"qty": INTEGER, "big": BIGINT, "small": SMALLINT,
                                     "cents": BIGINT}
    assert 2**31 - 1 in INTEGER and 2**31 not in INTEGER and "1" not in INTEGER


def test_bounded_schema_limits_integer_fields_to_their_column() -> None:
    bounded = bounded_schema(ItemIn, Item)
    assert issubclass(bounded, ItemIn) and bounded.__name__ == "ItemIn"
    assert bounded.__doc__ == ItemIn.__doc__
    props = bounded.model_json_schema()["properties"]
    assert (props["qty"]["minimum"], props["qty"]["maximum"]) == (0, 2**31 - 1)  # own ge kept
    assert (props["big"]["minimum"], props["big"]["maximum"]) == (-(2**63), 2**63 - 1)
    small = props["small"]["anyOf"][0]  # own tighter limits kept as they were
    assert (small["exclusiveMinimum"], small["maximum"]) == (-5, 10)
    assert props["cents"]["maximum"] == 2**63 - 1 and "exclusiveMaximum" not in props["cents"]
    assert "maximum" not in props["flag"] and "maxLength" not in props["name"]

    assert bounded(name="n", qty=2**31 - 1, big=1, cents=1).qty == 2**31 - 1
    with pytest.raises(PydanticValidationError) as refused:
        bounded(name="n", qty=2**31, big=2**63, cents=2**63)
    assert {e["loc"][0] for e in refused.value.errors()} == {"qty", "big", "cents"}
    # The original schema is left alone.
    assert ItemIn(name="n", qty=2**40, big=1, cents=1).qty == 2**40


def test_a_schema_already_within_its_columns_is_returned_as_is() -> None:
    class Tight(BaseModel):
        qty: int = Field(ge=0, le=100)
        big: Literal[1, 2] = 1
        name: str = ""

    assert bounded_schema(Tight, Item) is Tight


def test_out_of_range_names_each_value_a_column_cannot_hold() -> None:
    problems = out_of_range(Item, {"qty": 2**31, "big": 2**63 - 1, "small": -(2**15) - 1,
                                   "name": 10**40, "flag": True})
    assert [(p.field, p.code, p.location) for p in problems] == [
        ("qty", "out_of_range", "body"), ("small", "out_of_range", "body")]
    assert problems[0].reason == "must be between -2147483648 and 2147483647"


def test_filter_values_past_the_column_are_refused() -> None:
    assert coerce(Item, "qty", "2147483647") == 2**31 - 1
    with pytest.raises(ValueError, match="between"):
        coerce(Item, "qty", str(2**31))
    assert coerce(Item, "big", str(2**40)) == 2**40


def test_only_query_parameters_meant_as_filters_are_kept() -> None:
    params = [("name", "a"), ("qty__gte", "1"), ("flag", "1"), ("utm_source", "x"),
              ("colour__in", "red"), ("colour", "red"), ("utm__source", "x"), ("_", "1")]
    # fields of the model (filterable or not), and name__op with a known operator
    assert meant_as_filters(Item, params, {"name", "qty"}) == [
        ("name", "a"), ("qty__gte", "1"), ("flag", "1"), ("colour__in", "red")]


def test_paging_stays_within_sql_offsets() -> None:
    assert PageRequest.of(max_page(100), 100).offset <= MAX_OFFSET == 2**63 - 1
    with pytest.raises(ValueError):
        PageRequest.of(max_page(100) + 1, 100)
    with pytest.raises(ValueError):
        PageRequest(MAX_OFFSET + 1, 10)


def test_error_responses_declare_the_error_body() -> None:
    declared = error_responses((422, 500), (404,), 401)
    assert list(declared) == [401, 404, 422, 500]
    assert all(d["model"].__name__ == "ErrorResponse" and d["description"]
               for d in declared.values())
