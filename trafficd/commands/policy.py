"""`trafficd policy check|show|diff|schema`: what on-call and CI run before a policy goes live.

    trafficd policy check [FILE...]    every problem of every file, exit 0 when all are valid, 1 otherwise
    trafficd policy show [FILE]        the effective policy (defaults filled in) as YAML
    trafficd policy diff OLD NEW       what would change in behaviour; exit 0 same, 1 different, 2 invalid
    trafficd policy schema             a JSON Schema for editors (yaml-language-server, VS Code, IntelliJ)

FILE defaults to $TRAFFICD_POLICY, else /etc/trafficd/policy.yaml. Problems and warnings go to stderr, results
to stdout.
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import TYPE_CHECKING, Any

from trafficd.cli import DEFAULT_POLICY, default_policy

if TYPE_CHECKING:
    from trafficd.policy.schema import LoadedPolicy

# Each action imports what it uses (the schema and pydantic, YAML, the trip rule's figures): `policy --help` none.


def _load(path: str) -> LoadedPolicy | None:
    from trafficd.policy.schema import PolicyError, load_policy

    try:
        return load_policy(path)
    except PolicyError as exc:
        for problem in exc.problems:
            print(str(problem), file=sys.stderr)
        return None


def _check(args: argparse.Namespace) -> int:
    from trafficd.decide import characteristic

    failed = 0
    for path in args.files or [default_policy()]:
        loaded = _load(path)
        if loaded is None:
            failed += 1
            print(f"{path}: INVALID", file=sys.stdout)
            continue
        for warning in loaded.warnings:
            print(f"warning: {warning}", file=sys.stderr)
        promise = characteristic.warnings(loaded.policy)  # the trip rule's operating characteristic (judge.md)
        for loc, message in promise:
            print(f"warning: {path}: {'.'.join(loc)}: {message}", file=sys.stderr)
        if (loaded.warnings or promise) and args.warnings_as_errors:
            failed += 1
            print(f"{path}: INVALID (warnings are errors)", file=sys.stdout)
            continue
        regions = ", ".join(loaded.policy.region_names)
        print(f"{path}: ok (policy hash {loaded.hash}; regions {regions})", file=sys.stdout)
        for line in characteristic.report(loaded.policy):  # what the trip rule promises, per region
            print(f"  {line}", file=sys.stdout)
    return 1 if failed else 0


def effective_yaml(loaded: LoadedPolicy) -> str:
    """The effective policy as YAML that `policy check` accepts and that hashes the same."""
    import yaml

    header = (
        f"# effective policy from {loaded.path} (every default filled in; unset optional keys left out)\n"
        f"# policy hash {loaded.hash}; file sha256 {loaded.sha256}\n"
    )
    data = loaded.policy.model_dump(mode="json", exclude_none=True)
    body = yaml.safe_dump(data, sort_keys=False, allow_unicode=True, width=120)
    return header + body


def _show(args: argparse.Namespace) -> int:
    loaded = _load(args.file or default_policy())
    if loaded is None:
        return 1
    if args.json:
        print(json.dumps(loaded.policy.model_dump(mode="json"), indent=2))
    else:
        sys.stdout.write(effective_yaml(loaded))
    return 0


def _diff(args: argparse.Namespace) -> int:
    from trafficd.policy.diff import diff_policies

    old, new = _load(args.old), _load(args.new)
    if old is None or new is None:
        return 2
    changes = diff_policies(old.policy, new.policy)
    if not changes:
        print(f"no change in behaviour (policy hash {old.hash})")
        return 0
    print(f"policy hash {old.hash} → {new.hash}")
    for line in changes:
        print(line)
    return 1


def _written_defaults(node: Any) -> None:
    """Scalar defaults of durations and percentages as they are written (`3s`, not 3.0)."""
    from trafficd.policy.values import DURATION_PATTERN, PERCENT_PATTERN, format_duration, format_percent

    if isinstance(node, dict):
        default = node.get("default")
        if isinstance(default, int | float) and not isinstance(default, bool):
            if node.get("pattern") == DURATION_PATTERN:
                node["default"] = format_duration(default)
            elif node.get("pattern") == PERCENT_PATTERN:
                node["default"] = format_percent(default)
        for value in node.values():
            _written_defaults(value)
    elif isinstance(node, list):
        for value in node:
            _written_defaults(value)


def policy_schema() -> dict[str, Any]:
    from trafficd.policy.schema import SCHEMA_VERSION, Policy

    schema = Policy.model_json_schema(mode="validation")
    _written_defaults(schema)
    return {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "$id": f"https://trafficd.invalid/policy-v{SCHEMA_VERSION}.schema.json",
        **schema,
        "title": f"trafficd policy, version {SCHEMA_VERSION}",
    }


def _schema(args: argparse.Namespace) -> int:
    print(json.dumps(policy_schema(), indent=2))
    return 0


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("policy", help="check, show, diff policy files; print the JSON Schema")
    cmds = p.add_subparsers(dest="policy_command", metavar="ACTION")
    cmds.required = True

    c = cmds.add_parser("check", help="validate policy files (exit 0 when all are valid, 1 otherwise)")
    c.add_argument("files", nargs="*", metavar="FILE", help="default $TRAFFICD_POLICY, else " + DEFAULT_POLICY)
    c.add_argument("--warnings-as-errors", action="store_true", help="fail on warnings too")
    c.set_defaults(func=_check)

    c = cmds.add_parser("show", help="print the effective policy, every default filled in")
    c.add_argument("file", nargs="?", metavar="FILE", help="default $TRAFFICD_POLICY, else " + DEFAULT_POLICY)
    c.add_argument("--json", action="store_true", help="JSON instead of YAML")
    c.set_defaults(func=_show)

    c = cmds.add_parser("diff", help="what would change in behaviour (exit 0 same, 1 different, 2 invalid)")
    c.add_argument("old", metavar="OLD")
    c.add_argument("new", metavar="NEW")
    c.set_defaults(func=_diff)

    c = cmds.add_parser("schema", help="print the policy's JSON Schema (for editors)")
    c.set_defaults(func=_schema)
