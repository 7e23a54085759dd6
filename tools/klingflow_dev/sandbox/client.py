"""Talk to the sandbox's HTTP API the way a user talks to the deployed one: SigV4-signed."""

from __future__ import annotations

import json
from typing import Any
from urllib.parse import quote

import httpx
from botocore.auth import SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials

from klingflow.infra import tls

from .aws import REGION


class ApiClient:
    def __init__(self, base_url: str, *, credentials: Credentials | None = None) -> None:
        self.base_url = base_url.rstrip("/")
        self._credentials = credentials or Credentials("sandbox", "sandbox", "sandbox")
        self._http = httpx.Client(timeout=30, verify=tls.context())

    def request(
        self,
        method: str,
        path: str,
        body: Any = None,
        *,
        headers: dict[str, str] | None = None,
        signed: bool = True,
        raw: bytes | None = None,
        quote_path: bool = False,
    ) -> httpx.Response:
        """`body` is sent as JSON; `raw` as the very bytes given (for bodies that are not JSON);
        `quote_path` percent-encodes a path that carries any characters at all."""
        url = self.base_url + (quote(path, safe="/") if quote_path else path)
        data = raw if raw is not None else json.dumps(body).encode() if body is not None else b""
        all_headers = {"Content-Type": "application/json", **(headers or {})}
        if signed:
            aws_request = AWSRequest(method=method, url=url, data=data, headers=all_headers)
            SigV4Auth(self._credentials, "execute-api", REGION).add_auth(aws_request)
            all_headers = dict(aws_request.headers.items())
        return self._http.request(method, url, content=data, headers=all_headers)

    def get_json(self, path: str) -> Any:
        response = self.request("GET", path)
        response.raise_for_status()
        return response.json()

    def close(self) -> None:
        self._http.close()
