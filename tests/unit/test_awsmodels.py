"""klingflow's clients are made from botocore's models trimmed to the operations it calls
(klingflow/awsmodels.py): every kept operation must be what botocore's whole model says it is,
every region must resolve as before, and nothing outside the list may be reachable."""

from __future__ import annotations

import copy
import json
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import botocore
import botocore.session
import pytest
from botocore.regions import EndpointResolver

from klingflow import awsmodels, runtime
from tests.conftest import TEST_CREDENTIALS

BOTOCORE_DATA = Path(botocore.__file__).parent / "data"


def _whole(service: str) -> dict[str, Any]:
    version = awsmodels._latest_version(BOTOCORE_DATA / service)
    return dict(awsmodels._read(BOTOCORE_DATA / service / version / "service-2.json"))


def _references(shape: dict[str, Any]) -> list[str]:
    found = [member["shape"] for member in shape.get("members", {}).values()]
    return found + [shape[part]["shape"] for part in ("member", "key", "value") if part in shape]


@pytest.fixture
def clients(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    for name, value in TEST_CREDENTIALS.items():
        monkeypatch.setenv(name, value)
    monkeypatch.delenv("AWS_ENDPOINT_URL", raising=False)
    runtime.reset()
    yield
    runtime.reset()


@pytest.mark.parametrize("service", sorted(awsmodels.OPERATIONS))
def test_a_trimmed_model_keeps_each_listed_operation_and_every_shape_it_reaches(service: str) -> None:
    # Given botocore's whole model of a service klingflow calls
    whole = _whole(service)
    # When it is trimmed to klingflow's operations
    trimmed = awsmodels.trim_service(copy.deepcopy(whole), awsmodels.OPERATIONS[service])
    # Then it has exactly those operations, each as botocore has it (bar documentation)
    assert list(trimmed["operations"]) == list(awsmodels.OPERATIONS[service])
    for name, operation in trimmed["operations"].items():
        assert operation == awsmodels._without_documentation(whole["operations"][name])
    # and every shape an operation reaches is there, as botocore has it
    reached = []
    for operation in trimmed["operations"].values():
        reached += [operation[part]["shape"] for part in ("input", "output") if part in operation]
        reached += [error["shape"] for error in operation.get("errors", [])]
    seen: set[str] = set()
    while reached:
        name = reached.pop()
        if name not in seen:
            seen.add(name)
            assert trimmed["shapes"][name] == awsmodels._without_documentation(whole["shapes"][name]), name
            reached += _references(trimmed["shapes"][name])
    # and no shape that nothing reaches
    assert set(trimmed["shapes"]) == seen
    # and what else botocore reads (metadata, client context parameters) is kept
    assert set(trimmed) == set(whole)
    assert trimmed["metadata"] == awsmodels._without_documentation(whole["metadata"])


def test_an_operation_botocore_does_not_have_is_refused_by_name() -> None:
    with pytest.raises(KeyError, match="no operation DescribeTable2"):
        awsmodels.trim_service(_whole("dynamodb"), ("GetItem", "DescribeTable2"))


def test_the_trimmed_endpoints_resolve_every_region_of_every_partition_as_botocore_does() -> None:
    # Given botocore's endpoints of every service, and the trimmed ones
    whole = awsmodels._read(BOTOCORE_DATA / "endpoints.json")
    kept = {*awsmodels.OPERATIONS, *awsmodels.KEPT_WHOLE}
    trimmed = awsmodels.trim_endpoints(copy.deepcopy(whole), kept)
    before, after = EndpointResolver(whole), EndpointResolver(trimmed)
    # Then each kept service resolves alike in every region botocore knows
    compared = 0
    for partition in whole["partitions"]:
        for region in partition["regions"]:
            for service in sorted(kept):
                assert after.construct_endpoint(service, region) == before.construct_endpoint(service, region)
                compared += 1
    assert compared > 100
    # and nothing else is left
    assert {s for p in trimmed["partitions"] for s in p["services"]} <= kept


def test_klingflow_clients_have_only_the_listed_operations_and_sign_as_before(clients: None) -> None:
    # Given the trimmed models written for this venv's botocore (conftest)
    assert awsmodels.current(BOTOCORE_DATA)
    whole = botocore.session.get_session()
    for service, operations in awsmodels.OPERATIONS.items():
        # When klingflow makes its client
        made = runtime.client(service)
        # Then it has the listed operations and no other
        assert made.meta.service_model.operation_names == list(operations)
        # and it points where a client from botocore's whole model points
        assert made.meta.endpoint_url == whole.create_client(service).meta.endpoint_url
    # and a presigned link is the same link, bar its signature's time
    params = {"Bucket": "klingflow-bucket", "Key": "incoming/a.png"}
    ours = runtime.client("s3").generate_presigned_url("get_object", Params=params, ExpiresIn=60)
    theirs = whole.create_client(
        "s3", config=botocore.config.Config(signature_version="s3v4")
    ).generate_presigned_url("get_object", Params=params, ExpiresIn=60)
    assert ours.split("?")[0] == theirs.split("?")[0]
    # and an operation klingflow does not call cannot be called by mistake
    with pytest.raises(AttributeError):
        runtime.client("dynamodb").scan  # noqa: B018


def test_a_client_of_a_service_with_no_listed_operations_is_refused(clients: None) -> None:
    with pytest.raises(ValueError, match=r"no lambda client: list its operations in awsmodels\.py"):
        runtime.client("lambda")


def _fake_botocore_data(root: Path) -> Path:
    """A botocore data/ directory: the real files of klingflow's services, sts and one more."""
    data = root / "data"
    data.mkdir()
    for name in ("endpoints.json", "partitions.json", "_retry.json"):
        shutil.copy(BOTOCORE_DATA / name, data / name)
    for service in (*awsmodels.OPERATIONS, *awsmodels.KEPT_WHOLE, "lambda"):
        shutil.copytree(BOTOCORE_DATA / service, data / service)
    return data


def test_the_models_are_written_once_and_again_only_when_their_source_changes(tmp_path: Path) -> None:
    # Given a botocore data directory and no models yet
    data, into = _fake_botocore_data(tmp_path), tmp_path / "aws_models"
    # When they are ensured twice
    assert awsmodels.ensure(data, into) is True
    assert awsmodels.ensure(data, into) is False
    # Then botocore's layout is kept: one service model per service, and the endpoints
    written = sorted(str(p.relative_to(into)) for p in into.rglob("*.json"))
    assert len(written) == len(awsmodels.OPERATIONS) + 1 and "endpoints.json" in written
    # When botocore's endpoints change (a new release)
    endpoints = json.loads((data / "endpoints.json").read_text())
    endpoints["partitions"][0]["regions"]["xx-test-1"] = {"description": "new"}
    (data / "endpoints.json").write_text(json.dumps(endpoints))
    # Then the models are written again, with it
    assert not awsmodels.current(data, into)
    assert awsmodels.ensure(data, into) is True
    assert "xx-test-1" in json.loads((into / "endpoints.json").read_text())["partitions"][0]["regions"]


def test_pruning_keeps_the_services_klingflow_or_botocores_credentials_use(tmp_path: Path) -> None:
    data = _fake_botocore_data(tmp_path)
    awsmodels.prune(data)
    assert {p.name for p in data.iterdir() if p.is_dir()} == {*awsmodels.OPERATIONS, *awsmodels.KEPT_WHOLE}
    assert (data / "endpoints.json").exists() and (data / "_retry.json").exists()
