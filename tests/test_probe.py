"""The streaming probe against real aiohttp workers: timing semantics, deadlines, and every reason code."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest
from probekit import ScriptedWorker, deadlines

from trafficd.model import REASONS
from trafficd.policy.schema import Deadlines, Probe
from trafficd.probe.credentials import Secret
from trafficd.probe.prober import Prober, ProbeResult, Target


@pytest.fixture
async def worker() -> AsyncIterator[ScriptedWorker]:
    w = await ScriptedWorker().start()
    yield w
    await w.stop()


@pytest.fixture
async def prober() -> AsyncIterator[Prober]:
    async with Prober(Probe.model_validate({"read_buffer_bytes": 65536})) as p:
        yield p


def target(worker: ScriptedWorker, scenario: str, d: Deadlines | None = None) -> Target:
    return Target("r1", "w1", "m1", f"{worker.url}/{scenario}", deadlines=d or Deadlines())


async def run(prober: Prober, worker: ScriptedWorker, scenario: str, d: Deadlines | None = None) -> ProbeResult:
    return await prober.probe_detailed(target(worker, scenario, d))


async def test_ok_stream_measures_every_field(prober: Prober, worker: ScriptedWorker) -> None:
    """A normal stream is ok with ttft ≤ total, the 50 ms gap between tokens, 2 tokens, status and connect time."""
    s = (await run(prober, worker, "ok")).sample
    assert s.ok and s.reason is None and s.status == 200
    assert s.tokens == 2 and s.reasoning_tokens == 0
    assert s.ttft_ms is not None and s.max_gap_ms is not None and s.connect_ms is not None
    assert 0 < s.ttft_ms <= s.total_ms
    assert s.max_gap_ms >= 25.0  # 50 ms sent; a busy machine may deliver the first token late
    assert (s.region, s.worker, s.model) == ("r1", "w1", "m1")


async def test_request_is_a_streaming_chat_completion(prober: Prober, worker: ScriptedWorker) -> None:
    """The probe posts the model, the policy's prompt and max_tokens, with stream true."""
    await run(prober, worker, "ok")
    body = worker.bodies[0]
    assert body["stream"] is True and body["model"] == "m1" and body["max_tokens"] == 16
    assert body["messages"] == [{"role": "user", "content": Probe().prompt}]


async def test_connections_are_reused_and_connect_time_reported_apart(prober: Prober, worker: ScriptedWorker) -> None:
    """The first probe opens a connection (connect_ms set); the next reuses it (connect_ms None)."""
    first = (await run(prober, worker, "ok")).sample
    second = (await run(prober, worker, "ok")).sample
    assert first.connect_ms is not None and first.connect_ms < first.total_ms
    assert second.ok and second.connect_ms is None


async def test_role_only_chunk_long_before_content_is_not_first_token(prober: Prober, worker: ScriptedWorker) -> None:
    """A role-only chunk at once and content 300 ms later gives a TTFT of at least 300 ms."""
    s = (await run(prober, worker, "role_early")).sample
    assert s.ok and s.ttft_ms is not None and s.ttft_ms >= 300.0


async def test_empty_content_chunk_is_not_first_token(prober: Prober, worker: ScriptedWorker) -> None:
    """A chunk with content "" does not count: TTFT waits for the non-empty one 200 ms later."""
    s = (await run(prober, worker, "empty_then")).sample
    assert s.ok and s.tokens == 1 and s.ttft_ms is not None and s.ttft_ms >= 200.0


async def test_reasoning_content_is_counted_apart(prober: Prober, worker: ScriptedWorker) -> None:
    """reasoning_content chunks go to reasoning_tokens and do not set TTFT."""
    s = (await run(prober, worker, "reasoning")).sample
    assert s.ok and s.reasoning_tokens == 2 and s.tokens == 2
    assert s.ttft_ms is not None and s.ttft_ms >= 100.0


async def test_sse_quirks_comments_crlf_multiline_usage(prober: Prober, worker: ScriptedWorker) -> None:
    """Comments, blank lines, CRLF, a split chunk, multi-line data and a usage chunk parse as a good stream."""
    s = (await run(prober, worker, "messy")).sample
    assert s.ok and s.tokens == 2 and s.reason is None


async def test_finish_reason_without_done_is_complete(prober: Prober, worker: ScriptedWorker) -> None:
    """A stream that ends after a finish_reason chunk but without [DONE] is ok."""
    s = (await run(prober, worker, "finish_no_done")).sample
    assert s.ok and s.tokens == 1


async def test_stall_after_accepting_is_stall_timeout_at_the_deadline(prober: Prober, worker: ScriptedWorker) -> None:
    """A worker that sends a token then stalls gives stall_timeout with max gap = the gap deadline."""
    s = (await run(prober, worker, "stall", deadlines(gap="200ms"))).sample
    assert not s.ok and s.reason == "stall_timeout"
    assert s.max_gap_ms == 200.0 and s.tokens == 1
    assert s.total_ms >= 200.0 and s.total_ms < 1000.0


async def test_no_first_token_is_ttft_timeout_at_the_deadline(prober: Prober, worker: ScriptedWorker) -> None:
    """A worker that sends only a role chunk gives ttft_timeout with ttft and total at the deadline."""
    s = (await run(prober, worker, "silent", deadlines(first_token="200ms"))).sample
    assert not s.ok and s.reason == "ttft_timeout" and s.status == 200
    assert s.ttft_ms == 200.0 and 200.0 <= s.total_ms < 1000.0


async def test_slow_drip_is_total_timeout_at_the_deadline(prober: Prober, worker: ScriptedWorker) -> None:
    """Tokens dripping every 100 ms past a 350 ms total deadline give total_timeout with total = 350 ms."""
    s = (await run(prober, worker, "drip", deadlines(total="350ms"))).sample
    assert not s.ok and s.reason == "total_timeout"
    assert 350.0 <= s.total_ms < 1000.0 and s.tokens >= 2
    assert s.max_gap_ms is not None and s.max_gap_ms >= 80.0


async def test_timed_out_probe_counts_over_the_slo(prober: Prober, worker: ScriptedWorker) -> None:
    """A probe still running past a 250 ms SLO and then timing out is written with total_ms over the SLO."""
    slo_ms = 250.0
    for scenario, d in (
        ("stall", deadlines(gap="300ms", total="2s")),
        ("silent", deadlines(first_token="300ms")),
        ("drip", deadlines(total="300ms")),
    ):
        s = (await run(prober, worker, scenario, d)).sample
        assert not s.ok and s.total_ms > slo_ms, (scenario, s)


async def test_close_mid_stream_is_no_done(prober: Prober, worker: ScriptedWorker) -> None:
    """A worker that closes the connection mid-stream gives no_done, keeping the tokens seen."""
    s = (await run(prober, worker, "close_mid")).sample
    assert not s.ok and s.reason == "no_done" and s.tokens == 2 and s.status == 200


async def test_clean_end_without_done_or_finish_is_no_done(prober: Prober, worker: ScriptedWorker) -> None:
    """A stream that ends cleanly without [DONE] or a finish_reason gives no_done."""
    s = (await run(prober, worker, "no_done")).sample
    assert not s.ok and s.reason == "no_done"


@pytest.mark.parametrize("scenario", ["error_json", "error_event"])
async def test_http_200_with_error_is_error_body(prober: Prober, worker: ScriptedWorker, scenario: str) -> None:
    """HTTP 200 carrying an error object (as JSON, or as an event) gives error_body."""
    s = (await run(prober, worker, scenario)).sample
    assert not s.ok and s.reason == "error_body" and s.status == 200


@pytest.mark.parametrize("scenario", ["html", "html_as_sse", "bad_json"])
async def test_non_sse_or_invalid_json_is_malformed_stream(
    prober: Prober, worker: ScriptedWorker, scenario: str
) -> None:
    """An HTML page (as text/html or as text/event-stream) or a data line that is not JSON gives malformed_stream."""
    s = (await run(prober, worker, scenario)).sample
    assert not s.ok and s.reason == "malformed_stream"


async def test_line_over_read_buffer_is_a_clear_malformed_stream(worker: ScriptedWorker) -> None:
    """A 200 kB line with a 64 kB buffer gives malformed_stream naming the buffer, not a crash."""
    async with Prober(Probe.model_validate({"read_buffer_bytes": 65536})) as p:
        r = await p.probe_detailed(target(worker, "long_line"))
    assert not r.sample.ok and r.sample.reason == "malformed_stream"
    assert "read buffer (65536 bytes)" in r.detail


@pytest.mark.parametrize(
    ("scenario", "reason", "status"), [("s429", "http_429", 429), ("s404", "http_4xx", 404), ("s503", "http_5xx", 503)]
)
async def test_http_status_reasons(
    prober: Prober, worker: ScriptedWorker, scenario: str, reason: str, status: int
) -> None:
    """HTTP 429, 404 and 503 give http_429, http_4xx and http_5xx with the status."""
    s = (await run(prober, worker, scenario)).sample
    assert not s.ok and s.reason == reason and s.status == status


async def test_refused_connection_is_connect_error(prober: Prober) -> None:
    """Nothing listening on the port gives connect_error with no status."""
    server = await asyncio.start_server(lambda r, w: None, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    server.close()
    await server.wait_closed()
    s = await prober.probe(Target("r1", "w1", "m1", f"http://127.0.0.1:{port}"))
    assert not s.ok and s.reason == "connect_error" and s.status is None


async def test_hung_handshake_is_connect_error_at_the_connect_deadline(prober: Prober) -> None:
    """A server that accepts TCP but never answers the TLS handshake hits the connect deadline."""
    held: list[asyncio.StreamWriter] = []

    async def accept(_r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        held.append(w)

    server = await asyncio.start_server(accept, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        s = await prober.probe(
            Target("r1", "w1", "m1", f"https://127.0.0.1:{port}", deadlines=deadlines(connect="200ms"))
        )
    finally:
        for w in held:
            w.close()
        server.close()
    assert not s.ok and s.reason == "connect_error"
    assert s.connect_ms == 200.0 and s.total_ms >= 200.0


async def test_accept_then_no_response_is_ttft_timeout(prober: Prober) -> None:
    """A worker that accepts the connection and reads the request but never answers hits the first-token deadline."""
    held: list[asyncio.StreamWriter] = []

    async def accept(r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        held.append(w)
        await r.read(65536)

    server = await asyncio.start_server(accept, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        d = deadlines(first_token="300ms")
        s = await prober.probe(Target("r1", "w1", "m1", f"http://127.0.0.1:{port}", deadlines=d))
    finally:
        for w in held:
            w.close()
        server.close()
    assert not s.ok and s.reason == "ttft_timeout" and s.status is None
    assert s.ttft_ms == 300.0 and s.total_ms >= 300.0 and s.connect_ms is not None


def test_reason_codes_are_the_shared_ones() -> None:
    """The reason codes the probe emits are exactly the shared taxonomy in trafficd.model.REASONS."""
    assert set(REASONS) == {
        "connect_error",
        "tls_error",
        "http_429",
        "http_4xx",
        "http_5xx",
        "error_body",
        "malformed_stream",
        "no_done",
        "empty_answer",
        "ttft_timeout",
        "stall_timeout",
        "total_timeout",
    }


@pytest.mark.parametrize("suffix", ["/v1", "/v1/", "/", "/v1/chat/completions/"])
async def test_base_url_with_or_without_v1_reaches_the_endpoint(
    prober: Prober, worker: ScriptedWorker, suffix: str
) -> None:
    """The OpenAI SDK form (…/v1), trailing slashes and the full endpoint URL all reach /v1/chat/completions."""
    r = await prober.probe_detailed(Target("r1", "w1", "m1", worker.url + suffix))
    assert r.sample.ok, r.detail


async def test_http_error_detail_names_the_url_and_the_server_message(prober: Prober, worker: ScriptedWorker) -> None:
    """A 404 says which URL was requested and what the server said, in the detail and apart."""
    r = await run(prober, worker, "s404")
    url = f"{worker.url}/s404/v1/chat/completions"
    assert r.url == url and r.server_message == "status 404"
    assert r.detail == f"HTTP 404: status 404 (POST {url})"


async def test_redirect_is_not_followed_and_names_its_target(prober: Prober, worker: ScriptedWorker) -> None:
    """A 307 is http_4xx and the detail names where it pointed; the target is never requested."""
    r = await run(prober, worker, "redirect")
    assert r.sample.reason == "http_4xx" and r.sample.status == 307
    assert f"redirect to {worker.url}/moved/v1/chat/completions (not followed)" in r.detail
    assert worker.scenarios_seen == ["redirect"]


@pytest.mark.parametrize(("scenario", "message"), [("error_json", "model overloaded"), ("error_event", "boom")])
async def test_error_body_carries_the_server_message(
    prober: Prober, worker: ScriptedWorker, scenario: str, message: str
) -> None:
    """An error object (whole body or in the stream) gives error_body with the server's message."""
    r = await run(prober, worker, scenario)
    assert r.sample.reason == "error_body" and r.server_message == message and message in r.detail


async def test_server_message_never_echoes_the_key_or_the_prompt(worker: ScriptedWorker) -> None:
    """A server error quoting the key and the (padded) prompt is shown with both removed, at most 200 chars."""
    key = "sk-test-echoed-0001"
    cfg = Probe.model_validate({"prompt_tokens": 200})
    async with Prober(cfg, secret=Secret(key)) as p:
        r = await p.probe_detailed(target(worker, "echo_request"))
    prompt = worker.bodies[0]["messages"][0]["content"]
    assert r.sample.reason == "http_4xx" and len(prompt.split()) > 150
    assert key not in r.detail and key not in r.server_message and "***" in r.server_message
    assert prompt[20:60] not in r.detail and "[prompt]" in r.server_message
    assert len(r.server_message) <= 200
