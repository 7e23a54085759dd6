"""Docs that are generated must match what the code generates now."""

from __future__ import annotations

from klingflow_dev import schemas


def test_the_event_schemas_in_docs_are_current() -> None:
    for name, schema in schemas.schemas().items():
        on_disk = (schemas.DOCS / name).read_text()
        assert on_disk == schemas.render(schema), f"docs/events/{name} is stale: run `klingflow schemas`"
