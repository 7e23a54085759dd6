"""Which IP addresses klingflow may connect to on someone else's say-so: public unicast only.

Shared by `safehttp` (every resolved address of an output or webhook host) and `webhookurls`
(an IP literal in a webhook URL, refused when the job is accepted). Kept apart from `safehttp`
so that checking a request never loads the HTTP client (submit's cold start).
"""

from __future__ import annotations

import ipaddress
from collections.abc import Callable
from typing import Final

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address

_CGNAT: Final = ipaddress.IPv4Network("100.64.0.0/10")
_UNIQUE_LOCAL: Final = ipaddress.IPv6Network("fc00::/7")
_NAT64: Final = ipaddress.IPv6Network("64:ff9b::/96")
_TEREDO: Final = ipaddress.IPv6Network("2001::/32")


def address_problem(address: IPAddress) -> str | None:
    """Why address is not a public unicast address we may fetch from, or None if it is."""
    if isinstance(address, ipaddress.IPv6Address):
        embedded = _embedded_ipv4(address)
        if embedded is not None:
            # An address that embeds an IPv4 address reaches that IPv4 host; judge it instead.
            form, inner = embedded
            problem = address_problem(inner)
            return None if problem is None else f"{form} of {problem}"
    for applies, problem in _ADDRESS_RULES:
        if applies(address):
            return problem
    return None


def _embedded_ipv4(address: ipaddress.IPv6Address) -> tuple[str, ipaddress.IPv4Address] | None:
    if address.ipv4_mapped is not None:
        return "an IPv4-mapped IPv6 form", address.ipv4_mapped
    if address in _NAT64:
        return "a NAT64 form", ipaddress.IPv4Address(int(address) & 0xFFFFFFFF)
    if address.sixtofour is not None and address_problem(address.sixtofour) is not None:
        return "a 6to4 form", address.sixtofour
    return None


# Checked in order; the first rule that applies names the problem. The explicit rules come
# before `is_private`/`is_global` because those tables differ between Python versions and
# miss some ranges (site-local fec0::/10 and multicast count as "global").
_ADDRESS_RULES: Final[list[tuple[Callable[[IPAddress], bool], str]]] = [
    (lambda a: a.is_unspecified, "an unspecified address"),
    (lambda a: a.is_loopback, "a loopback address"),
    (lambda a: a.is_link_local, "a link-local address (cloud metadata endpoints live there)"),
    (lambda a: a.is_multicast, "a multicast address"),
    (lambda a: a.version == 4 and a in _CGNAT, "a carrier-grade NAT (100.64.0.0/10) address"),
    (lambda a: a.version == 6 and a in _TEREDO, "a Teredo tunnel address"),
    (lambda a: isinstance(a, ipaddress.IPv6Address) and a.is_site_local, "a site-local address"),
    (lambda a: a.version == 6 and a in _UNIQUE_LOCAL, "a unique-local address"),
    (lambda a: a.is_reserved, "a reserved address"),
    (lambda a: a.is_private, "a private address"),
    (lambda a: not a.is_global, "a special-purpose, non-public address"),
]
