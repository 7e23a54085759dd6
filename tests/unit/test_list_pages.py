"""GET /jobs reads the list index's shards as one list: newest first, every job once, however
the pages are cut, with a status filter, and with the jobs written before the shards existed."""

from __future__ import annotations

import base64
import json
from collections import Counter

import pytest

from klingflow.core.codes import Actor
from klingflow.core.errors import QueryRejected
from klingflow.core.states import JobStatus
from klingflow.infra.dynamo import Table
from klingflow.jobs.pages import JOB_PARTITIONS, LIST_SHARDS, job_partition
from klingflow.jobs.store import JobStore
from tests.unit.test_store import _job

# Ids sorted as ULIDs are: by time, then at random.
IDS = [f"01K{n:04d}" for n in range(40)]


def _all_pages(store: JobStore, limit: int, status: JobStatus | None = None) -> list[list[str]]:
    pages, token = [], None
    for _ in range(200):
        page = store.list_jobs(limit=limit, next_token=token, status=status)
        pages.append([job.job_id for job in page.jobs])
        token = page.next_token
        if token is None:
            return pages
    raise AssertionError("the pages never ended")


@pytest.fixture
def forty_jobs(store: JobStore) -> JobStore:
    for job_id in IDS:
        store.create(_job(job_id))
    return store


def test_jobs_spread_over_every_shard_and_each_stays_in_its_own(forty_jobs: JobStore, table: Table) -> None:
    items = table.client.scan(TableName=table.name)["Items"]
    partitions = Counter(item["list_pk"]["S"] for item in items if item["pk"]["S"].startswith("JOB#"))
    assert set(partitions) == {f"JOB#{n}" for n in range(LIST_SHARDS)}
    assert max(partitions.values()) < len(IDS) / 2
    assert all(job_partition(job_id) == job_partition(job_id) for job_id in IDS)


@pytest.mark.parametrize("limit", [3, 100])
def test_pages_give_every_job_once_newest_first_however_they_are_cut(
    forty_jobs: JobStore, limit: int
) -> None:
    pages = _all_pages(forty_jobs, limit)
    listed = [job_id for page in pages for job_id in page]
    assert listed == sorted(IDS, reverse=True)
    assert all(len(page) <= limit for page in pages)


def test_a_status_filter_keeps_the_order_and_finds_each_match_once(forty_jobs: JobStore) -> None:
    failed = IDS[5::6]
    for job_id in failed:
        forty_jobs.transition(job_id, JobStatus.FAILED, by=Actor.SWEEPER)
    listed = [job_id for page in _all_pages(forty_jobs, 3, JobStatus.FAILED) for job_id in page]
    assert listed == sorted(failed, reverse=True)


def test_jobs_written_before_the_shards_are_listed_with_the_rest(store: JobStore, table: Table) -> None:
    # Given two jobs as an earlier klingflow wrote them, in the one partition JOB
    for job_id in ("01K0001", "01K0003"):
        store.create(_job(job_id))
        table.update_item(
            Key={"pk": f"JOB#{job_id}"},
            UpdateExpression="SET list_pk = :old",
            ExpressionAttributeValues={":old": "JOB"},
        )
    for job_id in ("01K0002", "01K0004"):
        store.create(_job(job_id))

    listed = [job_id for page in _all_pages(store, 1) for job_id in page]

    assert "JOB" in JOB_PARTITIONS
    assert listed == ["01K0004", "01K0003", "01K0002", "01K0001"]


@pytest.mark.parametrize(
    "token",
    [
        "not base64 at all!",
        base64.urlsafe_b64encode(b"[1, 2]").decode(),
        base64.urlsafe_b64encode(json.dumps({"v": 2, "after": {"ELEMENT": None}}).encode()).decode(),
        base64.urlsafe_b64encode(
            json.dumps(
                {"v": 2, "after": {"JOB#1": {"pk": "JOB#x", "list_pk": "JOB#2", "job_id": "x"}}}
            ).encode()
        ).decode(),
    ],
)
def test_a_token_this_api_did_not_issue_is_refused_naming_next_token(
    forty_jobs: JobStore, token: str
) -> None:
    with pytest.raises(QueryRejected) as refused:
        forty_jobs.list_jobs(limit=5, next_token=token)
    assert refused.value.errors[0].field == "next_token"


def test_a_page_token_from_before_the_shards_goes_on_where_it_stopped(forty_jobs: JobStore) -> None:
    # Given the token an earlier klingflow gave after the job 01K0030 (its one partition JOB)
    legacy = {"pk": "JOB#01K0030", "list_pk": "JOB", "job_id": "01K0030"}
    token = base64.urlsafe_b64encode(json.dumps(legacy).encode()).decode()

    listed = [job.job_id for job in forty_jobs.list_jobs(limit=100, next_token=token).jobs]

    assert listed == sorted((i for i in IDS if i < "01K0030"), reverse=True)


def test_a_token_longer_than_any_this_api_issues_is_refused_unread(forty_jobs: JobStore) -> None:
    with pytest.raises(QueryRejected):
        forty_jobs.list_jobs(limit=5, next_token="A" * 100_000)
