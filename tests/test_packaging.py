"""Packaging: the dependency ranges in pyproject.toml and the exact versions in constraints.txt (what CI installs
with, `bootstrap`) agree, and the metadata needs no project URL (trafficd has no public home)."""

from __future__ import annotations

import tomllib
from pathlib import Path

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

from trafficd import bootstrap

ROOT = Path(__file__).resolve().parent.parent


def _pins() -> dict[str, str]:
    pins = {}
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
