"""The API key: read from env or a credential file, sent to the worker, and never shown anywhere else."""

from __future__ import annotations

import asyncio
import os
import pickle
import random
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from probekit import FakeSink, ScriptedWorker, make_policy, wait_until
from structlog.testing import capture_logs

from trafficd.policy.schema import Auth, Probe
from trafficd.probe.agent import run_agent
from trafficd.probe.credentials import Secret, SecretError, load_api_key
from trafficd.probe.prober import Prober, Target

KEY = "sk-test-8f3a9c1e5b7d2f4a6c8e0b1d3f5a7c9e"


@pytest.fixture
async def worker() -> AsyncIterator[ScriptedWorker]:
    w = await ScriptedWorker().start()
    yield w
    await w.stop()


def test_secret_never_shows_its_value() -> None:
    """str, repr, format and containers show *** ; only reveal() returns the value; it cannot be pickled."""
    s = Secret(KEY)
    shown = [str(s), repr(s), f"{s}", f"{s!r}", f"{s:>50}", str([s]), str({"k": s})]
    assert all(KEY not in text for text in shown) and "***" in str(s)
    assert s.reveal() == KEY
    with pytest.raises(TypeError):
        pickle.dumps(s)
    with pytest.raises(AttributeError):
        s._value = "x"


def test_key_from_env_and_from_credential_file(tmp_path: Path) -> None:
    """The key is read from the named variable, or a file (relative names under $CREDENTIALS_DIRECTORY)."""
    assert load_api_key(Auth(api_key_env="K"), {"K": KEY + "\n"}).reveal() == KEY  # type: ignore[union-attr]
    (tmp_path / "api-key").write_text(KEY + "\n")
    from_file = load_api_key(Auth(api_key_file="api-key"), {"CREDENTIALS_DIRECTORY": str(tmp_path)})
    assert from_file is not None and from_file.reveal() == KEY
    assert load_api_key(Auth(), {}) is None


def test_errors_name_the_source_never_the_value(tmp_path: Path) -> None:
    """Missing variable, missing file and empty file raise SecretError naming the source only."""
    with pytest.raises(SecretError, match="API_KEY_VAR"):
        load_api_key(Auth(api_key_env="API_KEY_VAR"), {})
    with pytest.raises(SecretError, match="cannot read"):
        load_api_key(Auth(api_key_file=str(tmp_path / "nope")), {})
    (tmp_path / "empty").write_text("\n")
    with pytest.raises(SecretError, match="empty"):
        load_api_key(Auth(api_key_file=str(tmp_path / "empty")), {})


async def test_key_is_sent_as_bearer_and_hidden_from_repr_and_details(worker: ScriptedWorker) -> None:
    """The worker receives `Authorization: Bearer KEY`; the prober's repr and a failure's detail never hold it."""

    async def echo_key(r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        await r.read(100)  # a broken worker whose status line repeats the key: the error text would carry it
        w.write(b"HTTP/1.1 2x0 " + KEY.encode() + b"\r\n\r\n")
        await w.drain()
        w.close()

    server = await asyncio.start_server(echo_key, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    cfg = Probe.model_validate({"auth": {"api_key_env": "X"}})
    try:
        async with Prober(cfg, secret=Secret(KEY)) as p:
            ok = await p.probe_detailed(Target("r1", "w1", "m1", f"{worker.url}/ok"))
            bad = await p.probe_detailed(Target("r1", "w1", "m1", f"http://127.0.0.1:{port}"))
            assert KEY not in repr(p)
    finally:
        server.close()
    assert ok.sample.ok and worker.headers[0]["Authorization"] == f"Bearer {KEY}"
    assert bad.sample.reason == "malformed_stream" and "***" in bad.detail
    assert KEY not in bad.detail and KEY not in repr(bad)


async def test_key_never_in_agent_logs(worker: ScriptedWorker, monkeypatch: pytest.MonkeyPatch) -> None:
    """An agent probing with the key (one series failing with details) logs no event containing the key."""
    monkeypatch.setenv("TRAFFICD_TEST_KEY", KEY)
    policy = make_policy(
        [{"name": "ok", "url": f"{worker.url}/ok"}, {"name": "bad", "url": f"{worker.url}/s404"}],
        probe={"interval": "100ms", "auth": {"api_key_env": "TRAFFICD_TEST_KEY"}},
    )
    sink, stop = FakeSink(), asyncio.Event()
    with capture_logs() as logs:
        task = asyncio.create_task(run_agent(policy, "r1", stop=stop, sink=sink, rng=random.Random(1)))
        await wait_until(lambda: len(sink.samples) >= 4, what="samples")
        stop.set()
        await asyncio.wait_for(task, 10)
    assert any(e["event"] == "agent.series_failed" for e in logs)
    assert all(h.get("Authorization") == f"Bearer {KEY}" for h in worker.headers)
    assert KEY not in repr(logs) and Probe().prompt not in repr(logs)


async def test_key_never_in_probe_command_output(worker: ScriptedWorker) -> None:
    """`trafficd probe --api-key-env` sends the key but prints it nowhere (stdout or stderr), ok or failing."""
    outputs = []
    for scenario in ("ok", "s404"):
        proc = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "trafficd",
            "probe",
            f"{worker.url}/{scenario}",
            "--model",
            "m1",
            "--json",
            "--api-key-env",
            "TRAFFICD_TEST_KEY",
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
            env={**os.environ, "TRAFFICD_TEST_KEY": KEY},
        )
        out, err = await asyncio.wait_for(proc.communicate(), 60)
        outputs.append(out.decode() + err.decode())
    assert worker.headers and all(h["Authorization"] == f"Bearer {KEY}" for h in worker.headers)
    assert '"ok": true' in outputs[0] and "http_4xx" in outputs[1]
    assert all(KEY not in text for text in outputs)
