"""`trafficd check`: preflight before a start — can this host run trafficd with this policy?

    trafficd check [--policy F] [--role agent|controller|all] [--region R] [--no-probe] [--json]

One line per check (ok / warn / fail: policy, secrets, redis, acl, clock, aws, zone, records, workers, models), or one
JSON object with `--json`. Writes nothing anywhere. Exit 0 when nothing failed (warnings allowed), 1 when a check
failed, 78 when the policy itself is invalid (nothing else can be checked then).
"""

from __future__ import annotations

import argparse
import json
import sys

from trafficd.cli import add_policy_argument


def _run(args: argparse.Namespace) -> int:
    import asyncio

    from trafficd.policy.schema import load_policy  # here, not at the top: `check --help` needs no schema
    from trafficd.runtime import preflight

    loaded = load_policy(args.policy)  # invalid: every problem printed, exit 78 (trafficd.cli)
    policy = loaded.policy
    if args.region is not None and args.region not in policy.regions:
        from trafficd.errors import UsageError

        raise UsageError(f"unknown region {args.region!r} (regions: {', '.join(policy.region_names)})")
    first = preflight.Check(
        "policy",
        "warn" if loaded.warnings else "ok",
        f"{loaded.path} valid, policy hash {loaded.hash}"
        + "".join(f"; warning: {w.field}: {w.reason}" for w in loaded.warnings),
    )
    regions = [args.region] if args.region else policy.region_names
    rest = asyncio.run(preflight.run_checks(policy, role=args.role, regions=regions, probes=not args.no_probe))
    checks = [first, *rest]
    failed = sum(c.status == "fail" for c in checks)
    if args.json:
        print(json.dumps({"ok": failed == 0, "checks": [c.to_dict() for c in checks]}, indent=2))
    else:
        for c in checks:
            print(c.line())
        warned = sum(c.status == "warn" for c in checks)
        print(f"{len(checks)} checks: {failed} failed, {warned} warnings", file=sys.stderr)
    return 1 if failed else 0


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("check", help="preflight: policy, secrets, Redis (version, ACL, clock), AWS, zone, workers")
    add_policy_argument(p)
    p.add_argument("--role", choices=("agent", "controller", "all"), default="all", help="what this host runs")
    p.add_argument("--region", default=None, help="probe only this region's workers (an agent host)")
    p.add_argument("--no-probe", action="store_true", help="do not probe the workers nor read their model lists")
    p.add_argument("--json", action="store_true", help="one JSON object instead of lines")
    p.set_defaults(func=_run)
