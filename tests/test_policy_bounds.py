"""Policy files that are too big, alias bombs, unsafe permissions and "can never drain" combinations."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import structlog

from trafficd import cli
from trafficd.policy.load import MAX_BYTES
from trafficd.policy.schema import Auth, PolicyError, Probe, Redis, format_duration, load_policy
from trafficd.probe.credentials import SecretError, load_api_key
from trafficd.stats.client import StoreConfigError, redis_client

ROOT = Path(__file__).parent.parent
MINIMAL = ROOT / "policies" / "minimal.yaml"
BOMB = Path(__file__).parent / "policies" / "invalid-alias-bomb.yaml"


@pytest.fixture(autouse=True)
def _restore_logging() -> Iterator[None]:
    saved = structlog.get_config()
    yield
    structlog.configure(**saved)


def _copy(tmp_path: Path, text: str, mode: int = 0o644) -> Path:
    path = tmp_path / "policy.yaml"
    path.write_text(text)
    path.chmod(mode)
    return path


@pytest.mark.parametrize(("mode", "who"), [(0o666, "world"), (0o664, "group"), (0o620, "group")])
def test_writable_policy_refused_naming_the_mode(tmp_path: Path, mode: int, who: str) -> None:
    """A group- or world-writable policy file is refused with a message naming its mode and the fix."""
    path = _copy(tmp_path, MINIMAL.read_text(), mode)
    with pytest.raises(PolicyError) as info:
        load_policy(path)
    assert str(info.value) == (
        f"{path}: (top level): the policy file is {who}-writable (mode {mode:04o}): anyone who can write it could "
        f"steer traffic or read secrets; run 'chmod go-w {path}'"
    )


def test_private_policy_accepted(tmp_path: Path) -> None:
    """0600 and 0644 are fine (read-only for others is the usual /etc mode)."""
    for mode in (0o600, 0o644, 0o444):
        load_policy(_copy(tmp_path, MINIMAL.read_text(), mode))


def test_writable_api_key_file_refused(tmp_path: Path) -> None:
    """A group-writable API key file is refused with its mode; the key is never read."""
    key = tmp_path / "api-key"
    key.write_text("sk-secret")
    key.chmod(0o660)
    with pytest.raises(SecretError, match=r"API key file \(probe.auth.api_key_file\) is group-writable \(mode 0660\)"):
        load_api_key(Auth(api_key_file=str(key)), environ={})
    key.chmod(0o600)
    secret = load_api_key(Auth(api_key_file=str(key)), environ={})
    assert secret is not None and secret.reveal() == "sk-secret"


def test_writable_redis_password_file_refused(tmp_path: Path) -> None:
    """A world-writable Redis password file is refused with its mode."""
    pw = tmp_path / "redis-password"
    pw.write_text("hunter2")
    pw.chmod(0o666)
    with pytest.raises(
        StoreConfigError, match=r"password file \(redis.password_file\) is world-writable \(mode 0666\)"
    ):
        redis_client(Redis(password_file=str(pw)))


def test_file_over_one_mib_refused_without_reading_it_all(tmp_path: Path) -> None:
    """A 37 MB file is refused with its size; only MAX_BYTES + 1 bytes are read."""
    path = tmp_path / "huge.yaml"
    with path.open("w") as f:
        f.write(MINIMAL.read_text())
        f.write("#" * 100 + "\n" * 1)
        f.truncate(37_000_000)
    path.chmod(0o644)
    with pytest.raises(PolicyError) as info:
        load_policy(path)
    assert str(info.value) == (
        f"{path}: (top level): the file is 37000000 bytes, more than the {MAX_BYTES} bytes (1 MiB) a policy may "
        "have; is it the right file?"
    )


def test_alias_bomb_refused_by_policy_check(capsys: pytest.CaptureFixture[str]) -> None:
    """`policy check` on a billion-laughs file exits 1 with the expansion limit named (it used to hang)."""
    started = time.monotonic()
    code = cli.main(["policy", "check", str(BOMB)])
    elapsed = time.monotonic() - started
    out, err = capsys.readouterr()
    assert code == 1 and out == f"{BOMB}: INVALID\n"
    assert "refused: it expands to more than 20000 values" in err
    print(f"alias bomb refused in {elapsed * 1000:.0f} ms")


NEVER = "trafficd can never drain a region"


@pytest.mark.parametrize(
    ("extra", "warning"),
    [
        ("guards:\n  max_drained: 0\n", f"guards.max_drained: is 0: {NEVER}; allow at least 1"),
        (
            "guards:\n  min_serving_regions: 2\n",
            f"guards.min_serving_regions: equals the number of regions (2): {NEVER}; use at most 1",
        ),
        ("ramp:\n  max_step: 0%\n", f"ramp.max_step: is 0%: no serving fraction can ever move, so {NEVER}"),
        (
            "ramp:\n  min_fraction: 100%\n",
            f"ramp.min_fraction: is 100%: a drained region keeps all its traffic, so {NEVER}",
        ),
    ],
)
def test_never_drain_combinations_fail_with_warnings_as_errors(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, extra: str, warning: str
) -> None:
    """Each "can never drain" setting is a warning: exit 0 normally, exit 1 with --warnings-as-errors."""
    path = _copy(tmp_path, MINIMAL.read_text() + extra)
    assert cli.main(["policy", "check", str(path)]) == 0
    _, err = capsys.readouterr()
    assert warning in err
    assert cli.main(["policy", "check", "--warnings-as-errors", str(path)]) == 1
    out, _ = capsys.readouterr()
    assert out == f"{path}: INVALID (warnings are errors)\n"


def test_every_headroom_zero_warns(tmp_path: Path) -> None:
    """When every region declares 0% headroom nobody can take spilled traffic: a warning on the first region."""
    text = MINIMAL.read_text().replace("    dns: {", "    capacity_headroom: 0%\n    dns: {")
    loaded = load_policy(_copy(tmp_path, text))
    assert any(
        w.field == "regions.us-east.capacity_headroom" and "every region's capacity_headroom is 0%" in w.reason
        for w in loaded.warnings
    ), loaded.warnings


def test_example_comment_names_the_real_default() -> None:
    """example.yaml's probe.interval comment states the schema's default (it said 1s when the default was 500ms)."""
    line = next(x for x in (ROOT / "policies" / "example.yaml").read_text().splitlines() if "interval:" in x)
    assert f"default {format_duration(Probe().interval)}:" in line
