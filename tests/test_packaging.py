"""Packaging: the dependency ranges in pyproject.toml and the exact versions in constraints.txt (what CI installs
with, `bootstrap`) agree, the metadata needs no project URL (trafficd has no public home), and CI's wheel check
wants every data file pyproject lists."""

from __future__ import annotations

import io
import tarfile
import tomllib
import zipfile
from pathlib import Path

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

from trafficd import bootstrap

ROOT = Path(__file__).resolve().parent.parent


def _pins() -> dict[str, str]:
    pins: dict[str, str] = {}
    for line in (ROOT / "constraints.txt").read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if line:
            name, sep, version = line.partition("==")
            assert sep, f"constraints.txt: {line!r} is not an exact pin (name==version)"
            pins[canonicalize_name(name)] = version.strip()
    return pins


def test_every_dependency_has_an_upper_bound_and_a_tested_pin_inside_its_range() -> None:
    """Each runtime dependency is bounded above in pyproject and pinned in constraints.txt inside that range."""
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    pins = _pins()
    for text in project["dependencies"]:
        req = Requirement(text)
        assert any(spec.operator in ("<", "<=", "~=", "==") for spec in req.specifier), f"{text}: no upper bound"
        pinned = pins.get(canonicalize_name(req.name))
        assert pinned is not None, f"{req.name} is not pinned in constraints.txt"
        assert req.specifier.contains(pinned, prereleases=True), f"{req.name}=={pinned} is outside {text}"


def test_the_dist_check_asks_for_no_project_url() -> None:
    """The wheel check requires license, author and classifiers but no URL: the project has no public home."""
    assert {"License", "Author", "Classifier"} <= set(bootstrap.REQUIRED_METADATA)
    assert not any("url" in field.lower() for field in bootstrap.REQUIRED_METADATA)
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    assert "urls" not in project and project["license"] == {"text": "MIT"}
    assert (ROOT / "LICENSE").read_text().startswith("MIT License")


def _dists(out: Path, data: list[str]) -> None:
    """A wheel holding `data` as its data files and an sdist holding what bootstrap.IN_SDIST asks for."""
    meta = (
        "Metadata-Version: 2.1\nName: trafficd\nVersion: 0.1.0\nSummary: s\nLicense: MIT\nAuthor: a\n"
        "Requires-Python: >=3.11\nClassifier: Typing :: Typed\nDescription-Content-Type: text/markdown\n\n# trafficd\n"
    )
    with zipfile.ZipFile(out / "trafficd-0.1.0-py3-none-any.whl", "w") as whl:
        whl.writestr("trafficd-0.1.0.dist-info/METADATA", meta)
        for name in data:
            whl.writestr(f"trafficd-0.1.0.data/data/{name}", "x")
    with tarfile.open(out / "trafficd-0.1.0.tar.gz", "w:gz") as sdist:
        for name in bootstrap.IN_SDIST:
            member = tarfile.TarInfo(f"trafficd-0.1.0/{name}{'x' if name.endswith('/') else ''}")
            sdist.addfile(member, io.BytesIO(b""))


def test_the_dist_check_wants_every_data_file_pyproject_lists(tmp_path: Path) -> None:
    """CI's wheel check (bootstrap.dist_problems) passes a wheel with every listed data file and names one left out."""
    data = bootstrap.data_files()
    assert {"share/trafficd/policies/example.yaml", "share/trafficd/docs/iam-policy.json"} <= set(data)
    assert {
        "share/trafficd/systemd/trafficd-agent@.service",
        "share/trafficd/systemd/trafficd-controller.service",
    } <= set(data)
    (tmp_path / "ok").mkdir()
    _dists(tmp_path / "ok", data)
    assert bootstrap.dist_problems(tmp_path / "ok") == []
    (tmp_path / "short").mkdir()
    _dists(tmp_path / "short", [d for d in data if not d.endswith("aws-credentials.conf")])
    assert bootstrap.dist_problems(tmp_path / "short") == [
        "wheel lacks the data file share/trafficd/systemd/trafficd-controller.service.d/aws-credentials.conf"
    ]
