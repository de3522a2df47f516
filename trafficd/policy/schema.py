"""The SLO policy: a strict, versioned schema (pydantic) and its loader.

Durations are written `3s`, `250ms`, `5m`, `1h`; fractions as percentages `75%`. Unknown keys are rejected,
numbers given as strings are rejected (strict mode), and cross-field rules are checked after the fields.
Secrets are never written here: only the name of an environment variable or a credential file.

`load_policy(path)` returns a `LoadedPolicy` or raises `PolicyError` carrying every problem found, each with the
file, line, column, field path and reason (YAML with positions in `load.py`, messages in `errors.py`, checks across
fields in `checks.py`; the probing models are in `probing.py`, re-exported here). See docs/policy.md for every field,
its default, and the decisions behind the checks.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Literal

from pydantic import (
    AfterValidator,
    BeforeValidator,
    Field,
    ValidationError,
    model_validator,
)

from trafficd.policy.capacity import Capacity, CapacityFields
from trafficd.policy.capacity import resolve as resolve_capacity
from trafficd.policy.errors import find_inline_secrets, problems_from
from trafficd.policy.load import FieldProblems as FieldProblems
from trafficd.policy.load import PolicyError as PolicyError
from trafficd.policy.load import PolicyProblem as PolicyProblem
from trafficd.policy.load import read_policy_text, read_yaml, sort_problems
from trafficd.policy.probing import DEFAULT_MAX_TOKENS as DEFAULT_MAX_TOKENS
from trafficd.policy.probing import REASONING_MAX_TOKENS as REASONING_MAX_TOKENS
from trafficd.policy.probing import ApiName as ApiName
from trafficd.policy.probing import Ask as Ask
from trafficd.policy.probing import Auth as Auth
from trafficd.policy.probing import Deadlines as Deadlines
from trafficd.policy.probing import DeadlinesOverride as DeadlinesOverride
from trafficd.policy.probing import Discovery as Discovery
from trafficd.policy.probing import MaxTokens as MaxTokens
from trafficd.policy.probing import ModelSpec as ModelSpec
from trafficd.policy.probing import Probe as Probe
from trafficd.policy.probing import PromptTokens as PromptTokens
from trafficd.policy.probing import Targets as Targets
from trafficd.policy.probing import Tls as Tls
from trafficd.policy.probing import TtftFrom as TtftFrom
from trafficd.policy.probing import Worker as Worker
from trafficd.policy.values import SCHEMA_VERSION as SCHEMA_VERSION
from trafficd.policy.values import (
    AwsRegion,
    Endpoint,
    EnvName,
    HostName,
    KeyPrefix,
    Name,
    ShareBelowSlo,
    ZoneId,
    check_redis_url,
    check_version,
)
from trafficd.policy.values import Duration as Duration
from trafficd.policy.values import Percent as Percent
from trafficd.policy.values import Strict as Strict
from trafficd.policy.values import check_name as check_name
from trafficd.policy.values import format_duration as format_duration
from trafficd.policy.values import parse_duration as parse_duration
from trafficd.policy.values import parse_percent as parse_percent


class RegionDns(Strict):
    """This region's endpoint in Route 53."""

    endpoint: Endpoint  # CNAME target (host name) or IP address (A/AAAA) that serves this region's users
    aws_region: AwsRegion  # latency routing region, e.g. us-east-1 (checked against botocore's endpoint data)
    set_identifier: str | None = None  # default: the region name


class Region(Strict):
    workers: list[Worker] = Field(default_factory=list)
    discovery: Discovery | None = None
    models: list[ModelSpec] | None = None  # default: the policy's models
    deadlines: DeadlinesOverride = DeadlinesOverride.model_construct()
    dns: RegionDns = Field(description="every region must be mapped to its Route 53 records (endpoint, aws_region)")
    neighbours: list[str] = Field(default_factory=list)  # spill-over preference, first = preferred
    capacity_headroom: Percent | None = None  # declared: extra traffic it can take, as a share of its own load
    capacity: CapacityFields | None = None  # live capacity from the workers' metrics (docs/capacity.md)

    @model_validator(mode="after")
    def _has_workers(self) -> Region:
        if not self.workers and self.discovery is None:
            raise ValueError("a region needs workers or discovery")
        return self


# ---------------------------------------------------------------- judging


class Slo(Strict):
    total_p99: Duration = 3.0
    ttft_p99: Duration | None = None
    error_rate: Percent = 0.01
    quantile: Percent = 0.99


class Windows(Strict):
    evaluate_every: Duration = 10.0
    slice: Duration = 10.0
    trip: Duration = 300.0  # window the breach is judged on (long enough for min_samples)
    long: Duration = 900.0  # longer window, for status and humans
    min_samples: int = Field(default=400, ge=1)
    stale_after: Duration = 30.0  # newest sample / heartbeat older than this → unknown
    max_clock_skew: Duration = 30.0  # samples stamped further than this from the controller's clock are rejected


class FastRule(Strict):
    over: int = Field(default=3, ge=1)
    of_last: int = Field(default=20, ge=1)

    @model_validator(mode="after")
    def _k_le_m(self) -> FastRule:
        if self.over > self.of_last:
            raise ValueError(f"over ({self.over}) cannot exceed of_last ({self.of_last})")
        return self


class Trip(Strict):
    """What healthy and broken mean, in the user's terms; the judge derives its thresholds from them (judge.md).

    `healthy_rate` and `breach_rate` are shares of probes over the latency SLO (the error signal scales them by
    `slo.error_rate / (1 - slo.quantile)`); `false_trips` per `false_trip_days` is the false-alarm budget per region
    at the healthy rate. `evaluations` and `fast_rule` belong to the old point-estimate rule and are ignored.
    """

    healthy_rate: Percent = 0.005  # half the 1 % budget: a region this good must (almost) never be drained
    breach_rate: Percent = 0.02  # twice the budget: a region this bad must be drained quickly
    false_trips: float = Field(default=1.0, gt=0)  # at most this many false trips per region …
    false_trip_days: int = Field(default=90, ge=1, le=3650)  # … per this many days
    evaluations: int = Field(default=3, ge=1)  # ignored (the old rule); kept so existing policies still load
    fast_rule: FastRule | None = FastRule.model_construct()  # ignored by the judge; of_last sizes the recent list

    @model_validator(mode="after")
    def _rates_ordered(self) -> Trip:
        if not 0.0 < self.healthy_rate < self.breach_rate < 1.0:
            raise ValueError(
                f"healthy_rate ({self.healthy_rate:.3%}) must be above 0% and below breach_rate "
                f"({self.breach_rate:.3%}), which must be below 100%"
            )
        return self


class Recover(Strict):
    below: ShareBelowSlo = 0.8  # share of each latency SLO the p99 must stay under to recover (< 100%)
    evaluations: int = Field(default=6, ge=1)
    hold_down: Duration = 120.0
    hold_down_max: Duration = 1800.0
    hold_down_decay: Duration = 3600.0  # a trip is forgotten after this
    flap_window: Duration = 21600.0  # at most one drain–restore cycle per this: a re-trip within it waits it out


class Ramp(Strict):
    max_step: Percent = 0.25
    min_fraction: Percent = 0.0  # floor of a drained region's serving fraction
    cooldown: Duration = 90.0  # ≥ TTL + propagation


class Guards(Strict):
    min_serving_regions: int = Field(default=1, ge=1)
    max_drained: int = Field(default=1, ge=0)
    fail_open_share: Percent = 0.75
    never_drain: list[str] = Field(default_factory=list)  # never drained by trafficd (on-call still can, by hand)


# ---------------------------------------------------------------- actuating


class Dns(Strict):
    zone_id: ZoneId
    record_name: HostName  # e.g. api.example.com.
    record_type: Literal["CNAME", "A", "AAAA"] = "CNAME"
    topology: Literal["latency-weighted", "weighted"] = "latency-weighted"
    pool_name: str = "{region}.pool.{record}"  # template of each region's weighted pool name
    ttl: int = Field(default=60, ge=0, le=86400)
    drift: Literal["correct", "respect"] = "correct"
    propagation_timeout: Duration = 120.0
    poll_interval: Duration = 3.0
    retry_budget: Duration = 30.0
    verify: bool = False
    endpoint_url: str | None = None  # a local Route 53 API (moto server) for tests and the demo


class Redis(Strict):
    url: Annotated[str, AfterValidator(check_redis_url)] = "redis://127.0.0.1:6379/0"
    password_env: EnvName | None = None
    password_file: str | None = None
    key_prefix: KeyPrefix = "trafficd"
    acl_users: bool = False  # authenticate as the role's ACL user ({service}-agent-{region}, …): docs/stats.md
    tls_ca_file: str | None = None

    @model_validator(mode="after")
    def _one_source(self) -> Redis:
        if self.password_env and self.password_file:
            raise ValueError("give password_env or password_file, not both")
        return self


class Controller(Strict):
    dry_run: bool = False
    lease_ttl: Duration = 15.0
    metrics_port: int | None = Field(default=None, ge=0, le=65535)


class Policy(Strict):
    version: Annotated[Literal[1], BeforeValidator(check_version)]
    service: Name
    redis: Redis = Redis.model_construct()
    probe: Probe = Probe.model_construct()
    models: list[ModelSpec] = Field(min_length=1)
    regions: dict[str, Region] = Field(min_length=1)
    slo: Slo = Slo.model_construct()
    windows: Windows = Windows.model_construct()
    trip: Trip = Trip.model_construct()
    recover: Recover = Recover.model_construct()
    ramp: Ramp = Ramp.model_construct()
    guards: Guards = Guards.model_construct()
    dns: Dns
    controller: Controller = Controller.model_construct()
    capacity: CapacityFields | None = None  # live capacity for every region (docs/capacity.md)

    @model_validator(mode="after")
    def _cross_checks(self) -> Policy:
        """Every check across fields at once (policy_checks.py); the loader maps each to its line."""
        from trafficd.policy import checks as policy_checks  # it imports this module: a lazy import keeps the two apart

        problems = policy_checks.errors(self)
        if problems:
            raise FieldProblems(problems)
        return self

    # ---- helpers used across the daemons

    @property
    def region_names(self) -> list[str]:
        return list(self.regions)

    def set_identifier(self, region: str) -> str:
        return self.regions[region].dns.set_identifier or region

    def capacity_for(self, region: str, worker: str | None = None) -> Capacity | None:
        """Live-capacity settings of `region`'s `worker` (worker over region over top level); None: declared only."""
        r = self.regions[region]
        listed = next((w.capacity for w in r.workers if w.name == worker), None)
        try:
            return resolve_capacity(self.capacity, r.capacity, listed)
        except ValueError:  # refused at load (checks.py); never reached for a loaded policy
            return None

    def models_for(self, region: str) -> list[ModelSpec]:
        return self.regions[region].models or self.models

    def deadlines_for(self, region: str, model: str) -> Deadlines:
        """Policy deadlines, overridden by the region's, then by the model's."""
        fields = ("connect", "first_token", "gap", "total")
        merged = {k: getattr(self.probe.deadlines, k) for k in fields}
        overrides = [self.regions[region].deadlines]
        overrides += [m.deadlines for m in self.models_for(region) if m.name == model]
        for o in overrides:
            merged.update({k: getattr(o, k) for k in fields if getattr(o, k) is not None})
        return self.probe.deadlines.model_copy(update=merged)

    def ask_for(self, region: str, model: str, worker_api: str | None = None) -> Ask:
        """What the probe of (worker, model) in `region` asks: the model's settings, the worker's API, defaults."""
        spec = next((m for m in self.models_for(region) if m.name == model), None)
        return Ask.resolve(self.probe, spec, worker_api)

    @property
    def slo_threshold_ms(self) -> float:
        return self.slo.total_p99 * 1000.0

    @property
    def ttft_threshold_ms(self) -> float | None:
        return None if self.slo.ttft_p99 is None else self.slo.ttft_p99 * 1000.0


def effective_sha256(policy: Policy) -> str:
    """sha256 of the effective policy (defaults filled in, canonical JSON): comments and layout don't change it."""
    canonical = json.dumps(policy.model_dump(mode="json"), sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()


@dataclass(frozen=True, slots=True)
class LoadedPolicy:
    policy: Policy
    path: str
    sha256: str  # of the file's bytes: exactly which file, for audits
    warnings: tuple[PolicyProblem, ...] = ()  # legal but probably not meant (policy_checks.warnings)
    effective_sha256: str = field(default="", compare=False)  # computed from `policy` when not given

    def __post_init__(self) -> None:
        if not self.effective_sha256:
            object.__setattr__(self, "effective_sha256", effective_sha256(self.policy))

    @property
    def hash(self) -> str:
        """What every decision logs: 12 hex of the effective policy's sha256 (a comment-only edit keeps it)."""
        return self.effective_sha256[:12]


def parse_policy(text: str, path: str = "<policy>") -> LoadedPolicy:
    """Validate a policy text. Raises `PolicyError` with every problem found, in file order."""
    doc = read_yaml(text, path)
    if not isinstance(doc.data, dict):
        problem = doc.problem((), "the top level must be a mapping of keys to values, starting with 'version: 1'")
        raise PolicyError([problem])
    secrets = find_inline_secrets(doc, Policy)
    problems = doc.duplicates + [p for _, p in secrets]
    try:
        policy = Policy.model_validate(doc.data)
    except ValidationError as exc:
        problems += problems_from(exc, doc, Policy, skip={loc for loc, _ in secrets})
        raise PolicyError(sort_problems(problems)) from None
    if problems:
        raise PolicyError(sort_problems(problems))
    from trafficd.policy import checks as policy_checks  # it imports this module

    warnings = sort_problems([doc.problem(loc, msg) for loc, msg in policy_checks.warnings(policy)])
    sha = hashlib.sha256(text.encode()).hexdigest()
    return LoadedPolicy(policy=policy, path=path, sha256=sha, warnings=tuple(warnings))


def load_policy(path: str | Path) -> LoadedPolicy:
    """Read and validate a policy file: refused when group- or world-writable or over MAX_BYTES (load.py)."""
    p = Path(path)
    try:
        text = read_policy_text(p)
    except OSError as exc:
        raise PolicyError([PolicyProblem(str(p), "", f"cannot read the file: {exc.strerror}")]) from None
    except UnicodeDecodeError as exc:
        raise PolicyError([PolicyProblem(str(p), "", f"not UTF-8 text (byte {exc.start})")]) from None
    return parse_policy(text, str(p))
