"""Every invalid policy in tests/policies/ is refused with exactly the message pinned here.

These are the mistakes people really make under pressure. A message change is a change of interface: update the
table on purpose, never loosen it. `{f}` stands for the fixture's path.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from trafficd.policy.schema import PolicyError, load_policy

FIXTURES = Path(__file__).parent / "policies"

EXPECTED: dict[str, tuple[str, ...]] = {
    "invalid-misspelt-key.yaml": (
        "{f}:21:3: windows.min_sample: unknown key 'min_sample'; did you mean 'min_samples'?",
    ),
    "invalid-key-in-wrong-section.yaml": (
        "{f}:22:3: slo.min_samples: unknown key 'min_samples' here; it belongs under windows",
    ),
    "invalid-duration-with-space.yaml": (
        "{f}:21:14: slo.total_p99: write a duration without a space: '3s', not '3 s'",
    ),
    "invalid-duration-bare-number.yaml": (
        "{f}:21:14: slo.total_p99: a duration needs a unit: write '3s' or '3ms', not 3",
    ),
    "invalid-number-as-string.yaml": (
        "{f}:21:16: windows.min_samples: expected a number, got the string '400'; remove the quotes",
    ),
    "invalid-negative-duration.yaml": ("{f}:21:13: probe.interval: a duration must be greater than zero (got '-5s')",),
    "invalid-zero-duration.yaml": ("{f}:21:14: recover.hold_down: a duration must be greater than zero (got '0s')",),
    "invalid-percent-bare-number.yaml": (
        "{f}:21:15: slo.error_rate: write a percentage with its '%' sign: '1%' (got 1)",
    ),
    "invalid-region-without-dns.yaml": (
        "{f}:12:3: regions.eu-west.dns: required key 'dns' is missing: every region must be mapped to its "
        "Route 53 records (endpoint, aws_region)",
    ),
    "invalid-duplicate-set-identifier.yaml": (
        "{f}:16:84: regions.eu-west.dns.set_identifier: SetIdentifier 'use1' is already used by region "
        "'us-east'; each needs its own",
    ),
    "invalid-tab-indent.yaml": ("{f}:5:1: (top level): not valid YAML: a tab character; indent with spaces only",),
    "invalid-bad-indentation.yaml": (
        "{f}:6:2: (top level): not valid YAML: bad indentation; this line does not line up with the keys above it",
    ),
    "invalid-empty.yaml": ("{f}: (top level): the file has nothing but comments; a policy starts with 'version: 1'",),
    "invalid-wrong-type.yaml": (
        "{f}:8:5: regions.us-east.workers: expected a list ('- item' lines or [a, b]), got a mapping",
        "{f}:12:17: regions.us-east.neighbours: expected a list ('- item' lines or [a, b]), got the string 'eu-west'",
    ),
    "invalid-recovery-above-slo.yaml": (
        "{f}:21:10: recover.below: 120% of the SLO would let a region count as recovered while still breaching; "
        "it must be under 100% (e.g. 80%)",
    ),
    "invalid-recovery-as-duration.yaml": (
        "{f}:21:10: recover.below: expected a percentage like '80%', not a duration ('2.4s')",
    ),
    "invalid-inline-secret.yaml": (
        "{f}:22:3: redis.password: inline secret: never write a secret in a policy file (it is copied, diffed "
        "and logged); put it in an environment variable or a credential file and use password_env or password_file",
    ),
    "invalid-inline-api-key.yaml": (
        "{f}:22:5: probe.auth.api_key: inline secret: never write a secret in a policy file (it is copied, diffed "
        "and logged); put it in an environment variable or a credential file and use api_key_env or api_key_file",
    ),
    "invalid-redis-url-with-password.yaml": (
        "{f}:21:8: redis.url: inline secret: the URL contains a password; remove it from the URL and use "
        "redis.password_env or redis.password_file",
    ),
    "invalid-unknown-region-in-guard.yaml": (
        "{f}:21:17: guards.never_drain[0]: unknown region 'eu-wset'; did you mean 'eu-west'?",
    ),
    "invalid-unknown-neighbour.yaml": (
        "{f}:12:18: regions.us-east.neighbours[0]: unknown region 'ap-southeast'; the regions are us-east",
    ),
    "invalid-min-serving-regions.yaml": (
        "{f}:21:24: guards.min_serving_regions: is 3 but the policy has only 2 regions",
    ),
    "invalid-duplicate-key.yaml": (
        "{f}:22:1: slo: duplicate key 'slo' (first at line 20); YAML would silently keep only the last one: "
        "merge them into one",
    ),
    "invalid-windows-out-of-order.yaml": (
        "{f}:22:9: windows.trip: (5s) must be at least windows.slice (10s)",
        "{f}:23:9: windows.long: (3s) must be at least windows.trip (5s)",
    ),
    "invalid-deadlines-out-of-order.yaml": (
        "{f}:22:18: probe.deadlines.first_token: (45s) is longer than the total deadline (30s)",
    ),
    "invalid-missing-version.yaml": ("{f}:2:1: version: required key 'version' is missing",),
    "invalid-version-2.yaml": ("{f}:2:10: version: policy version 2 is not supported: this trafficd reads version 1",),
    "invalid-many-mistakes.yaml": (
        "{f}:13:14: slo.total_p99: write a duration without a space: '3s', not '3 s'",
        "{f}:14:13: slo.ttft_p99: a duration needs a unit: write '300ms' or '300s', not 300",
        "{f}:15:15: slo.error_rate: write a percentage with its '%' sign: '1%' (got 1)",
        "{f}:17:3: windows.min_sample: unknown key 'min_sample'; did you mean 'min_samples'?",
        "{f}:21:8: dns.ttl: expected a number, got the string '60'; remove the quotes",
        "{f}:22:13: dns.topology: must be 'latency-weighted' or 'weighted' (got the string 'latency')",
    ),
}


def test_every_fixture_is_pinned() -> None:
    """Each invalid-*.yaml has an expected message here and each message has its file; there are at least 15."""
    on_disk = {p.name for p in FIXTURES.glob("invalid-*.yaml")}
    assert on_disk == set(EXPECTED)
    assert len(on_disk) >= 15


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_invalid_policy_exact_message(name: str) -> None:
    """Loading the fixture fails with exactly the pinned problems, in file order, naming file, line and field."""
    path = FIXTURES / name
    with pytest.raises(PolicyError) as info:
        load_policy(path)
    expected = "\n".join(line.replace("{f}", str(path)) for line in EXPECTED[name])
    assert str(info.value) == expected
    assert len(info.value.problems) == len(EXPECTED[name])


@pytest.mark.parametrize("name", ["invalid-inline-secret.yaml", "invalid-redis-url-with-password.yaml"])
def test_secret_value_never_in_message(name: str) -> None:
    """A rejected inline secret is named by its key, never shown: 'hunter2' appears nowhere in the error."""
    with pytest.raises(PolicyError) as info:
        load_policy(FIXTURES / name)
    assert "hunter2" in (FIXTURES / name).read_text()
    assert "hunter2" not in str(info.value)
    assert all("hunter2" not in repr(p) for p in info.value.problems)
