"""Callback tokens: the URL is the credential, and it names the provider it was made for."""

from __future__ import annotations

from klingflow.core.tokens import CallbackSigner, Signed


def test_a_token_verifies_only_for_its_job_provider_and_key() -> None:
    signer = CallbackSigner(lambda: "key-one")
    token = signer.token("job-1", "kling")
    assert signer.verify("job-1", token) == Signed("kling")
    assert signer.verify("job-2", token) is None
    assert CallbackSigner(lambda: "key-two").verify("job-1", token) is None
    assert signer.verify("job-1", token[:-1]) is None


def test_a_token_cannot_be_moved_to_another_provider() -> None:
    # given a token made for kling
    signer = CallbackSigner(lambda: "k")
    mac = signer.token("job-1", "kling").partition(".")[2]
    # when someone puts another provider's name in front of its MAC, then it does not verify
    assert signer.verify("job-1", f"gateway.{mac}") is None
    assert signer.verify("job-1", mac) is None


def test_tokens_made_before_providers_were_named_still_verify() -> None:
    # given a callback URL handed out by the previous release (HMAC of the job id alone)
    signer = CallbackSigner(lambda: "k")
    legacy = signer.token("job-1")
    # then its callbacks still count, naming no provider
    assert signer.verify("job-1", legacy) == Signed(None)


def test_odd_paths_do_not_verify_and_do_not_raise() -> None:
    signer = CallbackSigner(lambda: "k")
    for token in ("", ".", "kling.", "\udcff", "é.x", "a" * 500):
        assert signer.verify("job-1", token) is None


def test_callback_url_carries_the_job_and_its_provider_token() -> None:
    signer = CallbackSigner(lambda: "k")
    url = signer.callback_url("https://api.example/", "job-1", "evolink")
    assert url == f"https://api.example/callbacks/job-1/{signer.token('job-1', 'evolink')}"
    assert url.rsplit("/", 1)[1].startswith("evolink.")
