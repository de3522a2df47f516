"""Shared fixtures: a real redis-server and moto server on free loopback ports, dummy AWS credentials.

Every xdist worker starts its own services (session scope). Tests isolate themselves with a unique Redis key
prefix (`key_prefix`) and their own Route 53 hosted zone (`hosted_zone`), so they are parallel-safe.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from typing import Any

import boto3
import pytest
import structlog

from trafficd.dev.services import MotoServer, RedisServer

# Never reach real AWS: dummy credentials and no ambient profile, for every test and every subprocess.
os.environ.update(
    AWS_ACCESS_KEY_ID="testing",
    AWS_SECRET_ACCESS_KEY="testing",
    AWS_SESSION_TOKEN="testing",
    AWS_DEFAULT_REGION="us-east-1",
    AWS_CONFIG_FILE="/dev/null",
    AWS_SHARED_CREDENTIALS_FILE="/dev/null",
)
os.environ.pop("AWS_PROFILE", None)


@pytest.fixture(scope="session")
def redis_server() -> Iterator[RedisServer]:
    """A real redis-server for this test worker; tests that stop it must start it again."""
    server = RedisServer().start()
    yield server
    server.cleanup()


@pytest.fixture
def redis_url(redis_server: RedisServer) -> str:
    if redis_server.proc is None or redis_server.proc.poll() is not None:
        redis_server.start()
    return redis_server.url


@pytest.fixture
def key_prefix() -> str:
    """A Redis key prefix unique to this test."""
    return f"t{uuid.uuid4().hex[:10]}"


@pytest.fixture(scope="session")
def moto() -> Iterator[MotoServer]:
    """moto server over HTTP, the local Route 53 API."""
    server = MotoServer().start()
    yield server
    server.stop()


@pytest.fixture
def route53(moto: MotoServer) -> Any:
    return boto3.client("route53", endpoint_url=moto.url, region_name="us-east-1")


@pytest.fixture
def hosted_zone(route53: Any) -> dict[str, str]:
    """A hosted zone of this test's own: {'id': 'Z…', 'name': 'tXXXX.example.com.'}."""
    name = f"t{uuid.uuid4().hex[:10]}.example.com."
    zone = route53.create_hosted_zone(Name=name, CallerReference=uuid.uuid4().hex)["HostedZone"]
    return {"id": zone["Id"].split("/")[-1], "name": name}


@pytest.fixture(autouse=True)
def _fresh_structlog() -> Iterator[None]:
    """Every test starts from structlog's defaults: a test that configures logging (the demo, a CLI) must not
    change what `capture_logs()` sees in the next test on the same worker."""
    structlog.reset_defaults()
    yield
    structlog.reset_defaults()


def pytest_terminal_summary(terminalreporter: Any) -> None:
    """The fault suite's one line per scenario (tests/faults), also when the scenarios ran on xdist workers."""
    lines = [
        value
        for reports in terminalreporter.stats.values()
        for report in reports
        for name, value in getattr(report, "user_properties", None) or []
        if name == "fault"
    ]
    if lines:
        terminalreporter.section("fault suite")
        for line in dict.fromkeys(lines):
            terminalreporter.write_line(line)
