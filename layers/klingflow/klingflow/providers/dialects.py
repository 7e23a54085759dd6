"""Which dialects exist: each one's name and the adapter class that speaks it."""

from __future__ import annotations

import importlib
from collections.abc import Iterator, Mapping

from .base import Adapter


class _Dialects(Mapping[str, type[Adapter]]):
    """Dialect -> adapter class, each dialect's module imported the first time it is asked for:
    a function that only parses the callbacks of one provider loads that provider's dialect,
    not all four (nor what they import)."""

    def __init__(self, classes: Mapping[str, str]) -> None:
        self._classes = dict(classes)  # dialect -> "module.Class", relative to this package

    def __getitem__(self, dialect: str) -> type[Adapter]:
        module, _, name = self._classes[dialect].rpartition(".")
        adapter: type[Adapter] = getattr(importlib.import_module(module, __package__), name)
        return adapter

    def __contains__(self, dialect: object) -> bool:
        return dialect in self._classes

    def __iter__(self) -> Iterator[str]:
        return iter(self._classes)

    def __len__(self) -> int:
        return len(self._classes)


ADAPTERS = _Dialects(
    {
        "apimaster": ".apimaster.ApimasterAdapter",
        "evolink": ".evolink.EvolinkAdapter",
        "gateway": ".gateway.GatewayAdapter",
        "kling": ".kling.KlingAdapter",
    }
)
