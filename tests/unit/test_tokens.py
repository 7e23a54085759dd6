"""Per-job callback tokens."""

from __future__ import annotations

from klingflow.tokens import CallbackSigner


def test_a_token_verifies_only_for_its_own_job_and_key() -> None:
    signer = CallbackSigner(lambda: "key-one")
    token = signer.token("job-1")
    assert signer.verify("job-1", token)
    assert not signer.verify("job-2", token)
    assert not CallbackSigner(lambda: "key-two").verify("job-1", token)
    assert not signer.verify("job-1", token[:-1])


def test_the_callback_url_carries_job_and_token_under_the_api() -> None:
    signer = CallbackSigner(lambda: "k")
    url = signer.callback_url("https://api.example/", "job-1")
    assert url == f"https://api.example/callbacks/job-1/{signer.token('job-1')}"
