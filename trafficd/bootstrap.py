"""Set up and run from a fresh clone: `python3 -m trafficd.bootstrap demo` or `... test`.

Standard library only (it runs before any dependency is installed). It:
  1. installs `redis-server` with apt-get when it is missing (and `python3-venv` when venv cannot be created;
     for `test`, `systemd` for systemd-analyze, `prometheus` for promtool, which checks the alert rules, and
     `faketime` for the fault suite's clock steps),
  2. creates `.venv` in the project root and installs trafficd with its dev dependencies into it
     with the versions pinned in constraints.txt (skipped when neither file changed since the last install),
  3. runs the demo, or the checks and tests (ruff, mypy, promtool check/test rules, pytest), then builds the
     wheel and the sdist and checks their metadata and contents (`dist_problems`).
Every service the demo or the tests need (redis-server, moto server, workers, agents, controller) is
started by them on free loopback ports and stopped by them; nothing is left running, and no system
service is started.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
VENV = ROOT / ".venv"
PY = VENV / "bin" / "python"
STAMP = VENV / ".trafficd-installed"
CONSTRAINTS = "constraints.txt"  # exact versions the tests ran with
RULES = ROOT / "deploy" / "prometheus"  # alert rules and their promtool unit tests


def say(msg: str) -> None:
    print(f"[bootstrap] {msg}", flush=True)


def run(cmd: list[str], **kw: object) -> None:
    subprocess.run(cmd, check=True, **kw)  # type: ignore[call-overload]


_apt_updated = False  # one `apt-get update` per bootstrap run, however many packages are missing


def apt_install(*packages: str) -> None:
    global _apt_updated
    if shutil.which("apt-get") is None:
        sys.exit(f"[bootstrap] {' '.join(packages)} missing and apt-get is not available: install it by hand")
    sudo = [] if os.geteuid() == 0 else ["sudo"]
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
    say(f"installing {' '.join(packages)} with apt-get")
    if not _apt_updated:
        run([*sudo, "apt-get", "update", "-qq"], env=env)
        _apt_updated = True
    run([*sudo, "apt-get", "install", "-y", "-qq", "--no-install-recommends", *packages], env=env)


def ensure_redis() -> None:
    if shutil.which("redis-server") or Path("/usr/bin/redis-server").exists():
        return
    apt_install("redis-server")
    # The Debian package enables and may start a system Redis; the demo and tests start their own on free
    # ports, so stop the packaged one again rather than leave a service behind that we did not need.
    systemd = shutil.which("systemctl") and Path("/run/systemd/system").is_dir()
    if systemd:
        subprocess.run(["systemctl", "disable", "--now", "redis-server"], capture_output=True)


def ensure_systemd_analyze() -> None:
    """The tests verify the unit files with `systemd-analyze verify` (no running systemd needed)."""
    if shutil.which("systemd-analyze") is None:
        apt_install("systemd")


def ensure_promtool() -> None:
    """The tests check /metrics, the alert rules and their unit tests with promtool (Debian package `prometheus`).

    The package also installs a Prometheus server; it is not wanted here, so it is stopped and disabled again."""
    if shutil.which("promtool"):
        return
    apt_install("prometheus")
    if shutil.which("systemctl") and Path("/run/systemd/system").is_dir():
        subprocess.run(["systemctl", "disable", "--now", "prometheus"], capture_output=True)


def ensure_faketime() -> None:
    """The fault suite steps a controller's wall clock with libfaketime (Debian package `faketime`)."""
    if shutil.which("faketime"):
        return
    apt_install("faketime")


def ensure_venv() -> None:
    if not PY.exists():
        say(f"creating {VENV}")
        if subprocess.run([sys.executable, "-m", "venv", str(VENV)]).returncode != 0:
            shutil.rmtree(VENV, ignore_errors=True)
            minor = f"{sys.version_info.major}.{sys.version_info.minor}"
            apt_install(f"python{minor}-venv")
            run([sys.executable, "-m", "venv", str(VENV)])
    digest = hashlib.sha256((ROOT / "pyproject.toml").read_bytes() + (ROOT / CONSTRAINTS).read_bytes()).hexdigest()
    if STAMP.exists() and STAMP.read_text() == digest:
        return
    say("installing trafficd and its dependencies into .venv")
    run([str(PY), "-m", "pip", "install", "-q", "--upgrade", "pip"])
    # the exact versions the suite was last run with (constraints.txt; pyproject has the ranges)
    run([str(PY), "-m", "pip", "install", "-q", "-c", str(ROOT / CONSTRAINTS), "-e", f"{ROOT}[dev]"])
    STAMP.write_text(digest)


def run_tests(extra: list[str]) -> int:
    bin_ = VENV / "bin"
    steps = [
        ("ruff", [str(bin_ / "ruff"), "check", "trafficd", "tests"]),
        ("ruff format", [str(bin_ / "ruff"), "format", "--check", "trafficd", "tests"]),
        ("mypy", [str(bin_ / "mypy")]),
        ("promtool check rules", ["promtool", "check", "rules", str(RULES / "trafficd-rules.yml")]),
        ("promtool test rules", ["promtool", "test", "rules", str(RULES / "trafficd-rules.test.yml")]),
        ("pytest", [str(bin_ / "pytest"), "-n", "2", "--dist", "loadgroup", *extra]),
    ]
    failed = []
    for name, cmd in steps:
        say(f"running {name}")
        if subprocess.run(cmd, cwd=ROOT).returncode != 0:
            failed.append(name)
    say("building the wheel and the sdist, checking their metadata and contents")
    if check_dist() != 0:
        failed.append("wheel/sdist")
    if failed:
        say(f"FAILED: {', '.join(failed)}")
        return 1
    say("all checks and tests passed")
    return 0


def check_dist() -> int:
    """Build the wheel and the sdist with the venv's own setuptools (offline) and check them (`dist_problems`)."""
    with tempfile.TemporaryDirectory(prefix="trafficd-dist-") as out:
        build = [str(PY), "-m", "build", "--no-isolation", "--skip-dependency-check", "-o", out, str(ROOT)]
        if subprocess.run(build, cwd=ROOT, stdout=subprocess.DEVNULL).returncode != 0:
            return 1
        problems = dist_problems(Path(out))
    for problem in problems:
        say(f"dist: {problem}")
    return 1 if problems else 0


REQUIRED_METADATA = ("Name", "Version", "Summary", "License", "Author", "Requires-Python", "Classifier")
IN_SDIST = ("trafficd/dev/demo.py", "tests/test_install.py", "constraints.txt", "LICENSE", "systemd/", "policies/")


def data_files() -> list[str]:
    """Where pyproject's [tool.setuptools.data-files] puts each file, relative to the install prefix."""
    import tomllib

    table = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["data-files"]
    return [f"{target}/{Path(source).name}" for target, sources in table.items() for source in sources]


def dist_problems(out: Path) -> list[str]:
    """What `twine check` checks, without twine (it pulls rich, which structlog then imports in every process):
    the metadata fields and the README as the long description, plus this project's rules — trafficd.dev and the
    tests in the sdist only, the units, policies and IAM document as data files of the wheel."""
    import email.parser
    import tarfile
    import zipfile

    wheels, sdists = sorted(out.glob("*.whl")), sorted(out.glob("*.tar.gz"))
    if len(wheels) != 1 or len(sdists) != 1:
        return [f"expected one wheel and one sdist, got {[p.name for p in out.iterdir()]}"]
    with zipfile.ZipFile(wheels[0]) as whl:
        names = whl.namelist()
        meta_name = next(n for n in names if n.endswith(".dist-info/METADATA"))
        meta = email.parser.Parser().parsestr(whl.read(meta_name).decode())
    problems = [f"wheel METADATA lacks {field}" for field in REQUIRED_METADATA if not meta.get_all(field)]
    if meta.get("Description-Content-Type") != "text/markdown" or "trafficd" not in (meta.get_payload() or ""):
        problems.append("wheel METADATA: the README is not the markdown long description")
    problems += [f"wheel contains {n}" for n in names if n.startswith("trafficd/dev/")]
    for data in data_files():  # every file pyproject lists: policies, units, the AWS drop-in, IAM, README, LICENSE
        if not any(n.endswith(f".data/data/{data}") for n in names):
            problems.append(f"wheel lacks the data file {data}")
    with tarfile.open(sdists[0]) as sdist:
        members = [m.split("/", 1)[1] for m in sdist.getnames() if "/" in m]
    problems += [f"sdist lacks {want}" for want in IN_SDIST if not any(m.startswith(want) for m in members)]
    return problems


def main(argv: list[str]) -> int:
    if not argv or argv[0] not in ("demo", "test", "setup"):
        print(__doc__)
        return 2
    ensure_redis()
    if argv[0] == "test":
        ensure_systemd_analyze()
        ensure_promtool()
        ensure_faketime()
    ensure_venv()
    what, extra = argv[0], argv[1:]
    if what == "setup":
        return 0
    if what == "demo":
        return subprocess.run([str(PY), "-m", "trafficd.dev", "demo", *extra], cwd=ROOT).returncode
    return run_tests(extra)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
