"""`redis_client` against real redis-servers: password from env or credential file, `rediss://` with a CA file."""

from __future__ import annotations

import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from redis.exceptions import AuthenticationError, ConnectionError

from trafficd.dev.services import LOOPBACK, RedisServer, free_port, redis_server_binary, stop_process, wait_for_port
from trafficd.model import Sample
from trafficd.policy.schema import Redis, parse_policy
from trafficd.stats import store

SECRET = "s3cret-for-tests-only"

POLICY = """
version: 1
service: svc
redis: {{url: "{url}", key_prefix: {prefix}, tls_ca_file: "{ca}"}}
probe: {{targets: {{allow_loopback: true}}}}
models: [{{name: m1}}]
regions:
  r1:
    workers: [{{name: w1, url: "http://127.0.0.1:9"}}]
    dns: {{endpoint: r1.example.com, aws_region: us-east-1}}
windows: {{evaluate_every: 1s, slice: 1s, trip: 5s, long: 20s, min_samples: 1, stale_after: 5s}}
dns: {{zone_id: Z1, record_name: api.example.com.}}
"""


@pytest.fixture(scope="module")
def password_server() -> Iterator[RedisServer]:
    server = RedisServer(password=SECRET).start()
    yield server
    server.cleanup()


@pytest.fixture(scope="module")
def tls_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[int, Path]]:
    """A redis-server that only speaks TLS, with a self-signed certificate for 127.0.0.1."""
    d = tmp_path_factory.mktemp("tls")
    cert, key = d / "cert.pem", d / "key.pem"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", str(key), "-out", str(cert),
         "-days", "1", "-subj", f"/CN={LOOPBACK}", "-addext", f"subjectAltName=IP:{LOOPBACK}"],
        check=True, capture_output=True,
    )  # fmt: skip
    port = free_port()
    proc = subprocess.Popen(
        [redis_server_binary(), "--port", "0", "--tls-port", str(port), "--bind", LOOPBACK, "--save", "",
         "--tls-cert-file", str(cert), "--tls-key-file", str(key), "--tls-ca-cert-file", str(cert),
         "--tls-auth-clients", "no", "--requirepass", SECRET, "--dir", str(d)],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True,
    )  # fmt: skip
    try:
        wait_for_port(port, proc=proc)
        yield port, cert
    finally:
        stop_process(proc)


async def test_password_comes_from_the_named_environment_variable(
    password_server: RedisServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`password_env` names the variable holding the password; the URL carries none."""
    monkeypatch.setenv("TRAFFICD_TEST_REDIS_PW", SECRET)
    cfg = Redis(url=f"redis://{LOOPBACK}:{password_server.port}/0", password_env="TRAFFICD_TEST_REDIS_PW")
    client = store.redis_client(cfg)
    try:
        assert await client.ping()
    finally:
        await client.aclose()


async def test_password_comes_from_a_credential_file(password_server: RedisServer, tmp_path: Path) -> None:
    """`password_file` is read (and stripped of its newline); a wrong password is refused by the server."""
    good, bad = tmp_path / "pw", tmp_path / "bad"
    good.write_text(SECRET + "\n")
    bad.write_text("wrong\n")
    url = f"redis://{LOOPBACK}:{password_server.port}/0"
    client = store.redis_client(Redis(url=url, password_file=str(good)))
    wrong = store.redis_client(Redis(url=url, password_file=str(bad)))
    try:
        assert await client.ping()
        with pytest.raises(AuthenticationError):
            await wrong.ping()
    finally:
        await client.aclose()
        await wrong.aclose()


def test_missing_password_sources_fail_with_a_message_naming_the_source_not_the_secret(tmp_path: Path) -> None:
    """An unset variable or unreadable file is a StoreConfigError naming where the password should be."""
    with pytest.raises(store.StoreConfigError, match="TRAFFICD_NOT_SET_ANYWHERE"):
        store.redis_client(Redis(password_env="TRAFFICD_NOT_SET_ANYWHERE"))
    with pytest.raises(store.StoreConfigError, match="password_file"):
        store.redis_client(Redis(password_file=str(tmp_path / "absent")))


async def test_rediss_url_with_the_ca_file_writes_and_reads_samples(
    tls_server: tuple[int, Path], key_prefix: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Over `rediss://` with `tls_ca_file` and a password, samples written by the sink come back as evidence."""
    port, ca = tls_server
    monkeypatch.setenv("TRAFFICD_TEST_REDIS_PW", SECRET)
    text = POLICY.format(url=f"rediss://{LOOPBACK}:{port}/0", prefix=key_prefix, ca=ca)
    text = text.replace("tls_ca_file:", "password_env: TRAFFICD_TEST_REDIS_PW, tls_ca_file:")
    policy = parse_policy(text).policy
    client = store.redis_client(policy.redis)
    try:
        now = time.time()
        sink = store.SampleSink(client, policy)
        await sink.write([Sample("r1", "w1", "m1", now - 1.2, True, None, 1000.0) for _ in range(3)])
        assert sink.healthy and sink.written_total == 3
        ev = await store.StatsView(client, policy).evidence(now)
        assert ev["r1"].n == 3 and not ev["r1"].unreadable
    finally:
        await client.aclose()


async def test_rediss_without_the_ca_file_refuses_the_self_signed_server(
    tls_server: tuple[int, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Without `tls_ca_file` the server's certificate is verified against the system CAs and refused."""
    port, _ = tls_server
    monkeypatch.setenv("TRAFFICD_TEST_REDIS_PW", SECRET)
    client = store.redis_client(Redis(url=f"rediss://{LOOPBACK}:{port}/0", password_env="TRAFFICD_TEST_REDIS_PW"))
    try:
        with pytest.raises(ConnectionError, match=r"(?i)certificate"):
            await client.ping()
    finally:
        await client.aclose()
