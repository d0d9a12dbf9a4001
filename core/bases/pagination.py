"""Page requests (page/size or offset/limit) and the page of results a list returns.

OFFSET and LIMIT are 64-bit integers in SQL: a request past that is refused here rather than
overflowing in the driver. `BaseRouter` declares the same bounds on its query parameters
(`max_page`), so clients get a 422 naming the parameter first.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Generic, TypeVar

from core.db.limits import BIGINT

T = TypeVar("T")
U = TypeVar("U")

MAX_OFFSET = BIGINT.high
"""The largest offset (and limit) the databases take."""


def max_page(size: int) -> int:
    """The last page number whose offset, at `size` items per page, is still a valid one."""
    return MAX_OFFSET // size + 1


@dataclass(frozen=True, slots=True)
class PageRequest:
    """Which slice of a result to return. Built from page/size or from offset/limit."""

    offset: int = 0
    limit: int = 20

    def __post_init__(self) -> None:
        if not 0 <= self.offset <= MAX_OFFSET:
            raise ValueError(f"offset must be between 0 and {MAX_OFFSET}, not {self.offset}")
        if not 1 <= self.limit <= MAX_OFFSET:
            raise ValueError(f"limit must be between 1 and {MAX_OFFSET}, not {self.limit}")

    @classmethod
    def of(cls, page: int = 1, size: int = 20) -> PageRequest:
        """Page `page` (1-based) of `size` items."""
        if page < 1:
            raise ValueError(f"page must be >= 1, not {page}")
        return cls(offset=(page - 1) * size, limit=size)

    @property
    def page(self) -> int:
        return self.offset // self.limit + 1


@dataclass(frozen=True, slots=True)
class Page(Generic[T]):
    """One page of items and the total count of the whole (filtered) result."""

    items: list[T]
    total: int
    request: PageRequest

    @property
    def page(self) -> int:
        return self.request.page

    @property
    def size(self) -> int:
        return self.request.limit

    @property
    def pages(self) -> int:
        return -(-self.total // self.request.limit)  # ceiling division

    def map(self, convert: Callable[[T], U]) -> Page[U]:
        return Page([convert(item) for item in self.items], self.total, self.request)
