"""The `klingflow` command: the sandbox, its demo, and the provider emulator."""

from __future__ import annotations

import argparse
import contextlib
import json
import signal
import sys
import threading

from klingflow_dev import demo, schemas
from klingflow_dev.emulator import EmulatorServer
from klingflow_dev.sandbox import Sandbox, SandboxOptions, template


def _demo(args: argparse.Namespace) -> int:
    say = (lambda _: None) if args.json else (lambda line: print(line, flush=True))
    summary = demo.run(kind=args.kind, provider=args.provider, timeout_s=args.timeout, say=say)
    if args.json:
        print(json.dumps(summary, indent=2))
    else:
        print(demo.render(summary))
    return 0 if demo.ok(summary) else 1


def _interrupt(*_: object) -> None:
    raise KeyboardInterrupt


def _up(args: argparse.Namespace) -> int:
    try:
        parameters = template.parse_overrides(args.parameter_overrides or [])
        sandbox = Sandbox(SandboxOptions(parameters=parameters))
        sandbox.start()
    except ValueError as error:
        print(f"klingflow sandbox up: {error}", file=sys.stderr)
        return 2
    try:
        assert sandbox.api is not None
        # One line of JSON first, so a script can read the endpoints with `head -1`.
        print(
            json.dumps(
                {
                    "api": sandbox.api.url,
                    "aws_endpoint": sandbox.endpoint,
                    "bucket": sandbox.bucket,
                    "providers": sandbox.base_urls,
                    "parameters": sandbox.parameters,
                    "resources": sandbox.names,
                }
            ),
            flush=True,
        )
        print("sandbox running; Ctrl-C (or SIGTERM) stops it", flush=True)
        signal.signal(signal.SIGTERM, _interrupt)
        with contextlib.suppress(KeyboardInterrupt):
            threading.Event().wait()
    finally:
        sandbox.stop()
    return 0


def _emulator(args: argparse.Namespace) -> int:
    with EmulatorServer() as server:
        print(json.dumps(server.base_urls, indent=2), flush=True)
        with contextlib.suppress(KeyboardInterrupt):
            threading.Event().wait()
    return 0


def _schemas(args: argparse.Namespace) -> int:
    for path in schemas.write():
        print(path)
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="klingflow", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    sandbox = commands.add_parser("sandbox", help="the local sandbox").add_subparsers(
        dest="action", required=True
    )
    run_demo = sandbox.add_parser("demo", help="run one job from S3 drop to archive")
    run_demo.add_argument(
        "--kind", choices=sorted(demo.MANIFESTS), default="motion_control", help="the job kind to run"
    )
    run_demo.add_argument("--json", action="store_true", help="print only the summary, as JSON")
    run_demo.add_argument("--provider", help="pin the job to one provider (default: the cheapest)")
    run_demo.add_argument("--timeout", type=float, default=120.0, help="seconds to wait for the job")
    run_demo.set_defaults(run=_demo)
    up = sandbox.add_parser("up", help="run the sandbox until interrupted")
    up.add_argument(
        "--parameter-overrides",
        nargs="+",
        metavar="Key=Value",
        help="stack parameters, as `sam deploy` takes them (DailyBudgetUsd=5 JobDeadlineSeconds=600)",
    )
    up.set_defaults(run=_up)
    commands.add_parser("emulator", help="serve the provider emulator on loopback").set_defaults(
        run=_emulator
    )
    commands.add_parser("schemas", help="write docs/events/*.schema.json from the models").set_defaults(
        run=_schemas
    )
    args = parser.parse_args(argv)
    return int(args.run(args))


if __name__ == "__main__":
    sys.exit(main())
