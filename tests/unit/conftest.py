"""Unit fixtures: the jobs table built from template.yaml's own schema, in moto."""

from __future__ import annotations

import copy
import functools
from collections.abc import Iterator
from typing import Any

import boto3
import pytest
from moto import mock_aws

from klingflow.infra.dynamo import Table
from klingflow.jobs.store import JobStore
from klingflow.money.ledger import Budget, Ledger
from klingflow_dev.clock import ManualClock
from klingflow_dev.sandbox import template
from klingflow_dev.sandbox.aws import PSEUDO, REGION, ResourceBuilder
from tests.conftest import REPO


@functools.cache
def _template() -> dict[str, Any]:
    """template.yaml, parsed once per process: parsing it costs more than the table it defines."""
    return template.load(REPO / "template.yaml")


@functools.cache
def _session() -> boto3.Session:
    """One session per process: its loader keeps the models it has read (a new session reads
    DynamoDB's again, longer than the test it serves)."""
    return boto3.Session(region_name=REGION)


@pytest.fixture
def table(aws_env: None) -> Iterator[Table]:
    """The jobs table as template.yaml defines it (keys, indexes, TTL), in moto."""
    with mock_aws():
        document = copy.deepcopy(_template())
        resolver = template.Resolver(
            parameters={k: v.get("Default") for k, v in document["Parameters"].items()},
            pseudo=PSEUDO,
        )
        session = _session()
        builder = ResourceBuilder(session, None, resolver)  # type: ignore[arg-type]
        builder._table("JobsTable", document["Resources"]["JobsTable"]["Properties"])
        # Through the same wrapper production uses (runtime.table), over the low-level client.
        yield Table(session.client("dynamodb"), builder.created.names["JobsTable"])


@pytest.fixture
def ledger(table: Table, clock: ManualClock) -> Ledger:
    """Today's budget: $5 a day, at most $2 a job."""
    return Ledger(table, clock, Budget(daily_usd=5, max_job_usd=2))


@pytest.fixture
def store(table: Table, clock: ManualClock, ledger: Ledger) -> JobStore:
    return JobStore(table, clock, due_shards=4, ledger=ledger)
