"""Specification of the webhook URLs a job may name: https to a public host, checked when the
job is accepted (the sandbox's loopback receivers only through its own configuration)."""

from __future__ import annotations

import httpx
import pytest
from hypothesis import example, given
from hypothesis import strategies as st

from klingflow.core.errors import RequestRejected
from klingflow.core.webhookurls import check_webhook_url


def _delivered_host(url: str) -> str:
    """The host the delivery path (SafeHttp: httpx's parser) resolves and connects to."""
    return httpx.URL(url).raw_host.decode("ascii").lower().rstrip(".")


def _rule(url: str, *, allow_loopback_http: bool = False) -> tuple[str, str, str] | None:
    try:
        check_webhook_url(url, allow_loopback_http=allow_loopback_http)
    except RequestRejected as refused:
        (error,) = refused.errors
        return error.field, error.rule, error.message
    return None


@pytest.mark.parametrize(
    "url",
    [
        "https://hooks.example.com/klingflow",
        "https://hooks.example.com:8443/klingflow?team=1",
        "https://8.8.8.8/hook",
        "https://[2001:4860:4860::8888]/hook",
        "https://bücher.example/hook",  # an internationalised name, as punycode
    ],
)
def test_https_to_a_public_host_is_accepted(url: str) -> None:
    assert _rule(url) is None


@pytest.mark.parametrize(
    ("url", "host"),
    [
        ("https://Hooks.Example.com./x", "hooks.example.com"),
        ("https://bücher.example/hook", "xn--bcher-kva.example"),
        # IDNA 2008, as delivery encodes it: ß is a letter of its own, not "ss" (IDNA 2003)
        ("https://faß.de/hook", "xn--fa-hia.de"),
        # letters newer than Unicode 3.2, which IDNA 2003 (Python's "idna" codec) refuses
        ("https://\u08a0\u0628.com/hook", "xn--ngb77j.com"),
        ("https://[2001:4860:4860:0:0:0:0:8888]:8443/", "2001:4860:4860:0:0:0:0:8888"),
    ],
)
def test_the_host_checked_is_the_host_delivery_connects_to(url: str, host: str) -> None:
    assert check_webhook_url(url) == host
    assert _delivered_host(url) == host


@pytest.mark.parametrize(
    ("url", "rule", "says"),
    [
        # urllib drops tabs and newlines; httpx refuses them, so delivery never could
        ("https://example.com\t/", "webhook_url_characters", "'\\t' at position 19"),
        ("https://exa\nmple.com/", "webhook_url_characters", "'\\n' at position 11"),
        ("https://hooks.example.com/a b", "webhook_url_characters", "whitespace or control characters"),
        ("https://hooks.example.com/\x7f", "webhook_url_characters", "percent-encode it"),
        ("https://hooks.example.com/\u2028", "webhook_url_characters", "whitespace"),
        # names IDNA 2008 refuses (a symbol; a joiner outside the scripts that need it)
        ("https://☃.net/", "webhook_public_host", "IDNA 2008"),
        ("https://ab\u200dc.com/", "webhook_public_host", "IDNA 2008"),
        ("https://[2001:4860::8888%251]/", "webhook_public_host", "local interface"),
        ("https://hooks.example.com:+8443/", "webhook_url", "not a number"),
        ("https://hooks.example.com:99999/", "webhook_port", "1024-65535"),
        ("https://@hooks.example.com/", "webhook_userinfo", "credentials"),
    ],
)
def test_what_delivery_would_read_differently_or_refuse_is_refused_at_acceptance(
    url: str, rule: str, says: str
) -> None:
    refused = _rule(url)
    assert refused is not None
    assert refused[:2] == ("webhook.url", rule)
    assert says in refused[2]


@pytest.mark.parametrize(
    ("url", "rule", "says"),
    [
        ("http://hooks.example.com/x", "webhook_https", "must use https"),
        ("ftp://hooks.example.com/x", "webhook_https", "must use https"),
        ("https://user:pw@hooks.example.com/x", "webhook_userinfo", "credentials"),
        ("https://hooks.example.com:25/x", "webhook_port", "443 or 1024-65535"),
        ("https://127.0.0.1/x", "webhook_public_host", "loopback"),
        ("https://[::1]/x", "webhook_public_host", "loopback"),
        ("https://10.1.2.3/x", "webhook_public_host", "private"),
        ("https://192.168.0.10/x", "webhook_public_host", "private"),
        ("https://169.254.169.254/latest/meta-data", "webhook_public_host", "link-local"),
        ("https://[fe80::1]/x", "webhook_public_host", "link-local"),
        ("https://100.64.0.1/x", "webhook_public_host", "carrier-grade NAT"),
        ("https://240.0.0.1/x", "webhook_public_host", "reserved"),
        ("https://0.0.0.0/x", "webhook_public_host", "unspecified"),
        ("https://[::ffff:10.0.0.1]/x", "webhook_public_host", "IPv4-mapped"),
        ("https://localhost/x", "webhook_public_host", "local name"),
        ("https://api.localhost/x", "webhook_public_host", "local name"),
        ("https://printer.local/x", "webhook_public_host", "local name"),
        ("https://metadata.google.internal/x", "webhook_public_host", "local name"),
        ("https://intranet/x", "webhook_public_host", "local name"),
        ("https://2130706433/x", "webhook_public_host", "local name"),
        ("https://127.1/x", "webhook_public_host", "not a public host name"),
        ("https://0x7f.0x1/x", "webhook_public_host", "not a public host name"),
        ("https:///x", "webhook_url", "no host"),
        ("https://[::1/x", "webhook_url", "not a valid URL"),
    ],
)
def test_what_klingflow_would_never_deliver_to_is_refused_naming_the_field_and_the_rule(
    url: str, rule: str, says: str
) -> None:
    refused = _rule(url)
    assert refused is not None
    assert refused[:2] == ("webhook.url", rule)
    assert says in refused[2]


def test_the_sandbox_may_name_a_loopback_receiver_over_http_and_nothing_else_more() -> None:
    assert _rule("http://127.0.0.1:8080/hook", allow_loopback_http=True) is None
    assert _rule("http://localhost:8080/hook", allow_loopback_http=True) is None
    # the same setting admits no private address, no other http host, no local https name
    assert _rule("http://10.0.0.1:8080/hook", allow_loopback_http=True) is not None
    assert _rule("http://hooks.example.com/hook", allow_loopback_http=True) is not None
    assert _rule("https://169.254.169.254/x", allow_loopback_http=True) is not None
    # and without it (every deployment) loopback is refused like any other local host
    assert _rule("http://127.0.0.1:8080/hook") == (
        "webhook.url",
        "webhook_https",
        "a webhook URL must use https (plain http is refused)",
    )


@given(
    url=st.one_of(
        st.text(),
        st.builds(lambda host, rest: f"https://{host}{rest}", st.text(), st.text()),
        st.builds(lambda host: f"https://[{host}]/", st.text(alphabet="0123456789abcdef:%.")),
    )
)
def test_whatever_the_url_the_answer_is_accepted_or_a_refusal_naming_the_field(url: str) -> None:
    refused = _rule(url)
    assert refused is None or refused[0] == "webhook.url"


_HOST_CHARS = st.sampled_from(
    [
        *"abcXYZ019-_.:@[]%\\/?#",
        "\t",
        "\n",
        " ",
        "\x7f",
        "ß",
        "ü",
        "İ",
        "☃",
        "\u200d",
        "\u08a0",
        "\u0628",
        "\uff11",
        "。",
    ]
)


# Mostly name-like hosts (so that many are accepted), some of anything in _HOST_CHARS.
_HOSTS = st.one_of(
    st.builds(
        "{}.{}".format, st.text(_HOST_CHARS, min_size=1, max_size=12), st.sampled_from(["com", "de", "COM."])
    ),
    st.text(_HOST_CHARS, max_size=24),
)


@given(host=_HOSTS, rest=st.sampled_from(["", "/", "/hook?a=1#f", ":8443/x", ":443", ":", "./", "\t"]))
@example(host="example.com\t", rest="/")
@example(host="exa\nmple.com", rest="/")
@example(host="faß.de", rest="/")
def test_a_url_accepted_is_one_delivery_reads_with_the_same_host(host: str, rest: str) -> None:
    url = f"https://{host}{rest}"
    try:
        accepted = check_webhook_url(url)
    except RequestRejected:
        return
    parsed = httpx.URL(url)  # raises if delivery could not read it at all
    assert parsed.scheme == "https" and not parsed.userinfo
    assert _delivered_host(url) == accepted
    assert parsed.port in (None, 8443)
