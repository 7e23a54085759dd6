"""`make demo`: one real job through the whole sandbox, start to archive.

Motion control by default; `--kind` runs any other kind from the same S3 drop.
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from . import ASSETS
from .sandbox import Sandbox, SandboxOptions
from .sandbox.client import ApiClient

TERMINAL = {"ARCHIVED", "FAILED", "TIMED_OUT", "CANCELLED"}
# One manifest per kind; bare file names are the media dropped beside it.
MANIFESTS: dict[str, dict[str, Any]] = {
    "motion_control": {
        "image": "character.png",
        "video": "dance.mp4",
        "character_orientation": "image",
        "mode": "std",
        "prompt": "the character performs the dance from the reference video",
    },
    "text_to_video": {
        "kind": "text_to_video",
        "prompt": "waves breaking on a beach at sunset, gulls overhead",
        "duration_s": 5,
        "sound": True,
    },
    "image_to_video": {
        "kind": "image_to_video",
        "image": "character.png",
        "prompt": "the character turns and waves",
        "mode": "pro",
    },
    "omni_video": {
        "kind": "omni_video",
        "prompt": "<<<image_1>>> walks down a neon-lit street at night",
        "reference_images": ["character.png"],
        "aspect_ratio": "9:16",
    },
    "custom_element": {
        "kind": "custom_element",
        "name": "DemoHero",
        "description": "the character in character.png",
        "frontal_image": "character.png",
        "refer_images": ["character.png"],
    },
}
# After an element is made, the demo uses it: motion control naming it, no provider pinned.
FOLLOW_UP: dict[str, Any] = {
    **MANIFESTS["motion_control"],
    "prompt": "<<<element_1>>> performs the dance from the reference video",
}


def wait_for(condition: Callable[[], Any], *, timeout_s: float, every_s: float = 0.2) -> Any:
    """Poll until `condition` returns something truthy, or give up at the deadline."""
    deadline = time.monotonic() + timeout_s
    while True:
        value = condition()
        if value or time.monotonic() > deadline:
            return value
        time.sleep(every_s)


def run(
    *,
    kind: str = "motion_control",
    provider: str | None = None,
    timeout_s: float = 120.0,
    say: Callable[[str], None] = print,
    out: Path | None = None,
) -> dict[str, Any]:
    """Run the demo; with `out`, every output is also saved there (the sandbox's bucket goes
    away with it), so the video can be watched."""
    started = time.monotonic()
    say("starting the sandbox: moto, resources from template.yaml, provider emulator, HTTP API ...")
    with Sandbox(SandboxOptions()) as sandbox:
        assert sandbox.api is not None
        say(f"  API      {sandbox.api.url}")
        say(f"  bucket   s3://{sandbox.bucket}  (moto at {sandbox.endpoint})")
        for name, url in sandbox.base_urls.items():
            say(f"  provider {name:<10} {url}")
        s3 = sandbox.client("s3")
        folder = f"incoming/demo-{int(time.time())}"
        s3.put_object(
            Bucket=sandbox.bucket,
            Key=f"{folder}/character.png",
            Body=(ASSETS / "character.png").read_bytes(),
            ContentType="image/png",
        )
        s3.put_object(
            Bucket=sandbox.bucket,
            Key=f"{folder}/dance.mp4",
            Body=(ASSETS / "dance.mp4").read_bytes(),
            ContentType="video/mp4",
        )
        manifest: dict[str, Any] = {**MANIFESTS[kind], "metadata": {"origin": "make demo"}}
        if provider:
            manifest["provider"] = provider
        api = ApiClient(sandbox.api.url)
        try:
            summary = _run_manifest(
                sandbox, api, folder, "job.json", manifest, say=say, timeout_s=timeout_s, out=out
            )
            if kind == "custom_element" and ok(summary):
                # What an element is for: a motion-control job that uses it, sent to the account
                # holding it without naming a provider.
                say(f"element {summary['element_id']} made: now a motion-control job that uses it")
                follow = {
                    **FOLLOW_UP,
                    "elements": [summary["element_id"]],
                    "metadata": {"origin": "make demo"},
                }
                summary["followed_by"] = _run_manifest(
                    sandbox, api, folder, "use-element.json", follow, say=say, timeout_s=timeout_s, out=out
                )
        finally:
            api.close()
        summary["elapsed_s"] = round(time.monotonic() - started, 1)
        return summary


def _run_manifest(
    sandbox: Sandbox,
    api: ApiClient,
    folder: str,
    name: str,
    manifest: dict[str, Any],
    *,
    say: Callable[[str], None],
    timeout_s: float,
    out: Path | None = None,
) -> dict[str, Any]:
    """Drop one manifest beside the media, follow its job to the end, check what it made."""
    s3 = sandbox.client("s3")
    manifest_key = f"{folder}/{name}"
    s3.put_object(
        Bucket=sandbox.bucket,
        Key=manifest_key,
        Body=json.dumps(manifest).encode(),
        ContentType="application/json",
    )
    say(
        f"dropped a {manifest.get('kind', 'motion_control')} manifest {name} into s3://{sandbox.bucket}/{folder}/"
    )
    source = f"s3://{sandbox.bucket}/{manifest_key}"

    def find_job() -> str | None:
        for job in api.get_json("/jobs?limit=20")["jobs"]:
            if (job.get("source") or {}).get("ref") == source:
                return str(job["job_id"])
        return None

    job_id = wait_for(find_job, timeout_s=30)
    if not job_id:
        reports = s3.list_objects_v2(Bucket=sandbox.bucket, Prefix="rejected/").get("Contents", [])
        for report in reports:
            say(s3.get_object(Bucket=sandbox.bucket, Key=report["Key"])["Body"].read().decode())
        raise SystemExit(f"no job appeared for the manifest ({len(reports)} rejection report(s))")
    say(f"job {job_id}")
    shown = 0
    deadline = time.monotonic() + timeout_s
    job: dict[str, Any] = {}
    while time.monotonic() < deadline:
        job = api.get_json(f"/jobs/{job_id}")
        for entry in job["history"][shown:]:
            note = f"  ({entry['note']})" if entry.get("note") else ""
            say(f"  {entry['at']}  {entry['status']:<10} by {entry['by']}{note}")
        shown = len(job["history"])
        if job["status"] in TERMINAL:
            break
        time.sleep(0.25)
    outputs = []
    for output in job.get("outputs", []):
        body = s3.get_object(Bucket=sandbox.bucket, Key=output["key"])["Body"].read()
        saved = None
        if out is not None:
            out.mkdir(parents=True, exist_ok=True)
            saved = out / f"{job_id}-{output['key'].rsplit('/', 1)[-1]}"
            saved.write_bytes(body)
        outputs.append(
            {
                "role": output.get("role", "video"),
                "s3_uri": output["s3_uri"],
                "bytes": output["bytes"],
                "sha256": output["sha256"],
                "duration_s": output.get("duration_s"),
                "verified": len(body) == output["bytes"]
                and hashlib.sha256(body).hexdigest() == output["sha256"],
                "saved": str(saved) if saved else None,
            }
        )
    wanted = {"ARCHIVED": "Job Completed", "FAILED": "Job Failed", "TIMED_OUT": "Job Timed Out"}.get(
        job.get("status", "")
    )

    def outcome_event() -> bool:
        return any(
            e["detail-type"] == wanted and e["detail"].get("job_id") == job_id
            for e in sandbox.captured_events()
        )

    if wanted:
        wait_for(outcome_event, timeout_s=10)
    events = [
        {
            "detail-type": e["detail-type"],
            "status": e["detail"].get("status"),
            "provider": e["detail"].get("provider"),
        }
        for e in sandbox.captured_events()
        if e["detail"].get("job_id") == job_id
    ]
    return {
        "job_id": job_id,
        "kind": job.get("kind"),
        "status": job.get("status"),
        "provider": job.get("provider"),
        "provider_task_id": job.get("provider_task_id"),
        "outputs": outputs,
        "element_id": job.get("element_id"),
        "elements": (job.get("request") or {}).get("elements") or [],
        "result": f"s3://{sandbox.bucket}/{job['result_key']}" if job.get("result_key") else None,
        "cost": job.get("cost"),
        "error": job.get("error"),
        "attempts": job.get("attempts"),
        "events": events,
    }


def ok(summary: dict[str, Any]) -> bool:
    if summary.get("status") != "ARCHIVED":
        return False
    if summary.get("kind") == "custom_element":
        follow = summary.get("followed_by")
        return bool(summary.get("element_id")) and (follow is None or ok(follow))
    return bool(summary["outputs"]) and all(o["verified"] for o in summary["outputs"])


def render(summary: dict[str, Any]) -> str:
    text = _render_one(summary)
    if summary.get("followed_by"):
        text += "\n" + _render_one(summary["followed_by"])
    return text + f"\ndone in {summary['elapsed_s']} s"


def _render_one(summary: dict[str, Any]) -> str:
    head = (
        f"{summary.get('kind')} {summary['status']} on {summary['provider']} "
        f"(task {summary['provider_task_id']})"
    )
    lines = [f"\njob {summary['job_id']}: {head}"]
    for output in summary["outputs"]:
        lines += [
            f"  output   {output['s3_uri']}"
            + (f"  ({output['role']})" if output.get("role", "video") != "video" else ""),
            f"  bytes    {output['bytes']}",
            f"  sha256   {output['sha256']}  ({'verified' if output['verified'] else 'MISMATCH'})",
            f"  duration {output['duration_s']} s",
            *([f"  saved    {output['saved']}  (watch it)"] if output.get("saved") else []),
        ]
    if summary.get("element_id"):
        lines.append(
            f"  element  {summary['element_id']}  (name it in a job's elements: the job goes to the "
            f"{summary['provider']} account that holds it, which must take the job's kind)"
        )
    if summary.get("elements"):
        lines.append(f"  elements {', '.join(summary['elements'])}  (held by {summary['provider']})")
    if summary.get("result"):
        lines.append(f"  result   {summary['result']}")
    cost = summary.get("cost") or {}
    seconds = f" for {cost['billed_seconds']} s" if cost.get("billed_seconds") else ""
    source = {"provider": " (the provider's own figure)", "rule": " (by the billing rule)"}.get(
        cost.get("billed_source") or "", ""
    )
    billed = f"billed ${cost.get('billed_usd')}{seconds}{source}"
    lines.append(f"  cost     estimated ${cost.get('estimated_usd')}  {billed}")
    if summary.get("error"):
        lines.append(f"  error    {summary['error']}")
    lines.append("events on the outcome bus:")
    lines += [
        f"  {e['detail-type']:<14} status={e['status']} provider={e['provider']}" for e in summary["events"]
    ]
    return "\n".join(lines)
