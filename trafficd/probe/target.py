"""What the prober probes and what it returns: `Target` (one series), `series_target`, `ProbeResult`."""

from __future__ import annotations

from dataclasses import dataclass, field

from trafficd.errors import ConfigError
from trafficd.model import Sample
from trafficd.policy.schema import Ask, Deadlines, Policy
from trafficd.probe.discovery import WorkerRef


class ProbeConfigError(ConfigError):
    """The prober cannot be set up (e.g. the CA file cannot be read): a configuration error, not a sample."""


@dataclass(frozen=True, slots=True)
class Target:
    """One series to probe: a worker (URL, optional IP to connect to), one model, and what to ask it."""

    region: str
    worker: str
    model: str
    url: str  # base URL (with or without /v1) or the API's full endpoint URL
    address: str | None = None  # connect here; TLS still verifies the URL's host name
    deadlines: Deadlines = field(default_factory=Deadlines)
    ask: Ask | None = None  # API, lengths, answer rules; None: the prober's `probe` section defaults


def series_target(policy: Policy, region: str, worker: WorkerRef, model: str) -> Target:
    """The target of one series: the worker, the model, their deadlines and what to ask (API, lengths, rules)."""
    return Target(
        region=region,
        worker=worker.name,
        model=model,
        url=worker.url,
        address=worker.address,
        deadlines=policy.deadlines_for(region, model),
        ask=policy.ask_for(region, model, worker.api),
    )


@dataclass(frozen=True, slots=True)
class ProbeResult:
    sample: Sample
    detail: str = ""  # why it failed, for humans (`trafficd probe`, logs); never the API key or the prompt
    url: str = ""  # the URL requested
    server_message: str = ""  # the server's error message, scrubbed, ≤ 200 characters
