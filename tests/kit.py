"""The shared test kit: one policy builder and one way to wait on a condition with a deadline.

- `policy_doc(...)` is a valid policy as a plain dict (three regions by default), with any section deep-merged
  over it; `as_policy`, `as_loaded` and `write_policy` turn it into a `Policy`, a `LoadedPolicy` (with line
  numbers, through the real YAML loader) or a file. Area kits (judgekit, probekit, dns_fixtures, ctlkit) only
  choose their own defaults on top of it.
- `serve(app)` runs an aiohttp application on a free loopback port: its runner (to clean up) and its base URL.
- `eventually(...)` / `eventually_async(...)` poll a predicate until it returns something truthy and return that
  value; they fail the test with what was awaited once the deadline passes. Tests never sleep-and-hope.
"""

from __future__ import annotations

import asyncio
import contextlib
import copy
import inspect
import json
import time
from collections.abc import Awaitable, Callable, Mapping
from pathlib import Path
from typing import Any, TypeVar, overload

import yaml

from trafficd.policy.schema import LoadedPolicy, Policy, parse_policy

T = TypeVar("T")

REGIONS = ("us-east", "eu-west", "ap-southeast")
AWS_REGIONS = {"us-east": "us-east-1", "eu-west": "eu-west-1", "ap-southeast": "ap-southeast-1"}


def merge(dst: dict[str, Any], src: Mapping[str, Any]) -> dict[str, Any]:
    """Deep-merge `src` into `dst` (mappings merge, everything else replaces) and return `dst`."""
    for k, v in src.items():
        if isinstance(v, Mapping) and isinstance(dst.get(k), dict):
            merge(dst[k], v)
        else:
            dst[k] = copy.deepcopy(v)
    return dst


def region_doc(
    name: str,
    *,
    worker_url: str = "http://127.0.0.1:1",
    worker: str = "w",
    endpoint: str | None = None,
    aws_region: str | None = None,
    neighbours: list[str] | None = None,
) -> dict[str, Any]:
    """One region: a single worker, a DNS endpoint `<name>.lb.example.com`, optional neighbours."""
    doc: dict[str, Any] = {
        "workers": [{"name": worker, "url": worker_url}],
        "dns": {
            "endpoint": endpoint or f"{name}.lb.example.com",
            "aws_region": aws_region or AWS_REGIONS.get(name, "us-east-1"),
        },
    }
    if neighbours is not None:
        doc["neighbours"] = neighbours
    return doc


def policy_doc(
    regions: Mapping[str, Mapping[str, Any]] | None = None,
    *,
    service: str = "svc",
    redis: Mapping[str, Any] | None = None,
    **sections: Any,
) -> dict[str, Any]:
    """A valid policy document; `regions` defaults to REGIONS with each other as neighbours."""
    doc: dict[str, Any] = {
        "version": 1,
        "service": service,
        "models": [{"name": "m"}],
        "regions": {
            name: dict(cfg)
            for name, cfg in (
                regions or {r: region_doc(r, neighbours=[x for x in REGIONS if x != r]) for r in REGIONS}
            ).items()
        },
        "dns": {"zone_id": "Z1", "record_name": "api.example.com."},
        # the tests' workers listen on http://127.0.0.1 (some with an API key): switched on here, never by default
        "probe": {"targets": {"allow_loopback": True, "allow_cleartext_api_key": True}},
    }
    if redis is not None:
        doc["redis"] = dict(redis)
    return merge(doc, sections)


def as_policy(doc: Mapping[str, Any]) -> Policy:
    """The validated `Policy` of a document (no file, no line numbers)."""
    return Policy.model_validate(copy.deepcopy(dict(doc)))


def as_loaded(doc: Mapping[str, Any], source: str = "test-policy.yaml") -> LoadedPolicy:
    """The document through the real YAML loader, as a daemon would load it."""
    return parse_policy(yaml.safe_dump(dict(doc), sort_keys=False), source)


def write_policy(path: Path, doc: Mapping[str, Any]) -> Path:
    """Write the document as YAML to `path` (a file name, or a directory to put `policy.yaml` in)."""
    if path.is_dir():
        path = path / "policy.yaml"
    path.write_text(yaml.safe_dump(dict(doc), sort_keys=False))
    return path


def eventually(predicate: Callable[[], T | None], what: str, *, timeout_s: float = 10.0, interval_s: float = 0.05) -> T:
    """Poll `predicate` until it returns a truthy value and return it; fail after `timeout_s` naming `what`."""
    deadline = time.monotonic() + timeout_s
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout_s}s waiting for {what}")
        time.sleep(interval_s)


# Two signatures so that T is the value awaited (an async predicate) or returned (a plain one); one signature over
# `T | Awaitable[T]` leaves mypy no single T for a coroutine. A predicate's None is never returned (not truthy).
@overload
async def eventually_async(
    predicate: Callable[[], Awaitable[T | None]], what: str, *, timeout_s: float = 10.0, interval_s: float = 0.05
) -> T: ...


@overload
async def eventually_async(
    predicate: Callable[[], T | None], what: str, *, timeout_s: float = 10.0, interval_s: float = 0.05
) -> T: ...


async def eventually_async(
    predicate: Callable[[], T | Awaitable[T | None] | None],
    what: str,
    *,
    timeout_s: float = 10.0,
    interval_s: float = 0.05,
) -> T:
    """`eventually` for the event loop: `predicate` may be a plain or an async callable."""
    deadline = time.monotonic() + timeout_s
    while True:
        value = predicate()
        if inspect.isawaitable(value):
            value = await value
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout_s}s waiting for {what}")
        await asyncio.sleep(interval_s)


def two_region_doc(
    redis_url: str, key_prefix: str, *, models: tuple[str, ...] = ("m1",), **sections: Any
) -> dict[str, Any]:
    """The store and stats tests' policy: r1 with workers w1 and w2, r2 with w3, one-second slices."""
    return policy_doc(
        {
            "r1": {
                "workers": [{"name": "w1", "url": "http://127.0.0.1:9"}, {"name": "w2", "url": "http://127.0.0.1:9"}],
                "dns": {"endpoint": "r1.example.com", "aws_region": "us-east-1"},
            },
            "r2": {
                "workers": [{"name": "w3", "url": "http://127.0.0.1:9"}],
                "dns": {"endpoint": "r2.example.com", "aws_region": "eu-west-1"},
            },
        },
        redis={"url": redis_url, "key_prefix": key_prefix},
        models=[{"name": m} for m in models],
        **sections,
    )


def log_events(path: Path) -> list[dict[str, Any]]:
    """The JSON events of a daemon's log file (none yet if it does not exist; a torn last line is skipped)."""
    out = []
    for line in path.read_bytes().splitlines() if path.exists() else []:
        with contextlib.suppress(ValueError):
            out.append(json.loads(line))
    return out


async def serve(app: Any, **runner_options: Any) -> tuple[Any, str]:
    """Run an aiohttp `app` on a free loopback port: (its AppRunner, to clean up; "http://127.0.0.1:PORT")."""
    from aiohttp import web

    runner = web.AppRunner(app, **runner_options)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    return runner, f"http://127.0.0.1:{port}"
