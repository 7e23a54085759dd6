"""Secrets Manager secrets and SSM parameters, each value kept for a while once fetched.

What the functions read this way (the callback and webhook secrets, the provider credentials,
the API's URL) changes rarely but may be rotated: a value is fetched again once it is older than
`max_age_s`, so a rotation reaches every warm container within that time and no deploy is needed.

This is what Powertools' parameters utility did for us, less what we never used (transforms,
other stores). That utility imports boto3 when it loads, and nothing else in the functions
does any more (runtime.py makes botocore's clients directly): keeping it would have put the
40-90 ms import back into the first event of every function that reads a secret.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class _Fetched:
    value: str
    at: float


class CachedValues:
    """Values by name from `fetch`, each fetched again once older than `max_age_s`.

    Threads may share one (the sweeper polls from many): two that miss at once both fetch, and
    the later answer is kept; neither waits on the other.
    """

    def __init__(
        self, fetch: Callable[[str], str], *, max_age_s: float, now: Callable[[], float] = time.monotonic
    ) -> None:
        self._fetch = fetch
        self._max_age_s = max_age_s
        self._now = now
        self._values: dict[str, _Fetched] = {}

    def get(self, name: str) -> str:
        kept = self._values.get(name)
        now = self._now()
        if kept is not None and now - kept.at < self._max_age_s:
            return kept.value
        value = self._fetch(name)
        self._values[name] = _Fetched(value, now)
        return value


def secret_string(client: Any) -> Callable[[str], str]:
    """A fetch for `CachedValues`: a secret's current text (SecretString, or SecretBinary as
    UTF-8 for a secret stored as binary)."""

    def fetch(secret_id: str) -> str:
        answer = client.get_secret_value(SecretId=secret_id)
        text = answer.get("SecretString")
        return str(text) if text is not None else bytes(answer["SecretBinary"]).decode()

    return fetch


def parameter_value(client: Any) -> Callable[[str], str]:
    """A fetch for `CachedValues`: an SSM parameter's value (a String; the API's URL is one)."""

    def fetch(name: str) -> str:
        return str(client.get_parameter(Name=name)["Parameter"]["Value"])

    return fetch
