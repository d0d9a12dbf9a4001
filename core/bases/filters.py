"""Filtering and ordering from plain key/value pairs, limited to the fields a repository allows.

A key is `field` or `field__op`, with op one of: eq (the default), ne, lt, lte, gt, gte, in,
contains, startswith (both case-insensitive), isnull. A repeated key means `in`. Values come
as strings (query parameters) or Python values and are converted to the column's Python type,
so `price_cents__gte=10` compares numbers on every backend. Naive datetimes are taken as UTC.

Filters from an HTTP query come wrapped in `QueryFilters`: there, parameters that are not
about the resource (`utm_source`, a cache buster) are dropped instead of refused, see
`meant_as_filters`. Filters given in code are strict: an unknown field is a mistake.

Ordering is `"-price_cents,name"` or `["-price_cents", "name"]`; the primary key is always
appended so pages are stable when sort keys tie.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, TypeAlias

import pydantic
from sqlalchemy import ColumnElement, inspect
from sqlalchemy.orm import InstrumentedAttribute
from sqlalchemy.types import TypeDecorator

from core.bases.errors import ConfigurationError, FieldError, ValidationError
from core.db.limits import IntRange, integer_range
from core.db.models import per_model_field

SEPARATOR = "__"
OPERATORS = frozenset(
    {"eq", "ne", "lt", "lte", "gt", "gte", "in", "contains", "startswith", "isnull"})
_TEXT_OPERATORS = frozenset({"contains", "startswith"})



@dataclass(frozen=True, slots=True)
class QueryFilters:
    """The query parameters of a list request, other than paging and sorting, as the client
    sent them; read leniently (see `meant_as_filters`)."""

    pairs: tuple[tuple[str, Any], ...]

    def __iter__(self) -> Iterator[tuple[str, Any]]:
        return iter(self.pairs)


FilterInput: TypeAlias = Mapping[str, Any] | Iterable[tuple[str, Any]]


@dataclass(frozen=True, slots=True)
class Filter:
    """One condition: `field op value`."""

    field: str
    op: str
    value: Any

    @property
    def key(self) -> str:
        return self.field if self.op == "eq" else f"{self.field}{SEPARATOR}{self.op}"


def meant_as_filters(
    model: type[Any], params: Iterable[tuple[str, Any]], allowed: Collection[str]
) -> list[tuple[str, Any]]:
    """The query parameters a client meant as filters on `model`: those naming a field of the
    resource, alone or with an operator (`status`, `price_cents__gte`; also `note` when it may
    not be filtered on, so the client learns that instead of getting everything), and those of
    the form `name__op` with a known operator (`colour__in`: only a filter looks like that).
    Anything else is not addressed to the resource and is dropped."""
    fields = set(inspect(model).column_attrs.keys()) | set(allowed)
    kept = []
    for key, value in params:
        field, separator, op = key.partition(SEPARATOR)
        if field in fields or (separator and op in OPERATORS):
            kept.append((key, value))
    return kept


def parse_filters(filters: FilterInput) -> list[Filter]:
    """Split `field__op` keys; a key given several times becomes one `in` filter."""
    pairs = filters.items() if isinstance(filters, Mapping) else filters
    grouped: dict[str, list[Any]] = {}
    for key, value in pairs:
        grouped.setdefault(key, []).append(value)
    parsed = []
    for key, values in grouped.items():
        field, _, op = key.partition(SEPARATOR)
        op = op or "eq"
        if len(values) > 1:
            if op not in ("eq", "in"):
                raise ValidationError.for_field(key, "given more than once",
                                                code="repeated", location="query")
            parsed.append(Filter(field, "in", [v for value in values for v in _split(value)]))
        else:
            parsed.append(Filter(field, op, values[0]))
    return parsed


def where_clauses(
    model: type[Any], filters: Iterable[Filter], allowed: Collection[str]
) -> list[ColumnElement[bool]]:
    """SQL conditions for `filters`; every refused filter is reported at once (422)."""
    clauses: list[ColumnElement[bool]] = []
    problems: list[FieldError] = []
    for f in filters:
        try:
            clauses.append(_clause(model, f, allowed))
        except _RefusedError as refused:
            problems.append(FieldError(f.key, str(refused), refused.code, "query"))
    if problems:
        raise ValidationError("Invalid filter", fields=problems)
    return clauses


def order_clauses(
    model: type[Any],
    sort: str | Sequence[str] | None,
    allowed: Collection[str],
    default: Sequence[str] = (),
) -> list[ColumnElement[Any]]:
    """ORDER BY terms for `sort` (or `default`), then the primary key as tie-breaker."""
    keys = [k.strip() for k in sort.split(",")] if isinstance(sort, str) else list(sort or ())
    keys = [k for k in keys if k] or list(default)
    terms: list[ColumnElement[Any]] = []
    used: set[str] = set()
    for key in keys:
        name = key.lstrip("+-")
        if name not in allowed or name in used:
            reason = "sorted on twice" if name in used else (
                f"cannot sort on {name!r}; allowed: {', '.join(sorted(allowed)) or 'none'}")
            raise ValidationError.for_field("sort", reason, code="invalid_sort",
                                            location="query")
        used.add(name)
        column = _attribute(model, name)
        terms.append(column.desc() if key.startswith("-") else column.asc())
    mapper = inspect(model)
    for column in mapper.primary_key:
        key = mapper.get_property_by_column(column).key
        if key not in used:
            terms.append(getattr(model, key).asc())
    return terms


def coerce(model: type[Any], field: str, value: Any) -> Any:
    """`value` converted to the Python type of `model.field`; ValueError if it cannot be."""
    python_type = _python_type(model, field)
    if python_type is None:
        return value
    try:
        converted = _adapter(python_type).validate_python(value)
    except pydantic.ValidationError as exc:
        raise ValueError(exc.errors()[0]["msg"]) from None
    if isinstance(converted, datetime) and converted.tzinfo is None:
        converted = converted.replace(tzinfo=UTC)
    holds = _integer_range(model, field)
    if holds is not None and isinstance(converted, int) and converted not in holds:
        raise ValueError(holds.describe())  # the driver would overflow: a 500, not a miss
    return converted


class _RefusedError(Exception):
    def __init__(self, reason: str, code: str) -> None:
        super().__init__(reason)
        self.code = code


def _clause(model: type[Any], f: Filter, allowed: Collection[str]) -> ColumnElement[bool]:
    if f.field not in allowed:
        raise _RefusedError(f"cannot filter on {f.field!r}; allowed: "
                            f"{', '.join(sorted(allowed)) or 'none'}", "unknown_filter")
    if f.op not in OPERATORS:
        raise _RefusedError(f"unknown operator {f.op!r}; use one of: "
                            f"{', '.join(sorted(OPERATORS))}", "unknown_operator")
    column = _attribute(model, f.field)
    try:
        if f.op == "isnull":
            return column.is_(None) if coerce_bool(f.value) else column.is_not(None)
        if f.op == "in":
            return column.in_([coerce(model, f.field, v) for v in _split(f.value)])
        if f.op in _TEXT_OPERATORS:
            if _python_type(model, f.field) is not str:
                raise _RefusedError(f"{f.op} works on text fields only", "invalid_operator")
            text = str(f.value)
            if f.op == "contains":
                return column.icontains(text, autoescape=True)
            return column.istartswith(text, autoescape=True)
        value = coerce(model, f.field, f.value)
    except ValueError as exc:
        raise _RefusedError(str(exc), "invalid_value") from None
    compare = {
        "eq": column.__eq__, "ne": column.__ne__, "lt": column.__lt__, "lte": column.__le__,
        "gt": column.__gt__, "gte": column.__ge__,
    }[f.op]
    result: ColumnElement[bool] = compare(value)
    return result


def coerce_bool(value: Any) -> bool:
    try:
        return bool(_adapter(bool).validate_python(value))
    except pydantic.ValidationError:
        raise ValueError(f"{value!r} is not a boolean") from None


def _split(value: Any) -> list[Any]:
    if isinstance(value, str):
        return [part for part in (p.strip() for p in value.split(",")) if part]
    if isinstance(value, list | tuple | set | frozenset):
        return list(value)
    return [value]


def _attribute(model: type[Any], field: str) -> InstrumentedAttribute[Any]:
    attribute = getattr(model, field, None)
    if not isinstance(attribute, InstrumentedAttribute):
        raise ConfigurationError(f"{field!r} is not a column of {model.__name__}")
    return attribute


@per_model_field  # per model and field: read on every request that takes an id
def _integer_range(model: type[Any], field: str) -> IntRange | None:
    prop = inspect(model).column_attrs.get(field)
    return None if prop is None else integer_range(prop.columns[0].type)


@per_model_field
def _python_type(model: type[Any], field: str) -> type[Any] | None:
    prop = inspect(model).column_attrs.get(field)
    if prop is None:
        return None
    column_type = prop.columns[0].type
    while isinstance(column_type, TypeDecorator):  # their python_type is not the stored one
        column_type = column_type.impl_instance
    try:
        python_type: type[Any] = column_type.python_type
    except NotImplementedError:
        return None
    return None if python_type is object else python_type


_ADAPTERS: dict[type[Any], pydantic.TypeAdapter[Any]] = {}


def _adapter(python_type: type[Any]) -> pydantic.TypeAdapter[Any]:
    adapter = _ADAPTERS.get(python_type)
    if adapter is None:
        adapter = _ADAPTERS[python_type] = pydantic.TypeAdapter(python_type)
    return adapter
