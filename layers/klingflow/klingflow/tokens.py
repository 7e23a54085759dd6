"""Per-job callback tokens.

Providers sign nothing, so the callback URL itself is the credential: it carries
HMAC-SHA256(key, job_id). Only someone who was given the URL can make a callback count, and a
wrong token is indistinguishable from an unknown job (both 404).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
from collections.abc import Callable


class CallbackSigner:
    def __init__(self, key: Callable[[], str]) -> None:
        # The key is fetched lazily (and cached by the caller) so cold starts that never sign
        # or verify do not read the secret.
        self._key = key

    def token(self, job_id: str) -> str:
        digest = hmac.new(self._key().encode(), _utf8(job_id), hashlib.sha256).digest()
        return base64.urlsafe_b64encode(digest).decode().rstrip("=")

    def verify(self, job_id: str, token: str) -> bool:
        # As bytes: compare_digest refuses str with characters outside ASCII, and a URL may
        # carry any character.
        return hmac.compare_digest(self.token(job_id).encode(), _utf8(token))

    def callback_url(self, api_url: str, job_id: str) -> str:
        return f"{api_url.rstrip('/')}/callbacks/{job_id}/{self.token(job_id)}"


def _utf8(text: str) -> bytes:
    # Whatever a path holds (lone surrogates included) becomes bytes that simply do not match.
    return text.encode("utf-8", errors="replace")
