"""The JSON Schemas of klingflow's events, generated from the models so docs cannot drift."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from klingflow.core.kinds import REQUEST_ADAPTER
from klingflow.core.models import DetailType, JobEventDetail

DOCS = Path(__file__).resolve().parents[2] / "docs" / "events"


def schemas() -> dict[str, dict[str, Any]]:
    outbound = JobEventDetail.model_json_schema()
    outbound["title"] = "klingflow job event detail"
    outbound["description"] = (
        "Detail of every event on klingflow's outcome bus (source `klingflow`; the stack's output "
        "OutcomeBusName, where only klingflow's functions may put events), detail types: "
        + ", ".join(f"`{t.value}`" for t in DetailType if t is not DetailType.REQUESTED)
        + "."
    )
    inbound = REQUEST_ADAPTER.json_schema()
    inbound["title"] = "klingflow Job Requested detail"
    inbound["description"] = (
        "Detail of an inbound `Job Requested` event on klingflow's request bus (the stack's output "
        "RequestBusName; outcomes are on the outcome bus): the same job request POST /jobs and S3 "
        "manifests take, one shape per `kind` (motion_control when absent)."
    )
    return {"job-event.schema.json": outbound, "job-requested.schema.json": inbound}


def render(schema: dict[str, Any]) -> str:
    return json.dumps(schema, indent=2, ensure_ascii=False, sort_keys=True) + "\n"


def write(folder: Path = DOCS) -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    written = []
    for name, schema in schemas().items():
        path = folder / name
        path.write_text(render(schema))
        written.append(path)
    return written
