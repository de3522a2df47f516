"""A production install of this checkout for benchmarks: the built wheel in a fresh venv, with only its runtime
dependencies, so that a benchmark times the `trafficd` an operator runs (README, "Running it for real").

Offline: the wheel is built with this venv's setuptools (no build isolation) and installed with `--no-deps`; the
runtime dependencies are the closure of pyproject's `dependencies` (markers and extras followed), each linked
from this venv's site-packages into the new venv's. A development-only library that this venv also holds
(opentelemetry, which fastapi pulls in and redis-py imports when it is there; pytest; moto) is not importable
there, as on a production machine, and no editable-install finder runs at start.
"""

from __future__ import annotations

import importlib.metadata
import os
import subprocess
import sys
import sysconfig
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[3]


def runtime_distributions() -> list[importlib.metadata.Distribution]:
    """The installed distributions that pyproject's runtime `dependencies` need, transitively."""
    from packaging.requirements import Requirement
    from packaging.utils import canonicalize_name

    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    todo: list[tuple[str, frozenset[str]]] = [(text, frozenset()) for text in project["dependencies"]]
    found: dict[str, importlib.metadata.Distribution] = {}
    done: set[tuple[str, frozenset[str]]] = set()
    while todo:
        text, wanted_by = todo.pop()  # wanted_by: the extras of the requirement that named this one
        req = Requirement(text)
        if req.marker is not None and not any(req.marker.evaluate({"extra": e}) for e in {"", *wanted_by}):
            continue
        key = (canonicalize_name(req.name), frozenset(req.extras))
        if key in done:
            continue
        done.add(key)
        dist = importlib.metadata.distribution(req.name)
        found[key[0]] = dist
        todo += [(r, key[1]) for r in dist.requires or []]
    return [found[name] for name in sorted(found)]


def _top_level_entries(dist: importlib.metadata.Distribution) -> set[str]:
    """The names a distribution puts directly in site-packages (packages, modules, its .dist-info)."""
    return {f.parts[0] for f in dist.files or [] if f.parts[0] not in ("..", "__pycache__")}


def install(directory: Path) -> Path:
    """Build the wheel, install it in a venv under `directory` with its runtime dependencies; the venv's path."""
    dist_dir, venv = directory / "dist", directory / "venv"
    # no PYTHONPATH: a source tree on it (its egg-info) would tell pip that trafficd is installed already
    clean = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    build = [sys.executable, "-m", "build", "--wheel", "--no-isolation", "--skip-dependency-check", "-o", str(dist_dir)]
    subprocess.run([*build, str(ROOT)], check=True, capture_output=True, timeout=600)
    wheel = next(dist_dir.glob("trafficd-*.whl"))
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True, timeout=120)
    python = venv / "bin" / "python"
    pip = [sys.executable, "-m", "pip", "--python", str(python), "install", "-q", "--no-deps", "--no-index"]
    subprocess.run([*pip, str(wheel)], check=True, capture_output=True, timeout=300, env=clean)
    purelib = Path(
        subprocess.run(
            [str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
            capture_output=True,
            text=True,
            check=True,
            env=clean,
        ).stdout.strip()
    )
    here = Path(sysconfig.get_paths()["purelib"])
    for dist in runtime_distributions():
        for name in _top_level_entries(dist):
            source = Path(str(dist.locate_file(name)))
            if source.parent == here and not (purelib / name).exists():
                (purelib / name).symlink_to(source)
    if not (venv / "bin" / "trafficd").exists():
        raise RuntimeError(f"pip did not install {wheel.name} into {venv}")
    return venv
