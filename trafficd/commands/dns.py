"""`trafficd dns show|plan|bootstrap`: what Route 53 says now, and what the controller would change.

    trafficd dns show --policy F [--json]          owned records and weights per region, plus foreign records
                                                   sharing our names (never touched)
    trafficd dns plan --policy F [--from current|healthy | --matrix-file M] [--json]
                                                   the batch reconcile would send now; writes nothing
    trafficd dns iam-policy --policy F             the least-privilege IAM policy (docs/iam-policy.json is
                                                   the one for policies/example.yaml)
    trafficd dns bootstrap --policy F              create the owned records that are absent (full weight to
                                                   each region's own endpoint); never changes existing ones

`plan` needs the matrix to apply: `--from controller` (default) runs the controller's own judgement now on
the same Redis inputs (stored state, window statistics, overrides) without writing anything; `--from
current` takes the matrix today's records express (the plan shows only missing or hand-edited records);
`--from healthy` is the identity (every region serves its own users); `--matrix-file` reads JSON
`{"us-east": {"us-east": 0.5, "eu-west": 0.5}, ...}`.
Exit codes: 0 ok, 1 Route 53 error or an invalid plan, 78 invalid policy.
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from botocore.exceptions import BotoCoreError, ClientError
from redis.exceptions import RedisError

from trafficd.dns import records as rec
from trafficd.dns.route53.reconciler import Reconciler, Route53Error, route53_client
from trafficd.model import Record, TrafficMatrix, identity_matrix
from trafficd.policy.schema import Policy, PolicyError, load_policy
from trafficd.runtime.reload import EX_CONFIG


def dns_view(policy: Policy, zone: list[Record]) -> dict[str, Any]:
    """Owned records per region (weights and shares), and the foreign records at our names."""
    owned = rec.owned_keys(policy)
    by_key = {r.key: r for r in zone}
    names = {k[0] for k in owned}
    regions: dict[str, Any] = {}
    rtype = policy.dns.record_type
    api = rec.normalize_name(policy.dns.record_name)
    for r in policy.region_names:
        if policy.dns.topology == "weighted":
            mine = by_key.get((api, rtype, policy.set_identifier(r)))
            regions[r] = {"record": rec.record_to_log(mine)}
            continue
        alias = by_key.get((api, rtype, policy.set_identifier(r)))
        pool = rec.pool_name(policy, r)
        members = {d: by_key.get((pool, rtype, rec.member_set_identifier(policy, r, d))) for d in policy.region_names}
        total = sum(m.weight or 0 for m in members.values() if m)
        regions[r] = {
            "latency": rec.record_to_log(alias),
            "pool": pool,
            "members": {
                d: None
                if m is None
                else {
                    "weight": m.weight,
                    "share": round((m.weight or 0) / total, 4) if total else None,
                    "values": list(m.values),
                }
                for d, m in members.items()
            },
        }
    if policy.dns.topology == "weighted":
        total = sum((v["record"] or {}).get("weight", 0) for v in regions.values())
        for v in regions.values():
            w = (v["record"] or {}).get("weight")
            v["share"] = round(w / total, 4) if w is not None and total else None
    foreign = [rec.record_to_log(x) for x in zone if x.name in names and x.key not in owned]
    return {
        "zone_id": policy.dns.zone_id,
        "topology": policy.dns.topology,
        "regions": regions,
        "matrix": rec.matrix_from_records(policy, (x for x in zone if x.key in owned)),
        "not_owned": foreign,
    }


def _print_view(view: dict[str, Any]) -> None:
    print(f"zone {view['zone_id']} · topology {view['topology']}")
    for region, v in view["regions"].items():
        if view["topology"] == "weighted":
            r = v["record"]
            what = (
                "ABSENT"
                if r is None
                else f"weight {r['weight']:>3}  share {_pct(v['share'])}  → {', '.join(r['values'])}"
            )
            print(f"  {region:<16} {what}")
            continue
        lat = v["latency"]
        head = "latency record ABSENT" if lat is None else f"latency {lat['region']} → {lat['alias_target']}"
        print(f"  {region:<16} {head}")
        for dst, m in v["members"].items():
            what = (
                "ABSENT"
                if m is None
                else f"weight {m['weight']:>3}  share {_pct(m['share'])}  → {', '.join(m['values'])}"
            )
            print(f"      to {dst:<13} {what}")
    for r in view["not_owned"]:
        print(f"  not owned (never touched): {r['name']} {r['type']} {r['set_identifier'] or '-'}")


def _pct(share: float | None) -> str:
    return "   -  " if share is None else f"{share * 100:5.1f}%"


def _load(path: str) -> Policy | None:
    try:
        return load_policy(path).policy
    except PolicyError as exc:
        print(str(exc), file=sys.stderr)
        return None


def _policy_and_zone(path: str) -> tuple[Policy, list[Record]] | int:
    """The policy and the zone's records now, or the exit code to return (78 bad policy, 1 Route 53 error)."""
    policy = _load(path)
    if policy is None:
        return EX_CONFIG
    try:
        return policy, Reconciler(policy, route53_client(policy)).list_zone()
    except (ClientError, BotoCoreError, Route53Error) as exc:
        print(f"Route 53: {exc}", file=sys.stderr)
        return 1


def _show(args: argparse.Namespace) -> int:
    loaded = _policy_and_zone(args.policy)
    if isinstance(loaded, int):
        return loaded
    policy, zone = loaded
    view = dns_view(policy, zone)
    if args.json:
        print(json.dumps(view, indent=2))
    else:
        _print_view(view)
    return 0


def matrix_for_plan(policy: Policy, zone: list[Record], source: str, matrix_file: str | None) -> TrafficMatrix:
    """The matrix `dns plan` uses: from a file, identity (`healthy`), or what the records say (`current`)."""
    if matrix_file:
        with open(matrix_file, encoding="utf-8") as f:
            data = json.load(f)
        return {str(s): {str(d): float(x) for d, x in row.items()} for s, row in data.items()}
    if source == "healthy":
        return identity_matrix(policy.region_names)
    if source == "controller":
        import asyncio

        from trafficd.control.controller import preview

        evaluation, _ = asyncio.run(preview(policy))
        return evaluation.matrix
    owned = rec.owned_keys(policy)
    return rec.matrix_from_records(policy, (r for r in zone if r.key in owned))


def _plan(args: argparse.Namespace) -> int:
    loaded = _policy_and_zone(args.policy)
    if isinstance(loaded, int):
        return loaded
    policy, zone = loaded
    try:
        matrix = matrix_for_plan(policy, zone, args.source, args.matrix_file)
    except (OSError, ValueError, AttributeError, RedisError) as exc:
        print(f"cannot read the matrix: {exc}", file=sys.stderr)
        return 1
    plan = rec.plan(policy, matrix, zone)
    if args.json:
        out = {
            "changes": [c.to_log() for c in plan.changes],
            "problems": list(plan.problems),
            "deferred": plan.deferred,
        }
        print(json.dumps(out, indent=2))
    else:
        if not plan.changes:
            print("no changes")
        for c in plan.changes:
            print(
                f"UPSERT {c.after.name} {c.after.type} {c.after.set_identifier}: {_brief(c.before)} → {_brief(c.after)}"
            )
        if plan.deferred:
            print(f"{plan.deferred} more change(s) deferred to the next cycle (at most {rec.MAX_CHANGES} per batch)")
        for p in plan.problems:
            print(f"INVALID: {p}", file=sys.stderr)
    return 1 if plan.problems else 0


def _brief(r: Record | None) -> str:
    if r is None:
        return "(absent)"
    if r.alias_target is not None:
        return f"latency {r.region} alias {r.alias_target}"
    w = f"weight {r.weight} " if r.weight is not None else ""
    return f"{w}ttl {r.ttl} {','.join(r.values)}"


def _bootstrap(args: argparse.Namespace) -> int:
    policy = _load(args.policy)
    if policy is None:
        return EX_CONFIG
    try:
        result = Reconciler(policy, route53_client(policy)).bootstrap()
    except (ClientError, BotoCoreError, Route53Error) as exc:
        print(f"Route 53: {exc}", file=sys.stderr)
        return 1
    print(
        f"{result.status}: {len(result.changes)} record(s) created"
        + (f", change {result.change_id}" if result.change_id else "")
    )
    return 0


def iam_policy(policy: Policy) -> dict[str, Any]:
    """The least-privilege IAM policy for this policy file: UPSERT of the owned names and type only, plus reads."""
    zone_arn = f"arn:aws:route53:::hostedzone/{policy.dns.zone_id}"
    names = sorted({k[0].rstrip(".") for k in rec.owned_keys(policy)})
    return {
        "Version": "2012-10-17",
        "Statement": [
            {
                "Sid": "TrafficdUpsertOwnedRecordsOnly",
                "Effect": "Allow",
                "Action": "route53:ChangeResourceRecordSets",
                "Resource": zone_arn,
                "Condition": {
                    "ForAllValues:StringEquals": {
                        "route53:ChangeResourceRecordSetsNormalizedRecordNames": names,
                        "route53:ChangeResourceRecordSetsRecordTypes": [policy.dns.record_type],
                        "route53:ChangeResourceRecordSetsActions": ["UPSERT"],
                    }
                },
            },
            {
                "Sid": "TrafficdReadTheZone",
                "Effect": "Allow",
                "Action": "route53:ListResourceRecordSets",
                "Resource": zone_arn,
            },
            {
                "Sid": "TrafficdWatchItsChanges",
                "Effect": "Allow",
                "Action": "route53:GetChange",
                "Resource": "arn:aws:route53:::change/*",
            },
        ],
    }


def _iam(args: argparse.Namespace) -> int:
    policy = _load(args.policy)
    if policy is None:
        return EX_CONFIG
    print(json.dumps(iam_policy(policy), indent=2))
    return 0


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("dns", help="show the Route 53 records, plan what reconcile would change, bootstrap")
    cmds = p.add_subparsers(dest="dns_command", metavar="ACTION")
    cmds.required = True

    c = cmds.add_parser("show", help="owned records and weights per region now")
    c.add_argument("--policy", required=True, metavar="FILE")
    c.add_argument("--json", action="store_true")
    c.set_defaults(func=_show)

    c = cmds.add_parser("plan", help="what reconcile would change now (writes nothing; exit 1 if invalid)")
    c.add_argument("--policy", required=True, metavar="FILE")
    c.add_argument(
        "--from",
        dest="source",
        choices=("controller", "current", "healthy"),
        default="controller",
        help="controller: what the controller would decide now from Redis (default); current: the matrix the "
        "records express; healthy: every region serves its own users",
    )
    c.add_argument("--matrix-file", metavar="JSON", help="traffic matrix to plan for (overrides --from)")
    c.add_argument("--json", action="store_true")
    c.set_defaults(func=_plan)

    c = cmds.add_parser("iam-policy", help="print the least-privilege IAM policy for this policy file")
    c.add_argument("--policy", required=True, metavar="FILE")
    c.set_defaults(func=_iam)

    c = cmds.add_parser("bootstrap", help="create the owned records that are absent (identity weights)")
    c.add_argument("--policy", required=True, metavar="FILE")
    c.set_defaults(func=_bootstrap)
