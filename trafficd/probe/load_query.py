"""A region's load from a Prometheus query named in the policy (`capacity.load_query`), instead of the sum of its
workers' completed-request rates: for traffic the workers' counters do not see whole (a gateway in front, several
services sharing a fleet).

The agent sends the query to Prometheus' HTTP API (`GET {url}/api/v1/query?query=…`, `{region}` in the query
replaced by the region's name) and takes the result as requests/s: a scalar, or the sum of an instant vector's
samples. Anything else (an error, a matrix, no sample, a value that is not a finite number ≥ 0) is a
`LoadQueryError` with the reason; the agent logs it once per episode and the region keeps its workers' own load.
"""

from __future__ import annotations

import json
import math
from typing import Any

import aiohttp

MAX_BODY_BYTES = 1024 * 1024


class LoadQueryError(ValueError):
    """The query's answer cannot be used as the region's load."""


def query_text(query: str, region: str) -> str:
    return query.replace("{region}", region)


def _values(data: dict[str, Any]) -> list[Any]:
    kind, result = data.get("resultType"), data.get("result")
    if kind == "scalar" and isinstance(result, list) and len(result) == 2:
        return [result[1]]
    if kind == "vector" and isinstance(result, list) and result:
        return [s.get("value", [None, None])[1] for s in result if isinstance(s, dict)]
    raise LoadQueryError(f"the query gave no sample (result type {kind!r}); it must give a scalar or a vector")


def load_from_answer(body: str) -> float:
    """Requests/s from a Prometheus `/api/v1/query` answer (JSON): a scalar, or an instant vector summed."""
    try:
        doc: Any = json.loads(body)
    except ValueError:
        raise LoadQueryError("the answer is not JSON") from None
    if not isinstance(doc, dict) or doc.get("status") != "success":
        error = doc.get("error") if isinstance(doc, dict) else None
        raise LoadQueryError(f"Prometheus answered an error: {str(error)[:200]}")
    try:
        total = sum(float(v) for v in _values(doc.get("data") or {}))
    except (TypeError, ValueError) as exc:
        if isinstance(exc, LoadQueryError):
            raise
        raise LoadQueryError("a sample's value is not a number") from None
    if not math.isfinite(total) or total < 0:
        raise LoadQueryError(f"the load must be a finite number ≥ 0 requests/s (got {total})")
    return total


async def fetch_load(session: aiohttp.ClientSession, url: str, query: str, timeout_s: float) -> float:
    """Run the query against Prometheus at `url`; its answer as requests/s (LoadQueryError, aiohttp errors)."""
    endpoint = url.rstrip("/") + "/api/v1/query"
    timeout = aiohttp.ClientTimeout(total=timeout_s)
    async with session.get(endpoint, params={"query": query}, timeout=timeout, allow_redirects=False) as resp:
        body = await resp.content.read(MAX_BODY_BYTES + 1)
        if len(body) > MAX_BODY_BYTES:
            raise LoadQueryError(f"the answer is larger than {MAX_BODY_BYTES} bytes")
        if resp.status != 200 and not body.startswith(b"{"):
            raise LoadQueryError(f"HTTP {resp.status}")
        return load_from_answer(body.decode("utf-8", errors="replace"))
