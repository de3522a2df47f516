"""Does each worker serve the models the policy probes? Asked of its model list (`GET /v1/models`, Ollama's
`/api/tags`, TGI's `/info`), because many servers answer any model name (llama.cpp does) and a mistyped name
would look healthy.

- The agent calls `warn_unlisted_models` at start, after each discovery refresh and when the policy changes its
  workers or models: a model a worker does not list is an `agent.model_missing` warning; a list that cannot be
  read is `agent.model_list_failed` (the probes still run: the list is evidence, not a gate).
- `check_models(policy, …)` is the same check for preflight (`trafficd check`): it returns one `ModelCheck` per
  (region, worker, model) of the listed and discovered workers.
"""

from __future__ import annotations

import asyncio
import json
import ssl
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Literal

import aiohttp

from trafficd.policy.schema import Policy
from trafficd.probe.apis import dialect
from trafficd.probe.credentials import Secret
from trafficd.probe.discovery import Discovery, DiscoveryError, WorkerRef
from trafficd.probe.prober import Prober, read_some, status_detail
from trafficd.probe.scrub import server_message
from trafficd.runtime.logs import get_logger

log = get_logger("agent")

LISTED_SHOWN = 20  # names of listed models quoted in a warning


@dataclass(frozen=True, slots=True)
class ModelCheck:
    region: str
    worker: str
    model: str
    api: str
    status: Literal["listed", "missing", "unchecked"]
    url: str = ""  # the model-list URL asked
    detail: str = ""  # what the worker lists (missing) or why the list could not be read (unchecked)

    @property
    def ok(self) -> bool:
        return self.status == "listed"


MODEL_LIST_BYTES = 1 << 20


@dataclass(frozen=True, slots=True)
class ModelList:
    """A worker's model list: the names (None when it could not be read), the URL asked, why it failed."""

    models: set[str] | None
    url: str
    error: str = ""


async def list_models(prober: Prober, url: str, address: str | None, api: str) -> ModelList:
    """The models a worker lists (`GET /v1/models` or the API's equivalent); a worker's fault is an error."""
    d = dialect(api)
    try:
        ep = prober.endpoint(url, address, d, models=True)
    except ValueError as exc:
        return ModelList(None, url, prober.describe(exc))
    if ep is None:
        return ModelList(None, url, f"the {api} API has no model list")
    headers = {k: v for k, v in prober.headers(d, ep.host_header).items() if k != "Content-Type"}
    try:
        async with (
            asyncio.timeout(prober.cfg.deadlines.connect + prober.cfg.deadlines.first_token),
            prober.session.get(ep.url, headers=headers, server_hostname=ep.server_name, allow_redirects=False) as resp,
        ):
            body = await read_some(resp, within_s=prober.cfg.deadlines.first_token, limit=MODEL_LIST_BYTES)
    except TimeoutError:
        return ModelList(None, ep.shown, "timed out")
    except (aiohttp.ClientError, ssl.SSLError, ssl.CertificateError, OSError) as exc:
        return ModelList(None, ep.shown, prober.describe(exc))
    if resp.status != 200:
        return ModelList(None, ep.shown, status_detail(resp, server_message(body, prober.secret, "")))
    try:
        listed = d.model_ids(json.loads(body.decode("utf-8", errors="replace")))
    except ValueError:
        listed = None
    return ModelList(listed, ep.shown, "" if listed is not None else "the model list is not in the API's shape")


async def check_workers(prober: Prober, policy: Policy, region: str, workers: Sequence[WorkerRef]) -> list[ModelCheck]:
    """One check per (worker, model) of `region`; each worker's list is fetched once per API."""
    out: list[ModelCheck] = []
    for w in workers:
        lists: dict[str, ModelList] = {}
        for m in policy.models_for(region):
            api = policy.ask_for(region, m.name, w.api).api
            if api not in lists:
                lists[api] = await list_models(prober, w.url, w.address, api)
            out.append(_verdict(region, w.name, m.name, api, lists[api]))
    return out


def _verdict(region: str, worker: str, model: str, api: str, found: ModelList) -> ModelCheck:
    if found.models is None:
        return ModelCheck(region, worker, model, api, "unchecked", found.url, found.error)
    if dialect(api).serves(found.models, model):
        return ModelCheck(region, worker, model, api, "listed", found.url)
    shown = sorted(found.models)[:LISTED_SHOWN]
    return ModelCheck(
        region, worker, model, api, "missing", found.url, f"the worker lists {', '.join(shown) or 'none'}"
    )


def log_checks(checks: Iterable[ModelCheck], warned: set[tuple[str, ...]] | None = None) -> None:
    """`agent.model_missing` per model a worker does not list; `agent.model_list_failed` once per worker and API.

    With `warned` (the agent's memory between checks) each problem is logged once per episode: a later check
    that finds it again says nothing, and one that finds it gone logs `agent.model_listed`."""
    failed: set[tuple[str, str]] = set()
    now: set[tuple[str, ...]] = set()
    for c in checks:
        key = (c.status, c.region, c.worker, c.model if c.status == "missing" else "", c.api)
        if c.status == "missing":
            now.add(key)
            if warned is None or key not in warned:
                log.warning(
                    "agent.model_missing",
                    region=c.region,
                    worker=c.worker,
                    model=c.model,
                    api=c.api,
                    url=c.url,
                    detail=c.detail,
                )
        elif c.status == "unchecked" and (c.worker, c.api) not in failed:
            failed.add((c.worker, c.api))
            now.add(key)
            if warned is None or key not in warned:
                log.warning(
                    "agent.model_list_failed", region=c.region, worker=c.worker, api=c.api, url=c.url, error=c.detail
                )
    if warned is not None:
        for _, region, worker, model, api in sorted(k for k in warned - now if k[0] == "missing"):
            log.info("agent.model_listed", region=region, worker=worker, model=model, api=api)
        warned.clear()
        warned.update(now)


async def warn_unlisted_models(
    prober: Prober,
    policy: Policy,
    region: str,
    workers: Sequence[WorkerRef],
    warned: set[tuple[str, ...]] | None = None,
) -> None:
    """The agent's check: log what is missing (once per episode with `warned`); never raises (a failed check
    must not stop probing)."""
    try:
        log_checks(await check_workers(prober, policy, region, workers), warned)
    except Exception as exc:  # e.g. the prober was closed by a reload mid-check
        log.warning("agent.model_list_failed", region=region, error=f"{type(exc).__name__}: {exc}")


async def check_models(
    policy: Policy, regions: Iterable[str] | None = None, *, secret: Secret | None = None
) -> list[ModelCheck]:
    """Preflight: every (region, worker, model) of the policy — listed workers and, with discovery, the ones DNS
    gives now. A discovery that fails is one `unchecked` entry with worker `(discovery)`."""
    out: list[ModelCheck] = []
    async with Prober(policy.probe, secret=secret) as prober:
        for region in regions if regions is not None else policy.region_names:
            cfg = policy.regions[region]
            workers = [WorkerRef.from_policy(w) for w in cfg.workers]
            if cfg.discovery is not None:
                try:
                    workers += await Discovery(cfg.discovery, region).resolve()
                except DiscoveryError as exc:
                    api = cfg.discovery.api or policy.probe.api
                    out += [
                        ModelCheck(region, "(discovery)", m.name, api, "unchecked", cfg.discovery.name, str(exc))
                        for m in policy.models_for(region)
                    ]
            out += await check_workers(prober, policy, region, workers)
    return out
