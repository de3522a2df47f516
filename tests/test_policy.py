"""The policy schema and loader: valid files, values, positions, cross-field checks, warnings and the hash."""

from __future__ import annotations

import hashlib
import typing
from collections.abc import Iterator
from pathlib import Path

import pytest
from pydantic import BaseModel, ValidationError

from trafficd.decide import characteristic
from trafficd.policy.errors import concrete_types, is_secret_key
from trafficd.policy.schema import (
    Policy,
    PolicyError,
    format_duration,
    load_policy,
    parse_duration,
    parse_percent,
    parse_policy,
)

ROOT = Path(__file__).parent.parent
MINIMAL = (ROOT / "policies" / "minimal.yaml").read_text()


def problems(text: str) -> list[str]:
    """The problems of an invalid policy text, each as 'line:column: field: reason'."""
    with pytest.raises(PolicyError) as info:
        parse_policy(text, "p.yaml")
    return [str(p).removeprefix("p.yaml:") for p in info.value.problems]


def with_section(extra: str, base: str = MINIMAL) -> str:
    return base + extra


def test_example_policy_is_the_issue_s_service() -> None:
    """policies/example.yaml: us-east, eu-west, ap-southeast; p99 3 s, TTFT p99 300 ms, 1 % errors; no warnings."""
    loaded = load_policy(ROOT / "policies" / "example.yaml")
    p = loaded.policy
    assert p.region_names == ["us-east", "eu-west", "ap-southeast"]
    assert (p.slo.total_p99, p.slo.ttft_p99, p.slo.error_rate) == (3.0, 0.3, 0.01)
    assert p.slo_threshold_ms == 3000.0 and p.ttft_threshold_ms == 300.0
    assert loaded.warnings == ()


def test_minimal_policy_takes_every_default() -> None:
    """policies/minimal.yaml loads without warnings and every section it leaves out equals the schema default."""
    loaded = parse_policy(MINIMAL, "minimal.yaml")
    p = loaded.policy
    assert loaded.warnings == ()
    assert p.windows.min_samples == 400 and p.slo.total_p99 == 3.0 and p.recover.below == 0.8
    assert p.guards.never_drain == [] and p.dns.ttl == 60 and p.redis.url == "redis://127.0.0.1:6379/0"


@pytest.mark.parametrize(
    ("text", "seconds"),
    [("3s", 3.0), ("250ms", 0.25), ("5m", 300.0), ("1h", 3600.0), ("1.5s", 1.5), (" 2m ", 120.0)],
)
def test_duration_parsing(text: str, seconds: float) -> None:
    """Durations are a number and a unit with no space; they parse to seconds and print back the same value."""
    assert parse_duration(text) == seconds
    assert parse_duration(format_duration(seconds)) == seconds


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("3 sec", "not a duration: '3 sec'; write a number and a unit: '3s', '250ms', '5m' or '1h'"),
        (True, "expected a duration like '3s', '250ms' or '5m'"),
        (0, "a duration must be greater than zero, and needs a unit like '3s' (got 0)"),
        ("0ms", "a duration must be greater than zero (got '0ms')"),
        ("1.5", "a duration needs a unit: write '1.5s' or '1.5ms', not '1.5'"),
    ],
)
def test_duration_rejections(value: object, message: str) -> None:
    """Values that are not durations are refused with a message that says what to write."""
    with pytest.raises(ValueError) as info:
        parse_duration(value)
    assert str(info.value) == message


@pytest.mark.parametrize(("text", "fraction"), [("75%", 0.75), ("0%", 0.0), ("100%", 1.0), ("0.5%", 0.005)])
def test_percent_parsing(text: str, fraction: float) -> None:
    """Percentages are written with '%' and parse to a fraction."""
    assert parse_percent(text) == fraction


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("101%", "a percentage must be between 0% and 100% (got '101%')"),
        ("-1%", "a percentage cannot be negative (got '-1%')"),
        (0.75, "write a percentage with its '%' sign: '75%' for the fraction 0.75"),
        ("ten%", "not a percentage: 'ten%'; write it like '75%'"),
    ],
)
def test_percent_rejections(value: object, message: str) -> None:
    """Bare fractions and out-of-range percentages are refused: 0.75 and 75 must never be confused."""
    with pytest.raises(ValueError) as info:
        parse_percent(value)
    assert str(info.value) == message


def test_hash_ignores_comments_and_layout_but_not_values() -> None:
    """The policy hash is of the effective policy: comments/layout/spelt-out defaults keep it, a value changes it."""
    base = parse_policy(MINIMAL)
    commented = parse_policy("# on-call note\n" + MINIMAL.replace("version: 1", "version: 1   # format"))
    spelt_out = parse_policy(with_section("windows:\n  min_samples: 400\n"))
    changed = parse_policy(with_section("slo:\n  total_p99: 2500ms\n"))
    assert len(base.hash) == 12 and int(base.hash, 16) >= 0
    assert base.hash == commented.hash == spelt_out.hash
    assert base.sha256 != commented.sha256  # the file's own sha256 still tells the files apart
    assert changed.hash != base.hash


def test_file_sha256_is_of_the_bytes_on_disk(tmp_path: Path) -> None:
    """LoadedPolicy.sha256 equals sha256sum of the file, even with CRLF line ends."""
    path = tmp_path / "p.yaml"
    path.write_bytes(MINIMAL.replace("\n", "\r\n").encode())
    assert load_policy(path).sha256 == hashlib.sha256(path.read_bytes()).hexdigest()


def test_unreadable_files(tmp_path: Path) -> None:
    """A missing file and a file that is not UTF-8 are problems with the file's name, not crashes."""
    with pytest.raises(PolicyError) as missing:
        load_policy(tmp_path / "nope.yaml")
    assert (
        str(missing.value) == f"{tmp_path / 'nope.yaml'}: (top level): cannot read the file: No such file or directory"
    )
    latin = tmp_path / "latin.yaml"
    latin.write_bytes(b"service: caf\xe9\n")
    with pytest.raises(PolicyError) as bad:
        load_policy(latin)
    assert str(bad.value) == f"{latin}: (top level): not UTF-8 text (byte 12)"


def test_top_level_must_be_a_mapping() -> None:
    """A list at the top level is refused at line 1."""
    assert problems("- version: 1\n") == [
        "1:1: (top level): the top level must be a mapping of keys to values, starting with 'version: 1'"
    ]


def test_errors_point_into_lists_and_never_echo_credentials() -> None:
    """A bad second worker is reported on its own line; a URL with credentials is refused without repeating it."""
    text = MINIMAL.replace(
        "        url: https://inference.us-east.example.com\n",
        "        url: https://inference.us-east.example.com\n"
        "      - name: use1-b\n"
        "        url: https://bob:s3cret@inference.us-east.example.com\n"
        "      - name: Use1_C\n"
        "        url: ftp://inference.us-east.example.com\n",
    )
    found = problems(text)
    assert found == [
        "13:14: regions.us-east.workers[1].url: the URL contains credentials; remove them and use "
        "probe.auth.api_key_env or api_key_file",
        "14:15: regions.us-east.workers[2].name: 'Use1_C' is not a valid name: use lower-case letters, digits and "
        "'-' (like 'us-east')",
        "15:14: regions.us-east.workers[2].url: must be an http:// or https:// URL (got "
        "'ftp://inference.us-east.example.com')",
    ]
    assert not any("s3cret" in p for p in found)


def test_env_reference_that_looks_like_a_secret_is_not_echoed() -> None:
    """password_env must name a variable; a pasted secret is refused without being shown."""
    found = problems(with_section("redis:\n  password_env: 'pa$$w0rd!'\n"))
    assert found == [
        "22:17: redis.password_env: must be the name of an environment variable (letters, digits, '_'), "
        "not the secret itself"
    ]


def test_secret_in_a_list_item_and_both_secret_sources() -> None:
    """A secret-looking key inside a worker is refused; giving both password_env and password_file is refused."""
    text = MINIMAL.replace(
        "        url: https://inference.eu-west.example.com\n",
        "        url: https://inference.eu-west.example.com\n        token: abc123\n",
    )
    text += "redis:\n  password_env: REDIS_PW\n  password_file: /run/credentials/redis\n"
    assert problems(text) == [
        "17:9: regions.eu-west.workers[0].token: inline secret: never write a secret in a policy file (it is "
        "copied, diffed and logged); put it in an environment variable or a credential file and use a *_env or "
        "*_file reference",
        "22:1: redis: give password_env or password_file, not both",
    ]


@pytest.mark.parametrize(
    ("key", "secret"),
    [
        ("password", True),
        ("api_key", True),
        ("apiKey", True),
        ("auth-token", True),
        ("REDIS_PASSWORD", True),
        ("client_secret", True),
        ("password_env", False),
        ("api_key_file", False),
        ("max_tokens", False),
    ],
)
def test_secret_key_names(key: str, secret: bool) -> None:
    """Keys named like secrets are caught; references to secrets (_env, _file) and look-alikes are not."""
    assert is_secret_key(key) is secret


def test_duplicate_keys_anywhere_are_reported_with_other_errors() -> None:
    """Duplicate keys inside a region and at the top level are all reported, beside the field errors."""
    text = MINIMAL.replace(
        "    dns: {endpoint: us-east.lb.example.com, aws_region: us-east-1}\n",
        "    dns: {endpoint: us-east.lb.example.com, aws_region: us-east-1}\n    neighbours: [eu-west]\n"
        "    neighbours: [eu-west]\n",
    )
    text += "windows:\n  trip: 1m\nwindows:\n  trip: 2m\n  long: 5\n"
    assert problems(text) == [
        "14:5: regions.us-east.neighbours: duplicate key 'neighbours' (first at line 13); YAML would silently keep "
        "only the last one: merge them into one",
        "25:1: windows: duplicate key 'windows' (first at line 23); YAML would silently keep only the last one: "
        "merge them into one",
        "27:9: windows.long: a duration needs a unit: write '5s' or '5ms', not 5",
    ]


def test_anchors_and_merge_keys_load() -> None:
    """YAML anchors and `<<:` merges work, and a merged key overridden beside it is not a duplicate."""
    text = MINIMAL.replace(
        "    dns: {endpoint: us-east.lb.example.com, aws_region: us-east-1}\n",
        "    dns: &use1 {endpoint: us-east.lb.example.com, aws_region: us-east-1}\n",
    ).replace(
        "    dns: {endpoint: eu-west.lb.example.com, aws_region: eu-west-1}\n",
        "    dns:\n      <<: *use1\n      endpoint: eu-west.lb.example.com\n      aws_region: eu-west-1\n",
    )
    p = parse_policy(text).policy
    assert p.regions["eu-west"].dns.endpoint == "eu-west.lb.example.com"


def test_unknown_key_without_a_close_match_lists_known_keys() -> None:
    """With no close match and no other home, the message lists the keys allowed there."""
    assert problems(with_section("ramp:\n  speed: 10%\n")) == [
        "22:3: ramp.speed: unknown key 'speed'; known keys here: max_step, min_fraction, cooldown"
    ]


def test_cross_field_errors_are_listed_together() -> None:
    """Every cross-field error is reported at once, each at its own line."""
    text = MINIMAL.replace(
        "    dns: {endpoint: us-east.lb.example.com, aws_region: us-east-1}\n",
        "    dns: {endpoint: us-east.lb.example.com, aws_region: us-east-1}\n    neighbours: [us-east]\n"
        "    models: [{name: a}, {name: a}]\n",
    ).replace(
        "      - name: euw1-a\n", "      - name: euw1-a\n        url: https://b.example.com\n      - name: euw1-a\n"
    )
    text += "windows:\n  stale_after: 200ms\nrecover:\n  hold_down: 1h\n  hold_down_max: 10m\n"
    text = text.replace("  record_name: api.example.com.\n", "  record_name: api.example.com.\n  pool_name: pools.x.\n")
    assert problems(text) == [
        "13:18: regions.us-east.neighbours[0]: a region cannot be its own neighbour",
        "14:32: regions.us-east.models[1].name: model 'a' is listed twice",
        "19:15: regions.eu-west.workers[1].name: worker 'euw1-a' is listed twice",
        "25:14: dns.pool_name: must contain '{region}': every region needs a pool of its own",
        "27:16: windows.stale_after: (200ms) is shorter than probe.interval (250ms): every region would keep turning "
        "unknown between two probes",
        "29:14: recover.hold_down: (1h) is longer than recover.hold_down_max (10m)",
    ]


def test_deadline_overrides_are_checked_where_they_are_set() -> None:
    """first_token/connect must fit within total after overrides; the most specific override is blamed."""
    text = MINIMAL.replace(
        "  - name: llama-3.1-8b-instruct\n",
        "  - name: llama-3.1-8b-instruct\n    deadlines: {total: 5s}\n",
    ).replace(
        "    dns: {endpoint: eu-west.lb.example.com, aws_region: eu-west-1}\n",
        "    dns: {endpoint: eu-west.lb.example.com, aws_region: eu-west-1}\n    deadlines: {connect: 40s}\n",
    )
    assert problems(text) == [
        "7:5: models[0].deadlines.first_token: (10s) is longer than the total deadline (5s) for region 'us-east', "
        "model 'llama-3.1-8b-instruct'",
        "7:5: models[0].deadlines.connect: (40s) is longer than the total deadline (5s) for region 'eu-west', "
        "model 'llama-3.1-8b-instruct'",
    ]


def test_discovery_by_address_needs_a_port() -> None:
    """A/AAAA discovery has no port in its records, so the policy must give one."""
    text = MINIMAL.replace(
        "    workers:\n      - name: euw1-a\n        url: https://inference.eu-west.example.com\n",
        "    discovery: {name: workers.eu-west.internal, type: A}\n",
    )
    assert problems(text) == [
        "14:5: regions.eu-west.discovery: discovery of type A needs a port (SRV records carry their own)"
    ]


def test_warnings_do_not_refuse_the_policy() -> None:
    """Legal but doubtful settings load, with a warning each: cooldown < TTL, a deprecated field, short deadlines."""
    text = with_section(
        "ramp:\n  cooldown: 30s\nwindows:\n  min_samples: 50\nprobe:\n  deadlines: {first_token: 2s, total: 3s}\n"
        "slo:\n  ttft_p99: 2s\nguards:\n  never_drain: [us-east, eu-west]\n"
    )
    loaded = parse_policy(text, "p.yaml")
    assert [str(w).removeprefix("p.yaml:") for w in loaded.warnings] == [
        "22:13: ramp.cooldown: (30s) is shorter than dns.ttl (60s): resolvers may still hold the previous weights "
        "when the next step is judged",
        "24:16: windows.min_samples: deprecated: ignored since the sequential trip rule (docs/judge.md); evidence "
        "accumulates probe by probe, so a window needs no minimum number of samples; remove it (`trafficd policy "
        "check` prints the detection delay the region's probe rate gives)",
        "26:28: probe.deadlines.first_token: (2s) is not above slo.ttft_p99 (2s): a probe that times out never "
        "counts as over the TTFT SLO",
        "26:39: probe.deadlines.total: (3s) is not above slo.total_p99 (3s): a probe that times out is recorded "
        "at its deadline and never counts as over the SLO",
        "30:3: guards.never_drain: lists every region: trafficd will never drain anything",
    ]


def test_building_a_policy_in_code_runs_the_same_checks() -> None:
    """Policy.model_validate (no file) still refuses cross-field errors, naming each field."""
    data = parse_policy(MINIMAL).policy.model_dump(mode="json")
    data["guards"]["never_drain"] = ["mars"]
    data["guards"]["min_serving_regions"] = 5
    with pytest.raises(ValidationError) as info:
        Policy.model_validate(data)
    assert "guards.never_drain[0]: unknown region 'mars'" in str(info.value)
    assert "guards.min_serving_regions: is 5 but the policy has only 2 regions" in str(info.value)


def test_deadlines_for_merges_region_then_model() -> None:
    """Effective deadlines: probe defaults, then the region's overrides, then the model's."""
    text = MINIMAL.replace(
        "  - name: llama-3.1-8b-instruct\n", "  - name: llama-3.1-8b-instruct\n    deadlines: {total: 60s}\n"
    ).replace(
        "    dns: {endpoint: eu-west.lb.example.com, aws_region: eu-west-1}\n",
        "    dns: {endpoint: eu-west.lb.example.com, aws_region: eu-west-1}\n"
        "    deadlines: {connect: 5s, total: 20s}\n",
    )
    d = parse_policy(text).policy.deadlines_for("eu-west", "llama-3.1-8b-instruct")
    assert (d.connect, d.first_token, d.gap, d.total) == (5.0, 10.0, 10.0, 60.0)


def _field_paths(model: type[BaseModel], prefix: str) -> Iterator[str]:
    for name, info in model.model_fields.items():
        path = f"{prefix}{name}"
        yield path
        for tp in concrete_types(info.annotation):
            if typing.get_origin(tp) is list:
                inner, sub = concrete_types(typing.get_args(tp)[0])[0], f"{path}[]."
            elif typing.get_origin(tp) is dict:
                inner, sub = concrete_types(typing.get_args(tp)[1])[0], f"{path}.<name>."
            else:
                inner, sub = tp, f"{path}."
            overrides = inner.__name__ == "DeadlinesOverride" or (
                inner.__name__ == "CapacityFields" and path != "capacity"
            )
            if isinstance(inner, type) and issubclass(inner, BaseModel) and not overrides:
                yield from _field_paths(inner, sub)


def test_docs_name_every_field() -> None:
    """docs/policy.md has a row for every field of the schema (deadline and capacity overrides: one row per place)."""
    docs = (ROOT / "docs" / "policy.md").read_text()
    paths = [p for p in _field_paths(Policy, "") if not p.startswith("regions.<name>.models[]")]
    assert len(paths) > 90
    assert [p for p in paths if f"`{p}" not in docs] == []


def test_a_region_probed_too_slowly_is_warned_about_by_its_detection_delay() -> None:
    """Probing one worker × one model every 5 s: no sample-count warning (the judge needs no minimum), but the
    operating characteristic warns that the false-alarm budget is met only with a slow detection."""
    loaded = parse_policy(MINIMAL + "probe:\n  interval: 5s\n", "slow.yaml")
    assert [str(w) for w in loaded.warnings] == []
    slow = [(loc, m) for loc, m in characteristic.warnings(loaded.policy) if loc == ("probe", "interval")]
    assert len(slow) == 2 and "the false-trip budget is met only with" in slow[0][1]  # both regions


def test_aws_regions_read_without_parsing_the_services_are_the_partitions_regions() -> None:
    """The fast read of botocore's endpoints.json names the regions a full JSON parse finds (every partition)."""
    import importlib.util
    import json

    from trafficd.policy.values import aws_regions

    spec = importlib.util.find_spec("botocore")
    assert spec is not None and spec.submodule_search_locations
    path = Path(next(iter(spec.submodule_search_locations))) / "data" / "endpoints.json"
    full = json.loads(path.read_text(encoding="utf-8"))
    expected = sorted(region for partition in full["partitions"] for region in partition["regions"])
    assert list(aws_regions()) == expected
    assert "us-east-1" in expected and "cn-north-1" in expected
