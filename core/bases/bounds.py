"""Client input bounded by what the model's columns hold (see core.db.limits).

`bounded_schema(WidgetCreate, Widget)` is the schema with every integer field that names an
integer column limited to that column's range: clients read the limits in the OpenAPI, and a
value out of range is a 422 naming the field, like any other invalid input, instead of a
driver overflow answered as 500. BaseRouter applies it to the create and update schemas it is
given; the service still receives an instance of the original schema (a subclass is built).

`out_of_range(model, values)` is the same rule at the repository, for values that reach it
another way (a service that derives or renames fields).
"""

from __future__ import annotations

import math
import types
from collections.abc import Mapping
from fractions import Fraction
from typing import Any, Union, get_args, get_origin

import annotated_types
from pydantic import BaseModel, create_model
from pydantic.fields import FieldInfo

from core.bases.errors import FieldError
from core.db.limits import IntRange, integer_columns

_LOWER = (annotated_types.Ge, annotated_types.Gt)
_UPPER = (annotated_types.Le, annotated_types.Lt)


def bounded_schema(schema: type[BaseModel], model: type[Any]) -> type[BaseModel]:
    """`schema`, or a subclass of it (same name, so the OpenAPI reads the same) whose integer
    fields carry the range of the same-named integer column of `model` where the schema's own
    limits are looser or absent. Limits the schema already sets tighter are kept as they are."""
    columns = integer_columns(model)
    overrides: dict[str, Any] = {}
    for name, info in schema.model_fields.items():
        column = columns.get(name)
        if column is None or not _is_int(info.annotation):
            continue
        limited = _limit(info, column)
        if limited is not None:
            overrides[name] = (info.annotation, limited)
    if not overrides:
        return schema
    bounded: type[BaseModel] = create_model(
        schema.__name__, __base__=schema, __module__=schema.__module__, __doc__=schema.__doc__,
        **overrides)
    return bounded


def out_of_range(model: type[Any], values: Mapping[str, Any]) -> list[FieldError]:
    """The integer values in `values` that their column of `model` cannot hold."""
    columns = integer_columns(model)
    return [
        FieldError(key, columns[key].describe(), "out_of_range", "body")
        for key, value in values.items()
        if key in columns and isinstance(value, int) and value not in columns[key]
    ]


def _limit(info: FieldInfo, column: IntRange) -> FieldInfo | None:
    """A copy of `info` limited to `column`, or None when its own limits already are."""
    lower = [m for m in info.metadata if isinstance(m, _LOWER)]
    upper = [m for m in info.metadata if isinstance(m, _UPPER)]
    keep_lower = any(_lowest(m) >= column.low for m in lower)
    keep_upper = any(_highest(m) <= column.high for m in upper)
    if keep_lower and keep_upper:
        return None
    metadata = [m for m in info.metadata
                if not (isinstance(m, _LOWER) and not keep_lower)
                and not (isinstance(m, _UPPER) and not keep_upper)]
    if not keep_lower:
        metadata.append(annotated_types.Ge(column.low))
    if not keep_upper:
        metadata.append(annotated_types.Le(column.high))
    limited = FieldInfo.merge_field_infos(info)
    limited.metadata = metadata
    return limited


def _lowest(bound: Any) -> int:
    """The smallest integer a lower bound lets through (gt=x means >= floor(x) + 1)."""
    if isinstance(bound, annotated_types.Ge):
        return math.ceil(_number(bound.ge))
    return math.floor(_number(bound.gt)) + 1


def _highest(bound: Any) -> int:
    """The largest integer an upper bound lets through (lt=x means <= ceil(x) - 1)."""
    if isinstance(bound, annotated_types.Le):
        return math.floor(_number(bound.le))
    return math.ceil(_number(bound.lt)) - 1


def _number(limit: Any) -> int | Fraction:
    """A limit as an exact number (floats lose integers past 2**53)."""
    return limit if isinstance(limit, int) else Fraction(limit)


def _is_int(annotation: Any) -> bool:
    """`int` or `int | None`; not bool, not a Literal, not a union with other types."""
    if annotation is int:
        return True
    if get_origin(annotation) in (Union, types.UnionType):
        members = [a for a in get_args(annotation) if a is not type(None)]
        return members == [int]
    return False
