"""From what the recorder saw to figures per job: partition load, Lambda concurrency, cost.

Everything is per job: the jobs' windows summed, less what the sweeps in them would have cost
with nothing due (the idle window's cost per sweep: the sweeper runs once a minute whatever the
rate, so that part is a cost per minute, not per job), divided by the jobs.

A partition key is shared when the writes or reads of two or more jobs land on it (a job's own
item is not). Its load per job at R jobs/s is R times its units per job, so it reaches
DynamoDB's per-partition limit at limit / (units per job). Keys that differ only in their digits
(`JOB#3`, `JOB#12`; due shards `0`..`3`) are one family: with few jobs a hashed shard gets more
than its share, so the family's ceiling, were its load spread evenly over the keys seen, is
shown beside the hottest key's.
"""

from __future__ import annotations

import math
import re
import statistics
from collections import Counter, defaultdict
from dataclasses import dataclass

from .capacity import PARTITION_RCU_PER_S, PARTITION_WCU_PER_S, TABLE
from .drive import IDLE, JOB, Run
from .prices import PRICES, S3_GET_CLASS, S3_PUT_CLASS, SQS_REQUESTS_PER_MESSAGE
from .recorder import Access, Invocation

TARGET_RATE = 200  # jobs a second, issue 21's goal
SCHEDULE = "schedule"

LoadKey = tuple[str, str, str, bool]  # function, target, partition key, write


@dataclass(frozen=True)
class TargetLoad:
    """Per job, on the table or one index."""

    target: str
    writes: float
    wcu: float
    reads: float
    rcu: float
    largest_item: int  # bytes, the largest item or projection written


@dataclass(frozen=True)
class HotKey:
    target: str
    key: str
    jobs: int  # jobs whose writes or reads landed on it
    wcu_per_job: float
    rcu_per_job: float
    family: str
    family_keys: int
    family_ceiling: float  # jobs/s, the family's load spread evenly over its keys

    @property
    def ceiling(self) -> float:
        """Jobs/s at which this key reaches a per-partition limit (writes or reads)."""
        return min(
            _ceiling(PARTITION_WCU_PER_S, self.wcu_per_job), _ceiling(PARTITION_RCU_PER_S, self.rcu_per_job)
        )

    @property
    def bound_by(self) -> str:
        write = _ceiling(PARTITION_WCU_PER_S, self.wcu_per_job)
        return "writes" if write <= _ceiling(PARTITION_RCU_PER_S, self.rcu_per_job) else "reads"


@dataclass(frozen=True)
class FunctionLoad:
    function: str
    memory_mb: int
    invocations_per_job: float
    median_ms: float
    seconds_per_job: float  # invocations x median, or for the scheduled sweeper its extra time
    scheduled: bool = False  # runs once a minute whatever the rate (the sweeper)
    visits_per_job: float = 0.0  # a scheduled function's runs that did work for a job, per job

    @property
    def concurrency(self) -> float:
        return TARGET_RATE * self.seconds_per_job


@dataclass
class ScenarioReport:
    name: str
    jobs: int
    providers: list[str]
    targets: list[TargetLoad]
    hot: list[HotKey]  # shared keys, hottest first
    functions: list[FunctionLoad]
    counts: dict[str, float]  # per job: SQS messages, events, S3 requests, API requests, ...
    cost: dict[str, float]  # USD per 1,000 jobs, by line
    provider_usd: float  # the provider's bill per 1,000 jobs

    @property
    def aws_usd(self) -> float:
        return sum(self.cost.values())


@dataclass
class Report:
    scenarios: list[ScenarioReport]
    mixed: list[HotKey]  # every scenario's jobs together, in equal numbers
    targets: list[str]  # the table, then each index, as described
    architecture: str


def build(runs: list[Run]) -> Report:
    targets = [TABLE, *(index.name for index in runs[0].recorder.schema.indexes)]
    scenarios = [_scenario(run, targets) for run in runs]
    pooled: dict[LoadKey, list[float]] = defaultdict(lambda: [0.0, 0.0])
    touched: dict[tuple[str, str], set[str]] = defaultdict(set)
    for number, run in enumerate(runs):
        for key, (requests, units) in _marginal_load(run).items():
            pooled[key][0] += requests
            pooled[key][1] += units
        for place, windows in _touched(run.recorder.accesses).items():
            touched[place] |= {f"{number}/{window}" for window in windows}
    mixed = _hot(pooled, touched, sum(run.jobs for run in runs))
    return Report(scenarios, mixed, targets, runs[0].architecture)


def _scenario(run: Run, targets: list[str]) -> ScenarioReport:
    jobs = run.jobs
    load = _marginal_load(run)
    per_target = []
    for target in targets:
        found = [(key, value) for key, value in load.items() if key[1] == target]
        written = [
            a.size for a in run.recorder.accesses if a.target == target and a.write and _in_jobs(a.window)
        ]
        per_target.append(
            TargetLoad(
                target,
                writes=sum(v[0] for k, v in found if k[3]) / jobs,
                wcu=sum(v[1] for k, v in found if k[3]) / jobs,
                reads=sum(v[0] for k, v in found if not k[3]) / jobs,
                rcu=sum(v[1] for k, v in found if not k[3]) / jobs,
                largest_item=max(written, default=0),
            )
        )
    functions = _functions(run)
    counts = _counts(run)
    report = ScenarioReport(
        run.scenario.name,
        jobs,
        sorted(set(run.providers)),
        per_target,
        _hot(load, _touched(run.recorder.accesses), jobs),
        functions,
        counts,
        {},
        1000 * statistics.fmean(run.billed_usd),
    )
    report.cost = _cost(report, run)
    return report


# ---- DynamoDB ---------------------------------------------------------------------------------


def _in_jobs(window: str) -> bool:
    return window.startswith(JOB)


def _sweeps(run: Run) -> Counter[str]:
    """Scheduled invocations per window."""
    return Counter(i.window for i in run.recorder.invocations if i.source == SCHEDULE)


def _sweep_counts(run: Run) -> tuple[int, int]:
    sweeps = _sweeps(run)
    return sum(n for w, n in sweeps.items() if _in_jobs(w)), sweeps.get(IDLE, 0)


def _marginal_load(run: Run) -> dict[LoadKey, list[float]]:
    """(function, target, key, write) -> [requests, units] over the jobs' windows, less their
    sweeps' cost with nothing due."""
    in_jobs, idle_sweeps = _sweep_counts(run)
    load: dict[LoadKey, list[float]] = defaultdict(lambda: [0.0, 0.0])
    idle: dict[LoadKey, list[float]] = defaultdict(lambda: [0.0, 0.0])
    for access in run.recorder.accesses:
        into = load if _in_jobs(access.window) else idle if access.window == IDLE else None
        if into is not None:
            entry = into[(access.function, access.target, access.key, access.write)]
            entry[0] += 1
            entry[1] += access.units
    if idle_sweeps:
        for key, (requests, units) in idle.items():
            if key in load:
                share = in_jobs / idle_sweeps
                load[key] = [
                    max(0.0, load[key][0] - requests * share),
                    max(0.0, load[key][1] - units * share),
                ]
    return load


def _touched(accesses: list[Access]) -> dict[tuple[str, str], set[str]]:
    """(target, key) -> the jobs' windows whose requests consumed units on it."""
    found: dict[tuple[str, str], set[str]] = defaultdict(set)
    for access in accesses:
        if _in_jobs(access.window) and access.units > 0:
            found[(access.target, access.key)].add(access.window)
    return found


def _family(key: str) -> str:
    return re.sub(r"[0-9]+", "<n>", key)


def _hot(
    load: dict[LoadKey, list[float]], touched: dict[tuple[str, str], set[str]], jobs: int
) -> list[HotKey]:
    units: dict[tuple[str, str], list[float]] = defaultdict(lambda: [0.0, 0.0])  # wcu, rcu
    for (_, target, key, write), (_, consumed) in load.items():
        units[(target, key)][0 if write else 1] += consumed
    loaded = {k: v for k, v in units.items() if v[0] > 1e-9 or v[1] > 1e-9}
    families: dict[tuple[str, str], list[tuple[str, str]]] = defaultdict(list)
    for target, key in loaded:
        families[(target, _family(key))].append((target, key))
    found = []
    for (target, key), (wcu, rcu) in loaded.items():
        if len(touched.get((target, key), ())) < 2:
            continue  # one job's own key: its load does not grow with the rate
        members = families[(target, _family(key))]
        family_wcu = sum(loaded[m][0] for m in members) / jobs / len(members)
        family_rcu = sum(loaded[m][1] for m in members) / jobs / len(members)
        found.append(
            HotKey(
                target,
                key,
                len(touched[(target, key)]),
                wcu / jobs,
                rcu / jobs,
                _family(key),
                len(members),
                min(_ceiling(PARTITION_WCU_PER_S, family_wcu), _ceiling(PARTITION_RCU_PER_S, family_rcu)),
            )
        )
    return sorted(found, key=lambda hot: (hot.ceiling, hot.target, hot.key))


def _ceiling(limit: int, per_job: float) -> float:
    return limit / per_job if per_job > 1e-9 else math.inf


# ---- Lambda and the rest ----------------------------------------------------------------------


def _functions(run: Run) -> list[FunctionLoad]:
    found = []
    for function in sorted(run.memory_mb):
        mine = [i for i in run.recorder.invocations if i.function == function]
        measured = [i.seconds for i in mine if _in_jobs(i.window)]
        if not measured:
            continue
        median = statistics.median(measured)
        scheduled = any(i.source == SCHEDULE for i in mine)
        invocations, visits = len(measured) / run.jobs, 0.0
        # Concurrency is rate x mean time (Little's law), and Lambda bills every second: the
        # mean, which a long tail (a slow download, a slow receiver) lifts; the median is shown.
        seconds = invocations * statistics.fmean(measured)
        if scheduled:
            # Runs once a minute at any rate: what the jobs add to its runs, not its runs.
            working, seconds = _scheduled_extra(run, mine)
            invocations, visits, seconds = 0.0, working / run.jobs, seconds / run.jobs
        found.append(
            FunctionLoad(
                function, run.memory_mb[function], invocations, median * 1000, seconds, scheduled, visits
            )
        )
    return found


def _scheduled_extra(run: Run, runs: list[Invocation]) -> tuple[int, float]:
    """Seconds the jobs added to a scheduled function's runs: the runs in the jobs' windows that
    did work for a job (read a due job, or touched what an idle run never does), each the median
    such run less the median run that did none (the idle window's and the quiet ones among the
    jobs', interleaved, so a machine busier at one moment than another moves both alike); and
    how many such runs there were."""
    accesses = run.recorder.accesses
    idle = {(a.target, a.key, a.write, a.operation) for a in accesses if a.window == IDLE}
    busy = {
        a.invocation
        for a in accesses
        if (a.target, a.key, a.write, a.operation) not in idle or (a.operation == "Query" and a.size > 0)
    }
    scheduled = [i for i in runs if i.source == SCHEDULE and (i.window == IDLE or _in_jobs(i.window))]
    working = [i.seconds for i in scheduled if _in_jobs(i.window) and i.number in busy]
    quiet = [i.seconds for i in scheduled if i.number not in busy]
    if not working:
        return 0, 0.0
    baseline = statistics.median(quiet) if quiet else 0.0
    return len(working), len(working) * max(0.0, statistics.median(working) - baseline)


def _counts(run: Run) -> dict[str, float]:
    recorder, jobs = run.recorder, run.jobs
    in_jobs = [i for i in recorder.invocations if _in_jobs(i.window)]

    def calls(counter: Counter[tuple[str, str, str, str]], operations: frozenset[str]) -> float:
        return sum(n for (w, _, _, op), n in counter.items() if _in_jobs(w) and op in operations) / jobs

    presigned = calls(recorder.built, frozenset({"GetObject"})) - calls(
        recorder.sent, frozenset({"GetObject"})
    )
    return {
        "sqs messages": sum(i.records for i in in_jobs) / jobs,
        "sqs visibility changes": calls(recorder.sent, frozenset({"ChangeMessageVisibility"})),
        "events put": sum(n for (w, *_), n in recorder.entries.items() if _in_jobs(w)) / jobs,
        "api requests": sum(1 for i in in_jobs if i.source.startswith("api ")) / jobs,
        "s3 put-class": calls(recorder.sent, S3_PUT_CLASS),
        "s3 get-class": calls(recorder.sent, S3_GET_CLASS) + presigned,
        "s3 presigned for providers": presigned,
        "secrets reads": calls(recorder.sent, frozenset({"GetSecretValue"})),
        "stored bytes": statistics.fmean(run.stored_bytes),
    }


def _cost(report: ScenarioReport, run: Run) -> dict[str, float]:
    """USD per 1,000 jobs, by line."""
    price = {name: p.usd for name, p in PRICES.items()}
    counts = report.counts
    gb_s = sum(f.seconds_per_job * f.memory_mb / 1024 for f in report.functions)
    lambda_requests = sum(f.invocations_per_job for f in report.functions)
    per_job = {
        "DynamoDB writes": sum(t.wcu for t in report.targets) * price["dynamodb_write"],
        "DynamoDB reads": sum(t.rcu for t in report.targets) * price["dynamodb_read"],
        "Lambda compute": gb_s * price[f"lambda_{run.architecture}"],
        "Lambda requests": lambda_requests * price["lambda_request"],
        "SQS": (counts["sqs messages"] * SQS_REQUESTS_PER_MESSAGE + counts["sqs visibility changes"])
        * price["sqs_request"],
        "EventBridge": counts["events put"] * price["eventbridge_event"],
        "S3 requests": counts["s3 put-class"] * price["s3_put"] + counts["s3 get-class"] * price["s3_get"],
        "S3 storage, a month": counts["stored bytes"] / 2**30 * price["s3_storage"],
        "API Gateway": counts["api requests"] * price["api_request"],
        "Secrets Manager": counts["secrets reads"] * price["secrets_call"],
    }
    return {line: 1000 * usd for line, usd in per_job.items()}
