"""Reading a worker's answer when it is not a good stream: the failure carried out of a probe, the reason of an
HTTP status, the detail shown for it, and a bounded read of an error body."""

from __future__ import annotations

import asyncio
import contextlib

import aiohttp

from trafficd.policy.schema import Ask
from trafficd.probe.scrub import BODY_BYTES
from trafficd.probe.timing import Run


class Failed(Exception):
    """A probe failed for a reason other than a deadline: the reason code, the detail, the server's message."""

    def __init__(self, reason: str, detail: str, message: str = "") -> None:
        super().__init__(detail)
        self.reason = reason
        self.detail = detail
        self.message = message


def reason_for_status(status: int) -> str:
    if status == 429:
        return "http_429"
    if status >= 500:
        return "http_5xx"
    return "http_4xx"  # 4xx, and 1xx/3xx: the request as configured cannot be served


def status_detail(resp: aiohttp.ClientResponse, message: str) -> str:
    text = f"HTTP {resp.status}"
    if 300 <= resp.status < 400:
        text += f" redirect to {resp.headers.get('Location', '(no Location)')} (not followed)"
    return f"{text}: {message}" if message else text


def empty_detail(run: Run, ask: Ask) -> str:
    if not run.reasoning:
        return "the answer had no content"
    return (
        f"the answer had no content after {run.reasoning} reasoning tokens (max_tokens {ask.max_tokens}): "
        "mark the model `reasoning: true` or raise its max_tokens"
    )


async def read_some(resp: aiohttp.ClientResponse, within_s: float = 1.0, limit: int = BODY_BYTES) -> bytes:
    """Up to `limit` bytes of a (non-stream) body, for its error message; what arrived within `within_s`."""
    body = b""
    with contextlib.suppress(TimeoutError, aiohttp.ClientError, OSError):
        async with asyncio.timeout(within_s):
            while len(body) < limit:
                data = await resp.content.readany()
                if not data:
                    break
                body += data
    return body[:limit]
