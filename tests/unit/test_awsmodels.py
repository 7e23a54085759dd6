"""klingflow's clients are made from botocore's models trimmed to the operations it calls
(klingflow/infra/awsmodels.py): every kept operation must be what botocore's whole model says it is,
every region must resolve as before, and nothing outside the list may be reachable."""

from __future__ import annotations

import copy
import json
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

import botocore
import botocore.config
import botocore.exceptions
import botocore.session
import pytest
from botocore.regions import EndpointResolver

from klingflow import runtime
from klingflow.infra import awsmodels

if TYPE_CHECKING:
    from mypy_boto3_s3 import S3Client

BOTOCORE_DATA = Path(botocore.__file__).parent / "data"


def _whole(service: str) -> dict[str, Any]:
    version = awsmodels._latest_version(BOTOCORE_DATA / service)
    return dict(awsmodels._read(BOTOCORE_DATA / service / version / "service-2.json"))


def _references(shape: dict[str, Any]) -> list[str]:
    found = [member["shape"] for member in shape.get("members", {}).values()]
    return found + [shape[part]["shape"] for part in ("member", "key", "value") if part in shape]


@pytest.fixture
def clients(aws_env: None) -> Iterator[None]:
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
    prefixes = awsmodels.endpoint_prefixes(BOTOCORE_DATA)
    trimmed = awsmodels.trim_endpoints(copy.deepcopy(whole), prefixes)
    before = EndpointResolver(whole, uses_builtin_data=True)
    after = EndpointResolver(trimmed, uses_builtin_data=True)
    # Then each kept service resolves alike in every region botocore knows
    compared = 0
    for partition in whole["partitions"]:
        for region in partition["regions"]:
            for prefix in sorted(prefixes):
                assert after.construct_endpoint(prefix, region) == before.construct_endpoint(prefix, region)
                compared += 1
    assert compared > 100
    # and nothing else is left
    assert {s for p in trimmed["partitions"] for s in p["services"]} == prefixes


class _Sent(Exception):
    def __init__(self, url: str) -> None:
        self.url = url


def _url_of(client: Any, call: str, **params: Any) -> str:
    """Where the client sends a call (caught before it leaves)."""

    def stop(request: Any, **_: Any) -> None:
        raise _Sent(request.url)

    client.meta.events.register("before-send", stop)
    try:
        getattr(client, call)(**params)
    except _Sent as sent:
        return sent.url
    raise AssertionError("the call was not sent")


CALLS: dict[str, tuple[str, dict[str, Any]]] = {
    "dynamodb": ("get_item", {"TableName": "klingflow-jobs", "Key": {"pk": {"S": "JOB#1"}}}),
    "s3": ("head_object", {"Bucket": "klingflow-bucket", "Key": "outputs/a.mp4"}),
    "sqs": ("send_message", {"QueueUrl": "https://sqs.us-east-1.amazonaws.com/1/q", "MessageBody": "{}"}),
    "events": ("put_events", {"Entries": [{"Source": "klingflow", "DetailType": "x", "Detail": "{}"}]}),
    "secretsmanager": ("get_secret_value", {"SecretId": "providers"}),
    "ssm": ("get_parameter", {"Name": "/klingflow/api-url"}),
}


@pytest.mark.parametrize("options", [{}, {"use_fips_endpoint": True}, {"use_dualstack_endpoint": True}])
@pytest.mark.parametrize("region", ["us-east-1", "eu-west-1", "cn-north-1"])
def test_every_call_goes_where_botocores_whole_models_send_it(
    clients: None, region: str, options: dict[str, bool]
) -> None:
    assert set(CALLS) == set(awsmodels.OPERATIONS)
    whole = botocore.session.get_session()
    for service, (call, params) in CALLS.items():
        config = botocore.config.Config(region_name=region, **options)  # type: ignore[arg-type]
        ours = runtime._session().create_client(service, config=config)
        theirs = whole.create_client(service, config=config)
        # Then ours goes to the same host and path (FIPS and dual-stack hosts included)
        try:
            expected = _url_of(theirs, call, **params)
        except botocore.exceptions.EndpointResolutionError as refused:
            with pytest.raises(botocore.exceptions.EndpointResolutionError, match=str(refused)[:40]):
                _url_of(ours, call, **params)
            continue
        assert _url_of(ours, call, **params) == expected, (service, region, options)


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
    signing = botocore.config.Config(signature_version="s3v4")
    ours = cast("S3Client", runtime.client("s3")).generate_presigned_url(
        "get_object", Params=params, ExpiresIn=60
    )
    theirs = cast("S3Client", whole.create_client("s3", config=signing)).generate_presigned_url(
        "get_object", Params=params, ExpiresIn=60
    )
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
    for name in ("endpoints.json", "partitions.json", "_retry.json", "sdk-default-configuration.json"):
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
    # Then botocore's layout is kept: one service model per service, and no endpoints (botocore
    # would take them for customised ones)
    written = sorted(str(p.relative_to(into)) for p in into.rglob("*.json"))
    assert len(written) == len(awsmodels.OPERATIONS) and "endpoints.json" not in written
    # When a service model changes (a new botocore release)
    model = awsmodels._model_path(data, "sqs")
    changed = awsmodels._read(model)
    changed["metadata"]["signingName"] = "sqs-next"
    for stale in model.parent.glob("service-2.json*"):
        stale.unlink()
    model.write_text(json.dumps(changed))
    # Then the models are written again, with it
    assert not awsmodels.current(data, into)
    assert awsmodels.ensure(data, into) is True
    assert awsmodels._read(awsmodels._model_path(into, "sqs"))["metadata"]["signingName"] == "sqs-next"


def test_the_layers_build_trims_and_prunes_its_own_botocore(tmp_path: Path) -> None:
    # Given botocore's data as the layer installs it
    data, into = _fake_botocore_data(tmp_path), tmp_path / "aws_models"
    # When the Makefile's command runs (as a script, its own directory off sys.path)
    script = Path(awsmodels.__file__)
    subprocess.run(
        [sys.executable, "-P", str(script), str(data), "--into", str(into), "--prune"],
        check=True,
        timeout=120,
    )
    # Then the models are there, and that botocore keeps only the services klingflow and its
    # credentials use, and the endpoints of those only, in its own file
    assert awsmodels.current(data, into)
    assert {p.name for p in data.iterdir() if p.is_dir()} == {*awsmodels.OPERATIONS, *awsmodels.KEPT_WHOLE}
    assert (data / "_retry.json").exists() and (data / "partitions.json").exists()
    endpoints = json.loads((data / "endpoints.json").read_text())
    assert {s for p in endpoints["partitions"] for s in p["services"]} == awsmodels.endpoint_prefixes(data)


def test_a_member_named_like_documentation_is_kept() -> None:
    shape = {"type": "structure", "documentation": "text", "members": {"documentation": {"shape": "S"}}}
    assert awsmodels._without_documentation(shape) == {
        "type": "structure",
        "documentation": "",
        "members": {"documentation": {"shape": "S"}},
    }
