"""The one HTTP client for fetching output files from URLs that providers hand us.

Video providers tell us where a finished video lives, often in an unsigned callback that
anyone who can reach our endpoint could forge. Fetching such a URL naively lets a caller
make our Lambda read cloud metadata (169.254.169.254), poke services inside the VPC, or
fill memory and disk with an endless body. So every fetch goes through `SafeHttp`, which:

* accepts only hosts on the provider's allowlist (exact names or "*.example.com"),
  and only https (plain http and loopback are a sandbox-only opt-in);
* resolves the host itself and refuses unless every address is public unicast, so a
  name that points anywhere internal is refused even if it is on the allowlist;
* connects to the address it checked, not to whatever DNS says a moment later, while
  TLS SNI, certificate verification and the Host header still use the real name;
* follows redirects by hand so each hop passes the same checks;
* stops reading as soon as the body exceeds the caller's byte limit.

Error messages name the host but never the full URL: output URLs usually carry signed
query strings that should not end up in logs.
"""

from __future__ import annotations

import ipaddress
import socket
import threading
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import Final

import httpx

from klingflow.core.addresses import IPAddress, address_problem
from klingflow.core.codes import JobErrorCode
from klingflow.core.errors import KlingflowError, UnsafeUrl

from . import tls
from .urlrules import (
    ANY_HOST,
    DEFAULT_PORTS,
    Allowlist,
    announced_length,
    base_headers,
    bracketed,
    host_of,
    ip_literal,
    is_plain_loopback,
    origin,
    parse_url,
)
from .watchdog import LookupTooSlow, Watchdog

__all__ = [
    "DownloadFailed",
    "Resolver",
    "ResponseTooLarge",
    "SafeHttp",
    "SafeResponse",
    "TooManyRedirects",
    "address_problem",
    "default_resolver",
]

Resolver = Callable[[str, int], list[str]]

_REDIRECT_STATUSES: Final = frozenset({301, 302, 303, 307, 308})
# Headers that carry credentials meant for the first origin only.
_CREDENTIAL_HEADERS: Final = frozenset({"authorization", "proxy-authorization", "cookie"})


class ResponseTooLarge(UnsafeUrl):
    """The body is (or announces itself as) larger than the caller's byte limit."""

    code = JobErrorCode.RESPONSE_TOO_LARGE


class TooManyRedirects(UnsafeUrl):
    """The redirect chain is longer than `max_redirects`."""

    code = JobErrorCode.TOO_MANY_REDIRECTS


class DownloadFailed(KlingflowError):
    """The fetch was allowed but did not succeed: a non-2xx answer, DNS or network failure.

    `status_code` is the final HTTP status, or None when no answer was received.
    """

    code = JobErrorCode.DOWNLOAD_FAILED
    http_status = 502

    def __init__(self, message: str, *, status_code: int | None = None) -> None:
        super().__init__(message)
        self.status_code = status_code


def default_resolver(host: str, port: int) -> list[str]:
    """All addresses the system resolver gives for host, in its order, without duplicates."""
    infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    addresses: list[str] = []
    for _family, _type, _proto, _canon, sockaddr in infos:
        address = str(sockaddr[0])
        if address not in addresses:
            addresses.append(address)
    return addresses


class SafeResponse:
    """A streaming answer whose body can only be read within the byte limit."""

    def __init__(self, response: httpx.Response, *, url: str, max_bytes: int) -> None:
        self._response = response
        self._max_bytes = max_bytes
        self._host = httpx.URL(url).host
        self.url = url
        self.bytes_received = 0

    @property
    def status_code(self) -> int:
        return self._response.status_code

    @property
    def headers(self) -> httpx.Headers:
        return self._response.headers

    @property
    def content_length(self) -> int | None:
        return announced_length(self._response)

    def iter_bytes(self, chunk_size: int = 64 * 1024) -> Iterator[bytes]:
        """Yield the (decoded) body; raise ResponseTooLarge before yielding past max_bytes.

        Decoded bytes are counted, not wire bytes, so a small compressed body cannot
        inflate past the limit.
        """
        try:
            for chunk in self._response.iter_bytes(chunk_size=chunk_size):
                self.bytes_received += len(chunk)
                if self.bytes_received > self._max_bytes:
                    raise ResponseTooLarge(
                        f"output from host {self._host!r} exceeded the limit of {self._max_bytes} bytes; "
                        "download stopped"
                    )
                yield chunk
        except httpx.TransportError as error:
            raise DownloadFailed(
                f"reading output from host {self._host!r} failed: {type(error).__name__}: {error}"
            ) from error


class SafeHttp:
    """Fetches untrusted output URLs; see the module docstring for the rules it enforces."""

    def __init__(
        self,
        *,
        client: httpx.Client | None = None,
        resolver: Resolver | None = None,
        allow_loopback_http: bool = False,
        connect_timeout_s: float = 5,
        read_timeout_s: float = 30,
        max_redirects: int = 5,
    ) -> None:
        if max_redirects < 0:
            raise ValueError("max_redirects must be >= 0")
        self._client = client
        self._owns_client = client is None
        self._client_lock = threading.Lock()
        self._resolver: Resolver = resolver or default_resolver
        self._allow_loopback_http = allow_loopback_http
        self._timeout = httpx.Timeout(read_timeout_s, connect=connect_timeout_s)
        self._max_redirects = max_redirects

    @property
    def client(self) -> httpx.Client:
        with self._client_lock:
            if self._client is None:
                self._client = httpx.Client(
                    timeout=self._timeout,
                    follow_redirects=False,
                    # A proxy from the environment would connect by name and undo the pinning.
                    trust_env=False,
                    verify=tls.context(trust_env=False),
                    # Pooled connections are keyed by IP, so a kept-alive connection could be
                    # reused for another allowlisted name on that IP whose certificate was
                    # never checked. Downloads are few and large; reconnecting is cheap.
                    limits=httpx.Limits(max_keepalive_connections=0),
                )
            return self._client

    def close(self) -> None:
        """Close the client if this instance created it; an injected one belongs to the caller."""
        with self._client_lock:
            if self._owns_client and self._client is not None:
                self._client.close()
                self._client = None

    @contextmanager
    def stream(
        self,
        url: str,
        *,
        allowed_hosts: Sequence[str],
        max_bytes: int,
        headers: Mapping[str, str] | None = None,
    ) -> Iterator[SafeResponse]:
        """GET url, following checked redirects; yield the final 2xx answer, body unread.

        Raises UnsafeUrl (or ResponseTooLarge / TooManyRedirects) for anything the rules
        refuse, DownloadFailed for a non-2xx answer or a network failure.
        """
        rules = Allowlist(allowed_hosts)
        if max_bytes < 0:
            raise ValueError("max_bytes must be >= 0")
        current = parse_url(url)
        original_origin = origin(current)
        request_headers = base_headers(headers)
        redirects = 0
        while True:
            if origin(current) != original_origin:
                # Credentials were meant for the first origin only.
                request_headers = {
                    k: v for k, v in request_headers.items() if k.lower() not in _CREDENTIAL_HEADERS
                }
            response = self._send_checked(current, rules, request_headers)
            try:
                location = response.headers.get("location")
                if response.status_code in _REDIRECT_STATUSES and location:
                    redirects += 1
                    if redirects > self._max_redirects:
                        raise TooManyRedirects(
                            f"output URL host {host_of(current)!r} redirected more than "
                            f"{self._max_redirects} times; refusing to follow further"
                        )
                    current = parse_url(location, base=current)
                    continue
                if not 200 <= response.status_code < 300:
                    raise DownloadFailed(
                        f"output URL host {host_of(current)!r} answered HTTP {response.status_code}",
                        status_code=response.status_code,
                    )
                announced = announced_length(response)
                if announced is not None and announced > max_bytes:
                    raise ResponseTooLarge(
                        f"output from host {host_of(current)!r} announces {announced} bytes, "
                        f"over the limit of {max_bytes} bytes"
                    )
                yield SafeResponse(response, url=str(current), max_bytes=max_bytes)
                return
            finally:
                response.close()

    def post(self, url: str, *, content: bytes, headers: Mapping[str, str], deadline_s: float) -> int:
        """POST to a receiver at any public host (a webhook): https only, the same address
        checks and pinning as downloads, no redirect followed, and the whole exchange (resolve,
        connect, send, the answer's status and headers; its body is never read) within
        `deadline_s` of wall-clock time. Returns the status code; raises UnsafeUrl for a refused URL and
        DownloadFailed when nothing answered in time."""
        target = parse_url(url)
        watchdog = Watchdog(deadline_s)
        try:
            response = self._send_checked(
                target, ANY_HOST, base_headers(headers), method="POST", content=content, watchdog=watchdog
            )
        except DownloadFailed:
            if watchdog.ran_out:
                raise DownloadFailed(
                    f"receiver host {host_of(target)!r} did not answer within {deadline_s:g} s"
                ) from None
            raise
        finally:
            # Before the connection is closed: the watchdog must never touch a socket after it.
            watchdog.finish()
        response.close()
        return response.status_code

    def _send_checked(
        self,
        url: httpx.URL,
        rules: Allowlist,
        headers: Mapping[str, str],
        *,
        method: str = "GET",
        content: bytes | None = None,
        watchdog: Watchdog | None = None,
    ) -> httpx.Response:
        host = host_of(url)
        if url.userinfo:
            raise UnsafeUrl(f"output URL for host {host!r} carries credentials (userinfo); refused")
        if not rules.allows(host):
            raise UnsafeUrl(f"output URL host {host!r} is not in the allowlist for this provider")
        if url.scheme not in DEFAULT_PORTS:
            raise UnsafeUrl(f"output URL host {host!r} uses scheme {url.scheme!r}; only https is allowed")
        if url.scheme == "http" and not self._allow_loopback_http:
            raise UnsafeUrl(f"output URL host {host!r} uses plain http; only https is allowed")

        port = url.port or DEFAULT_PORTS[url.scheme]
        addresses = self._resolve(host, port, watchdog)
        for address in addresses:
            problem = self._address_problem(address)
            if problem is not None:
                raise UnsafeUrl(f"output URL host {host!r} resolves to {address}, {problem}")
        if url.scheme == "http" and not all(is_plain_loopback(a) for a in addresses):
            raise UnsafeUrl(
                f"output URL host {host!r} uses plain http, which is only allowed to loopback "
                "addresses in the sandbox"
            )

        pinned = addresses[0]
        pinned_url = url.copy_with(host=str(pinned), fragment=None)
        host_header = bracketed(host) if url.port is None else f"{bracketed(host)}:{url.port}"
        extensions: dict[str, object] = {"timeout": self._timeout.as_dict()}
        if watchdog is not None:
            extensions["timeout"] = watchdog.capped(self._timeout)
            extensions["trace"] = watchdog.trace
        if url.scheme == "https" and ip_literal(host) is None:
            # The connection goes to the IP; TLS must still present and verify the real name.
            extensions["sni_hostname"] = host
        request = httpx.Request(
            method,
            pinned_url,
            headers={**headers, "Host": host_header},
            content=content,
            extensions=extensions,
        )
        try:
            # A hand-built request (not client.build_request) and auth=None keep any default
            # headers, cookies or auth of an injected client away from untrusted hosts.
            return self.client.send(request, stream=True, auth=None, follow_redirects=False)
        except httpx.TransportError as error:
            raise DownloadFailed(
                f"fetching output from host {host!r} ({pinned}) failed: {type(error).__name__}: {error}"
            ) from error

    def _resolve(self, host: str, port: int, watchdog: Watchdog | None = None) -> list[IPAddress]:
        literal = ip_literal(host)
        if literal is not None:
            return [literal]
        try:
            raw = self._resolver(host, port) if watchdog is None else watchdog.run(self._resolver, host, port)
        except LookupTooSlow:
            raise DownloadFailed(f"receiver host {host!r} did not resolve in time") from None
        except OSError as error:
            raise DownloadFailed(f"output URL host {host!r} does not resolve: {error}") from error
        if not raw:
            raise DownloadFailed(f"output URL host {host!r} resolves to no address")
        addresses: list[IPAddress] = []
        for text in raw:
            try:
                addresses.append(ipaddress.ip_address(text))
            except ValueError:
                raise UnsafeUrl(
                    f"output URL host {host!r} resolves to {text!r}, which is not an IP address"
                ) from None
        return addresses

    def _address_problem(self, address: IPAddress) -> str | None:
        if self._allow_loopback_http and is_plain_loopback(address):
            return None
        return address_problem(address)
