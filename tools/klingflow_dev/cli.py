"""The `klingflow` command: run jobs on a deployed stack or the local sandbox, and run the
sandbox, its demo and the provider emulator.

Exit codes say how it ended: 0 done, 1 an error (no target, no credentials, a provider down),
2 the request was refused (it names the field and the rule), 3 the job failed or was
cancelled, 4 it timed out (the job, or --wait's own timeout).
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import sys
import threading
import time
from collections.abc import Callable
from functools import wraps
from pathlib import Path
from typing import Any, NoReturn

import click
from rich.console import Console
from rich.progress import BarColumn, Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

from klingflow_dev import demo, openapi, schemas
from klingflow_dev.emulator import EmulatorServer
from klingflow_dev.sandbox import Sandbox, SandboxOptions, faults, template
from klingflow_dev.sandbox.client import ApiClient
from klingflow_dev.userclient import ApiError, Client, TargetError, find_target, state_file

EXIT_OK, EXIT_ERROR, EXIT_REJECTED, EXIT_FAILED, EXIT_TIMED_OUT = 0, 1, 2, 3, 4
KINDS = ("motion_control", "text_to_video", "image_to_video", "omni_video", "custom_element")
err = Console(stderr=True)


class Done(Exception):
    """Ends a command with an exit code (after whatever it printed)."""

    def __init__(self, code: int) -> None:
        self.code = code


def user_command(function: Callable[..., Any]) -> Callable[..., Any]:
    """--stack, --region and --json on every command that talks to a klingflow; errors become
    a line on stderr (or JSON) and an exit code."""

    @click.option(
        "--stack", envvar="KLINGFLOW_STACK", help="a deployed stack (its outputs name the API and bucket)"
    )
    @click.option("--region", help="the stack's region (boto3's default otherwise)")
    @click.option("--json", "as_json", is_flag=True, help="print JSON only (for scripts)")
    @wraps(function)
    def run(stack: str | None, region: str | None, as_json: bool, **kwargs: Any) -> None:
        try:
            client = Client(find_target(stack, region))
        except TargetError as error:
            _fail(str(error), EXIT_ERROR, as_json)
        try:
            function(client, as_json, **kwargs)
        except ApiError as error:
            code = EXIT_REJECTED if error.status in (400, 402, 404, 409, 422) else EXIT_ERROR
            if as_json:
                click.echo(json.dumps({"error": error.body, "status": error.status}))
            else:
                click.echo(f"refused: {error}", err=True)
            raise SystemExit(code) from None
        except TargetError as error:
            _fail(str(error), EXIT_ERROR, as_json)
        except Done as done:
            raise SystemExit(done.code) from None
        finally:
            client.close()

    return run


def _fail(message: str, code: int, as_json: bool) -> NoReturn:
    if as_json:
        click.echo(json.dumps({"error": {"message": message}}))
    else:
        click.echo(f"error: {message}", err=True)
    raise SystemExit(code)


def _print(value: Any, as_json: bool, text: Callable[[Any], str] | None = None) -> None:
    click.echo(
        json.dumps(value, indent=None if as_json else 2, default=str)
        if as_json or text is None
        else text(value)
    )


@click.group(help=__doc__)
def main() -> None:
    pass


# ---- jobs ---------------------------------------------------------------------------------------


def request_options(function: Callable[..., Any]) -> Callable[..., Any]:
    for option in reversed(
        [
            click.option(
                "--request",
                "request_file",
                type=click.Path(exists=True, dir_okay=False),
                help="a JSON request",
            ),
            click.option("--image", help="a local file (uploaded), an object key or an https URL"),
            click.option("--video", help="a local file (uploaded), an object key or an https URL"),
            click.option("--prompt"),
            click.option("--mode", type=click.Choice(["std", "pro"])),
            click.option("--orientation", "character_orientation", type=click.Choice(["image", "video"])),
            click.option("--provider", help="pin one provider (default: the cheapest that takes the job)"),
            click.option(
                "--set",
                "extra",
                multiple=True,
                metavar="FIELD=JSON",
                help="any other field, e.g. duration_s=5",
            ),
        ]
    ):
        function = option(function)
    return function


def build_request(
    kind: str, request_file: str | None, extra: tuple[str, ...], **fields: Any
) -> tuple[dict[str, Any], Path]:
    request: dict[str, Any] = {}
    base = Path()
    if request_file:
        request = json.loads(Path(request_file).read_text())
        base = Path(request_file).parent
    request["kind"] = kind
    if kind == "motion_control":
        request.setdefault("character_orientation", "image")
        request.setdefault("mode", "std")
    request.update({name: value for name, value in fields.items() if value is not None})
    for item in extra:
        name, _, raw = item.partition("=")
        try:
            request[name] = json.loads(raw)
        except ValueError:
            request[name] = raw
    return request, base


@main.command()
@click.argument("kind", type=click.Choice(KINDS))
@request_options
@click.option("--wait", is_flag=True, help="follow the job to its end, then download its outputs")
@click.option(
    "--out",
    type=click.Path(file_okay=False, path_type=Path),
    default=Path(),
    show_default="the current folder",
    help="where --wait downloads the outputs",
)
@click.option("--timeout", type=float, default=3 * 3600, show_default=True, help="seconds --wait waits")
@click.option("--idempotency-key", help="retries with the same key get the same job")
@user_command
def submit(  # noqa: PLR0917 (click passes every option by name and position)
    client: Client,
    as_json: bool,
    kind: str,
    request_file: str | None,
    extra: tuple[str, ...],
    wait: bool,
    out: Path,
    timeout: float,
    idempotency_key: str | None,
    **fields: Any,
) -> None:
    """Upload local files, post a job of KIND, and with --wait follow it to its outputs."""
    request, base = build_request(kind, request_file, extra, **fields)
    job = client.submit(client.upload_local_files(request, base=base), idempotency_key=idempotency_key)
    if not wait:
        _print(
            job,
            as_json,
            lambda j: f"{j['job_id']}  {j['status']}  estimated ${j['cost'].get('estimated_usd')}",
        )
        return
    _wait_and_download(client, job["job_id"], as_json, out=out, timeout=timeout)


@main.command()
@click.argument("kind", type=click.Choice(KINDS))
@request_options
@user_command
def quote(
    client: Client, as_json: bool, kind: str, request_file: str | None, extra: tuple[str, ...], **fields: Any
) -> None:
    """Price a job at every provider that would take it; creates and spends nothing."""
    request, base = build_request(kind, request_file, extra, **fields)
    answer = client.call("POST", "/jobs/quote", client.upload_local_files(request, base=base))
    _print(answer, as_json, _quote_text)


def _quote_text(answer: dict[str, Any]) -> str:
    billing = answer["billing"]
    seconds = f", {billing['seconds']} s" if billing["seconds"] else ""
    lines = [f"{answer['kind']} ({billing['tier']}{seconds}{' at most' if billing['upper_bound'] else ''}):"]
    for quote in answer["quotes"]:
        native = f"  ({quote['amount']} {quote['currency']})" if quote["currency"] != "USD" else ""
        over = "" if quote["within_max_job_cost"] else "  over MaxJobCostUsd"
        lines.append(f"  {quote['provider']:<10} ${quote['usd']:.4f}{native}{over}")
    for refusing in answer["refusing"]:
        lines.append(f"  {refusing['provider']:<10} no: {refusing['reason']}")
    return "\n".join(lines)


@main.group()
def jobs() -> None:
    """List, follow, cancel and download jobs."""


@jobs.command("list")
@click.option("--status", help="only jobs in this state")
@click.option("--limit", type=int, default=20, show_default=True)
@user_command
def list_jobs(client: Client, as_json: bool, status: str | None, limit: int) -> None:
    page = client.call("GET", "/jobs", query={"status": status, "limit": limit})
    _print(
        page,
        as_json,
        lambda p: "\n".join(
            f"{j['job_id']}  {j['status']:<10} {j['kind']:<15} {j.get('provider') or '-'}" for j in p["jobs"]
        ),
    )


@jobs.command("get")
@click.argument("job_id")
@user_command
def get_job(client: Client, as_json: bool, job_id: str) -> None:
    _print(client.job(job_id), as_json)


@jobs.command("wait")
@click.argument("job_id")
@click.option("--out", type=click.Path(file_okay=False, path_type=Path), help="download outputs here")
@click.option("--timeout", type=float, default=3 * 3600, show_default=True)
@user_command
def wait_job(client: Client, as_json: bool, job_id: str, out: Path | None, timeout: float) -> None:
    """Follow a job to its end (and download its outputs with --out)."""
    _wait_and_download(client, job_id, as_json, out=out, timeout=timeout)


@jobs.command("cancel")
@click.argument("job_id")
@user_command
def cancel_job(client: Client, as_json: bool, job_id: str) -> None:
    answer = client.call("POST", f"/jobs/{job_id}/cancel")
    _print(answer, as_json, lambda a: f"{a['job_id']}  {a['status']}")


@jobs.command("download")
@click.argument("job_id")
@click.option("--out", type=click.Path(file_okay=False, path_type=Path), required=True)
@user_command
def download_job(client: Client, as_json: bool, job_id: str, out: Path) -> None:
    saved = client.download(client.job(job_id), out)
    _print(saved, as_json, _saved_text)
    if not all(item["verified"] for item in saved):
        raise Done(EXIT_FAILED)


def _saved_text(saved: list[dict[str, Any]]) -> str:
    return "\n".join(
        f"{item['path']}  {item['bytes']} bytes  sha256 {item['sha256'][:16]}…  "
        f"{'verified' if item['verified'] else 'MISMATCH'}"
        for item in saved
    )


def _wait_and_download(
    client: Client, job_id: str, as_json: bool, *, out: Path | None, timeout: float
) -> None:
    job: dict[str, Any] = {}
    started = time.monotonic()
    if as_json:
        *_, job = client.follow(job_id, timeout_s=timeout)
    else:
        columns = (
            SpinnerColumn(),
            TextColumn("{task.description}"),
            BarColumn(),
            TextColumn("{task.fields[detail]}"),
            TimeElapsedColumn(),
        )
        with Progress(*columns, console=err, transient=False) as progress:
            task = progress.add_task(job_id, total=100, detail="")
            for job in client.follow(job_id, timeout_s=timeout):
                progress.update(
                    task, description=_state(job), completed=job.get("progress") or 0, detail=_detail(job)
                )
    summary: dict[str, Any] = {"job": job, "elapsed_s": round(time.monotonic() - started, 1)}
    if job.get("status") == "ARCHIVED" and out is not None:
        summary["saved"] = client.download(job, out)
    _print(summary, as_json, _ended_text)
    status = job.get("status")
    if status == "ARCHIVED":
        if not all(item["verified"] for item in summary.get("saved", [])):
            raise Done(EXIT_FAILED)
        return
    raise Done(EXIT_FAILED if status in ("FAILED", "CANCELLED") else EXIT_TIMED_OUT)


def _state(job: dict[str, Any]) -> str:
    return f"{job['job_id']}  {job['status']:<9} {job.get('provider') or ''}"


def _detail(job: dict[str, Any]) -> str:
    parts = []
    if job.get("eta_s") is not None and job["status"] not in ("ARCHIVED",):
        parts.append(f"eta {job['eta_s']} s")
    cost = job.get("cost") or {}
    usd = cost.get("billed_usd", cost.get("estimated_usd"))
    if usd is not None:
        parts.append(f"${usd}" + ("" if "billed_usd" in cost else " est."))
    return "  ".join(parts)


def _ended_text(summary: dict[str, Any]) -> str:
    job = summary["job"]
    lines = [f"{job['job_id']}  {job['status']} on {job.get('provider')} in {summary['elapsed_s']} s"]
    if job.get("error"):
        lines.append(f"  error  {job['error'].get('code')}: {job['error'].get('message')}")
    if job.get("element_id"):
        lines.append(f"  element {job['element_id']}")
    if summary.get("saved"):
        lines.append(_saved_text(summary["saved"]))
    return "\n".join(lines)


# ---- elements and spend ------------------------------------------------------------------------


@main.group()
def elements() -> None:
    """The elements klingflow made, a provider's presets, and deleting one."""


@elements.command("list")
@click.option("--limit", type=int, default=50, show_default=True)
@user_command
def list_elements(client: Client, as_json: bool, limit: int) -> None:
    page = client.call("GET", "/elements", query={"limit": limit})
    _print(
        page,
        as_json,
        lambda p: "\n".join(
            f"{e['element_id']}  {e['provider']:<9} {e['name']:<20} {'deleted' * bool(e.get('deleted_at'))}"
            for e in p["elements"]
        ),
    )


@elements.command("presets")
@click.option("--provider")
@click.option("--page", "page_num", type=int)
@click.option("--page-size", type=int)
@user_command
def list_presets(
    client: Client, as_json: bool, provider: str | None, page_num: int | None, page_size: int | None
) -> None:
    page = client.call(
        "GET", "/elements/presets", query={"provider": provider, "page_num": page_num, "page_size": page_size}
    )
    _print(
        page,
        as_json,
        lambda p: "\n".join(f"{e['element_id']}  {e.get('element_name', '')}" for e in p["elements"]),
    )


@elements.command("delete")
@click.argument("element_id")
@click.option("--provider", help="for an element klingflow did not make")
@user_command
def delete_element(client: Client, as_json: bool, element_id: str, provider: str | None) -> None:
    answer = client.call("DELETE", f"/elements/{element_id}", query={"provider": provider})
    _print(
        answer,
        as_json,
        lambda a: (
            f"{a['element_id']} deleted"
            + ("" if a["deleted_at_provider"] else f" here only: {a.get('note')}")
        ),
    )


@main.command()
@click.option("--day", help="YYYY-MM-DD (UTC); today by default")
@user_command
def spend(client: Client, as_json: bool, day: str | None) -> None:
    """A day's budget, reserved and settled spend."""
    _print(client.call("GET", "/spend", query={"day": day}), as_json)


# ---- the sandbox --------------------------------------------------------------------------------


@main.group()
def sandbox() -> None:
    """The local sandbox: moto, the provider emulator and the real handlers on loopback."""


@sandbox.command("demo")
@click.option(
    "--kind", type=click.Choice(sorted(demo.MANIFESTS)), default="motion_control", show_default=True
)
@click.option("--json", "as_json", is_flag=True, help="print only the summary, as JSON")
@click.option("--provider", help="pin the job to one provider (default: the cheapest)")
@click.option("--timeout", type=float, default=120.0, help="seconds to wait for the job")
@click.option(
    "--out",
    type=click.Path(file_okay=False, path_type=Path),
    default=Path("demo-output"),
    show_default=True,
    help="where the outputs are saved, to be watched",
)
def run_demo(kind: str, as_json: bool, provider: str | None, timeout: float, out: Path) -> None:
    """Run one job from an S3 drop to its archive."""
    say: Callable[[str], None] = (lambda _: None) if as_json else click.echo
    summary = demo.run(kind=kind, provider=provider, timeout_s=timeout, say=say, out=out)
    click.echo(json.dumps(summary, indent=2) if as_json else demo.render(summary))
    raise SystemExit(EXIT_OK if demo.ok(summary) else EXIT_FAILED)


def _interrupt(*_: object) -> None:
    raise KeyboardInterrupt


def _watch(running: Sandbox, stop: threading.Event, every_s: float = 0.5) -> None:
    """What a developer wants to see while poking the sandbox: every job's state changes and
    every event on the outcome bus, as they happen."""
    assert running.api is not None
    api = ApiClient(running.api.url)
    seen_updates: dict[str, str] = {}
    shown_history: dict[str, int] = {}
    shown_events = 0
    while not stop.wait(every_s):
        with contextlib.suppress(Exception):  # a poll racing the shutdown says nothing
            for job in api.get_json("/jobs?limit=100")["jobs"]:
                if seen_updates.get(job["job_id"]) == job["updated_at"]:
                    continue
                seen_updates[job["job_id"]] = job["updated_at"]
                full = api.get_json(f"/jobs/{job['job_id']}")
                for entry in full["history"][shown_history.get(job["job_id"], 0) :]:
                    note = f"  ({entry['note']})" if entry.get("note") else ""
                    click.echo(
                        f"{entry['at']}  job {job['job_id']}  {entry['status']:<10} by {entry['by']}{note}"
                    )
                shown_history[job["job_id"]] = len(full["history"])
            events = running.captured_events()
            for event in events[shown_events:]:
                detail = event.get("detail", {})
                click.echo(
                    f"{event.get('time')}  event {event['detail-type']:<14} job {detail.get('job_id')}  "
                    f"{detail.get('status')} {detail.get('provider') or ''}".rstrip()
                )
            shown_events = len(events)
    api.close()


@sandbox.command("up")
@click.option(
    "--parameter-overrides",
    multiple=True,
    metavar="Key=Value",
    help="stack parameters, as `sam deploy` takes them (DailyBudgetUsd=5 JobDeadlineSeconds=600)",
)
@click.option(
    "--aws-faults",
    default="",
    metavar="name=share,...",
    help="DynamoDB refusing that share of the functions' calls as AWS does when busy: "
    "transaction_conflict=0.2,throttling=0.1 (and seed=N); see docs/sandbox.md",
)
@click.argument("more_overrides", nargs=-1)
def up(parameter_overrides: tuple[str, ...], aws_faults: str, more_overrides: tuple[str, ...]) -> None:
    """Run the sandbox until interrupted; its first line is its endpoints as JSON, and the
    `klingflow` commands find it without flags."""
    try:
        parameters = template.parse_overrides([*parameter_overrides, *more_overrides])
        running = Sandbox(SandboxOptions(parameters=parameters, aws_faults=faults.parse(aws_faults)))
        running.start()
    except (ValueError, RuntimeError) as error:
        click.echo(f"klingflow sandbox up: {error}", err=True)
        raise SystemExit(EXIT_REJECTED) from None
    path = state_file()
    try:
        assert running.api is not None
        endpoints = {
            "api": running.api.url,
            "aws_endpoint": running.endpoint,
            "bucket": running.bucket,
            "region": "us-east-1",
            "providers": running.base_urls,
            "parameters": running.parameters,
            "resources": running.names,
        }
        # One line of JSON first, so a script can read the endpoints with `head -1`.
        click.echo(json.dumps(endpoints))
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps({**endpoints, "pid": os.getpid()}))
        click.echo(
            f"sandbox running (found by `klingflow` commands through {path}); Ctrl-C (or SIGTERM) stops it"
        )
        signal.signal(signal.SIGTERM, _interrupt)
        stop = threading.Event()
        watcher = threading.Thread(target=_watch, args=(running, stop), daemon=True)
        watcher.start()
        with contextlib.suppress(KeyboardInterrupt):
            stop.wait()
        stop.set()
    finally:
        with contextlib.suppress(FileNotFoundError):
            if json.loads(path.read_text()).get("pid") == os.getpid():
                path.unlink()
        running.stop()


@main.command()
def emulator() -> None:
    """Serve the provider emulator on loopback."""
    with EmulatorServer() as server:
        click.echo(json.dumps(server.base_urls, indent=2))
        with contextlib.suppress(KeyboardInterrupt):
            threading.Event().wait()


@main.command("schemas")
def write_schemas() -> None:
    """Write docs/events/*.schema.json and docs/openapi.json from the code."""
    for path in [*schemas.write(), openapi.write()]:
        click.echo(str(path))


if __name__ == "__main__":
    sys.exit(main())
