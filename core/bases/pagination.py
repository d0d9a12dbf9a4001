"""Page requests (page/size or offset/limit) and the page of results a list returns."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Generic, TypeVar

T = TypeVar("T")
U = TypeVar("U")


@dataclass(frozen=True, slots=True)
class PageRequest:
    """Which slice of a result to return. Built from page/size or from offset/limit."""

    offset: int = 0
    limit: int = 20

    def __post_init__(self) -> None:
        if self.offset < 0:
            raise ValueError(f"offset must be >= 0, not {self.offset}")
        if self.limit < 1:
            raise ValueError(f"limit must be >= 1, not {self.limit}")

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
