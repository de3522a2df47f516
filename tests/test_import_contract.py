"""The import contract, read from the source (AST, every import statement, at any depth in a module):

- the pure core (policy, decide, stats sketch + window, dns records/topology, model, keys, errors, backoff) imports
  no I/O library (aiohttp, redis, boto3, botocore, dnspython, prometheus_client) and no adapter — also through
  the trafficd modules it imports;
- commands sit on top: only the CLI and other commands import `trafficd.commands`;
- nothing outside `trafficd.dev` (and the tests) imports `trafficd.dev`, except the `trafficd-dev` entry point's
  bridge in cli.py, which says so when the development tools are not installed.
"""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parent.parent / "trafficd"

PURE = (
    "trafficd.policy",
    "trafficd.decide",
    "trafficd.stats.sketch",
    "trafficd.stats.window",
    "trafficd.stats.records",
    "trafficd.stats.capacity",
    "trafficd.dns.records",
    "trafficd.dns.topology",
    "trafficd.model",
    "trafficd.keys",
    "trafficd.errors",
    "trafficd.backoff",
)
IO_LIBRARIES = ("aiohttp", "redis", "boto3", "botocore", "dns", "prometheus_client", "apscheduler", "mypy_boto3")
ADAPTERS = (
    "trafficd.probe",
    "trafficd.control",
    "trafficd.runtime",
    "trafficd.commands",
    "trafficd.cli",
    "trafficd.dev",
    "trafficd.dns.route53",
    "trafficd.stats.client",
    "trafficd.stats.sink",
    "trafficd.stats.batch_script",
    "trafficd.stats.view",
    "trafficd.stats.store",
    "trafficd.stats.capacity_store",
)
DEV_BRIDGE = {"trafficd.cli"}  # dev_main: `trafficd-dev` says where the tools are when trafficd.dev is absent


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _imports() -> dict[str, set[str]]:
    """Module → every module it imports (absolute names; `from a import b` counts as a and a.b)."""
    out: dict[str, set[str]] = {}
    for path in PACKAGE.rglob("*.py"):
        name = _module_name(path)
        package = name if path.name == "__init__.py" else name.rpartition(".")[0]
        found: set[str] = set()
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Import):
                found |= {a.name for a in node.names}
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                    base = ".".join([*anchor, base] if base else anchor)
                found.add(base)
                found |= {f"{base}.{a.name}" for a in node.names}
        out[name] = found
    return out


def _within(name: str, prefixes: tuple[str, ...]) -> bool:
    return any(name == p or name.startswith(p + ".") for p in prefixes)


def test_pure_core_imports_no_io_library_and_no_adapter() -> None:
    """Every pure-core module, and every trafficd module it reaches, stays off I/O libraries and adapters."""
    graph = _imports()
    pure = [m for m in graph if _within(m, PURE)]
    assert len(pure) >= 10
    for start in pure:
        seen, todo = {start}, [start]
        while todo:
            module = todo.pop()
            for imported in graph.get(module, ()):
                top = imported.split(".")[0]
                assert top not in IO_LIBRARIES, f"{start} reaches {module}, which imports {imported}"
                assert not _within(imported, ADAPTERS), f"{start} reaches {module}, which imports {imported}"
                if imported in graph and imported not in seen:
                    seen.add(imported)
                    todo.append(imported)


def test_commands_sit_on_top() -> None:
    """Only the CLI and commands import trafficd.commands (the CLI by name, when the command runs)."""
    for module, imported in _imports().items():
        if _within(module, ("trafficd.commands", "trafficd.cli")):
            continue
        assert not any(_within(i, ("trafficd.commands",)) for i in imported), module


def test_nothing_in_production_imports_dev() -> None:
    """trafficd.dev (demo, fake worker, benchmarks; not in the wheel) is imported by dev code and tests only."""
    for module, imported in _imports().items():
        if _within(module, ("trafficd.dev",)) or module in DEV_BRIDGE:
            continue
        assert not any(_within(i, ("trafficd.dev",)) for i in imported), module
