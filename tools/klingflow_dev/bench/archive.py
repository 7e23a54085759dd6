"""Archive throughput: the provider's bytes streamed into S3, against boto3 uploading them from disk.

Ours is the archiver's own copy path: SafeHttp streams an output from a loopback "provider"
(a threaded http.server sending a file from disk) and `Storage.upload_stream` puts it into a
moto S3 server on loopback, with the chunk size and part size archive uses. The floor is boto3's
`upload_file` of the same bytes, from a file on disk, to the same server and bucket: the least
work that puts those bytes there (no download at all, ten parts in flight).

Each measurement runs in a fresh interpreter, so neither side shares a GIL with the moto server
(which runs here, in this process) and the child's peak resident memory is its own: the child
resets its high-water mark (`/proc/self/clear_refs`) once its modules and client are loaded, and
reports `VmHWM` after the copy minus `VmRSS` before it. Archive promises at most 64 MB of growth;
a second row per size holds it to that.
"""

from __future__ import annotations

import hashlib
import http.server
import json
import logging
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from klingflow_dev.bench.core import RowResult, interleaved

MIB = 1024 * 1024
MB = 1000 * 1000
SIZES = ((100 * MIB, "100 MiB"), (1024 * MIB, "1 GiB"))
QUICK_SIZES = ((16 * MIB, "16 MiB"),)
THROUGHPUT_GOAL = 0.8
RSS_GOAL_MB = 64.0
BUCKET = "bench-media"
FLOOR = "boto3 upload_file, same bytes, same server"
# Credentials and settings that can only ever reach the loopback moto server.
_CHILD_ENV = {
    "AWS_ACCESS_KEY_ID": "testing",
    "AWS_SECRET_ACCESS_KEY": "testing",
    "AWS_SESSION_TOKEN": "testing",
    "AWS_DEFAULT_REGION": "us-east-1",
    "AWS_CONFIG_FILE": os.devnull,
    "AWS_SHARED_CREDENTIALS_FILE": os.devnull,
}


def run(*, runs: int, quick: bool) -> list[RowResult]:
    """Rows for each size: throughput (ours/floor, goal >= 0.8) and our peak RSS growth (<= 64 MB)."""
    if quick:
        runs = 1
    rows: list[RowResult] = []
    with (
        tempfile.TemporaryDirectory(prefix="klingflow-bench-archive-") as scratch,
        _servers(Path(scratch)) as env,
    ):
        for size, label in QUICK_SIZES if quick else SIZES:
            rows += _measure(env, size, label, runs)
    return rows


@dataclass
class _Env:
    scratch: Path
    s3_endpoint: str
    provider: _Provider
    s3: Any


def _measure(env: _Env, size: int, label: str, runs: int) -> list[RowResult]:
    source = env.scratch / "output.mp4"
    expected = _write_source(source, size)
    env.provider.path = source
    ours_rss: list[float] = []
    floor_rss: list[float] = []
    # CPU seconds per GB each side's process spent (the moto server's are not in it).
    ours_cpu: list[float] = []
    floor_cpu: list[float] = []

    def ours() -> float:
        answer = _child(env, "ours", f"{env.provider.url}/output.mp4", size)
        if (answer["bytes"], answer["sha256"]) != (size, expected):
            raise AssertionError(f"archive stored {answer['bytes']} bytes with another digest")
        ours_rss.append(float(answer["rss_growth"]) / MB)
        ours_cpu.append(float(answer["cpu_seconds"]) / (size / 1e9))
        return size / float(answer["seconds"]) / MB

    def floor() -> float:
        answer = _child(env, "floor", str(source), size)
        floor_rss.append(float(answer["rss_growth"]) / MB)
        floor_cpu.append(float(answer["cpu_seconds"]) / (size / 1e9))
        return size / float(answer["seconds"]) / MB

    try:
        mine, floors = interleaved(runs, ours, floor)
    finally:
        source.unlink(missing_ok=True)
    peak = max(ours_rss)
    return [
        RowResult(
            path=f"archive throughput, {label}",
            floor=FLOOR,
            unit="MB/s",
            ours=mine,
            floors=floors,
            goal_op=">=",
            goal=THROUGHPUT_GOAL,
            notes={
                "peak RSS growth": f"{peak:.0f} MB (median {statistics.median(ours_rss):.0f} MB)",
                "floor peak RSS growth": f"{max(floor_rss):.0f} MB",
                "client CPU per GB": f"ours {statistics.median(ours_cpu):.1f} s, "
                f"floor {statistics.median(floor_cpu):.1f} s",
            },
        ),
        RowResult(
            path=f"archive peak RSS growth, {label} (MB)",
            floor="the issue's bound",
            unit="MB",
            ours=ours_rss,
            floors=[RSS_GOAL_MB] * len(ours_rss),
            goal_op="<=",
            goal=RSS_GOAL_MB,
            notes={"runs": ", ".join(f"{mb:.0f}" for mb in ours_rss)},
            # The worst run is the peak: one run over the bound fails the row.
            ratios_override=[peak],
        ),
    ]


def _write_source(path: Path, size: int) -> str:
    """A file of `size` bytes (incompressible, though nothing on the way compresses) and its sha256."""
    block = os.urandom(MIB)
    digest = hashlib.sha256()
    with path.open("wb") as out:
        written = 0
        while written < size:
            piece = block[: min(MIB, size - written)]
            out.write(piece)
            digest.update(piece)
            written += len(piece)
    return digest.hexdigest()


def _child(env: _Env, side: str, source: str, size: int) -> dict[str, Any]:
    key = f"outputs/bench/{side}-{time.monotonic_ns()}.mp4"
    command = [
        sys.executable,
        "-m",
        "klingflow_dev.bench.archive",
        "child",
        side,
        env.s3_endpoint,
        key,
        source,
    ]
    child_env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")} | _CHILD_ENV
    try:
        done = subprocess.run(
            command, env=child_env, capture_output=True, text=True, check=False, timeout=900
        )
        if done.returncode != 0:
            raise RuntimeError(f"bench child ({side}) failed:\n{done.stderr[-4000:]}")
        answer: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
        stored = env.s3.head_object(Bucket=BUCKET, Key=key)["ContentLength"]
        if stored != size:
            raise AssertionError(f"{side}: the object holds {stored} bytes, not {size}")
        return answer
    finally:
        # moto keeps objects in this process's memory: never let them pile up across runs.
        env.s3.delete_object(Bucket=BUCKET, Key=key)


# --------------------------------------------------------------------------- servers


class _Provider(http.server.ThreadingHTTPServer):
    """The provider's CDN: GET sends the current file whole, from disk (sendfile: no copy here)."""

    daemon_threads = True
    path: Path | None = None

    @property
    def url(self) -> str:
        host, port = self.server_address[:2]
        return f"http://{host!s}:{port}"


class _SendFile(http.server.BaseHTTPRequestHandler):
    server: _Provider

    def do_GET(self) -> None:
        path = self.server.path
        assert path is not None
        with path.open("rb") as source:
            self.send_response(200)
            self.send_header("Content-Type", "video/mp4")
            self.send_header("Content-Length", str(path.stat().st_size))
            self.end_headers()
            self.wfile.flush()
            self.connection.sendfile(source)

    def log_message(self, format: str, *args: Any) -> None:
        pass


@contextmanager
def _servers(scratch: Path) -> Iterator[_Env]:
    # Imported here, as in the child: a module that lists rows should not load moto to do so.
    import boto3  # noqa: PLC0415
    from botocore.config import Config  # noqa: PLC0415
    from moto.server import ThreadedMotoServer  # noqa: PLC0415

    logging.getLogger("werkzeug").setLevel(logging.ERROR)  # moto's server logs every request
    saved = {name: os.environ.get(name) for name in _CHILD_ENV}
    os.environ.update(_CHILD_ENV)
    moto = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    moto.start()
    provider = _Provider(("127.0.0.1", 0), _SendFile)
    serving = threading.Thread(target=provider.serve_forever, name="bench-provider", daemon=True)
    serving.start()
    try:
        host, port = moto.get_host_and_port()
        endpoint = f"http://{host}:{port}"
        s3 = boto3.client("s3", endpoint_url=endpoint, config=Config(signature_version="s3v4"))
        s3.create_bucket(Bucket=BUCKET)
        yield _Env(scratch=scratch, s3_endpoint=endpoint, provider=provider, s3=s3)
    finally:
        provider.shutdown()
        provider.server_close()
        moto.stop()
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


# --------------------------------------------------------------------------- one measurement


def _status_kib(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(f"{field}:"):
            return int(line.split()[1])
    raise RuntimeError(f"/proc/self/status has no {field}")


def _measure_child(side: str, endpoint: str, key: str, source: str) -> dict[str, Any]:
    """In a fresh interpreter: load what the side needs, reset the RSS high-water mark, copy once."""
    # The child loads only what its side uses (the parent's moto stays out of its memory).
    import boto3  # noqa: PLC0415
    from botocore.config import Config  # noqa: PLC0415

    # The archive function's client (runtime.client("s3")), pointed at the loopback server.
    s3 = boto3.client("s3", endpoint_url=endpoint, config=Config(signature_version="s3v4"))
    s3.head_bucket(Bucket=BUCKET)  # endpoint resolved, a connection open: both sides start warm
    copy = _ours(s3, key, source) if side == "ours" else _floor(s3, key, source)
    cpu = time.process_time()
    before = _status_kib("VmRSS")
    try:
        Path("/proc/self/clear_refs").write_text("5")  # VmHWM := VmRSS
    except OSError:
        before = _status_kib("VmHWM")  # no reset: count only how far the copy raised the peak
    started = time.perf_counter()
    answer = copy()
    seconds = time.perf_counter() - started
    peak = _status_kib("VmHWM")
    return answer | {
        "seconds": seconds,
        "cpu_seconds": time.process_time() - cpu,
        "rss_growth": (peak - before) * 1024,
    }


def _ours(s3: Any, key: str, url: str) -> Callable[[], dict[str, Any]]:
    """OutputCopier._copy_one's copy: SafeHttp streams the download into Storage.upload_stream, with
    archive's chunk size, part size, size limit and read timeout."""
    from klingflow.infra.safehttp import SafeHttp  # noqa: PLC0415
    from klingflow.infra.storage import DOWNLOAD_CHUNK_BYTES, Storage  # noqa: PLC0415
    from klingflow.settings import ArchiveSettings  # noqa: PLC0415

    defaults = {name: field.default for name, field in ArchiveSettings.model_fields.items()}
    http = SafeHttp(allow_loopback_http=True, read_timeout_s=defaults["download_timeout_s"])
    # A warm container has made its httpx client (and TLS context, ~50 ms) before a download.
    assert http.client is not None
    storage = Storage(s3, BUCKET)

    def copy() -> dict[str, Any]:
        with http.stream(
            url, allowed_hosts=["127.0.0.1"], max_bytes=defaults["max_output_bytes"]
        ) as response:
            stored = storage.upload_stream(
                key,
                response.iter_bytes(DOWNLOAD_CHUNK_BYTES),
                part_size=defaults["part_size_bytes"],
                content_type="video/mp4",
            )
        return {"bytes": stored.bytes, "sha256": stored.sha256}

    return copy


def _floor(s3: Any, key: str, path: str) -> Callable[[], dict[str, Any]]:
    """boto3's managed upload of the file, with its defaults (8 MiB parts, 10 threads, CRC32)."""

    def copy() -> dict[str, Any]:
        s3.upload_file(path, BUCKET, key)
        return {}

    return copy


def _main(argv: list[str]) -> None:
    side, endpoint, key, source = argv
    print(json.dumps(_measure_child(side, endpoint, key, source)))


def _print(rows: list[RowResult]) -> None:
    for row in rows:
        low, high = row.spread
        verdict = "ok" if row.within_goal else "MISSED"
        print(
            f"{row.path}: {row.ratio:.2f} ({low:.2f}-{high:.2f}) {row.goal_op} {row.goal} {verdict}; "
            f"ours {[round(v, 1) for v in row.ours]} {row.unit}, floor {[round(v, 1) for v in row.floors]}; "
            f"{row.notes}"
        )


if __name__ == "__main__":
    if sys.argv[1:2] == ["child"]:
        _main(sys.argv[2:])
    else:
        numbers = [int(a) for a in sys.argv[1:] if a.isdigit()]
        _print(run(runs=numbers[0] if numbers else 3, quick="--quick" in sys.argv))
