"""Specifications for SafeHttp, the only client that fetches provider-supplied output URLs.

Everything runs against loopback servers started here (port 0, in threads) and resolvers
injected by the tests; nothing ever leaves 127.0.0.1. Refused fetches use made-up hosts
under ".test" and are refused before any connection, which the recording resolvers and
servers prove.
"""

from __future__ import annotations

import datetime as dt
import http.server
import ipaddress
import socket
import ssl
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest
from cryptography import x509  # a dependency of moto, so always present in the dev environment
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from klingflow.core.errors import KlingflowError, UnsafeUrl
from klingflow.infra.safehttp import (
    DownloadFailed,
    ResponseTooLarge,
    SafeHttp,
    TooManyRedirects,
    address_problem,
    default_resolver,
)
from tests.receivers import TricklingReceiver

# --------------------------------------------------------------------------- fixtures


@dataclass
class Route:
    status: int = 200
    body: bytes = b""
    headers: dict[str, str] = field(default_factory=dict)
    chunked: bool = False
    # Set to an Event to make the handler hold the answer until the test releases it.
    hold: threading.Event | None = None


@dataclass
class Hit:
    path: str
    headers: dict[str, str]


class RecordingServer(http.server.ThreadingHTTPServer):
    daemon_threads = True
    block_on_close = False

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.routes: dict[str, Route] = {}
        self.hits: list[Hit] = []
        self.sni_names: list[str | None] = []

    @property
    def port(self) -> int:
        return int(self.server_address[1])

    def url(self, path: str, host: str = "127.0.0.1", scheme: str = "http") -> str:
        return f"{scheme}://{host}:{self.port}{path}"

    def handle_error(self, request: object, client_address: object) -> None:
        # A client that stops reading mid-body (the size limit) breaks the pipe on purpose.
        pass


class _Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: RecordingServer

    def do_GET(self) -> None:
        self.server.hits.append(Hit(self.path, {k.lower(): v for k, v in self.headers.items()}))
        route = self.server.routes.get(self.path, Route(status=404, body=b"no such route"))
        if route.hold is not None:
            route.hold.wait(timeout=10)
        self.send_response(route.status)
        for name, value in route.headers.items():
            self.send_header(name, value)
        if route.chunked:
            self.send_header("Transfer-Encoding", "chunked")
            self.end_headers()
            for start in range(0, len(route.body), 1000):
                piece = route.body[start : start + 1000]
                self.wfile.write(f"{len(piece):x}\r\n".encode() + piece + b"\r\n")
            self.wfile.write(b"0\r\n\r\n")
        else:
            self.send_header("Content-Length", str(len(route.body)))
            self.end_headers()
            self.wfile.write(route.body)

    def do_POST(self) -> None:
        self.rfile.read(int(self.headers.get("Content-Length") or 0))
        self.do_GET()

    def log_message(self, format: str, *args: object) -> None:
        pass


def _serve(server: RecordingServer) -> Iterator[RecordingServer]:
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True)
    thread.start()
    try:
        yield server
    finally:
        for route in server.routes.values():
            if route.hold is not None:
                route.hold.set()
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


@pytest.fixture
def server() -> Iterator[RecordingServer]:
    yield from _serve(RecordingServer())


class RecordingResolver:
    """Answers from a fixed table and remembers every question."""

    def __init__(self, table: dict[str, list[str]] | None = None, default: list[str] | None = None) -> None:
        self.table = table or {}
        self.default = default
        self.calls: list[tuple[str, int]] = []

    def __call__(self, host: str, port: int) -> list[str]:
        self.calls.append((host, port))
        if host in self.table:
            return self.table[host]
        if self.default is not None:
            return self.default
        raise socket.gaierror(socket.EAI_NONAME, f"{host} is not in the test resolver")


def loopback_resolver() -> RecordingResolver:
    return RecordingResolver(default=["127.0.0.1"])


@pytest.fixture
def sandbox_http() -> Iterator[tuple[SafeHttp, RecordingResolver]]:
    resolver = loopback_resolver()
    safe = SafeHttp(resolver=resolver, allow_loopback_http=True)
    yield safe, resolver
    safe.close()


def read_all(safe: SafeHttp, url: str, allowed: list[str], max_bytes: int = 1_000_000, **kw: object) -> bytes:
    with safe.stream(url, allowed_hosts=allowed, max_bytes=max_bytes, **kw) as response:  # type: ignore[arg-type]
        return b"".join(response.iter_bytes(4096))


# --------------------------------------------------------------------------- streaming


def test_loopback_http_in_sandbox_streams_the_whole_body(
    server: RecordingServer, sandbox_http: tuple[SafeHttp, RecordingResolver]
) -> None:
    """Given a sandbox client and a loopback server with a 300 kB body,
    when the body is streamed in chunks,
    then every byte arrives and the counts agree with Content-Length."""
    safe, _ = sandbox_http
    body = bytes(range(256)) * 1200
    server.routes["/video.mp4"] = Route(body=body, headers={"Content-Type": "video/mp4"})

    with safe.stream(server.url("/video.mp4"), allowed_hosts=["127.0.0.1"], max_bytes=len(body)) as response:
        chunks = list(response.iter_bytes(64 * 1024))

    assert response.status_code == 200
    assert response.headers["content-type"] == "video/mp4"
    assert response.content_length == len(body)
    assert response.bytes_received == len(body)
    assert b"".join(chunks) == body
    assert response.url == server.url("/video.mp4")


def test_client_is_created_lazily_once_and_closed(server: RecordingServer) -> None:
    """Given a SafeHttp without an injected client,
    when two downloads run and the instance is closed,
    then one client served both and close() releases it."""
    server.routes["/a"] = Route(body=b"a")
    safe = SafeHttp(allow_loopback_http=True, resolver=loopback_resolver())

    assert read_all(safe, server.url("/a"), ["127.0.0.1"]) == b"a"
    first = safe.client
    assert read_all(safe, server.url("/a"), ["127.0.0.1"]) == b"a"
    assert safe.client is first

    safe.close()
    assert first.is_closed


# --------------------------------------------------------------------------- scheme and loopback


def test_loopback_http_without_sandbox_flag_is_refused_for_the_scheme(server: RecordingServer) -> None:
    """Given the production client (no loopback/http allowance),
    when it is asked for http://127.0.0.1,
    then it refuses because of the scheme and the server is never contacted."""
    server.routes["/video.mp4"] = Route(body=b"x")
    safe = SafeHttp(resolver=loopback_resolver())

    with pytest.raises(UnsafeUrl, match=r"host '127\.0\.0\.1' uses plain http; only https is allowed"):
        read_all(safe, server.url("/video.mp4"), ["127.0.0.1"])
    assert server.hits == []


def test_loopback_https_without_sandbox_flag_is_refused_for_the_address(server: RecordingServer) -> None:
    """Given the production client,
    when it is asked for https on a name that resolves to 127.0.0.1,
    then it refuses because loopback is not public, before connecting."""
    resolver = loopback_resolver()
    safe = SafeHttp(resolver=resolver)

    with pytest.raises(UnsafeUrl, match=r"host 'cdn\.test' resolves to 127\.0\.0\.1, a loopback address"):
        read_all(safe, server.url("/v", host="cdn.test", scheme="https"), ["cdn.test"])
    assert resolver.calls == [("cdn.test", server.port)]
    assert server.hits == []


def test_sandbox_flag_does_not_allow_plain_http_to_other_addresses() -> None:
    """Given the sandbox client,
    when an http URL resolves to a public address,
    then it is refused: plain http is for loopback only (nothing is contacted)."""
    safe = SafeHttp(resolver=RecordingResolver(default=["93.184.216.34"]), allow_loopback_http=True)

    with pytest.raises(UnsafeUrl, match="plain http, which is only allowed to loopback"):
        read_all(safe, "http://cdn.test/v", ["cdn.test"])


def test_sandbox_flag_does_not_allow_private_addresses() -> None:
    """Given the sandbox client,
    when a name resolves to a private address,
    then it is still refused; only loopback is relaxed."""
    safe = SafeHttp(resolver=RecordingResolver(default=["10.0.0.5"]), allow_loopback_http=True)

    with pytest.raises(UnsafeUrl, match=r"resolves to 10\.0\.0\.5, a private address"):
        read_all(safe, "http://cdn.test/v", ["cdn.test"])


@pytest.mark.parametrize("url", ["ftp://cdn.test/v.mp4", "file://cdn.test/etc/passwd"])
def test_other_schemes_are_refused(url: str) -> None:
    """Given any client, when the scheme is neither https nor http, then it is refused unresolved."""
    resolver = loopback_resolver()
    safe = SafeHttp(resolver=resolver, allow_loopback_http=True)

    with pytest.raises(UnsafeUrl, match="only https is allowed"):
        read_all(safe, url, ["cdn.test"])
    assert resolver.calls == []


def test_userinfo_is_refused() -> None:
    """Given a URL with user:password@, when fetched, then it is refused before resolving."""
    resolver = loopback_resolver()
    safe = SafeHttp(resolver=resolver, allow_loopback_http=True)

    with pytest.raises(UnsafeUrl, match="carries credentials"):
        read_all(safe, "https://user:pw@cdn.test/v", ["cdn.test"])
    assert resolver.calls == []


@pytest.mark.parametrize("url", ["not a url", "/relative/path", "https:///no-host"])
def test_malformed_urls_are_refused(url: str) -> None:
    """Given something that is not an absolute URL with a host, when fetched, then it is refused."""
    with pytest.raises(UnsafeUrl):
        read_all(SafeHttp(resolver=loopback_resolver()), url, ["cdn.test"])


# --------------------------------------------------------------------------- allowlist


def test_host_not_on_allowlist_is_refused_without_resolving_or_connecting(server: RecordingServer) -> None:
    """Given an allowlist of cdn.test,
    when the URL names evil.test,
    then it is refused with the host and rule in the message, no lookup, no connection."""
    resolver = loopback_resolver()
    safe = SafeHttp(resolver=resolver, allow_loopback_http=True)

    with pytest.raises(
        UnsafeUrl, match=r"output URL host 'evil\.test' is not in the allowlist for this provider"
    ):
        read_all(safe, server.url("/v", host="evil.test"), ["cdn.test"])
    assert resolver.calls == []
    assert server.hits == []


@pytest.mark.parametrize(
    ("host", "allowed"),
    [
        ("a.cdn.test", True),
        ("deep.a.cdn.test", True),
        ("A.CDN.Test", True),
        ("a.cdn.test.", True),
        ("cdn.test", False),
        ("evilcdn.test", False),
        ("cdn.test.evil.test", False),
    ],
)
def test_wildcard_matches_subdomains_only(
    server: RecordingServer, sandbox_http: tuple[SafeHttp, RecordingResolver], host: str, allowed: bool
) -> None:
    """Given an allowlist of "*.cdn.test",
    when a URL names a host,
    then subdomains (any depth, any case) are fetched and cdn.test itself or look-alikes are not."""
    safe, resolver = sandbox_http
    server.routes["/v"] = Route(body=b"ok")

    if allowed:
        assert read_all(safe, server.url("/v", host=host), ["*.cdn.test"]) == b"ok"
        assert server.hits[0].headers["host"] == f"{host.lower().rstrip('.')}:{server.port}"
    else:
        with pytest.raises(UnsafeUrl, match="is not in the allowlist"):
            read_all(safe, server.url("/v", host=host), ["*.cdn.test"])
        assert resolver.calls == []
        assert server.hits == []


def test_exact_entry_matches_case_insensitively(
    server: RecordingServer, sandbox_http: tuple[SafeHttp, RecordingResolver]
) -> None:
    """Given an allowlist entry in upper case, when the URL uses lower case, then it matches."""
    safe, _ = sandbox_http
    server.routes["/v"] = Route(body=b"ok")

    assert read_all(safe, server.url("/v", host="cdn.test"), ["CDN.TEST"]) == b"ok"


def test_ip_literal_must_be_listed_and_is_not_matched_by_wildcards(server: RecordingServer) -> None:
    """Given a loopback server addressed by IP,
    when the allowlist has only names or wildcards,
    then the IP literal is refused; listing the IP admits it, with no DNS lookup at all."""
    server.routes["/v"] = Route(body=b"ok")
    resolver = loopback_resolver()
    safe = SafeHttp(resolver=resolver, allow_loopback_http=True)

    with pytest.raises(UnsafeUrl, match="not in the allowlist"):
        read_all(safe, server.url("/v"), ["localhost", "*.0.0.1"])
    assert read_all(safe, server.url("/v"), ["127.0.0.1"]) == b"ok"
    assert resolver.calls == []


@pytest.mark.parametrize("url", ["https://10.0.0.5/v", "https://[::ffff:169.254.169.254]/v"])
def test_listed_ip_literals_are_still_checked(url: str) -> None:
    """Given an allowlist that lists an internal IP, when it is the URL host, then it is refused."""
    host = url.split("//")[1].split("/", maxsplit=1)[0].strip("[]")
    with pytest.raises(UnsafeUrl, match="resolves to"):
        read_all(SafeHttp(resolver=loopback_resolver()), url, [host])


@pytest.mark.parametrize("entry", ["*", "*.", "*.com", "cdn.*.test", "", "a*.cdn.test"])
def test_unusable_allowlist_entries_are_configuration_errors(entry: str) -> None:
    """Given an allowlist entry that would match too much or nothing sensible, then ValueError."""
    with pytest.raises(ValueError, match="allowed_hosts entry"):
        read_all(SafeHttp(resolver=loopback_resolver()), "https://cdn.test/v", [entry])


def test_a_bare_string_allowlist_is_a_type_error() -> None:
    """Given allowed_hosts="cdn.test" (a string, i.e. a sequence of letters), then TypeError."""
    with pytest.raises(TypeError):
        read_all(SafeHttp(resolver=loopback_resolver()), "https://cdn.test/v", "cdn.test")  # type: ignore[arg-type]


# --------------------------------------------------------------------------- addresses


@pytest.mark.parametrize(
    ("address", "problem"),
    [
        ("10.0.0.5", "a private address"),
        ("192.168.1.1", "a private address"),
        ("172.16.0.1", "a private address"),
        ("169.254.169.254", "a link-local address"),
        ("::ffff:127.0.0.1", "an IPv4-mapped IPv6 form of a loopback address"),
        ("::ffff:10.0.0.5", "an IPv4-mapped IPv6 form of a private address"),
        ("100.64.0.1", "a carrier-grade NAT"),
        ("127.0.0.1", "a loopback address"),
        ("::1", "a loopback address"),
        ("0.0.0.0", "an unspecified address"),  # noqa: S104 - a resolver answer, not a bind
        ("::", "an unspecified address"),
        ("224.0.0.1", "a multicast address"),
        ("ff02::1", "a multicast address"),
        ("240.0.0.1", "a reserved address"),
        ("fe80::1", "a link-local address"),
        ("fd00:ec2::254", "a unique-local address"),
        ("fec0::1", "a site-local address"),
        ("64:ff9b::a9fe:a9fe", "a NAT64 form of a link-local address"),
        ("2002:7f00:1::1", "a 6to4 form of a loopback address"),
        ("2001::1", "a Teredo tunnel address"),
        ("192.0.2.10", "address"),
    ],
)
def test_non_public_addresses_are_refused_before_connecting(address: str, problem: str) -> None:
    """Given an allowlisted name that resolves to a non-public address,
    when fetched over https,
    then it is refused naming the host, the address and why."""
    resolver = RecordingResolver(default=[address])
    safe = SafeHttp(resolver=resolver)

    with pytest.raises(UnsafeUrl) as refused:
        read_all(safe, "https://cdn.test/v.mp4", ["cdn.test"])

    message = str(refused.value)
    assert f"host 'cdn.test' resolves to {ipaddress.ip_address(address)}" in message
    assert problem in message
    assert resolver.calls == [("cdn.test", 443)]


def test_every_resolved_address_must_be_public() -> None:
    """Given a name resolving to one public and one private address,
    when fetched,
    then it is refused: a client could connect to either."""
    safe = SafeHttp(resolver=RecordingResolver(default=["93.184.216.34", "10.1.2.3"]))

    with pytest.raises(UnsafeUrl, match=r"resolves to 10\.1\.2\.3, a private address"):
        read_all(safe, "https://cdn.test/v", ["cdn.test"])


@pytest.mark.parametrize("address", ["8.8.8.8", "2606:4700::1111", "::ffff:8.8.8.8", "64:ff9b::808:808"])
def test_public_unicast_addresses_pass_the_address_rule(address: str) -> None:
    """Given a public unicast address (in any spelling), then the address rule has no objection."""
    assert address_problem(ipaddress.ip_address(address)) is None


def test_unparseable_resolver_answers_are_refused() -> None:
    """Given a resolver that answers with something that is not an IP, then the fetch is refused."""
    safe = SafeHttp(resolver=RecordingResolver(default=["cdn.internal"]))

    with pytest.raises(UnsafeUrl, match="not an IP address"):
        read_all(safe, "https://cdn.test/v", ["cdn.test"])


@pytest.mark.parametrize("resolver", [RecordingResolver(), RecordingResolver(default=[])])
def test_names_that_do_not_resolve_are_download_failures(resolver: RecordingResolver) -> None:
    """Given a name the resolver cannot answer for, then DownloadFailed without a status."""
    with pytest.raises(DownloadFailed, match=r"cdn\.test") as failed:
        read_all(SafeHttp(resolver=resolver), "https://cdn.test/v", ["cdn.test"])
    assert failed.value.status_code is None


def test_default_resolver_answers_ip_literals_locally() -> None:
    """Given the system resolver, when asked about a literal, then it answers without DNS."""
    assert default_resolver("127.0.0.1", 443) == ["127.0.0.1"]


# --------------------------------------------------------------------------- pinning


def test_request_goes_to_the_checked_address_with_the_original_host_header(
    server: RecordingServer, sandbox_http: tuple[SafeHttp, RecordingResolver]
) -> None:
    """Given a resolver that says the made-up host cdn.test is 127.0.0.1,
    when https-less sandbox fetch of http://cdn.test:<port>/v runs,
    then the loopback server receives it (so the checked address was used, not system DNS),
    with Host "cdn.test:<port>", and the name was resolved exactly once."""
    safe, resolver = sandbox_http
    server.routes["/v?sig=abc"] = Route(body=b"pinned")

    body = read_all(safe, server.url("/v?sig=abc", host="cdn.test"), ["cdn.test"])

    assert body == b"pinned"
    assert [hit.path for hit in server.hits] == ["/v?sig=abc"]
    assert server.hits[0].headers["host"] == f"cdn.test:{server.port}"
    assert resolver.calls == [("cdn.test", server.port)]


def test_caller_cannot_override_the_host_header(
    server: RecordingServer, sandbox_http: tuple[SafeHttp, RecordingResolver]
) -> None:
    """Given caller headers that include Host, then the Host sent is still the URL's host."""
    safe, _ = sandbox_http
    server.routes["/v"] = Route(body=b"ok")

    read_all(safe, server.url("/v", host="cdn.test"), ["cdn.test"], headers={"host": "internal.admin"})

    assert server.hits[0].headers["host"] == f"cdn.test:{server.port}"


def test_injected_client_defaults_never_reach_the_untrusted_host(server: RecordingServer) -> None:
    """Given an injected client that carries an API key header, cookies and basic auth,
    when it downloads an output URL through SafeHttp,
    then none of those are sent."""
    server.routes["/v"] = Route(body=b"ok")
    client = httpx.Client(headers={"X-Api-Key": "secret"}, cookies={"session": "s"}, auth=("u", "p"))
    safe = SafeHttp(client=client, resolver=loopback_resolver(), allow_loopback_http=True)

    with client:
        assert read_all(safe, server.url("/v", host="cdn.test"), ["cdn.test"]) == b"ok"

    seen = server.hits[0].headers
    assert "x-api-key" not in seen
    assert "cookie" not in seen
    assert "authorization" not in seen


# --------------------------------------------------------------------------- TLS with pinning


def _certificate(tmp_path: Path, name: str) -> tuple[Path, Path]:
    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    now = dt.datetime.now(dt.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(hours=1))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName(name)]), critical=False)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path = tmp_path / f"{name}.crt", tmp_path / f"{name}.key"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return cert_path, key_path


@pytest.fixture
def tls_server(tmp_path: Path) -> Iterator[Callable[[str], tuple[RecordingServer, Path]]]:
    started: list[Iterator[RecordingServer]] = []

    def start(cert_name: str) -> tuple[RecordingServer, Path]:
        cert_path, key_path = _certificate(tmp_path, cert_name)
        server = RecordingServer()
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(cert_path, key_path)

        def remember_sni(_sock: ssl.SSLObject, name: str | None, _ctx: ssl.SSLContext) -> None:
            server.sni_names.append(name)

        context.sni_callback = remember_sni
        server.socket = context.wrap_socket(server.socket, server_side=True)
        running = _serve(server)
        next(running)
        started.append(running)
        return server, cert_path

    yield start
    for running in started:
        next(running, None)


def test_https_to_a_pinned_address_verifies_the_certificate_for_the_real_name(
    tls_server: Callable[[str], tuple[RecordingServer, Path]],
) -> None:
    """Given a loopback TLS server with a certificate for cdn.test and a resolver pinning
    cdn.test to 127.0.0.1,
    when https://cdn.test:<port>/v is fetched,
    then SNI says cdn.test, the certificate verifies against that name, and the body arrives."""
    server, cert_path = tls_server("cdn.test")
    server.routes["/v"] = Route(body=b"over tls")
    client = httpx.Client(verify=ssl.create_default_context(cafile=str(cert_path)))
    safe = SafeHttp(client=client, resolver=loopback_resolver(), allow_loopback_http=True)

    with client:
        body = read_all(safe, server.url("/v", host="cdn.test", scheme="https"), ["cdn.test"])

    assert body == b"over tls"
    assert server.sni_names == ["cdn.test"]
    assert server.hits[0].headers["host"] == f"cdn.test:{server.port}"


def test_https_to_a_pinned_address_rejects_a_certificate_for_another_name(
    tls_server: Callable[[str], tuple[RecordingServer, Path]],
) -> None:
    """Given a loopback TLS server whose (trusted) certificate is for other.test,
    when cdn.test is pinned to it,
    then verification fails: pinning to an IP did not switch off hostname checks."""
    server, cert_path = tls_server("other.test")
    client = httpx.Client(verify=ssl.create_default_context(cafile=str(cert_path)))
    safe = SafeHttp(client=client, resolver=loopback_resolver(), allow_loopback_http=True)

    with client, pytest.raises(DownloadFailed, match=r"host 'cdn\.test'.*(?i:certificate)"):
        read_all(safe, server.url("/v", host="cdn.test", scheme="https"), ["cdn.test"])
    assert server.hits == []


# --------------------------------------------------------------------------- redirects


def test_redirect_to_a_disallowed_host_is_refused(
    server: RecordingServer, sandbox_http: tuple[SafeHttp, RecordingResolver]
) -> None:
    """Given an allowed host that redirects to evil.test,
    when fetched,
    then the redirect is refused by the allowlist and evil.test is never looked up."""
    safe, resolver = sandbox_http
    server.routes["/start"] = Route(status=302, headers={"Location": server.url("/x", host="evil.test")})

    with pytest.raises(UnsafeUrl, match=r"host 'evil\.test' is not in the allowlist"):
        read_all(safe, server.url("/start", host="cdn.test"), ["cdn.test"])
    assert [hit.path for hit in server.hits] == ["/start"]
    assert [host for host, _ in resolver.calls] == ["cdn.test"]


def test_redirect_to_an_internal_address_is_refused(server: RecordingServer) -> None:
    """Given a redirect to an allowlisted name that resolves to the metadata address,
    when fetched,
    then the hop is refused by the address rule."""
    resolver = RecordingResolver({"cdn.test": ["127.0.0.1"], "meta.cdn.test": ["169.254.169.254"]})
    safe = SafeHttp(resolver=resolver, allow_loopback_http=True)
    server.routes["/start"] = Route(
        status=307, headers={"Location": "http://meta.cdn.test/latest/meta-data/"}
    )

    with pytest.raises(UnsafeUrl, match=r"'meta\.cdn\.test' resolves to 169\.254\.169\.254, a link-local"):
        read_all(safe, server.url("/start", host="cdn.test"), ["cdn.test", "*.cdn.test"])


def test_relative_redirect_on_the_same_host_is_followed(
    server: RecordingServer, sandbox_http: tuple[SafeHttp, RecordingResolver]
) -> None:
    """Given a redirect with a relative Location,
    when fetched,
    then it is resolved against the current URL, re-checked (resolved again) and followed,
    and the response URL is the final one in its original host form."""
    safe, resolver = sandbox_http
    server.routes["/dir/start"] = Route(status=301, headers={"Location": "final.mp4?sig=1"})
    server.routes["/dir/final.mp4?sig=1"] = Route(body=b"final body")

    with safe.stream(
        server.url("/dir/start", host="cdn.test"), allowed_hosts=["cdn.test"], max_bytes=100
    ) as response:
        body = b"".join(response.iter_bytes(10))

    assert body == b"final body"
    assert response.url == server.url("/dir/final.mp4?sig=1", host="cdn.test")
    assert [hit.path for hit in server.hits] == ["/dir/start", "/dir/final.mp4?sig=1"]
    assert all(hit.headers["host"] == f"cdn.test:{server.port}" for hit in server.hits)
    assert len(resolver.calls) == 2


def test_authorization_is_kept_on_the_same_host_and_dropped_for_another(
    server: RecordingServer, sandbox_http: tuple[SafeHttp, RecordingResolver]
) -> None:
    """Given a caller Authorization header and a chain cdn.test -> cdn.test -> other.test,
    when fetched,
    then the same-host hop carries it and the cross-host hop does not."""
    safe, _ = sandbox_http
    server.routes["/one"] = Route(status=302, headers={"Location": "/two"})
    server.routes["/two"] = Route(status=302, headers={"Location": server.url("/three", host="other.test")})
    server.routes["/three"] = Route(body=b"done")

    body = read_all(
        safe,
        server.url("/one", host="cdn.test"),
        ["cdn.test", "other.test"],
        headers={"Authorization": "Bearer t", "X-Trace": "1"},
    )

    assert body == b"done"
    auth = [(hit.path, hit.headers.get("authorization")) for hit in server.hits]
    assert auth == [("/one", "Bearer t"), ("/two", "Bearer t"), ("/three", None)]
    assert server.hits[2].headers["x-trace"] == "1"


def test_more_than_max_redirects_is_refused(server: RecordingServer) -> None:
    """Given an endless redirect chain and max_redirects=2,
    when fetched,
    then two redirects are followed and the third is refused."""
    for n in range(10):
        server.routes[f"/r{n}"] = Route(status=302, headers={"Location": f"/r{n + 1}"})
    safe = SafeHttp(resolver=loopback_resolver(), allow_loopback_http=True, max_redirects=2)

    with pytest.raises(TooManyRedirects, match="more than 2 times"):
        read_all(safe, server.url("/r0"), ["127.0.0.1"])
    assert [hit.path for hit in server.hits] == ["/r0", "/r1", "/r2"]


def test_exactly_max_redirects_is_allowed(server: RecordingServer) -> None:
    """Given a chain of exactly max_redirects redirects, then the final body is returned."""
    server.routes["/r0"] = Route(status=302, headers={"Location": "/r1"})
    server.routes["/r1"] = Route(status=308, headers={"Location": "/end"})
    server.routes["/end"] = Route(body=b"end")
    safe = SafeHttp(resolver=loopback_resolver(), allow_loopback_http=True, max_redirects=2)

    assert read_all(safe, server.url("/r0"), ["127.0.0.1"]) == b"end"


# --------------------------------------------------------------------------- size limits


def test_content_length_over_the_limit_is_refused_up_front(
    server: RecordingServer, sandbox_http: tuple[SafeHttp, RecordingResolver]
) -> None:
    """Given a server announcing 5000 bytes,
    when streamed with max_bytes=4999,
    then opening the stream fails before any body is handed out."""
    safe, _ = sandbox_http
    server.routes["/big"] = Route(body=b"x" * 5000)

    with (
        pytest.raises(ResponseTooLarge, match="announces 5000 bytes, over the limit of 4999"),
        safe.stream(server.url("/big"), allowed_hosts=["127.0.0.1"], max_bytes=4999),
    ):
        pytest.fail("the stream must not open")


def test_body_exactly_at_the_limit_is_accepted(
    server: RecordingServer, sandbox_http: tuple[SafeHttp, RecordingResolver]
) -> None:
    """Given a chunked body of exactly max_bytes, then it is delivered in full."""
    safe, _ = sandbox_http
    server.routes["/exact"] = Route(body=b"y" * 4096, chunked=True)

    assert read_all(safe, server.url("/exact"), ["127.0.0.1"], max_bytes=4096) == b"y" * 4096


def test_chunked_body_over_the_limit_is_cut_off(
    server: RecordingServer, sandbox_http: tuple[SafeHttp, RecordingResolver]
) -> None:
    """Given a chunked body (no Content-Length) of 50 000 bytes,
    when streamed with max_bytes=10 000,
    then reading stops with ResponseTooLarge and the caller never got more than the limit."""
    safe, _ = sandbox_http
    server.routes["/endless"] = Route(body=b"z" * 50_000, chunked=True)
    delivered: list[bytes] = []

    with safe.stream(server.url("/endless"), allowed_hosts=["127.0.0.1"], max_bytes=10_000) as response:
        assert response.content_length is None
        with pytest.raises(ResponseTooLarge, match="exceeded the limit of 10000 bytes"):
            delivered.extend(response.iter_bytes(1024))

    assert 0 < sum(map(len, delivered)) <= 10_000


# --------------------------------------------------------------------------- failures


@pytest.mark.parametrize("status", [403, 404, 500, 503])
def test_non_2xx_answers_raise_download_failed_with_the_status(
    server: RecordingServer, sandbox_http: tuple[SafeHttp, RecordingResolver], status: int
) -> None:
    """Given a server answering an error status, then DownloadFailed carries that status."""
    safe, _ = sandbox_http
    server.routes["/v"] = Route(status=status, body=b"nope")

    with pytest.raises(DownloadFailed, match=f"answered HTTP {status}") as failed:
        read_all(safe, server.url("/v", host="cdn.test"), ["cdn.test"])

    assert failed.value.status_code == status
    assert isinstance(failed.value, KlingflowError)
    assert not isinstance(failed.value, UnsafeUrl)


def test_redirect_without_location_is_a_download_failure(
    server: RecordingServer, sandbox_http: tuple[SafeHttp, RecordingResolver]
) -> None:
    """Given a 302 with no Location, then it is treated as a failed final answer."""
    safe, _ = sandbox_http
    server.routes["/v"] = Route(status=302)

    with pytest.raises(DownloadFailed) as failed:
        read_all(safe, server.url("/v"), ["127.0.0.1"])
    assert failed.value.status_code == 302


def test_read_timeout_is_a_download_failure(server: RecordingServer) -> None:
    """Given a server that holds its answer, when read_timeout_s elapses,
    then DownloadFailed names the host."""
    server.routes["/slow"] = Route(body=b"late", hold=threading.Event())
    safe = SafeHttp(resolver=loopback_resolver(), allow_loopback_http=True, read_timeout_s=0.2)

    with pytest.raises(DownloadFailed, match=r"host 'cdn\.test'.*ReadTimeout"):
        read_all(safe, server.url("/slow", host="cdn.test"), ["cdn.test"])


def test_refusals_map_to_a_400_unsafe_url_answer() -> None:
    """Given any refusal, then it is an UnsafeUrl with its documented code."""
    with pytest.raises(UnsafeUrl) as refused:
        read_all(SafeHttp(resolver=loopback_resolver()), "https://evil.test/", ["cdn.test"])
    assert refused.value.http_status == 400
    assert refused.value.body()["error"]["code"] == "UNSAFE_URL"


# --------------------------------------------------------------------------- one deadline per POST


def test_a_receiver_that_trickles_its_answer_is_cut_off_at_the_posts_deadline() -> None:
    """Given a receiver that answers one byte every 50 ms (each read well inside the 10 s read
    timeout, the whole answer 4 s),
    when a webhook is POSTed with a 0.3 s deadline,
    then it fails naming the deadline, and the receiver saw its connection closed mid-answer."""
    safe = SafeHttp(resolver=loopback_resolver(), allow_loopback_http=True, read_timeout_s=10)
    with TricklingReceiver(every_s=0.05) as receiver, pytest.raises(DownloadFailed, match=r"within 0\.3 s"):
        safe.post(receiver.url(), content=b"{}", headers={}, deadline_s=0.3)
    assert receiver.finished.wait(5)
    assert receiver.requests == 1 and receiver.sent[0] < receiver.whole_answer


def test_the_deadline_also_cuts_a_trickle_over_tls(tmp_path: Path) -> None:
    """The same over https: the TLS socket is cut as the plain one is."""
    cert_path, key_path = _certificate(tmp_path, "hooks.test")
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert_path, key_path)
    client = httpx.Client(verify=ssl.create_default_context(cafile=str(cert_path)))
    safe = SafeHttp(client=client, resolver=loopback_resolver(), allow_loopback_http=True, read_timeout_s=10)
    with client, TricklingReceiver(every_s=0.05, tls=context) as receiver:
        with pytest.raises(DownloadFailed, match="did not answer within"):
            safe.post(
                receiver.url(host="hooks.test", scheme="https"), content=b"{}", headers={}, deadline_s=0.5
            )
        assert receiver.finished.wait(5)
    assert receiver.requests == 1 and receiver.sent[0] < receiver.whole_answer


class StalledResolver:
    """A receiver's name whose authoritative DNS server does not answer: each lookup blocks
    until the test lets it go (the system resolver can hold getaddrinfo for many seconds)."""

    def __init__(self) -> None:
        self.release = threading.Event()
        self.started = threading.Event()

    def __call__(self, host: str, port: int) -> list[str]:
        self.started.set()
        self.release.wait(5)
        return ["127.0.0.1"]


def test_a_name_that_does_not_resolve_in_time_fails_at_the_posts_deadline() -> None:
    """Given a receiver whose name takes longer to resolve than the whole delivery may,
    when a webhook is POSTed with a 0.3 s deadline,
    then it fails naming the deadline within it (plus scheduling slack), not when DNS answers."""
    resolver = StalledResolver()
    safe = SafeHttp(resolver=resolver, allow_loopback_http=True)
    started = time.monotonic()
    try:
        with pytest.raises(DownloadFailed, match=r"host 'hooks\.test' did not answer within 0\.3 s"):
            safe.post("http://hooks.test:9/hook", content=b"{}", headers={}, deadline_s=0.3)
        took = time.monotonic() - started
    finally:
        resolver.release.set()
    assert resolver.started.is_set()
    assert took < 0.3 + 1.0


def test_a_prompt_receiver_is_answered_within_the_deadline(server: RecordingServer) -> None:
    server.routes["/hook"] = Route(status=204)
    safe = SafeHttp(resolver=loopback_resolver(), allow_loopback_http=True)
    assert safe.post(server.url("/hook"), content=b"{}", headers={}, deadline_s=5) == 204
    assert [hit.path for hit in server.hits] == ["/hook"]
