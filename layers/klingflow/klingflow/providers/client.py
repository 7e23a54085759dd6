"""Sends a dialect adapter's calls over HTTP, mapping every failure onto the error taxonomy."""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any

from klingflow.core.codes import ProviderErrorClass
from klingflow.core.errors import ProviderError
from klingflow.core.vocab import JobKind
from klingflow.infra import tls

from .base import Adapter, HttpCall, Submission, TaskReport, TaskSpec
from .defaults import PROVIDER_TIMEOUT_S

# httpx is imported by the client as it is built, not with this module: what only parses
# callbacks never sends.
if TYPE_CHECKING:
    import httpx


class ProviderClient:
    """Sends an adapter's calls over HTTP and maps every failure onto ProviderError."""

    def __init__(
        self,
        adapter: Adapter,
        credentials: Callable[[], Mapping[str, str]],
        *,
        client: httpx.Client | None = None,
        timeout_s: float = PROVIDER_TIMEOUT_S,
        connections: int | None = None,
    ) -> None:
        import httpx  # noqa: PLC0415 (see the module's imports)

        self.adapter = adapter
        # Read on every call (the secret is cached upstream), so a rotated key takes effect
        # without recycling warm containers.
        self._credentials = credentials
        # `connections`: calls in flight at once (the sweeper's polls). All of them stay open
        # between calls; httpx keeps only 20 by default, and a call past them would open a new
        # connection (a TLS handshake) every time.
        limits = (
            httpx.Limits(max_connections=connections, max_keepalive_connections=connections)
            if connections
            else httpx.Limits(max_connections=100, max_keepalive_connections=20)
        )
        self._client = client or httpx.Client(
            timeout=httpx.Timeout(timeout_s, connect=5.0), limits=limits, verify=tls.context()
        )

    @property
    def name(self) -> str:
        return self.adapter.dialect

    def send(self, call: HttpCall) -> tuple[Any, int]:
        """Returns (parsed JSON body, latency in ms); raises ProviderError on any failure."""
        import httpx  # noqa: PLC0415 (loaded by __init__ already)

        started = time.monotonic()
        url = self.adapter.base_url + call.path
        headers = {"Accept": "application/json", **self.adapter.auth_headers(self._credentials())}
        try:
            response = self._client.request(call.method, url, json=call.json, headers=headers)
        except (httpx.ConnectError, httpx.ConnectTimeout, httpx.PoolTimeout) as error:
            # Nothing reached the provider: safe to try elsewhere.
            raise ProviderError(
                self.name, ProviderErrorClass.PROVIDER_DOWN, f"cannot connect: {error}"
            ) from error
        except httpx.TransportError as error:
            # The request may have been received: whether a task exists is unknown.
            raise ProviderError(
                self.name, ProviderErrorClass.UNKNOWN_OUTCOME, f"no answer after sending: {error!r}"
            ) from error
        latency_ms = int((time.monotonic() - started) * 1000)
        try:
            body: Any = response.json()
        except ValueError:
            body = response.text
        if response.status_code >= 400:
            raise self.adapter.classify(response.status_code, body, response.headers)
        return body, latency_ms

    def create(self, spec: TaskSpec) -> tuple[Submission, int]:
        body, latency = self.send(self.adapter.create(spec))
        return self.adapter.parse_create(body, spec.request.kind), latency

    def elements(self, *, presets: bool, page_num: int, page_size: int) -> list[dict[str, Any]] | None:
        """One page of the account's elements (or presets); None when the dialect lists none."""
        call = self.adapter.list_elements(presets=presets, page_num=page_num, page_size=page_size)
        if call is None:
            return None
        body, _ = self.send(call)
        return self.adapter.parse_elements(body)

    def delete_element(self, element_id: str) -> bool:
        """Deleted at the provider (True), or the dialect documents no delete (False)."""
        call = self.adapter.delete_element(element_id)
        if call is None:
            return False
        body, _ = self.send(call)
        self.adapter.parse_deleted(body)
        return True

    def query(
        self, task_id: str, kind: JobKind = JobKind.MOTION_CONTROL, *, upstream: str | None = None
    ) -> TaskReport | None:
        """The provider's view of a task; None when the kind has no task to ask about."""
        call = self.adapter.query(task_id, kind)
        if call is None:
            return None
        if upstream is not None:
            call = self.adapter.naming_upstream(call, upstream)
        body, _ = self.send(call)
        return self.adapter.parse_task(body, task_id=task_id)
