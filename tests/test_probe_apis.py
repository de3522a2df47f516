"""Every supported API end to end: the real Prober against the fake worker (a real aiohttp server speaking each
API), with TTFT against its scripted delay, reasoning counted apart, empty answers, the model lists and the
agent's model check."""

from __future__ import annotations

import asyncio
import json
import random
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from probekit import FakeSink, make_policy, wait_until
from structlog.testing import capture_logs
from test_discovery import TinyDns

from trafficd.dev.fakeworker import Behaviour, make_app
from trafficd.policy.schema import Ask, Probe
from trafficd.probe.agent import run_agent
from trafficd.probe.apis import DIALECTS
from trafficd.probe.credentials import Secret
from trafficd.probe.discovery import WorkerRef
from trafficd.probe.models import check_models, check_workers, list_models
from trafficd.probe.prober import Prober, ProbeResult, Target

APIS = sorted(DIALECTS)


class Fake:
    def __init__(self, behaviour: Behaviour) -> None:
        self.app = make_app(behaviour)
        self.runner = web.AppRunner(self.app, access_log=None, shutdown_timeout=0.5)
        self.port = 0
        self.headers: list[dict[str, str]] = []

        @web.middleware
        async def record(request: web.Request, handler: Any) -> web.StreamResponse:
            self.headers.append(dict(request.headers))
            return await handler(request)  # type: ignore[no-any-return]

        self.app.middlewares.append(record)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    async def start(self) -> Fake:
        await self.runner.setup()
        site = web.TCPSite(self.runner, "127.0.0.1", 0)
        await site.start()
        self.port = self.runner.addresses[0][1]
        return self


@pytest.fixture
async def fake() -> AsyncIterator[Fake]:
    f = await Fake(Behaviour(ttft_ms=150.0, token_ms=10.0, tokens=4, jitter=0.0, models=["m1"])).start()
    yield f
    await f.runner.cleanup()


async def probe(url: str, api: str, model: str = "m1", secret: Secret | None = None, **ask: Any) -> ProbeResult:
    async with Prober(Probe(), secret=secret) as p:
        return await p.probe_detailed(Target("r1", "w1", model, url, ask=Ask(api=api, **ask)))  # type: ignore[arg-type]


async def fake_with(**behaviour: Any) -> Fake:
    return await Fake(Behaviour(**{"ttft_ms": 100.0, "token_ms": 5.0, "jitter": 0.0, **behaviour})).start()


@pytest.mark.parametrize("api", APIS)
async def test_each_api_is_probed_with_ttft_at_the_scripted_delay(fake: Fake, api: str) -> None:
    """Each API: ok, 4 answer tokens, TTFT ≥ the worker's 150 ms first-token delay and below the total."""
    r = await probe(fake.url, api)
    s = r.sample
    assert s.ok and s.reason is None and s.status == 200, r.detail
    assert s.tokens == 4 and s.ttft_ms is not None and 150.0 <= s.ttft_ms < s.total_ms


@pytest.mark.parametrize("api", ["openai-chat", "openai-responses", "anthropic-messages", "ollama-chat"])
async def test_reasoning_is_counted_apart_and_ttft_follows_the_policy(api: str) -> None:
    """Reasoning events are reasoning_tokens; TTFT ends at the answer, or at the first reasoning token if asked."""
    f = await fake_with(ttft_ms=100.0, token_ms=60.0, tokens=2, reasoning_tokens=3)
    try:
        answer = (await probe(f.url, api)).sample
        thinking = (await probe(f.url, api, ttft_from="reasoning")).sample
    finally:
        await f.runner.cleanup()
    assert answer.ok and answer.reasoning_tokens == 3 and answer.tokens == 2
    assert thinking.ok and thinking.reasoning_tokens == 3
    assert answer.ttft_ms is not None and thinking.ttft_ms is not None
    assert thinking.ttft_ms >= 100.0 and answer.ttft_ms >= 100.0 + 3 * 60.0 - 20.0 > thinking.ttft_ms


@pytest.mark.parametrize("api", APIS)
async def test_an_empty_answer_fails_unless_allowed(api: str) -> None:
    """A complete stream without answer text is empty_answer; with allow_empty it is ok."""
    f = await fake_with(tokens=0)
    try:
        empty = await probe(f.url, api)
        allowed = await probe(f.url, api, allow_empty=True)
    finally:
        await f.runner.cleanup()
    assert not empty.sample.ok and empty.sample.reason == "empty_answer" and empty.sample.ttft_ms is None
    assert "no content" in empty.detail and f.url in empty.detail
    assert allowed.sample.ok


async def test_reasoning_that_eats_max_tokens_is_empty_answer_with_a_hint() -> None:
    """A reasoning model cut off by max_tokens before answering fails empty_answer and says how to fix it."""
    f = await fake_with(tokens=4, reasoning_tokens=20)
    try:
        r = await probe(f.url, "openai-chat", max_tokens=16)
        big = await probe(f.url, "openai-chat", max_tokens=1024)
    finally:
        await f.runner.cleanup()
    assert r.sample.reason == "empty_answer" and r.sample.reasoning_tokens == 16
    assert "reasoning: true" in r.detail and "max_tokens 16" in r.detail
    assert big.sample.ok and big.sample.tokens == 4


async def test_anthropic_sends_x_api_key_and_version(fake: Fake) -> None:
    """Anthropic Messages sends the key as x-api-key (no Bearer) with anthropic-version; OpenAI as Bearer."""
    key = Secret("sk-ant-test-123")
    assert (await probe(fake.url + "/v1/", "anthropic-messages", secret=key)).sample.ok
    assert (await probe(fake.url, "openai-chat", secret=key)).sample.ok
    anthropic, openai = fake.headers[-2], fake.headers[-1]
    assert anthropic["x-api-key"] == "sk-ant-test-123" and anthropic["anthropic-version"] == "2023-06-01"
    assert "Authorization" not in anthropic and openai["Authorization"] == "Bearer sk-ant-test-123"


@pytest.mark.parametrize("api", APIS)
async def test_model_lists_of_each_api(fake: Fake, api: str) -> None:
    """Each API's model list is read; the listed model is found and another one is missing."""
    async with Prober(Probe()) as p:
        found = await list_models(p, fake.url, None, api)
        policy = make_policy([{"name": "w1", "url": fake.url}], models=["m1", "nope"], probe={"api": api}).policy
        checks = await check_workers(p, policy, "r1", [WorkerRef("w1", fake.url)])
    assert found.models is not None and "m1" in found.models
    status = {c.model: c.status for c in checks}
    assert status["m1"] == "listed"
    assert status["nope"] == "missing"


async def test_agent_warns_about_a_model_the_worker_does_not_list(fake: Fake) -> None:
    """The agent logs agent.model_missing (with the URL and what is listed) for a model the worker does not list,
    and agent.model_list_failed for a worker without a model list; probing goes on."""
    policy = make_policy(
        [{"name": "w1", "url": fake.url}, {"name": "w2", "url": f"{fake.url}/nowhere"}],
        probe={"interval": "200ms"},
        models=["m1", "typo-model"],
    )
    sink, stop = FakeSink(), asyncio.Event()
    with capture_logs() as logs:
        task = asyncio.create_task(run_agent(policy, "r1", stop=stop, agent_id="a", sink=sink, rng=random.Random(1)))
        await wait_until(lambda: any(e["event"] == "agent.model_list_failed" for e in logs), what="model checks")
        await wait_until(lambda: any(e["event"] == "agent.round_completed" for e in logs), what="a round")
        stop.set()
        await asyncio.wait_for(task, 10)
    missing = [e for e in logs if e["event"] == "agent.model_missing"]
    assert [(e["worker"], e["model"]) for e in missing] == [("w1", "typo-model")]
    assert missing[0]["log_level"] == "warning" and missing[0]["url"] == f"{fake.url}/v1/models"
    assert "m1" in missing[0]["detail"]
    failed = [e for e in logs if e["event"] == "agent.model_list_failed"]
    assert [e["worker"] for e in failed] == ["w2"] and "HTTP 404" in failed[0]["error"]
    assert failed[0]["url"] == f"{fake.url}/nowhere/v1/models"


async def test_agent_checks_models_again_after_each_discovery_refresh(fake: Fake) -> None:
    """With discovery, the model check runs after every refresh, and each problem is logged once per episode: a
    model the discovered worker does not list is warned about once across refreshes, and a later refresh that
    finds it listed logs agent.model_listed (a worker can gain or lose a model without the workers changing)."""
    dns_, ns = await start_dns()
    try:
        dns_.records[("w1.svc.test", "A")] = ["127.0.0.1"]
        dns_.records[("svc.test", "SRV")] = [f"10 5 {fake.port} w1.svc.test."]
        policy = make_policy(
            discovery={"name": "svc.test", "nameserver": ns, "scheme": "http", "refresh": "200ms"},
            probe={"interval": "100ms"},
            models=["m1", "gone"],
        )
        sink, stop = FakeSink(), asyncio.Event()
        with capture_logs() as logs:
            task = asyncio.create_task(run_agent(policy, "r1", stop=stop, sink=sink, rng=random.Random(2)))
            await wait_until(
                lambda: (
                    sum(e["event"] == "discovery.refreshed" for e in logs) >= 3
                    and any(e["event"] == "agent.model_missing" for e in logs)
                ),
                what="three refreshes and a warning",
            )
            async with aiohttp.ClientSession() as http:
                await http.post(f"{fake.url}/control", json={"models": ["m1", "gone"]})
            await wait_until(
                lambda: any(e["event"] == "agent.model_listed" for e in logs), what="a refresh that finds it listed"
            )
            stop.set()
            await asyncio.wait_for(task, 10)
    finally:
        dns_.transport.close()  # type: ignore[union-attr]
    missing = [e for e in logs if e["event"] == "agent.model_missing"]
    assert [(e["worker"], e["model"]) for e in missing] == [(f"w1-svc-test-{fake.port}", "gone")]  # once
    (listed,) = [e for e in logs if e["event"] == "agent.model_listed"]
    assert listed["model"] == "gone"


async def test_check_models_for_preflight(fake: Fake) -> None:
    """check_models covers listed and discovered workers: listed, missing, and unchecked when discovery fails."""
    dns_, ns = await start_dns()  # knows no names: discovery fails (NXDOMAIN)
    try:
        region = {"name": "w1", "url": f"{fake.url}/v1"}
        policy = make_policy([region], models=["m1", "typo"]).policy
        with_discovery = make_policy(
            [region], models=["m1"], discovery={"name": "svc.test", "nameserver": ns, "scheme": "http"}
        ).policy
        checks = await check_models(policy, secret=Secret("k"))
        broken = await check_models(with_discovery)
    finally:
        dns_.transport.close()  # type: ignore[union-attr]
    assert [(c.worker, c.model, c.status) for c in checks] == [("w1", "m1", "listed"), ("w1", "typo", "missing")]
    assert checks[1].url == f"{fake.url}/v1/models" and checks[1].detail == "the worker lists m1"
    assert [(c.worker, c.status) for c in broken] == [("(discovery)", "unchecked"), ("w1", "listed")]


async def start_dns() -> tuple[TinyDns, str]:
    loop = asyncio.get_running_loop()
    transport, proto = await loop.create_datagram_endpoint(TinyDns, local_addr=("127.0.0.1", 0))
    return proto, f"127.0.0.1:{transport.get_extra_info('sockname')[1]}"


def sse(kind: str, data: dict[str, Any]) -> bytes:
    return f"event: {kind}\ndata: {json.dumps(data)}\n\n".encode()


def oai(delta: dict[str, Any]) -> bytes:
    return b"data: " + json.dumps({"choices": [{"index": 0, "delta": delta, "finish_reason": None}]}).encode() + b"\n\n"


# Per API: (a first answer event, an error event carrying "overloaded now") in the API's framing.
CANNED: dict[str, tuple[bytes, bytes]] = {
    "openai-chat": (oai({"content": "ok"}), b'data: {"error": {"message": "overloaded now"}}\n\n'),
    "openai-completions": (
        b'data: {"choices": [{"index": 0, "text": "ok", "finish_reason": null}]}\n\n',
        b'data: {"error": {"message": "overloaded now"}}\n\n',
    ),
    "openai-responses": (
        sse("response.output_text.delta", {"type": "response.output_text.delta", "delta": "ok"}),
        sse("response.failed", {"type": "response.failed", "response": {"error": {"message": "overloaded now"}}}),
    ),
    "anthropic-messages": (
        sse("content_block_delta", {"type": "content_block_delta", "delta": {"type": "text_delta", "text": "ok"}}),
        sse("error", {"type": "error", "error": {"type": "overloaded_error", "message": "overloaded now"}}),
    ),
    "tgi-generate": (
        b'data: {"token": {"id": 1, "text": "ok", "special": false}, "generated_text": null}\n\n',
        b'data: {"error": "overloaded now", "error_type": "overloaded"}\n\n',
    ),
    "ollama-chat": (
        b'{"message": {"role": "assistant", "content": "ok"}, "done": false}\n',
        b'{"error": "overloaded now"}\n',
    ),
}


@pytest.fixture
async def canned() -> AsyncIterator[str]:
    """Serves /{api}/{error|cut}/… : the API's first answer event, then its error event, or a clean end without
    the terminal event."""

    async def handler(request: web.Request) -> web.StreamResponse:
        first, error = CANNED[request.match_info["api"]]
        ctype = "application/x-ndjson" if request.match_info["api"] == "ollama-chat" else "text/event-stream"
        resp = web.StreamResponse(headers={"Content-Type": ctype})
        await resp.prepare(request)
        await resp.write(first)
        if request.match_info["case"] == "error":
            await resp.write(error)
        await resp.write_eof()
        return resp

    app = web.Application()
    app.router.add_post("/{api}/{case}/{tail:.*}", handler)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    yield f"http://127.0.0.1:{runner.addresses[0][1]}"
    await runner.cleanup()


@pytest.mark.parametrize("api", APIS)
async def test_each_api_maps_its_error_event_and_missing_end(canned: str, api: str) -> None:
    """Each API: its error event is error_body carrying the message; a stream cut before its end is no_done."""
    error = await probe(f"{canned}/{api}/error", api)
    cut = await probe(f"{canned}/{api}/cut", api)
    assert error.sample.reason == "error_body" and error.server_message == "overloaded now", error.detail
    assert cut.sample.reason == "no_done" and cut.sample.tokens == 1, cut.detail
    assert DIALECTS[api].terminal in cut.detail


async def test_agent_logs_the_url_and_the_server_message_of_a_failing_series() -> None:
    """agent.series_failed carries the URL requested and the server's message."""
    f = await fake_with(error_rate=1.0)
    policy = make_policy(
        [{"name": "w1", "url": f"{f.url}/v1/", "api": "anthropic-messages"}], probe={"interval": "100ms"}
    )
    sink, stop = FakeSink(), asyncio.Event()
    try:
        with capture_logs() as logs:
            task = asyncio.create_task(run_agent(policy, "r1", stop=stop, agent_id="a", sink=sink))
            await wait_until(lambda: any(e["event"] == "agent.series_failed" for e in logs), what="a failure")
            stop.set()
            await asyncio.wait_for(task, 10)
    finally:
        await f.runner.cleanup()
    (failed,) = [e for e in logs if e["event"] == "agent.series_failed"]
    assert failed["reason"] == "http_5xx" and failed["server_message"] == "injected failure"
    assert failed["url"] == f"{f.url}/v1/messages" and failed["url"] in failed["detail"]
