"""One page of a long list (100 rows), with the links to the others."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlencode

SIZE = 100


@dataclass
class Page:
    items: list[Any]
    number: int
    pages: int
    total: int
    params: dict[str, str] = field(default_factory=dict)  # the other query parameters, kept in the links
    size: int = SIZE

    @classmethod
    def of(cls, items: list[Any], number: int, params: dict[str, str] | None = None, size: int = SIZE) -> Page:
        pages = max(1, -(-len(items) // size))
        number = min(max(1, number), pages)
        return cls(items[(number - 1) * size: number * size], number, pages, len(items), {k: v for k, v in (params or {}).items() if v}, size)

    def link(self, number: int) -> str:
        return "?" + urlencode({**self.params, "page_number": number})

    @property
    def first_index(self) -> int:
        return (self.number - 1) * self.size
