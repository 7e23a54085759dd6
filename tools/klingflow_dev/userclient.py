"""What the `klingflow` command does for a user: find the stack, upload local files, call the
API signed with SigV4, follow a job, download and verify its outputs.

A target is a deployed stack (`--stack NAME`: its outputs name the API and the bucket), the
environment (`KLINGFLOW_API_URL`, `KLINGFLOW_BUCKET`), or a running `klingflow sandbox up`
(found through the state file it writes). Credentials come from boto3's usual chain (profiles,
SSO, session tokens), except on the sandbox, which takes any.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlencode, urlsplit

import boto3
import httpx
from botocore.auth import SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials

from klingflow.infra import tls

TERMINAL = frozenset({"ARCHIVED", "FAILED", "TIMED_OUT", "CANCELLED"})
# Request fields that may name a local file (uploaded under incoming/ before the job is posted).
MEDIA_FIELDS = ("image", "image_tail", "video", "first_frame", "last_frame", "frontal_image", "static_mask")
MEDIA_LISTS = ("reference_images", "refer_images")


def state_file() -> Path:
    """Where `klingflow sandbox up` says where it is."""
    return Path(os.environ.get("KLINGFLOW_HOME") or Path.home() / ".klingflow") / "sandbox.json"


class TargetError(Exception):
    """No stack to talk to, or one that cannot be reached: said in words a user can act on."""


class ApiError(Exception):
    """The API refused a call; `status` and `body` are its answer."""

    def __init__(self, status: int, body: Any) -> None:
        error = body.get("error", {}) if isinstance(body, dict) else {}
        details = "; ".join(
            f"{d.get('field')}: {d.get('message')} [{d.get('rule')}]" for d in error.get("details", [])
        )
        super().__init__(f"{status} {error.get('code', '')}: {details or error.get('message') or body}")
        self.status = status
        self.body = body


@dataclass(frozen=True)
class Target:
    api_url: str
    bucket: str
    session: boto3.Session
    aws_endpoint: str | None = None  # the sandbox's moto; None for AWS itself
    name: str = "stack"

    def s3(self) -> Any:
        return self.session.client("s3", endpoint_url=self.aws_endpoint)


def find_target(stack: str | None = None, region: str | None = None) -> Target:
    if stack:
        session = boto3.Session(region_name=region) if region else boto3.Session()
        try:
            answer = session.client("cloudformation").describe_stacks(StackName=stack)
        except Exception as error:  # botocore's errors name the cause (no credentials, no stack)
            raise TargetError(f"cannot read stack {stack!r}: {error}") from error
        outputs = {o["OutputKey"]: o["OutputValue"] for o in answer["Stacks"][0].get("Outputs", [])}
        if "ApiUrl" not in outputs or "BucketName" not in outputs:
            raise TargetError(f"stack {stack!r} has no ApiUrl/BucketName outputs: is it a klingflow stack?")
        return Target(outputs["ApiUrl"], outputs["BucketName"], session, name=stack)
    if os.environ.get("KLINGFLOW_API_URL"):
        bucket = os.environ.get("KLINGFLOW_BUCKET", "")
        session = boto3.Session(region_name=region) if region else boto3.Session()
        return Target(os.environ["KLINGFLOW_API_URL"], bucket, session, name="environment")
    path = state_file()
    if path.exists():
        state = json.loads(path.read_text())
        if _alive(int(state.get("pid", 0))):
            # The sandbox takes any credentials; these are its own (never a real account's).
            session = boto3.Session(
                aws_access_key_id="sandbox",
                aws_secret_access_key="sandbox",  # noqa: S106
                aws_session_token="sandbox",  # noqa: S106
                region_name=state.get("region", "us-east-1"),
            )
            return Target(state["api"], state["bucket"], session, state["aws_endpoint"], name="sandbox")
    raise TargetError(
        "no klingflow to talk to: give --stack NAME, set KLINGFLOW_API_URL and KLINGFLOW_BUCKET, "
        "or start one with `klingflow sandbox up`"
    )


def _alive(pid: int) -> bool:
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


class Client:
    """The HTTP API, signed as its IAM authorizer wants, plus the bucket for files."""

    def __init__(self, target: Target, *, timeout_s: float = 60.0) -> None:
        self.target = target
        self._http = httpx.Client(timeout=timeout_s, verify=tls.context())
        self._region = _region_of(target.api_url) or target.session.region_name or "us-east-1"

    def close(self) -> None:
        self._http.close()

    def call(self, method: str, path: str, body: Any = None, *, query: dict[str, Any] | None = None) -> Any:
        url = self.target.api_url.rstrip("/") + path
        given = {k: v for k, v in (query or {}).items() if v is not None}
        if given:
            url += "?" + urlencode(given)
        data = json.dumps(body).encode() if body is not None else b""
        headers = {"Content-Type": "application/json"}
        credentials = self.target.session.get_credentials()
        if credentials is None:
            raise TargetError("no AWS credentials found (boto3's chain: env, profile, SSO): sign in first")
        frozen = credentials.get_frozen_credentials()
        request = AWSRequest(method=method, url=url, data=data, headers=headers)
        signer = Credentials(str(frozen.access_key), str(frozen.secret_key), frozen.token)
        SigV4Auth(signer, "execute-api", self._region).add_auth(request)
        response = self._http.request(method, url, content=data, headers=dict(request.headers.items()))
        try:
            answer = response.json()
        except ValueError:
            answer = response.text
        if response.status_code >= 400:
            raise ApiError(response.status_code, answer)
        return answer

    # ---- inputs ------------------------------------------------------------------------------

    def upload_local_files(self, request: dict[str, Any], *, base: Path = Path()) -> dict[str, Any]:
        """The request with every media field that names a local file replaced by its object key
        under incoming/<uuid>/ (uploaded now); other values are left as they are."""
        folder = f"incoming/{uuid.uuid4()}"
        s3 = self.target.s3()

        def put(value: Any) -> Any:
            if not isinstance(value, str) or "://" in value or value.startswith("data:"):
                return value
            path = (base / value).expanduser()
            if not path.is_file():
                return value  # an object key already in the bucket
            key = f"{folder}/{path.name}"
            s3.upload_file(str(path), self.target.bucket, key)
            return key

        uploaded = dict(request)
        for name in MEDIA_FIELDS:
            if name in uploaded:
                uploaded[name] = put(uploaded[name])
        for name in MEDIA_LISTS:
            if isinstance(uploaded.get(name), list):
                uploaded[name] = [put(item) for item in uploaded[name]]
        if isinstance(uploaded.get("video"), dict):  # omni's {"url", "refer_type"}
            uploaded["video"] = {**uploaded["video"], "url": put(uploaded["video"].get("url"))}
        for mask in uploaded.get("dynamic_masks") or []:
            if isinstance(mask, dict):
                mask["mask"] = put(mask.get("mask"))
        return uploaded

    # ---- jobs --------------------------------------------------------------------------------

    def submit(self, request: dict[str, Any], *, idempotency_key: str | None = None) -> dict[str, Any]:
        body = {**request, **({"idempotency_key": idempotency_key} if idempotency_key else {})}
        return dict(self.call("POST", "/jobs", body)["job"])

    def job(self, job_id: str) -> dict[str, Any]:
        return dict(self.call("GET", f"/jobs/{job_id}"))

    def follow(
        self,
        job_id: str,
        *,
        timeout_s: float,
        every_s: float = 1.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> Iterator[dict[str, Any]]:
        """The job as it changes, until it ends or `timeout_s` passes (the last one is yielded)."""
        deadline = clock() + timeout_s
        while True:
            job = self.job(job_id)
            yield job
            if job["status"] in TERMINAL or clock() > deadline:
                return
            time.sleep(every_s)

    def download(self, job: dict[str, Any], out: Path) -> list[dict[str, Any]]:
        """Every output into `out`, each checked against the sha256 the job recorded."""
        out.mkdir(parents=True, exist_ok=True)
        s3 = self.target.s3()
        saved = []
        for output in job.get("outputs", []):
            path = out / f"{job['job_id']}-{output['key'].rsplit('/', 1)[-1]}"
            s3.download_file(self.target.bucket, output["key"], str(path))
            digest = hashlib.sha256()
            with path.open("rb") as stream:
                for chunk in iter(lambda: stream.read(1024 * 1024), b""):
                    digest.update(chunk)
            saved.append(
                {
                    "path": str(path),
                    "role": output.get("role", "video"),
                    "bytes": path.stat().st_size,
                    "sha256": digest.hexdigest(),
                    "verified": digest.hexdigest() == output["sha256"],
                }
            )
        return saved


def _region_of(api_url: str) -> str | None:
    found = re.match(r"^[^.]+\.execute-api\.([a-z0-9-]+)\.amazonaws\.com", urlsplit(api_url).hostname or "")
    return found.group(1) if found else None
