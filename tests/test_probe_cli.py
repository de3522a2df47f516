"""`trafficd probe` run as a real process against real aiohttp workers: output per probe and exit codes."""

from __future__ import annotations

import asyncio
import json
import os
import sys
from collections.abc import AsyncIterator

import pytest
from probekit import ScriptedWorker


@pytest.fixture
async def worker() -> AsyncIterator[ScriptedWorker]:
    w = await ScriptedWorker().start()
    yield w
    await w.stop()


async def trafficd(*args: str, env: dict[str, str] | None = None) -> tuple[int, str, str]:
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "trafficd",
        *args,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env={**os.environ, **(env or {})},
    )
    out, err = await asyncio.wait_for(proc.communicate(), 60)
    assert proc.returncode is not None
    return proc.returncode, out.decode(), err.decode()


async def test_json_output_one_object_per_probe(worker: ScriptedWorker) -> None:
    """--count 3 --json prints three JSON objects with the timings and exits 0."""
    code, out, _ = await trafficd("probe", f"{worker.url}/ok", "--model", "m1", "--count", "3", "--json")
    rows = [json.loads(line) for line in out.splitlines()]
    assert code == 0 and len(rows) == 3
    for row in rows:
        assert row["ok"] is True and row["reason"] is None and row["tokens"] == 2
        assert set(row) >= {"ttft_ms", "total_ms", "max_gap_ms", "tokens", "ok", "reason", "status"}
    assert rows[0]["connect_ms"] is not None and rows[1]["connect_ms"] is None  # connection reused


async def test_every_probe_failing_exits_non_zero(worker: ScriptedWorker) -> None:
    """When every probe fails the command exits 1, printing each failure's reason."""
    code, out, _ = await trafficd("probe", f"{worker.url}/s503", "--model", "m1", "--count", "2")
    assert code == 1
    assert out.count("FAIL http_5xx") == 2 and "2 probes: 0 ok, 2 failed" in out


async def test_deadline_flag_applies(worker: ScriptedWorker) -> None:
    """--first-token 100ms gives ttft_timeout at 100 ms (exit 1); without it the 300 ms TTFT is measured (exit 0)."""
    code, out, _ = await trafficd(
        "probe", f"{worker.url}/role_early", "--model", "a", "--first-token", "100ms", "--json"
    )
    row = json.loads(out)
    assert code == 1 and row["reason"] == "ttft_timeout" and row["ttft_ms"] == 100.0
    code, out, _ = await trafficd("probe", f"{worker.url}/role_early", "--model", "a", "--json")
    assert code == 0 and json.loads(out)["ttft_ms"] >= 300.0


async def test_missing_api_key_is_a_config_error(worker: ScriptedWorker) -> None:
    """An API key variable that is not set exits 78 naming the variable, probing nothing."""
    env = {"TRAFFICD_NO_SUCH_KEY": ""}
    code, _, err = await trafficd(
        "probe", f"{worker.url}/ok", "--model", "m1", "--api-key-env", "TRAFFICD_NO_SUCH_KEY", env=env
    )
    assert code == 78 and "TRAFFICD_NO_SUCH_KEY" in err and not worker.arrivals


async def test_closed_pipe_ends_quietly(worker: ScriptedWorker) -> None:
    """`trafficd probe … | head -1`: the reader closing the pipe ends the command without a traceback."""
    proc = await asyncio.create_subprocess_shell(
        f"{sys.executable} -m trafficd probe {worker.url}/ok --model m1 --count 50 | head -1",
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(proc.communicate(), 60)
    assert proc.returncode == 0 and out.decode().startswith("  1 m1 ok")
    assert b"Traceback" not in err and b"BrokenPipe" not in err and err == b""


async def test_api_and_model_check_flags(worker: ScriptedWorker) -> None:
    """--api picks the API (404 here, the URL named); --check-models says the worker's list could not be read."""
    code, out, err = await trafficd(
        "probe", f"{worker.url}/ok/v1", "--model", "m1", "--api", "anthropic-messages", "--check-models", "--json"
    )
    row = json.loads(out)
    assert code == 1 and row["reason"] == "http_4xx" and row["url"] == f"{worker.url}/ok/v1/messages"
    assert f"cannot read the model list (HTTP 404: 404: Not Found) at {worker.url}/ok/v1/models" in err
