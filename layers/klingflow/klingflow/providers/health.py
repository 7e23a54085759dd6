"""Provider health: one circuit breaker per provider, shared by every Lambda container.

The breaker is a DynamoDB item (`HEALTH#<provider>`) so that all containers see the same state:
it opens after `failure_threshold` consecutive failures that say something about the provider
(down, unknown outcome, rate or concurrency limits, balance, auth), lets exactly one probe
through once `cool_down_s` has passed, and closes on that probe's success. A rejected request
(invalid, content policy) says nothing about the provider and does not count.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from botocore.exceptions import ClientError

from klingflow.core.clock import Clock, epoch, iso
from klingflow.core.codes import ProviderErrorClass

from .defaults import BREAKER_COOL_DOWN_S, BREAKER_FAILURES

if TYPE_CHECKING:
    from klingflow.infra.dynamo import Table

    from .telemetry import ProviderMetrics

COUNTED = frozenset(
    {
        ProviderErrorClass.PROVIDER_DOWN,
        ProviderErrorClass.UNKNOWN_OUTCOME,
        ProviderErrorClass.RATE_LIMITED,
        ProviderErrorClass.CONCURRENCY_LIMIT,
        ProviderErrorClass.INSUFFICIENT_BALANCE,
        ProviderErrorClass.AUTH,
        ProviderErrorClass.NOT_FOUND,
    }
)
CLOSED, OPEN = "closed", "open"


class Breakers:
    def __init__(
        self,
        table: Table,
        clock: Clock,
        *,
        failure_threshold: int = BREAKER_FAILURES,
        cool_down_s: int = BREAKER_COOL_DOWN_S,
        probe_lease_s: int = 60,
        metrics: ProviderMetrics | None = None,
    ) -> None:
        self._table = table
        self._metrics = metrics
        self._clock = clock
        self._threshold = failure_threshold
        self._cool_down_s = cool_down_s
        self._probe_lease_s = probe_lease_s

    @staticmethod
    def _key(provider: str) -> dict[str, str]:
        return {"pk": f"HEALTH#{provider}"}

    def state(self, provider: str) -> dict[str, Any]:
        item = self._table.get_item(Key=self._key(provider), ConsistentRead=True).get("Item") or {}
        return {"state": item.get("state", CLOSED), "failures": int(str(item.get("failures", 0)))}

    def allows(self, provider: str) -> bool:
        """Closed: yes. Open and cooling down: no. Open and cooled down: yes, to one caller."""
        item = self._table.get_item(Key=self._key(provider), ConsistentRead=True).get("Item")
        if not item or item.get("state") != OPEN:
            return True
        now = epoch(self._clock.now())
        if now < int(str(item.get("opened_at", 0))) + self._cool_down_s:
            return False
        try:
            self._table.update_item(
                Key=self._key(provider),
                UpdateExpression="SET probe_until = :until",
                ConditionExpression=(
                    "#state = :open AND (attribute_not_exists(probe_until) OR probe_until < :now)"
                ),
                ExpressionAttributeNames={"#state": "state"},
                ExpressionAttributeValues={":until": now + self._probe_lease_s, ":open": OPEN, ":now": now},
            )
        except ClientError as error:
            if error.response.get("Error", {}).get("Code") == "ConditionalCheckFailedException":
                return False  # another container holds the probe
            raise
        return True

    def record_answer(self, provider: str, error_class: ProviderErrorClass | None) -> None:
        """What a call said about the provider: a counted failure, or proof that it is up (a
        success, and also a refusal of the request: it answered). Either ends a probe."""
        if error_class in COUNTED:
            self.record_failure(provider, error_class)
        else:
            self.record_success(provider)

    def record_success(self, provider: str) -> None:
        try:
            # Conditional, so healthy traffic does not rewrite one hot item on every call.
            self._table.update_item(
                Key=self._key(provider),
                UpdateExpression=(
                    "SET #state = :closed, failures = :zero, updated_at = :at REMOVE probe_until, opened_at"
                ),
                ConditionExpression="attribute_exists(pk) AND (#state <> :closed OR failures > :zero)",
                ExpressionAttributeNames={"#state": "state"},
                ExpressionAttributeValues={":closed": CLOSED, ":zero": 0, ":at": iso(self._clock.now())},
            )
        except ClientError as error:
            if error.response.get("Error", {}).get("Code") != "ConditionalCheckFailedException":
                raise

    def record_failure(self, provider: str, error_class: ProviderErrorClass) -> None:
        if error_class not in COUNTED:
            return
        now = self._clock.now()
        item = self._table.update_item(
            Key=self._key(provider),
            UpdateExpression="SET updated_at = :at, last_failure = :class ADD failures :one",
            ExpressionAttributeValues={":at": iso(now), ":class": error_class.value, ":one": 1},
            ReturnValues="ALL_NEW",
        )["Attributes"]
        probing = item.get("state") == OPEN  # a failed probe: cool down again
        if probing or int(str(item.get("failures", 0))) >= self._threshold:
            try:
                # Conditional: a probe that closed the breaker in between must not be undone by
                # the late failure of an older call.
                self._table.update_item(
                    Key=self._key(provider),
                    UpdateExpression="SET #state = :open, opened_at = :now REMOVE probe_until",
                    ConditionExpression="failures >= :threshold OR #state = :open",
                    ExpressionAttributeNames={"#state": "state"},
                    ExpressionAttributeValues={
                        ":open": OPEN,
                        ":now": epoch(now),
                        ":threshold": self._threshold,
                    },
                )
            except ClientError as error:
                if error.response.get("Error", {}).get("Code") != "ConditionalCheckFailedException":
                    raise
                return
            if self._metrics is not None:
                self._metrics.breaker_opened(provider)
