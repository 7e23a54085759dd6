"""One TLS context per container for every outbound HTTPS client.

httpx builds a context per client and loads certifi's whole bundle into each (about 30 ms of
CPU): a container that makes a client per provider, and one for output downloads, paid that
four or five times on its first event. A context holds settings and trust roots, not
connections, and is safe to share between clients and threads.
"""

from __future__ import annotations

from functools import cache
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import ssl


@cache
def context(*, trust_env: bool = True) -> ssl.SSLContext:
    """httpx's own default context; `trust_env` reads SSL_CERT_FILE / SSL_CERT_DIR as httpx does
    (the output downloader ignores the environment, so a proxy or bundle from it cannot apply)."""
    import httpx  # noqa: PLC0415 (callers have loaded it; keeps this module free to import)

    return httpx.create_ssl_context(trust_env=trust_env)
