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
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeout
from contextlib import contextmanager, suppress
from typing import Final

import httpx

from klingflow.core.addresses import IPAddress, address_problem
from klingflow.core.errors import KlingflowError, UnsafeUrl

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
_DEFAULT_PORTS: Final = {"http": 80, "https": 443}
# Headers that carry credentials meant for the first origin only.
_CREDENTIAL_HEADERS: Final = frozenset({"authorization", "proxy-authorization", "cookie"})


class ResponseTooLarge(UnsafeUrl):
    """The body is (or announces itself as) larger than the caller's byte limit."""

    code = "RESPONSE_TOO_LARGE"


class TooManyRedirects(UnsafeUrl):
    """The redirect chain is longer than `max_redirects`."""

    code = "TOO_MANY_REDIRECTS"


class DownloadFailed(KlingflowError):
    """The fetch was allowed but did not succeed: a non-2xx answer, DNS or network failure.

    `status_code` is the final HTTP status, or None when no answer was received.
    """

    code = "DOWNLOAD_FAILED"
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
        return _content_length(self._response)

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
        rules = _Allowlist(allowed_hosts)
        if max_bytes < 0:
            raise ValueError("max_bytes must be >= 0")
        current = _parse(url)
        original_origin = _origin(current)
        request_headers = _base_headers(headers)
        redirects = 0
        while True:
            if _origin(current) != original_origin:
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
                            f"output URL host {_host_of(current)!r} redirected more than "
                            f"{self._max_redirects} times; refusing to follow further"
                        )
                    current = _parse(location, base=current)
                    continue
                if not 200 <= response.status_code < 300:
                    raise DownloadFailed(
                        f"output URL host {_host_of(current)!r} answered HTTP {response.status_code}",
                        status_code=response.status_code,
                    )
                announced = _content_length(response)
                if announced is not None and announced > max_bytes:
                    raise ResponseTooLarge(
                        f"output from host {_host_of(current)!r} announces {announced} bytes, "
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
        target = _parse(url)
        watchdog = _Watchdog(deadline_s)
        try:
            response = self._send_checked(
                target, _ANY_HOST, _base_headers(headers), method="POST", content=content, watchdog=watchdog
            )
        except DownloadFailed:
            if watchdog.expired:
                raise DownloadFailed(
                    f"receiver host {_host_of(target)!r} did not answer within {deadline_s:g} s"
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
        rules: _Allowlist,
        headers: Mapping[str, str],
        *,
        method: str = "GET",
        content: bytes | None = None,
        watchdog: _Watchdog | None = None,
    ) -> httpx.Response:
        host = _host_of(url)
        if url.userinfo:
            raise UnsafeUrl(f"output URL for host {host!r} carries credentials (userinfo); refused")
        if not rules.allows(host):
            raise UnsafeUrl(f"output URL host {host!r} is not in the allowlist for this provider")
        if url.scheme not in _DEFAULT_PORTS:
            raise UnsafeUrl(f"output URL host {host!r} uses scheme {url.scheme!r}; only https is allowed")
        if url.scheme == "http" and not self._allow_loopback_http:
            raise UnsafeUrl(f"output URL host {host!r} uses plain http; only https is allowed")

        port = url.port or _DEFAULT_PORTS[url.scheme]
        addresses = self._resolve(host, port, watchdog)
        for address in addresses:
            problem = self._address_problem(address)
            if problem is not None:
                raise UnsafeUrl(f"output URL host {host!r} resolves to {address}, {problem}")
        if url.scheme == "http" and not all(_is_plain_loopback(a) for a in addresses):
            raise UnsafeUrl(
                f"output URL host {host!r} uses plain http, which is only allowed to loopback "
                "addresses in the sandbox"
            )

        pinned = addresses[0]
        pinned_url = url.copy_with(host=str(pinned), fragment=None)
        host_header = _bracketed(host) if url.port is None else f"{_bracketed(host)}:{url.port}"
        extensions: dict[str, object] = {"timeout": self._timeout.as_dict()}
        if watchdog is not None:
            extensions["timeout"] = watchdog.capped(self._timeout)
            extensions["trace"] = watchdog.trace
        if url.scheme == "https" and _ip_literal(host) is None:
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

    def _resolve(self, host: str, port: int, watchdog: _Watchdog | None = None) -> list[IPAddress]:
        literal = _ip_literal(host)
        if literal is not None:
            return [literal]
        try:
            raw = self._resolver(host, port) if watchdog is None else watchdog.run(self._resolver, host, port)
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
        if self._allow_loopback_http and _is_plain_loopback(address):
            return None
        return address_problem(address)


class _Watchdog:
    """One request's wall-clock limit. httpx's timeouts apply to each read or write, so a
    receiver that trickles its answer a byte at a time never trips them; when this limit runs
    out, a timer shuts the connection's socket down, which ends whatever read or write is
    blocked on it (as an httpx TransportError)."""

    def __init__(self, limit_s: float) -> None:
        self._ends_at = time.monotonic() + limit_s
        self._lock = threading.Lock()
        self._socket: socket.socket | None = None
        self._finished = False
        self.expired = False
        self._timer = threading.Timer(limit_s, self._cut)
        self._timer.daemon = True
        self._timer.start()

    def run(self, lookup: Resolver, host: str, port: int) -> list[str]:
        """The lookup's answer if it comes within what is left of the limit. No socket of ours
        to cut: the system resolver blocks for as long as a slow authoritative server makes it,
        so the lookup runs on a pool thread and only the wait for it is bounded."""
        future = _lookups().submit(lookup, host, port)
        try:
            return future.result(timeout=max(0.0, self._ends_at - time.monotonic()))
        except FutureTimeout:
            future.cancel()  # still queued behind busy lookups: not run for no one
            with self._lock:
                self.expired = True
            raise DownloadFailed(f"receiver host {host!r} did not resolve in time") from None

    def capped(self, timeout: httpx.Timeout) -> dict[str, float | None]:
        """Each operation's timeout, never past what is left of the limit."""
        left = max(0.001, self._ends_at - time.monotonic())
        return {
            name: left if value is None else min(value, left) for name, value in timeout.as_dict().items()
        }

    def trace(self, name: str, info: Mapping[str, object]) -> None:
        # httpcore's trace extension: the stream each connection step made (the TLS socket
        # replaces the plain one, which TLS detaches from its descriptor).
        if name in ("connection.connect_tcp.complete", "connection.start_tls.complete"):
            stream = info.get("return_value")
            found = getattr(stream, "get_extra_info", lambda _: None)("socket")
            if isinstance(found, socket.socket):
                with self._lock:
                    self._socket = found

    def _cut(self) -> None:
        with self._lock:
            if self._finished:
                return
            self.expired = True
            if self._socket is not None:
                # The plain socket's shutdown, not SSLSocket's (which would drop its TLS state
                # under the reading thread); a closed socket answers EBADF and is left alone.
                with suppress(OSError):
                    socket.socket.shutdown(self._socket, socket.SHUT_RDWR)

    def finish(self) -> None:
        with self._lock:
            self._finished = True
        self._timer.cancel()


# A lookup that outlives its delivery keeps its thread until the system resolver gives up on
# its own (resolv.conf's timeout x attempts; the interpreter's exit waits for it too); the bound
# caps how many one container holds, and a lookup queued behind them still fails at its own
# deadline.
_LOOKUP_THREADS: Final = 4
_lookup_pool: ThreadPoolExecutor | None = None
_lookup_pool_lock = threading.Lock()


def _lookups() -> ThreadPoolExecutor:
    global _lookup_pool  # noqa: PLW0603 - one pool per process, made on the first POST
    with _lookup_pool_lock:
        if _lookup_pool is None:
            _lookup_pool = ThreadPoolExecutor(_LOOKUP_THREADS, thread_name_prefix="safehttp-dns")
        return _lookup_pool


class _Allowlist:
    def __init__(self, entries: Sequence[str]) -> None:
        if isinstance(entries, str):
            # A lone string is a Sequence[str] of characters; almost certainly a mistake.
            raise TypeError("allowed_hosts must be a sequence of host names, not a single string")
        self._exact: set[str] = set()
        self._ips: set[IPAddress] = set()
        self._suffixes: list[str] = []
        self._any = False
        for entry in entries:
            name = _normalise(entry.strip().removeprefix("[").removesuffix("]"))
            if name.startswith("*."):
                suffix = name[1:]
                if "*" in suffix or len(suffix) < 2 or "." not in suffix[1:]:
                    # "*.com" would admit a whole TLD; refuse rather than guess what was meant.
                    raise ValueError(f"allowed_hosts entry {entry!r} is not a usable wildcard")
                self._suffixes.append(suffix)
            elif "*" in name or not name:
                raise ValueError(f"allowed_hosts entry {entry!r} is not a host name or '*.domain' wildcard")
            elif (ip := _ip_literal(name)) is not None:
                self._ips.add(ip)
            else:
                self._exact.add(name)

    def allows(self, host: str) -> bool:
        if self._any:
            return True
        ip = _ip_literal(host)
        if ip is not None:
            # IP literals never match wildcards: "*.example.com" says nothing about addresses.
            return ip in self._ips
        return host in self._exact or any(host.endswith(s) for s in self._suffixes)


def _any_host() -> _Allowlist:
    """Every host name passes; the address checks still refuse anything but public unicast."""
    rules = _Allowlist([])
    rules._any = True
    return rules


_ANY_HOST: Final = _any_host()


def _parse(text: str, *, base: httpx.URL | None = None) -> httpx.URL:
    try:
        url = base.join(text) if base is not None else httpx.URL(text)
    except (httpx.InvalidURL, ValueError, TypeError) as error:
        where = f" (redirect from host {base.host!r})" if base is not None else ""
        raise UnsafeUrl(f"output URL{where} is not a valid URL: {error}") from None
    if not url.is_absolute_url or not url.host:
        where = f" (redirect from host {base.host!r})" if base is not None else ""
        raise UnsafeUrl(f"output URL{where} is not an absolute URL with a host")
    return url


def _host_of(url: httpx.URL) -> str:
    # raw_host is the IDNA (punycode) form, which is what DNS, SNI and allowlists compare.
    return _normalise(url.raw_host.decode("ascii"))


def _normalise(host: str) -> str:
    return host.lower().rstrip(".")


def _origin(url: httpx.URL) -> tuple[str, str, int]:
    return (url.scheme, _host_of(url), url.port or _DEFAULT_PORTS.get(url.scheme, 0))


def _ip_literal(host: str) -> IPAddress | None:
    try:
        return ipaddress.ip_address(host)
    except ValueError:
        return None


def _is_plain_loopback(address: IPAddress) -> bool:
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return False
    return address.is_loopback


def _bracketed(host: str) -> str:
    return f"[{host}]" if ":" in host else host


def _base_headers(headers: Mapping[str, str] | None) -> dict[str, str]:
    result = {"User-Agent": "klingflow-safehttp", "Accept-Encoding": "identity"}
    for key, value in (headers or {}).items():
        if key.lower() == "host":
            continue  # always derived from the URL; a caller-set Host would defeat the allowlist
        for existing in [k for k in result if k.lower() == key.lower()]:
            del result[existing]
        result[key] = value
    return result


def _content_length(response: httpx.Response) -> int | None:
    value = response.headers.get("content-length")
    if value is None:
        return None
    try:
        length = int(value)
    except ValueError:
        return None
    return length if length >= 0 else None
