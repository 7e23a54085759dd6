"""What a webhook URL must be for a job to be accepted: https to a public host.

Checked when the job is accepted, so a URL klingflow would never deliver to is a 400 naming
`webhook.url` and the rule, not a job whose webhooks are refused one by one. The same rules
are checked again at every delivery (`safehttp`), where the host's name is also resolved and
every address it resolves to must be public: a name is not resolved here (its answer may
change before the first delivery).

The sandbox's receivers listen on loopback over plain http: `allow_loopback_http` (the
sandbox's `ALLOW_LOOPBACK_HTTP`, never set by the template) admits exactly that, and nothing
else the production rules refuse.
"""

from __future__ import annotations

import ipaddress
import re

from .addresses import address_problem
from .errors import FieldError, RequestRejected

FIELD = "webhook.url"
# Names that never reach a public host: RFC 6761 / 6762 / 8375 special-use and the common
# private suffixes resolvers answer with internal addresses.
_LOCAL_SUFFIXES = (
    ".localhost",
    ".local",
    ".localdomain",
    ".internal",
    ".intranet",
    ".lan",
    ".home.arpa",
    ".corp",
)
_LOOPBACK_NAMES = frozenset({"localhost", "127.0.0.1", "::1"})
_LABEL = re.compile(r"^(?!-)[a-z0-9_-]{1,63}(?<!-)$")
# A last label no top-level domain has: the name is an address in another spelling.
_NUMERIC = re.compile(r"^(0x[0-9a-f]*|[0-9]+)$")
# The URL is split the way the delivery path reads it (httpx's RFC 3986 parser), not the way
# urllib does: urllib drops tabs and newlines and splits some authorities differently, so a URL
# it reads as one host could be another host (or no URL at all) to httpx.
_SPLIT = re.compile(r"(?:(?P<scheme>[a-zA-Z][a-zA-Z0-9+.-]*):)?(?://(?P<authority>[^/?#]*))?")
_AUTHORITY = re.compile(r"(?P<host>\[.*\]|[^:@]*):?(?P<port>.*)")
_IPV4_STYLE = re.compile(r"^[0-9]+\.[0-9]+\.[0-9]+\.[0-9]+$")


def check_webhook_url(url: str, *, allow_loopback_http: bool = False) -> str:
    """Raises RequestRejected naming `webhook.url` and the rule the URL breaks; returns the host
    delivery will connect to, in the ASCII form `safehttp` resolves (IDNA 2008, as httpx)."""
    checked = _checked(url, allow_loopback_http=allow_loopback_http)
    if isinstance(checked, tuple):
        raise RequestRejected([FieldError(FIELD, checked[0], checked[1])])
    return checked


def _checked(url: str, *, allow_loopback_http: bool) -> str | tuple[str, str]:
    for position, char in enumerate(url):
        if char.isspace() or not (char.isprintable() or ord(char) > 0x7F) or "\ud800" <= char <= "\udfff":
            # httpx refuses these where urllib silently drops or keeps them.
            return (
                "webhook_url_characters",
                f"a webhook URL must not contain whitespace or control characters ({char!r} at "
                f"position {position}): percent-encode it or remove it",
            )
    parts = _SPLIT.match(url)
    scheme = (parts["scheme"] or "").lower() if parts else ""
    authority = parts["authority"] if parts else None
    if authority is None or "@" in authority:
        if authority is None:
            return "webhook_url", "webhook.url is not an absolute URL: give an absolute https URL"
        return (
            "webhook_userinfo",
            "a webhook URL must not carry credentials (user:password@): the signature identifies klingflow",
        )
    split = _AUTHORITY.fullmatch(authority)
    if split is None or not re.fullmatch(r"[0-9]{0,5}", split["port"]):
        port = split["port"] if split else authority
        return (
            "webhook_url",
            f"webhook.url is not a valid URL: port {port!r} is not a number; give an absolute https URL",
        )
    host = _ascii_host(split["host"])
    if isinstance(host, tuple):
        return host
    if allow_loopback_http and scheme == "http" and host in _LOOPBACK_NAMES:
        return host  # the sandbox's receivers (never in a deployment: see the module doc)
    if scheme != "https":
        return "webhook_https", "a webhook URL must use https (plain http is refused)"
    port = int(split["port"] or 443)
    if port != 443 and not 1024 <= port <= 65535:
        return "webhook_port", "a webhook URL's port must be 443 or 1024-65535 (no well-known service ports)"
    return _host_problem(host) or host


def _ascii_host(host: str) -> str | tuple[str, str]:
    """The host as httpx encodes it (literal, lower-cased ASCII, or IDNA 2008 without UTS 46
    mapping), without a trailing dot, as `safehttp` compares and resolves it."""
    if not host:
        return "webhook_url", "webhook.url has no host: give an absolute https URL"
    try:
        # Checked as httpx checks them, kept as written (as safehttp reads them).
        if _IPV4_STYLE.match(host):
            ipaddress.IPv4Address(host)
            return host
        if host.startswith("[") and host.endswith("]"):
            ipaddress.IPv6Address(host[1:-1])
            return host[1:-1].lower()
    except ValueError:
        return "webhook_url", f"webhook.url is not a valid URL: {host!r} is not an IP address"
    if host.isascii():
        return host.lower().rstrip(".")
    # Imported here: only a non-ASCII name needs it, and submit's cold start stays without it.
    import idna  # noqa: PLC0415

    try:
        return idna.encode(host.lower()).decode("ascii").rstrip(".")
    except (idna.IDNAError, UnicodeError, ValueError):
        return (
            "webhook_public_host",
            f"a webhook URL's host {host!r} is not a valid internationalised host name (IDNA 2008)",
        )


def _host_problem(host: str) -> tuple[str, str] | None:
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        address = None
    if address is not None:
        if isinstance(address, ipaddress.IPv6Address) and address.scope_id:
            return (
                "webhook_public_host",
                f"a webhook URL's host {host} names a local interface; give a public host",
            )
        problem = address_problem(address)
        if problem is None:
            return None
        return "webhook_public_host", f"a webhook URL's host {host} is {problem}; give a public host"
    if host == "localhost" or host.endswith(_LOCAL_SUFFIXES) or "." not in host:
        return (
            "webhook_public_host",
            f"a webhook URL's host {host!r} is a local name; give a public host name",
        )
    labels = host.split(".")
    if _NUMERIC.match(labels[-1]) or not all(_LABEL.match(label) for label in labels):
        # 2130706433, 0x7f.1, 127.1: other spellings of an address, refused rather than decoded.
        return "webhook_public_host", f"a webhook URL's host {host!r} is not a public host name"
    return None
