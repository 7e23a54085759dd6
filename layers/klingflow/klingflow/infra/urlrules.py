"""What `SafeHttp` checks of a URL before it connects: the host allowlist (exact names,
"*.domain" wildcards, IP literals), parsing and origins, and the headers it sends."""

from __future__ import annotations

import ipaddress
from collections.abc import Mapping, Sequence
from typing import Final

import httpx

from klingflow.core.addresses import IPAddress
from klingflow.core.errors import UnsafeUrl

DEFAULT_PORTS: Final = {"http": 80, "https": 443}


class Allowlist:
    """The hosts one provider's outputs may come from: exact names, "*.domain" wildcards
    (never a whole TLD) and IP literals (matched only as written)."""

    def __init__(self, entries: Sequence[str]) -> None:
        if isinstance(entries, str):
            # A lone string is a Sequence[str] of characters; almost certainly a mistake.
            raise TypeError("allowed_hosts must be a sequence of host names, not a single string")
        self._exact: set[str] = set()
        self._ips: set[IPAddress] = set()
        self._suffixes: list[str] = []
        self._any = False
        for entry in entries:
            name = normalise(entry.strip().removeprefix("[").removesuffix("]"))
            if name.startswith("*."):
                suffix = name[1:]
                if "*" in suffix or len(suffix) < 2 or "." not in suffix[1:]:
                    # "*.com" would admit a whole TLD; refuse rather than guess what was meant.
                    raise ValueError(f"allowed_hosts entry {entry!r} is not a usable wildcard")
                self._suffixes.append(suffix)
            elif "*" in name or not name:
                raise ValueError(f"allowed_hosts entry {entry!r} is not a host name or '*.domain' wildcard")
            elif (ip := ip_literal(name)) is not None:
                self._ips.add(ip)
            else:
                self._exact.add(name)

    def allows(self, host: str) -> bool:
        if self._any:
            return True
        ip = ip_literal(host)
        if ip is not None:
            # IP literals never match wildcards: "*.example.com" says nothing about addresses.
            return ip in self._ips
        return host in self._exact or any(host.endswith(s) for s in self._suffixes)


def _any_host() -> Allowlist:
    """Every host name passes; the address checks still refuse anything but public unicast."""
    rules = Allowlist([])
    rules._any = True
    return rules


ANY_HOST: Final = _any_host()


def parse_url(text: str, *, base: httpx.URL | None = None) -> httpx.URL:
    try:
        url = base.join(text) if base is not None else httpx.URL(text)
    except (httpx.InvalidURL, ValueError, TypeError) as error:
        where = f" (redirect from host {base.host!r})" if base is not None else ""
        raise UnsafeUrl(f"output URL{where} is not a valid URL: {error}") from None
    if not url.is_absolute_url or not url.host:
        where = f" (redirect from host {base.host!r})" if base is not None else ""
        raise UnsafeUrl(f"output URL{where} is not an absolute URL with a host")
    return url


def host_of(url: httpx.URL) -> str:
    # raw_host is the IDNA (punycode) form, which is what DNS, SNI and allowlists compare.
    return normalise(url.raw_host.decode("ascii"))


def normalise(host: str) -> str:
    return host.lower().rstrip(".")


def origin(url: httpx.URL) -> tuple[str, str, int]:
    return (url.scheme, host_of(url), url.port or DEFAULT_PORTS.get(url.scheme, 0))


def ip_literal(host: str) -> IPAddress | None:
    try:
        return ipaddress.ip_address(host)
    except ValueError:
        return None


def is_plain_loopback(address: IPAddress) -> bool:
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return False
    return address.is_loopback


def bracketed(host: str) -> str:
    return f"[{host}]" if ":" in host else host


def base_headers(headers: Mapping[str, str] | None) -> dict[str, str]:
    result = {"User-Agent": "klingflow-safehttp", "Accept-Encoding": "identity"}
    for key, value in (headers or {}).items():
        if key.lower() == "host":
            continue  # always derived from the URL; a caller-set Host would defeat the allowlist
        for existing in [k for k in result if k.lower() == key.lower()]:
            del result[existing]
        result[key] = value
    return result


def announced_length(response: httpx.Response) -> int | None:
    value = response.headers.get("content-length")
    if value is None:
        return None
    try:
        length = int(value)
    except ValueError:
        return None
    return length if length >= 0 else None
