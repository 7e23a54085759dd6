"""A jobs table that counts what the code under test asks of DynamoDB."""

from __future__ import annotations

from collections import Counter
from typing import Any


class CountingTable:
    """Wraps a table: `calls` counts each operation made, `read` the items every Query read
    (DynamoDB bills ScannedCount)."""

    def __init__(self, table: Any) -> None:
        self._table = table
        self.calls: Counter[str] = Counter()
        self.read = 0

    def reset(self) -> None:
        self.calls.clear()
        self.read = 0

    def query(self, **kwargs: Any) -> Any:
        self.calls["query"] += 1
        page = self._table.query(**kwargs)
        self.read += int(page["ScannedCount"])
        return page

    def __getattr__(self, name: str) -> Any:
        found = getattr(self._table, name)
        if callable(found):
            self.calls[name] += 1
        return found
