"""Create the template's shared resources in moto, from the template's own properties."""

from __future__ import annotations

import functools
import json
import logging
import secrets
import string
import threading
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import boto3
import botocore
from moto.moto_server.threaded_moto_server import ThreadedMotoServer
from moto.moto_server.werkzeug_app import (
    DomainDispatcherApplication,
    MotoRequestHandler,
    create_backend_app,
)
from werkzeug.serving import make_server

from klingflow.infra import awsmodels

from . import dynamojson
from .limits import Limits
from .template import Resolver

ACCOUNT = "123456789012"
REGION = "us-east-1"
STACK = "klingflow-sandbox"
STACK_ID = f"arn:aws:cloudformation:{REGION}:{ACCOUNT}:stack/{STACK}/5f0c2c7e-8d7a-4f4e-9a55-0a1b2c3d4e5f"


@functools.cache
def session() -> boto3.Session:
    """The sandbox's own boto3 session, one per process: its loader keeps the models it has read,
    so a new sandbox (one per test module) does not parse them again. Its credentials are the
    sandbox's, which every sandbox sets alike."""
    return boto3.Session(region_name=REGION)


def function_role_arn(function: str) -> str:
    """The role SAM makes for a function (`<Function>Role`), as the sandbox names it."""
    return f"arn:aws:iam::{ACCOUNT}:role/{STACK}-{function}Role"


def ensure_aws_models() -> bool:
    """klingflow's trimmed AWS models (klingflow/infra/awsmodels.py), written from this venv's botocore
    unless they are current: the handlers here make their clients from them, as in Lambda."""
    return awsmodels.ensure(Path(botocore.__file__).parent / "data")


# CloudFormation's pseudo parameters, as the sandbox's stack has them.
PSEUDO = {
    "AWS::StackId": STACK_ID,
    "AWS::StackName": STACK,
    "AWS::Region": REGION,
    "AWS::AccountId": ACCOUNT,
    "AWS::Partition": "aws",
    "AWS::URLSuffix": "amazonaws.com",
}


class SerialisedDynamoDB:
    """WSGI middleware: moto answers DynamoDB requests one at a time.

    DynamoDB evaluates a conditional write (or a transaction) atomically; moto's server checks
    the condition and then writes without a lock, so two threads can both pass a condition only
    one of them should. The budget's promise ("N concurrent submits never overspend") rests on
    that atomicity, so the sandbox restores it. S3's conditional writes (`If-None-Match: *`,
    one stored version however many writers race) are atomic too, and moto's are not: they take
    the same lock. Everything else is left concurrent.
    """

    def __init__(self, app: Callable[..., Iterable[bytes]]) -> None:
        self._app = app
        self._lock = threading.Lock()

    def __call__(self, environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        dynamodb = str(environ.get("HTTP_X_AMZ_TARGET", "")).startswith("DynamoDB_")
        conditional_put = environ.get("REQUEST_METHOD") == "PUT" and "HTTP_IF_NONE_MATCH" in environ
        if not (dynamodb or conditional_put):
            return self._app(environ, start_response)
        with self._lock:
            # The answer is produced while the lock is held, not when the server sends it.
            return list(self._app(environ, start_response))


class MotoServer(ThreadedMotoServer):
    """moto in server mode on loopback, with DynamoDB's atomic conditional writes, its item
    answers sent as the JSON they are (`dynamojson`: as quick to read a job as to write it), the
    event buses' resource policies enforced (`buspolicy`), AWS's payload limits (`limits`) and,
    when asked, DynamoDB's conflicts and throttling (`faults`)."""

    def __init__(self, *args: Any, aws_faults: dict[str, float] | None = None, **kwargs: Any) -> None:
        from .buspolicy import BusPolicy  # noqa: PLC0415 (it reads this module's account and stack)
        from .faults import DynamoFaults  # noqa: PLC0415 (it reads iam's caller, which reads this module)

        super().__init__(*args, **kwargs)
        self.bus_policy = BusPolicy()
        self.faults = DynamoFaults.of(aws_faults or {})
        self.limits = Limits()

    def _server_entry(self) -> None:
        dynamojson.install()
        # werkzeug logs every request it serves; formatting those lines costs the server's CPU.
        logging.getLogger("werkzeug").setLevel(logging.ERROR)
        # The faults sit outside the lock: a transaction waiting for it is in flight.
        moto = SerialisedDynamoDB(DomainDispatcherApplication(create_backend_app))
        app = self.bus_policy.wrap(self.limits.wrap(self.faults.wrap(moto)))
        self._server = make_server(
            self._ip_address, self._port, app, True, request_handler=MotoRequestHandler
        )
        self._server_ready_event.set()
        # A short poll interval: stopping waits for it, and tests start and stop sandboxes often.
        self._server.serve_forever(poll_interval=0.05)


@dataclass
class Created:
    """What the sandbox built, by logical id; and what it leaves to AWS alone."""

    names: dict[str, str] = field(default_factory=dict)
    skipped: dict[str, str] = field(default_factory=dict)
    # Each AWS::Events::EventBusPolicy's resolved properties (the sandbox enforces them).
    bus_policies: dict[str, dict[str, Any]] = field(default_factory=dict)


class ResourceBuilder:
    """Turns CloudFormation resource properties into the matching API calls against moto."""

    def __init__(self, session: boto3.Session, endpoint: str, resolver: Resolver) -> None:
        self._session = session
        self._endpoint = endpoint
        self._resolve = resolver
        self.created = Created()
        self._clients: dict[str, Any] = {}

    def client(self, service: str) -> Any:
        if service not in self._clients:
            self._clients[service] = self._session.client(service, endpoint_url=self._endpoint)  # type: ignore[call-overload]
        return self._clients[service]

    def build(self, resources: dict[str, Any], *, api_url: str) -> Created:
        order = [
            "AWS::SQS::Queue",
            "AWS::DynamoDB::Table",
            "AWS::S3::Bucket",
            "AWS::Events::EventBus",
            "AWS::Events::EventBusPolicy",
            "AWS::SecretsManager::Secret",
            "AWS::SSM::Parameter",
            "AWS::Events::Rule",
        ]
        handlers: dict[str, Callable[[str, dict[str, Any]], None]] = {
            "AWS::SQS::Queue": self._queue,
            "AWS::DynamoDB::Table": self._table,
            "AWS::S3::Bucket": self._bucket,
            "AWS::Events::EventBus": self._bus,
            "AWS::Events::EventBusPolicy": self._bus_policy,
            "AWS::SecretsManager::Secret": self._secret,
            "AWS::SSM::Parameter": lambda logical, props: self._parameter(logical, props, api_url),
            "AWS::Events::Rule": self._rule,
        }
        for logical, resource in resources.items():
            if resource["Type"] == "AWS::Serverless::Function":
                # The role SAM makes for each function, which a bus policy names.
                self._resolve.attributes[(f"{logical}Role", "Arn")] = function_role_arn(logical)
        # Dead-letter queues first: a queue's redrive policy names its DLQ's ARN.
        queues = {k: v for k, v in resources.items() if v["Type"] == "AWS::SQS::Queue"}
        ordered_queues = sorted(queues, key=lambda k: "RedrivePolicy" in queues[k].get("Properties", {}))
        for kind in order:
            names = (
                ordered_queues
                if kind == "AWS::SQS::Queue"
                else [k for k, v in resources.items() if v["Type"] == kind]
            )
            for logical in names:
                handlers[kind](logical, resources[logical].get("Properties", {}))
        for logical, resource in resources.items():
            if logical not in self.created.names:
                self.created.skipped[logical] = resource["Type"]
        return self.created

    def _queue(self, logical: str, props: dict[str, Any]) -> None:
        name = f"{STACK}-{logical}"
        attributes: dict[str, str] = {}
        for key in (
            "VisibilityTimeout",
            "MessageRetentionPeriod",
            "DelaySeconds",
            "ReceiveMessageWaitTimeSeconds",
        ):
            if key in props:
                attributes[key] = str(self._resolve(props[key]))
        if "RedrivePolicy" in props:
            attributes["RedrivePolicy"] = json.dumps(self._resolve(props["RedrivePolicy"]))
        url = self.client("sqs").create_queue(QueueName=name, Attributes=attributes)["QueueUrl"]
        arn = f"arn:aws:sqs:{REGION}:{ACCOUNT}:{name}"
        self._resolve.refs[logical] = url
        self._resolve.attributes[(logical, "Arn")] = arn
        self._resolve.attributes[(logical, "QueueName")] = name
        self.created.names[logical] = url

    def _table(self, logical: str, props: dict[str, Any]) -> None:
        props = self._resolve(props)
        name = props.get("TableName", f"{STACK}-{logical}")
        args: dict[str, Any] = {
            "TableName": name,
            "AttributeDefinitions": props["AttributeDefinitions"],
            "KeySchema": props["KeySchema"],
            "BillingMode": props.get("BillingMode", "PROVISIONED"),
        }
        if props.get("GlobalSecondaryIndexes"):
            args["GlobalSecondaryIndexes"] = props["GlobalSecondaryIndexes"]
        if "DeletionProtectionEnabled" in props:
            args["DeletionProtectionEnabled"] = props["DeletionProtectionEnabled"] in (True, "true")
        dynamodb = self.client("dynamodb")
        dynamodb.create_table(**args)
        ttl = props.get("TimeToLiveSpecification")
        if ttl:
            dynamodb.update_time_to_live(TableName=name, TimeToLiveSpecification=ttl)
        self._resolve.refs[logical] = name
        self._resolve.attributes[(logical, "Arn")] = f"arn:aws:dynamodb:{REGION}:{ACCOUNT}:table/{name}"
        self.created.names[logical] = name

    def _bucket(self, logical: str, props: dict[str, Any]) -> None:
        props = self._resolve(props)
        name = props.get("BucketName", f"{STACK}-{logical}".lower())
        s3 = self.client("s3")
        s3.create_bucket(Bucket=name)
        if "PublicAccessBlockConfiguration" in props:
            s3.put_public_access_block(
                Bucket=name, PublicAccessBlockConfiguration=props["PublicAccessBlockConfiguration"]
            )
        if "BucketEncryption" in props:
            # CloudFormation says ServerSideEncryptionByDefault where the API says Apply...
            rules = [
                {
                    "ApplyServerSideEncryptionByDefault": rule["ServerSideEncryptionByDefault"],
                    **({"BucketKeyEnabled": rule["BucketKeyEnabled"]} if "BucketKeyEnabled" in rule else {}),
                }
                for rule in props["BucketEncryption"]["ServerSideEncryptionConfiguration"]
            ]
            s3.put_bucket_encryption(Bucket=name, ServerSideEncryptionConfiguration={"Rules": rules})
        versioning = props.get("VersioningConfiguration")
        if versioning:
            s3.put_bucket_versioning(Bucket=name, VersioningConfiguration={"Status": versioning["Status"]})
        rules = props.get("LifecycleConfiguration", {}).get("Rules", [])
        if rules:
            s3.put_bucket_lifecycle_configuration(
                Bucket=name, LifecycleConfiguration={"Rules": [_lifecycle_rule(rule) for rule in rules]}
            )
        self._resolve.refs[logical] = name
        self._resolve.attributes[(logical, "Arn")] = f"arn:aws:s3:::{name}"
        self.created.names[logical] = name

    def _bus(self, logical: str, props: dict[str, Any]) -> None:
        name = str(self._resolve(props["Name"]))
        arn = self.client("events").create_event_bus(Name=name)["EventBusArn"]
        self._resolve.refs[logical] = name
        self._resolve.attributes[(logical, "Arn")] = arn
        self._resolve.attributes[(logical, "Name")] = name
        self.created.names[logical] = name

    def _bus_policy(self, logical: str, props: dict[str, Any]) -> None:
        """Kept for the moto server's middleware: moto stores a bus policy but never applies it."""
        resolved = self._resolve(props)
        self.created.bus_policies[logical] = resolved
        self.created.names[logical] = str(resolved.get("StatementId", logical))

    def _rule(self, logical: str, props: dict[str, Any]) -> None:
        """A rule with its targets; moto delivers matching events to SQS targets itself."""
        props = self._resolve(props)
        bus = str(props.get("EventBusName", "default"))
        name = f"{STACK}-{logical}"
        events = self.client("events")
        arn = events.put_rule(
            Name=name, EventBusName=bus, EventPattern=json.dumps(props["EventPattern"]), State="ENABLED"
        )["RuleArn"]
        targets = [{"Id": str(t["Id"]), "Arn": str(t["Arn"])} for t in props.get("Targets", [])]
        if targets:
            events.put_targets(Rule=name, EventBusName=bus, Targets=targets)
        self._resolve.refs[logical] = name
        self._resolve.attributes[(logical, "Arn")] = arn
        self.created.names[logical] = name

    def _secret(self, logical: str, props: dict[str, Any]) -> None:
        props = self._resolve(props)
        if "SecretString" in props:
            value = props["SecretString"]
        else:
            spec = props.get("GenerateSecretString", {})
            alphabet = string.ascii_letters + string.digits
            value = "".join(secrets.choice(alphabet) for _ in range(int(spec.get("PasswordLength", 32))))
        arn = self.client("secretsmanager").create_secret(Name=f"{STACK}/{logical}", SecretString=value)[
            "ARN"
        ]
        self._resolve.refs[logical] = arn
        self.created.names[logical] = arn

    def _parameter(self, logical: str, props: dict[str, Any], api_url: str) -> None:
        # The one value CloudFormation would compute from the deployed API: here the API is the
        # sandbox's own HTTP server.
        if "HttpApi" in self._resolve.references(props.get("Value")):
            value = api_url
        else:
            value = str(self._resolve(props["Value"]))
        name = str(self._resolve(props["Name"]))
        self.client("ssm").put_parameter(
            Name=name, Value=value, Type=props.get("Type", "String"), Overwrite=True
        )
        self._resolve.refs[logical] = name
        self.created.names[logical] = name


def _lifecycle_rule(rule: dict[str, Any]) -> dict[str, Any]:
    """CloudFormation's lifecycle rule shape -> the S3 API's."""
    api: dict[str, Any] = {
        "ID": rule.get("Id", "rule"),
        "Status": rule["Status"],
        "Filter": {"Prefix": rule.get("Prefix", "")},
    }
    if "AbortIncompleteMultipartUpload" in rule:
        api["AbortIncompleteMultipartUpload"] = rule["AbortIncompleteMultipartUpload"]
    if "ExpirationInDays" in rule:
        api["Expiration"] = {"Days": int(rule["ExpirationInDays"])}
    if rule.get("ExpiredObjectDeleteMarker") in (True, "true"):
        api["Expiration"] = {"ExpiredObjectDeleteMarker": True}
    if "NoncurrentVersionExpiration" in rule:
        days = int(rule["NoncurrentVersionExpiration"]["NoncurrentDays"])
        api["NoncurrentVersionExpiration"] = {"NoncurrentDays": days}
    return api
