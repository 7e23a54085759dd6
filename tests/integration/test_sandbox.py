"""The sandbox holds up as the default users and tests lean on."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest

from klingflow.settings import SweeperSettings
from klingflow_dev.sandbox import template
from klingflow_dev.sandbox.client import ApiClient
from tests.conftest import REPO
from tests.integration.conftest import Stack, deterministic_stack

DECLARED = template.load(REPO / "template.yaml")["Parameters"]


def test_the_api_takes_a_hundred_requests_at_once_without_resetting_one(stack: Stack) -> None:
    def get(_: int) -> int:
        client = ApiClient(stack.api.base_url)
        try:
            return client.request("GET", "/jobs").status_code
        finally:
            client.close()

    with ThreadPoolExecutor(max_workers=100) as pool:
        statuses = list(pool.map(get, range(100)))

    assert statuses == [200] * 100


@pytest.mark.parametrize("method", ["DELETE", "PUT", "PATCH", "OPTIONS"])
def test_a_method_no_route_takes_is_answered_like_api_gateway(stack: Stack, method: str) -> None:
    response = stack.api.request(method, "/jobs")
    assert response.status_code == 404
    assert response.json() == {"message": "Not Found"}


@pytest.mark.parametrize("dialect", ["apimaster", "evolink", "gateway", "kling"])
def test_the_emulators_knobs_answer_under_each_dialects_base_url(stack: Stack, dialect: str) -> None:
    base = stack.sandbox.base_urls[dialect]
    answer = httpx.post(f"{base}/_emulator/faults", json={"create_status": 503})
    assert answer.status_code == 200
    assert answer.json()["create_status"] == 503
    assert stack.emulator.faults_for(dialect).create_status == 503
    assert httpx.get(f"{base}/_emulator/faults").json()["create_status"] == 503


def test_the_bucket_keeps_versions_and_expires_uploads_as_the_parameters_say(aws_env: None) -> None:
    with deterministic_stack({"UploadRetentionDays": "7", "OutputRetentionDays": "0"}) as stack:
        s3 = stack.s3
        assert s3.get_bucket_versioning(Bucket=stack.bucket)["Status"] == "Enabled"
        rules = {
            rule["ID"]: rule for rule in s3.get_bucket_lifecycle_configuration(Bucket=stack.bucket)["Rules"]
        }
        assert rules["ExpireUploads"]["Expiration"] == {"Days": 7}
        assert rules["ExpireRejected"]["Expiration"] == {"Days": 7}
        assert rules["ExpireOutputs"]["Status"] == "Disabled"  # 0: outputs are kept
        assert rules["ExpireOldVersions"]["NoncurrentVersionExpiration"] == {"NoncurrentDays": 30}
        # an upload's replaced or expired versions go a day later, then the marker left behind
        assert rules["ExpireUploads"]["NoncurrentVersionExpiration"] == {"NoncurrentDays": 1}
        assert rules["RemoveExpiredDeleteMarkers"]["Expiration"] == {"ExpiredObjectDeleteMarker": True}
        assert rules["RemoveExpiredDeleteMarkers"]["Filter"] == {"Prefix": ""}
        table = stack.sandbox.client("dynamodb").describe_table(TableName=stack.sandbox.names["JobsTable"])
        assert table["Table"]["DeletionProtectionEnabled"] is True


def test_outputs_expire_when_a_retention_is_set(aws_env: None) -> None:
    with deterministic_stack({"OutputRetentionDays": "365"}) as stack:
        rules = stack.s3.get_bucket_lifecycle_configuration(Bucket=stack.bucket)["Rules"]
        [outputs] = [rule for rule in rules if rule["ID"] == "ExpireOutputs"]
        assert (outputs["Status"], outputs["Expiration"]) == ("Enabled", {"Days": 365})


def test_the_scale_knobs_are_stack_parameters_the_functions_get(aws_env: None) -> None:
    given = {"SweepMaxJobsPerRun": "40", "SweeperMemorySize": "1024", "ArchiveConcurrency": "20"}
    with deterministic_stack(given) as stack:
        assert stack.sandbox.invoker is not None
        sweeper = stack.sandbox.invoker.functions["SweeperFunction"]
        assert SweeperSettings.from_env(sweeper.environment).max_jobs_per_run == 40
        assert sweeper.memory_mb == 1024
        # What the sandbox has no counterpart for is left to AWS, by name
        assert stack.sandbox.skipped["Dashboard"] == "AWS::CloudWatch::Dashboard"
        assert stack.sandbox.skipped["SweeperStoppedAlarm"] == "AWS::CloudWatch::Alarm"
    with pytest.raises(ValueError, match=r"ArchiveConcurrency='1': must be at least 2"):
        template.parameter_values(DECLARED, {"ArchiveConcurrency": "1"})
    with pytest.raises(ValueError, match=r"SweeperMemorySize='64': must be at least 128"):
        template.parameter_values(DECLARED, {"SweeperMemorySize": "64"})
