"""Secrets and SSM parameters are fetched once and kept for their max age: a warm container
does not ask Secrets Manager on every event, and a rotated value reaches it within that age."""

from __future__ import annotations

from collections.abc import Iterator

import boto3
import pytest
from moto import mock_aws

from klingflow import runtime
from klingflow.infra.parameters import CachedValues, parameter_value, secret_string


class _Source:
    """A store whose values can change (a rotation), counting every fetch."""

    def __init__(self) -> None:
        self.values = {"a": "one", "b": "two"}
        self.fetches: list[str] = []

    def fetch(self, name: str) -> str:
        self.fetches.append(name)
        return self.values[name]


class _Now:
    def __init__(self) -> None:
        self.t = 1000.0

    def __call__(self) -> float:
        return self.t


def test_a_value_is_fetched_once_and_again_only_when_older_than_its_max_age() -> None:
    # Given a value fetched now
    source, now = _Source(), _Now()
    values = CachedValues(source.fetch, max_age_s=300, now=now)
    assert values.get("a") == "one"
    # When it is rotated and read again within its max age, then the kept value is given
    source.values["a"] = "uno"
    now.t += 299
    assert values.get("a") == "one"
    assert source.fetches == ["a"]
    # When its max age has passed, then the rotated value is fetched and kept from then
    now.t += 1
    assert values.get("a") == "uno"
    assert values.get("a") == "uno"
    assert source.fetches == ["a", "a"]


def test_each_name_is_kept_on_its_own() -> None:
    source = _Source()
    values = CachedValues(source.fetch, max_age_s=300, now=_Now())
    assert (values.get("a"), values.get("b"), values.get("a")) == ("one", "two", "one")
    assert source.fetches == ["a", "b"]


def test_a_failed_fetch_keeps_nothing_and_the_next_read_asks_again() -> None:
    source = _Source()
    values = CachedValues(source.fetch, max_age_s=300, now=_Now())
    with pytest.raises(KeyError):
        values.get("c")
    source.values["c"] = "three"
    assert values.get("c") == "three"
    assert source.fetches == ["c", "c"]


@pytest.fixture
def aws(aws_env: None) -> Iterator[None]:
    with mock_aws():
        runtime.reset()
        yield
    runtime.reset()


def test_secrets_are_read_as_text_whether_stored_as_string_or_binary(aws: None) -> None:
    # Given a secret stored as a string and one stored as binary
    client = boto3.client("secretsmanager")
    text = client.create_secret(Name="text", SecretString='{"k": "v"}')["ARN"]
    binary = client.create_secret(Name="binary", SecretBinary=b"s3cret")["ARN"]
    # When each is read, then it is its text
    fetch = secret_string(client)
    assert (fetch(text), fetch(binary)) == ('{"k": "v"}', "s3cret")


def test_the_functions_read_secrets_and_parameters_through_one_cache_each(aws: None) -> None:
    # Given a secret and an SSM parameter
    arn = boto3.client("secretsmanager").create_secret(Name="cb", SecretString="first")["ARN"]
    boto3.client("ssm").put_parameter(Name="/klingflow/api-url", Value="https://api", Type="String")
    assert parameter_value(boto3.client("ssm"))("/klingflow/api-url") == "https://api"
    # When the secret is read, rotated and read again within its max age
    assert runtime.secret_text(arn) == "first"
    boto3.client("secretsmanager").put_secret_value(SecretId=arn, SecretString="second")
    # Then the function still holds the value it read (a rotation lands within SECRET_MAX_AGE_S)
    assert runtime.secret_text(arn) == "first"
    # And after a reset (a new container) the rotated value is read
    runtime.reset()
    assert runtime.secret_text(arn) == "second"
