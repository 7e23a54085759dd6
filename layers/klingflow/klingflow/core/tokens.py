"""Per-job callback tokens.

Providers sign nothing, so the callback URL itself is the credential. Each provider a job may
be sent to gets its own URL, whose token is `<provider>.<HMAC-SHA256(key, job_id, provider)>`:
only someone who was given the URL can make a callback count, and the callback says which
provider's dialect its body is in without a read of the job (the callback answers with one
conditional write). A wrong token is indistinguishable from an unknown job (both 404).

Tokens from before the provider was named (`<HMAC-SHA256(key, job_id)>`) are still accepted,
so callbacks for jobs in flight across a deploy are not lost; they name no provider.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
from collections.abc import Callable
from dataclasses import dataclass


@dataclass(frozen=True)
class Signed:
    """A token that checked out, and the provider its URL was made for (None: an older token)."""

    provider: str | None


class CallbackSigner:
    def __init__(self, key: Callable[[], str]) -> None:
        # The key is fetched lazily (and cached by the caller) so cold starts that never sign
        # or verify do not read the secret.
        self._key = key

    def _mac(self, message: bytes) -> str:
        digest = hmac.new(self._key().encode(), message, hashlib.sha256).digest()
        return base64.urlsafe_b64encode(digest).decode().rstrip("=")

    def token(self, job_id: str, provider: str | None = None) -> str:
        if provider is None:
            return self._mac(_utf8(job_id))
        # NUL cannot occur in a job id or a provider name: the two parts cannot be re-split.
        mac = self._mac(_utf8(job_id) + b"\0" + _utf8(provider))
        return f"{provider}.{mac}"

    def verify(self, job_id: str, token: str) -> Signed | None:
        # The base64url alphabet has no ".", so the first one ends the provider's name.
        provider: str | None
        provider, dot, _ = token.partition(".")
        if not dot:
            provider = None
        # As bytes: compare_digest refuses str with characters outside ASCII, and a URL may
        # carry any character.
        if hmac.compare_digest(self.token(job_id, provider).encode(), _utf8(token)):
            return Signed(provider)
        return None

    def callback_url(self, api_url: str, job_id: str, provider: str) -> str:
        return f"{api_url.rstrip('/')}/callbacks/{job_id}/{self.token(job_id, provider)}"


def _utf8(text: str) -> bytes:
    # Whatever a path holds (lone surrogates included) becomes bytes that simply do not match.
    return text.encode("utf-8", errors="replace")
