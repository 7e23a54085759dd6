"""AWS's public us-east-1 prices the cost per 1,000 jobs is figured at, each with the page it is
from (aws.amazon.com/<service>/pricing/, as read in December 2026). Free tiers are left out: at
200 jobs/s a month is ~518 million jobs."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Price:
    usd: float
    per: str
    source: str


PRICES: dict[str, Price] = {
    "dynamodb_write": Price(0.625 / 1e6, "write request unit", "Amazon DynamoDB pricing, on-demand capacity"),
    "dynamodb_read": Price(0.125 / 1e6, "read request unit", "Amazon DynamoDB pricing, on-demand capacity"),
    "lambda_arm64": Price(0.0000133334, "GB-second (arm64)", "AWS Lambda pricing"),
    "lambda_x86_64": Price(0.0000166667, "GB-second (x86_64)", "AWS Lambda pricing"),
    "lambda_request": Price(0.20 / 1e6, "request", "AWS Lambda pricing"),
    "sqs_request": Price(0.40 / 1e6, "request (standard queue, each 64 KB chunk)", "Amazon SQS pricing"),
    "eventbridge_event": Price(
        1.00 / 1e6, "custom event put (each 64 KB chunk)", "Amazon EventBridge pricing"
    ),
    "s3_put": Price(0.005 / 1000, "PUT, COPY, POST or LIST request", "Amazon S3 pricing, S3 Standard"),
    "s3_get": Price(0.0004 / 1000, "GET, HEAD or other request", "Amazon S3 pricing, S3 Standard"),
    "s3_storage": Price(0.023, "GB-month (first 50 TB)", "Amazon S3 pricing, S3 Standard"),
    "api_request": Price(
        1.00 / 1e6, "HTTP API request (first 300 million a month)", "Amazon API Gateway pricing"
    ),
    "secrets_call": Price(0.05 / 10_000, "API call", "AWS Secrets Manager pricing"),
}
# S3's request classes, by the operations klingflow calls (infra/awsmodels.py).
S3_PUT_CLASS = frozenset(
    {"PutObject", "CopyObject", "CreateMultipartUpload", "UploadPart", "CompleteMultipartUpload"}
)
S3_GET_CLASS = frozenset({"GetObject", "HeadObject", "HeadBucket"})
# What each SQS message costs in requests when Lambda's poller takes it alone: the send (by a
# function or a rule), the receive and the delete. Batches make the last two cheaper.
SQS_REQUESTS_PER_MESSAGE = 3
