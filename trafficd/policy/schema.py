"""The SLO policy: a strict, versioned schema (pydantic) and its loader.

Durations are written `3s`, `250ms`, `5m`, `1h`; fractions as percentages `75%`. Unknown keys are rejected,
numbers given as strings are rejected (strict mode), and cross-field rules are checked after the fields.
Secrets are never written here: only the name of an environment variable or a credential file.

`load_policy(path)` returns a `LoadedPolicy` or raises `PolicyError` carrying every problem found, each with the
file, line, column, field path and reason (YAML with positions in `policy_load.py`, messages in `policy_errors.py`,
checks across fields in `policy_checks.py`). See docs/policy.md for every field, its default, and the decisions
behind the checks.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
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
from trafficd.policy.values import SCHEMA_VERSION as SCHEMA_VERSION
from trafficd.policy.values import (
    AwsRegion,
    Concurrency,
    Endpoint,
    EnvName,
    HostName,
    KeyPrefix,
    Name,
    ShareBelowSlo,
    ZoneId,
    check_redis_url,
    check_url,
    check_version,
)
from trafficd.policy.values import Duration as Duration
from trafficd.policy.values import Percent as Percent
from trafficd.policy.values import check_name as check_name
from trafficd.policy.values import format_duration as format_duration
from trafficd.policy.values import parse_duration as parse_duration
from trafficd.policy.values import parse_percent as parse_percent


class Strict(BaseModel):
    # defer_build: a model's validator is built when first used, so importing this module builds none and the
    # first `Policy` validation builds one for the whole tree (not one per nested model, each holding copies of its
    # children): a few ms off every command's start. Model defaults are `X.model_construct()` (not `X()`, which
    # would build X at import); for defaults the two are the same instance: field defaults, no fields set.
    model_config = ConfigDict(extra="forbid", frozen=True, strict=True, defer_build=True)


# ---------------------------------------------------------------- probing


class Deadlines(Strict):
    """A probe that hits one of these is a failed sample whose latency is the deadline."""

    connect: Duration = 3.0
    first_token: Duration = 10.0
    gap: Duration = 10.0
    total: Duration = 30.0


class DeadlinesOverride(Strict):
    connect: Duration | None = None
    first_token: Duration | None = None
    gap: Duration | None = None
    total: Duration | None = None


class Auth(Strict):
    """Where the workers' API key comes from: an environment variable or a (systemd) credential file."""

    api_key_env: EnvName | None = None
    api_key_file: str | None = None
    header: str | None = None  # default: the API's (Authorization; x-api-key for anthropic-messages)
    scheme: str | None = None  # default: the API's (Bearer; none for anthropic-messages); "" for none

    @model_validator(mode="after")
    def _one_source(self) -> Auth:
        if self.api_key_env and self.api_key_file:
            raise ValueError("give api_key_env or api_key_file, not both")
        return self


class Tls(Strict):
    verify: bool = True
    ca_file: str | None = None


# The streaming APIs the probe speaks (trafficd/probe/apis/: one module each; a test keeps the two lists equal).
ApiName = Literal[
    "openai-chat", "openai-completions", "openai-responses", "anthropic-messages", "tgi-generate", "ollama-chat"
]
TtftFrom = Literal["answer", "reasoning"]
DEFAULT_MAX_TOKENS = 16
REASONING_MAX_TOKENS = 1024  # a reasoning model's default: room to think and still reach the answer
MaxTokens = Annotated[int, Field(ge=1, le=32768)]
PromptTokens = Annotated[int, Field(ge=1, le=200_000)]


class Targets(Strict):
    """Which addresses may be probed (policy/targets.py): metadata and link-local never; these only when set."""

    allow_loopback: bool = False  # 127.0.0.0/8, ::1, localhost (tests, the demo)
    allow_private: bool = False  # 10/8, 172.16/12, 192.168/16, 100.64/10, fc00::/7 (workers on an internal network)
    allow_cleartext_api_key: bool = False  # send the API key over http:// (a trusted network only)


class Probe(Strict):
    interval: Duration = 0.25  # 4 probes/s per series: 2 % over drained in ~4 min, 1 false trip / 90 d (judge.md)
    jitter: Percent = 0.2  # each probe is delayed by a random share of the interval up to this
    # `auto`: sized from series × measured mean probe duration ÷ interval and adapted (probe/schedule.py),
    # at most max_concurrency; a number: fixed (the agent only warns when it falls behind).
    concurrency: Concurrency = "auto"
    max_concurrency: int = Field(default=256, ge=1, le=1024)
    api: ApiName = "openai-chat"  # default API of every worker and model (each may set its own)
    max_tokens: MaxTokens | None = None  # default 16, or 1024 for models marked `reasoning: true`
    prompt: str = "Reply with the single word: ok"
    prompt_tokens: PromptTokens | None = None  # pad the prompt to about this many tokens (default: no padding)
    deadlines: Deadlines = Deadlines.model_construct()
    auth: Auth = Auth.model_construct()
    tls: Tls = Tls.model_construct()
    read_buffer_bytes: int = Field(default=65536, ge=1024, le=16 * 1024 * 1024)
    targets: Targets = Targets.model_construct()

    @property
    def max_in_flight(self) -> int:
        """The most probes ever in flight: the fixed concurrency, or `max_concurrency` when it is `auto`."""
        return self.max_concurrency if self.concurrency == "auto" else self.concurrency


class ModelSpec(Strict):
    name: str = Field(min_length=1)
    deadlines: DeadlinesOverride = DeadlinesOverride.model_construct()
    api: ApiName | None = None  # this model's API on every worker (wins over the worker's and probe.api)
    reasoning: bool | None = None  # a reasoning model: max_tokens defaults to 1024 so it reaches its answer
    max_tokens: MaxTokens | None = None  # answer length (default: probe.max_tokens)
    prompt_tokens: PromptTokens | None = None  # prompt length in approximate tokens (default: probe.prompt_tokens)
    allow_empty: bool | None = None  # true: an answer without content is ok (default: it fails, empty_answer)
    ttft_from: TtftFrom | None = None  # TTFT ends at the first `answer` token (default) or `reasoning` token


class Worker(Strict):
    name: Name
    url: Annotated[str, AfterValidator(check_url)]  # base URL (with or without /v1) or the full endpoint URL
    address: str | None = None  # optional IP to connect to while TLS verifies the URL's host name
    api: ApiName | None = None  # the API this worker speaks (default: probe.api)
    capacity: CapacityFields | None = None  # this worker's live-capacity settings (policy/capacity.py)


class Ask(Strict):
    """What one series' probe asks, resolved from the policy (`Policy.ask_for`): API, lengths, answer rules."""

    api: ApiName = "openai-chat"
    max_tokens: MaxTokens = DEFAULT_MAX_TOKENS
    prompt_tokens: PromptTokens | None = None
    allow_empty: bool = False
    ttft_from: TtftFrom = "answer"

    @classmethod
    def resolve(cls, probe: Probe, model: ModelSpec | None, worker_api: str | None = None) -> Ask:
        """Model settings win over the worker's API, which wins over the probe section's defaults."""
        m = model or ModelSpec(name="-")
        default_tokens = probe.max_tokens or DEFAULT_MAX_TOKENS
        if m.reasoning:
            default_tokens = max(default_tokens, REASONING_MAX_TOKENS)
        return cls.model_validate(
            {
                "api": m.api or worker_api or probe.api,
                "max_tokens": m.max_tokens or default_tokens,
                "prompt_tokens": m.prompt_tokens or probe.prompt_tokens,
                "allow_empty": bool(m.allow_empty),
                "ttft_from": m.ttft_from or "answer",
            }
        )


class Discovery(Strict):
    """Discover a region's workers from DNS (SRV, or A/AAAA with a fixed port)."""

    name: str
    type: Literal["SRV", "A", "AAAA"] = "SRV"
    scheme: Literal["http", "https"] = "https"
    port: int | None = Field(default=None, ge=1, le=65535)
    refresh: Duration = 30.0
    nameserver: str | None = None  # host[:port]; default: the system resolver
    api: ApiName | None = None  # the API the discovered workers speak (default: probe.api)

    @model_validator(mode="after")
    def _port_for_addresses(self) -> Discovery:
        if self.type != "SRV" and self.port is None:
            raise ValueError(f"discovery of type {self.type} needs a port (SRV records carry their own)")
        return self


class RegionDns(Strict):
    """This region's endpoint in Route 53."""

    endpoint: Endpoint  # CNAME target (host name) or IP address (A/AAAA) that serves this region's users
    aws_region: AwsRegion  # latency routing region, e.g. us-east-1 (checked against botocore's endpoint data)
    set_identifier: str | None = None  # default: the region name


class Region(Strict):
    workers: list[Worker] = []
    discovery: Discovery | None = None
    models: list[ModelSpec] | None = None  # default: the policy's models
    deadlines: DeadlinesOverride = DeadlinesOverride.model_construct()
    dns: RegionDns = Field(description="every region must be mapped to its Route 53 records (endpoint, aws_region)")
    neighbours: list[str] = []  # spill-over preference, first = preferred
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
    never_drain: list[str] = []  # regions trafficd must never drain (on-call can still drain them by hand)


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
