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
    "invalid-a-record-with-host-name.yaml": (
        "{f}:11:21: regions.us-east.dns.endpoint: 'us-east.lb.example.com' is not an IPv4 address, but "
        "dns.record_type is A: an A record holds an IPv4 address, like '192.0.2.10' (or change dns.record_type)",
    ),
    "invalid-aaaa-record-with-ipv4.yaml": (
        "{f}:17:21: regions.eu-west.dns.endpoint: '192.0.2.20' is not an IPv6 address, but dns.record_type is "
        "AAAA: an AAAA record holds an IPv6 address, like '2001:db8::10' (or change dns.record_type)",
    ),
    "invalid-alias-bomb.yaml": (
        "{f}:26:6: (top level): refused: it expands to more than 20000 values (YAML aliases '*' repeat what an "
        "anchor '&' names); a policy needs nothing like this: write the values out",
    ),
    "invalid-api-key-env-and-file.yaml": ("{f}:23:3: probe.auth: give api_key_env or api_key_file, not both",),
    "invalid-api-key-env-is-the-key.yaml": (
        "{f}:24:18: probe.auth.api_key_env: must be the name of an environment variable (letters, digits, '_'), "
        "not the secret itself",
    ),
    "invalid-aws-region-typo.yaml": (
        "{f}:11:57: regions.us-east.dns.aws_region: unknown AWS region 'useast1' (not in botocore's endpoint "
        "data); did you mean 'us-east-1'?",
    ),
    "invalid-aws-region-unknown.yaml": (
        "{f}:11:57: regions.us-east.dns.aws_region: unknown AWS region 'us-east-9' (not in botocore's endpoint "
        "data); did you mean 'us-east-2'?",
    ),
    "invalid-bool-as-string.yaml": (
        "{f}:23:12: controller.dry_run: expected true or false, got the string 'true'; remove the quotes",
    ),
    "invalid-cname-with-ip.yaml": (
        "{f}:17:21: regions.eu-west.dns.endpoint: '192.0.2.20' is not a host name, but dns.record_type is CNAME: a "
        "CNAME points at a name, like 'us-east.lb.example.com' (or change dns.record_type)",
    ),
    "invalid-concurrency-zero.yaml": ("{f}:23:16: probe.concurrency: must be at least 1 (got 0)",),
    "invalid-control-character.yaml": (
        "{f}:3:23: (top level): not valid YAML: the control character U+0007 is not allowed; delete it",
    ),
    "invalid-discovery-a-without-port.yaml": (
        "{f}:14:5: regions.eu-west.discovery: discovery of type A needs a port (SRV records carry their own)",
    ),
    "invalid-duplicate-model.yaml": ("{f}:6:11: models[1].name: model 'llama-3.1-8b-instruct' is listed twice",),
    "invalid-duplicate-neighbour.yaml": (
        "{f}:12:27: regions.us-east.neighbours[1]: neighbour 'eu-west' is listed twice; list each neighbour once, "
        "preferred first",
    ),
    "invalid-duplicate-worker.yaml": ("{f}:11:15: regions.us-east.workers[1].name: worker 'use1-a' is listed twice",),
    "invalid-duration-absurd.yaml": (
        "{f}:23:18: recover.hold_down_max: '9999999999h' is longer than 30 days (720h), the longest duration a "
        "policy takes",
    ),
    "invalid-duration-unknown-unit.yaml": (
        "{f}:23:18: recover.hold_down_max: not a duration: '1d'; write a number and a unit: '3s', '250ms', '5m' or "
        "'1h'",
    ),
    "invalid-endpoint-not-host-name.yaml": (
        "{f}:11:21: regions.us-east.dns.endpoint: 'us-east lb' is neither a host name nor an IP address: write the "
        "load balancer's name (like 'us-east.lb.example.com') or, for A/AAAA records, its address",
    ),
    "invalid-fast-rule-over-above-of-last.yaml": ("{f}:23:3: trip.fast_rule: over (4) cannot exceed of_last (3)",),
    "invalid-hold-down-above-max.yaml": (
        "{f}:23:14: recover.hold_down: (1h) is longer than recover.hold_down_max (30m)",
    ),
    "invalid-hold-down-decay-1s.yaml": (
        "{f}:23:20: recover.hold_down_decay: (1s) is shorter than recover.hold_down (2m): a trip would be "
        "forgotten before its hold-down ends, so repeated trips never lengthen it; write at least 2m (default 1h)",
    ),
    "invalid-interval-bare-number.yaml": (
        "{f}:23:13: probe.interval: a duration needs a unit: write '500ms' or '500s', not 500",
    ),
    "invalid-lease-ttl-1ms.yaml": (
        "{f}:23:14: controller.lease_ttl: (1ms) must be longer than windows.evaluate_every (10s): the leader "
        "renews its lease once per evaluation, so a shorter lease lapses between renewals and leadership flaps "
        "(default 15s)",
    ),
    "invalid-missing-colon.yaml": (
        "{f}:23:3: (top level): not valid YAML: this line has no ':' after its key; write 'key: value'",
    ),
    "invalid-misspelt-section.yaml": ("{f}:22:1: regoins: unknown key 'regoins'; did you mean 'regions'?",),
    "invalid-models-empty.yaml": ("{f}:4:1: models: must have at least 1 item",),
    "invalid-nested-too-deep.yaml": (
        "{f}:22:14: (top level): refused: it is nested more than 64 levels deep; a policy needs nothing like this: "
        "write the values out",
    ),
    "invalid-over-indented.yaml": (
        "{f}:24:5: (top level): not valid YAML: this line is indented deeper than the key above it; line it up "
        "with its siblings",
    ),
    "invalid-percent-negative.yaml": (
        "{f}:23:20: guards.fail_open_share: a percentage cannot be negative (got '-5%')",
    ),
    "invalid-percent-not-a-number.yaml": (
        "{f}:23:20: guards.fail_open_share: not a percentage: 'half%'; write it like '75%'",
    ),
    "invalid-percent-over-100.yaml": (
        "{f}:23:13: ramp.max_step: a percentage must be between 0% and 100% (got '101%')",
    ),
    "invalid-percent-with-space.yaml": (
        "{f}:23:13: ramp.max_step: write a percentage without a space: '25%', not '25 %'",
    ),
    "invalid-pool-name-without-region.yaml": (
        "{f}:22:14: dns.pool_name: must contain '{region}': every region needs a pool of its own",
    ),
    "invalid-quantile-100.yaml": (
        "{f}:23:13: slo.quantile: (100%) must be at least 90% and under 100%: total_p99 and ttft_p99 are tail "
        "latencies judged at this quantile (write e.g. '99%')",
    ),
    "invalid-quantile-median.yaml": (
        "{f}:23:13: slo.quantile: (50%) must be at least 90% and under 100%: total_p99 and ttft_p99 are tail "
        "latencies judged at this quantile (write e.g. '99%')",
    ),
    "invalid-record-name-not-host-name.yaml": (
        "{f}:21:16: dns.record_name: 'api example com' is not a host name: write labels of letters, digits and '-' "
        "separated by dots (like 'api.example.com.')",
    ),
    "invalid-record-type-mx.yaml": (
        "{f}:22:16: dns.record_type: must be 'CNAME', 'A' or 'AAAA' (got the string 'MX')",
    ),
    "invalid-recursive-alias.yaml": (
        "{f}:22:9: (top level): refused: an alias refers to the value that contains it; a policy needs nothing "
        "like this: write the values out",
    ),
    "invalid-redis-url-http.yaml": (
        "{f}:23:8: redis.url: must be a redis://, rediss:// or unix:// URL, redis+cluster://host:port,… or "
        "redis+sentinel://host:port,…/<primary name>",
    ),
    "invalid-region-name-upper-case.yaml": (
        "{f}:13:3: regions.EU-West: 'EU-West' is not a valid name: use lower-case letters, digits and '-' (like "
        "'us-east')",
    ),
    "invalid-region-without-workers.yaml": ("{f}:13:3: regions.eu-west: a region needs workers or discovery",),
    "invalid-self-neighbour.yaml": ("{f}:12:18: regions.us-east.neighbours[0]: a region cannot be its own neighbour",),
    "invalid-service-with-underscore.yaml": (
        "{f}:3:10: service: 'inference_api' is not a valid name: use lower-case letters, digits and '-' (like "
        "'us-east')",
    ),
    "invalid-stale-after-below-interval.yaml": (
        "{f}:23:13: probe.interval: (1m) is longer than windows.stale_after (30s): every region would keep turning "
        "unknown between two probes",
    ),
    "invalid-top-level-list.yaml": (
        "{f}:2:1: (top level): the top level must be a mapping of keys to values, starting with 'version: 1'",
    ),
    "invalid-ttft-above-total.yaml": (
        "{f}:24:13: slo.ttft_p99: (5s) is above slo.total_p99 (3s): the first token arrives before the answer "
        "ends; lower ttft_p99 or raise total_p99",
    ),
    "invalid-ttl-too-long.yaml": ("{f}:22:8: dns.ttl: must be at most 86400 (got 604800)",),
    "invalid-unclosed-bracket.yaml": ("{f}:12:17: (top level): not valid YAML: this '[' is never closed; add the ']'",),
    "invalid-unclosed-quote.yaml": (
        "{f}:23:14: (top level): not valid YAML: this quoted value is never closed; add the closing quote",
    ),
    "invalid-worker-url-ftp.yaml": (
        "{f}:10:14: regions.us-east.workers[0].url: must be an http:// or https:// URL (got "
        "'ftp://inference.us-east.example.com')",
    ),
    "invalid-worker-url-with-credentials.yaml": (
        "{f}:10:14: regions.us-east.workers[0].url: the URL contains credentials; remove them and use "
        "probe.auth.api_key_env or api_key_file",
    ),
    "invalid-zone-id-empty.yaml": (
        "{f}:20:12: dns.zone_id: must not be empty; copy the hosted zone's id from Route 53 (like "
        "'Z0123456789EXAMPLE')",
    ),
    "invalid-zone-id-with-space.yaml": (
        "{f}:20:12: dns.zone_id: '/hostedzone/z01 23' is not a Route 53 hosted zone id: upper-case letters and "
        "digits only, no spaces (like 'Z0123456789EXAMPLE' or '/hostedzone/Z0123456789EXAMPLE')",
    ),
    "invalid-api-key-over-http.yaml": (
        "{f}:10:14: regions.us-east.workers[0].url: the API key would be sent in clear text over http://; use "
        "https://, or set probe.targets.allow_cleartext_api_key: true for a trusted network",
    ),
    "invalid-target-loopback.yaml": (
        "{f}:10:14: regions.us-east.workers[0].url: 127.0.0.1 is a loopback address; probing it needs "
        "probe.targets.allow_loopback: true",
    ),
    "invalid-target-metadata-ipv6.yaml": (
        "{f}:11:18: regions.us-east.workers[0].address: fd00:ec2::254 is a cloud metadata address; probes may "
        "never go there",
    ),
    "invalid-target-metadata-mapped.yaml": (
        "{f}:10:14: regions.us-east.workers[0].url: ::ffff:169.254.169.254 is a cloud metadata address; probes may "
        "never go there",
    ),
    "invalid-target-metadata-name.yaml": (
        "{f}:10:14: regions.us-east.workers[0].url: 'metadata.google.internal' is a cloud metadata endpoint; "
        "probes may never go there",
    ),
    "invalid-target-metadata.yaml": (
        "{f}:10:14: regions.us-east.workers[0].url: 169.254.169.254 is a cloud metadata address; probes may never "
        "go there",
    ),
    "invalid-target-private.yaml": (
        "{f}:10:14: regions.us-east.workers[0].url: 10.0.0.7 is a private address; probing it needs "
        "probe.targets.allow_private: true",
    ),
    "invalid-capacity-generic-without-running.yaml": (
        "{f}:22:1: capacity: server 'generic' needs metrics.running (the gauge of requests being served); name it, "
        "or pick vllm, sglang or tgi",
    ),
    "invalid-capacity-max-age-below-scrape.yaml": (
        "{f}:22:1: capacity: max_age (10s) must be longer than scrape_every (30s), or every figure would be stale "
        "before the next scrape",
    ),
    "invalid-capacity-metric-name.yaml": (
        "{f}:24:22: capacity.metrics.running: not a Prometheus metric name: 'requests running'; use letters, "
        "digits, '_' and ':' and start with a letter (e.g. vllm:num_requests_running)",
    ),
    "invalid-capacity-server-typo.yaml": (
        "{f}:19:24: regions.eu-west.capacity.server: must be 'vllm', 'sglang', 'tgi' or 'generic' (got the string "
        "'vlm')",
    ),
}


def test_every_fixture_is_pinned() -> None:
    """Each invalid-*.yaml has an expected message here and each message has its file; there are at least 60."""
    on_disk = {p.name for p in FIXTURES.glob("invalid-*.yaml")}
    assert on_disk == set(EXPECTED)
    assert len(on_disk) >= 60


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
