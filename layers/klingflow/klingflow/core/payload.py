"""How big a request may be: everything that reaches a function synchronously (POST /jobs,
POST /jobs/quote) must fit Lambda's invocation payload, the whole event JSON.

The figures, each from the one before:

- `LAMBDA_PAYLOAD_BYTES` 6,291,456: Lambda's synchronous invocation payload (6 MB), request
  and response each.
- `EVENT_ENVELOPE_BYTES` 65,536: what an HTTP API (payload 2.0) event holds besides the body.
  The request line and headers, at most 10,240 bytes (API Gateway's quota for HTTP APIs),
  appear there up to three times (a header, the raw query and the parsed one), each byte
  escaped to at most two in JSON (61,440), beside the requestContext (~2 KB).
- `BODY_MAX_BYTES` 6,225,920: the body as the event carries it, a JSON string (escaped) or,
  when API Gateway base64-encodes it, its base64 text.
- `OTHER_FIELDS_BYTES` 65,536: room left in the body for a request's fields other than its
  base64 images (a prompt of 2,500 characters, metadata of 2 KB, the rest).
- `BASE64_MAX_CHARS` 6,160,384: the base64 text of every image of one request together.
- `BASE64_MAX_BYTES` 4,620,288: the same as image bytes (3 per 4 characters), about 4.4 MiB.

A request whose base64 images pass `BASE64_MAX_CHARS` is refused naming each such field
(`too_large`), and a body past `BODY_MAX_BYTES` naming the body (`check_body`): with both,
any request that passes validation reaches the function whole, and any larger one is refused
with the way round it, an image uploaded under incoming/ and named by its key. Manifests
(`MAX_MANIFEST_BYTES`, 256 KB) and `Job Requested` events (EventBridge's 256 KB) are smaller
still; the same rule holds for them.
"""

from __future__ import annotations

import json
import re
from typing import Final

from .errors import FieldError

LAMBDA_PAYLOAD_BYTES: Final = 6 * 1024 * 1024
EVENT_ENVELOPE_BYTES: Final = 64 * 1024
BODY_MAX_BYTES: Final = LAMBDA_PAYLOAD_BYTES - EVENT_ENVELOPE_BYTES
OTHER_FIELDS_BYTES: Final = 64 * 1024
BASE64_MAX_CHARS: Final = BODY_MAX_BYTES - OTHER_FIELDS_BYTES
BASE64_MAX_BYTES: Final = BASE64_MAX_CHARS // 4 * 3

NEXT_STEP: Final = (
    "upload the image to the bucket under incoming/ and pass its key instead "
    "(or drop a manifest under incoming/ that names it)"
)
_DATA_URI = re.compile(r"^data:image/[a-z]+;base64,", re.IGNORECASE)
_BASE64_TEXT = re.compile(r"[A-Za-z0-9+/=\s]+")
# A JSON string's escapes are at most 12 bytes a character (a surrogate pair as two \uXXXX).
_MOST_ESCAPED = 12


def is_base64(ref: str) -> bool:
    """Whether a media reference is an image's bytes in base64: a data: URI, or text that is
    long and all base64 (object keys carry dots and are short)."""
    return _DATA_URI.match(ref) is not None or (len(ref) > 256 and _BASE64_TEXT.fullmatch(ref) is not None)


def too_large(refs: dict[str, str]) -> list[FieldError]:
    """The base64 fields of one request (`{field: reference}`), named, when together they pass
    `BASE64_MAX_CHARS`; empty when they fit."""
    sizes = {field: len(ref) for field, ref in refs.items() if is_base64(ref)}
    total = sum(sizes.values())
    if total <= BASE64_MAX_CHARS:
        return []
    rule = (
        f"base64 images in one request are at most {BASE64_MAX_BYTES:,} bytes together "
        f"({BASE64_MAX_CHARS:,} base64 characters), so that the request fits Lambda's "
        f"{LAMBDA_PAYLOAD_BYTES:,}-byte payload"
    )
    return [
        FieldError(
            field, "base64_max_bytes", f"{rule}; this one is {size:,} characters of {total:,}: {NEXT_STEP}"
        )
        for field, size in sorted(sizes.items(), key=lambda pair: -pair[1])
    ]


def carried_bytes(body: str) -> int:
    """The bytes `body` takes inside the event's JSON, escaped as a JSON encoder may escape it
    at most (non-ASCII as \\uXXXX)."""
    return len(json.dumps(body, ensure_ascii=True))


def check_body(body: str) -> list[FieldError]:
    """The body named when it is larger than `BODY_MAX_BYTES` as the event carries it."""
    if len(body) * _MOST_ESCAPED + 2 <= BODY_MAX_BYTES:
        return []  # even escaped at most it fits: not worth encoding
    size = carried_bytes(body)
    if size <= BODY_MAX_BYTES:
        return []
    return [
        FieldError(
            "(body)",
            "body_max_bytes",
            f"the request body takes {size:,} bytes in the function's event; at most {BODY_MAX_BYTES:,} "
            f"fit Lambda's {LAMBDA_PAYLOAD_BYTES:,}-byte payload: {NEXT_STEP}",
        )
    ]
