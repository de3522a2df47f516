"""`trafficd dns show|plan|bootstrap`: what Route 53 says now, and what the controller would change.

    trafficd dns show --policy F [--json]          owned records and weights per region, plus foreign records
                                                   sharing our names (never touched)
    trafficd dns plan --policy F [--from current|healthy | --matrix-file M] [--json] [--detailed-exitcode]
                                                   the batch reconcile would send now; writes nothing
    trafficd dns iam-policy --policy F             the least-privilege IAM policy (docs/iam-policy.json is
                                                   the one for policies/example.yaml): CREATE and
                                                   DELETE of the owned names and the epoch TXT name only
    trafficd dns bootstrap --policy F              create the owned records that are absent (full weight to
                                                   each region's own endpoint) in valid batches, in order;
                                                   never changes existing ones

`plan` needs the matrix to apply: `--from controller` (default) runs the controller's own judgement now on
the same Redis inputs (stored state, window statistics, overrides) without writing anything; `--from
current` takes the matrix today's records express (the plan shows only missing or hand-edited records);
`--from healthy` is the identity (every region serves its own users); `--matrix-file` reads JSON
`{"us-east": {"us-east": 0.5, "eu-west": 0.5}, ...}`.
Exit codes: 0 ok, 1 Route 53 error or an invalid plan, 78 invalid policy; with `plan --detailed-exitcode`,
2 when changes are pending (0 only when nothing would change), as `terraform plan -detailed-exitcode` does.
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import TYPE_CHECKING, Any

from trafficd.cli import add_policy_argument

if TYPE_CHECKING:
    from trafficd.dns import records as rec
    from trafficd.model import Record, TrafficMatrix
    from trafficd.policy.schema import Policy

# The handlers import what they use (boto3 and the record planner take ~1 s to import): `dns --help` imports none.

EX_CHANGES_PENDING = 2  # `dns plan --detailed-exitcode`: the plan is not empty


def dns_view(policy: Policy, zone: list[Record]) -> dict[str, Any]:
    """Owned records per region (weights and shares), and the foreign records at our names."""
    from trafficd.dns import fence
    from trafficd.dns import records as rec
    from trafficd.dns.topology import topology_for

    owned = rec.owned_keys(policy)
    names = {k[0] for k in owned}
    foreign = [rec.record_to_log(x) for x in zone if x.name in names and x.key not in owned]
    _, epoch = fence.epoch_from(policy, zone)
    return {
        "zone_id": policy.dns.zone_id,
        "topology": policy.dns.topology,
        "regions": topology_for(policy).view({r.key: r for r in zone}),
        "matrix": rec.matrix_from_records(policy, (x for x in zone if x.key in owned)),
        "writer_epoch": epoch,
        "not_owned": foreign,
    }


def _print_view(policy: Policy, view: dict[str, Any]) -> None:
    from trafficd.dns.topology import topology_for

    print(f"zone {view['zone_id']} · topology {view['topology']} · writer epoch {view['writer_epoch']}")
    topology = topology_for(policy)
    for region, v in view["regions"].items():
        for line in topology.describe(region, v):
            print(line)
    for r in view["not_owned"]:
        print(f"  not owned (never touched): {r['name']} {r['type']} {r['set_identifier'] or '-'}")


def _load(path: str) -> Policy:
    from trafficd.policy.schema import load_policy

    return load_policy(path).policy  # PolicyError: every problem printed, exit 78 (trafficd.cli)


def _policy_and_zone(path: str) -> tuple[Policy, list[Record]] | int:
    """The policy and the zone's records now, or the exit code to return (78 bad policy, 1 Route 53 error)."""
    from botocore.exceptions import BotoCoreError, ClientError

    from trafficd.dns.route53.client import list_zone, route53_client
    from trafficd.dns.route53.outcome import Route53Error

    policy = _load(path)
    try:
        return policy, list_zone(route53_client(policy), policy.dns.zone_id)[0]
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
        _print_view(policy, view)
    return 0


def matrix_for_plan(policy: Policy, zone: list[Record], source: str, matrix_file: str | None) -> TrafficMatrix:
    """The matrix `dns plan` uses: from a file, identity (`healthy`), or what the records say (`current`)."""
    from trafficd.dns import records as rec
    from trafficd.model import identity_matrix

    if matrix_file:
        with open(matrix_file, encoding="utf-8") as f:
            data = json.load(f)
        return {str(s): {str(d): float(x) for d, x in row.items()} for s, row in data.items()}
    if source == "healthy":
        return identity_matrix(policy.region_names)
    if source == "controller":
        import asyncio

        from trafficd.control.preview import preview

        owned = rec.owned_keys(policy)
        current = rec.matrix_from_records(policy, (r for r in zone if r.key in owned))
        evaluation, _ = asyncio.run(preview(policy, current=current))  # no stored state: start from DNS
        return evaluation.matrix
    return rec.matrix_from_records(policy, rec.owned(policy, zone).values())


def _plan(args: argparse.Namespace) -> int:
    from redis.exceptions import RedisError

    from trafficd.dns import records as rec
    from trafficd.dns.route53.wire import LIMITS

    loaded = _policy_and_zone(args.policy)
    if isinstance(loaded, int):
        return loaded
    policy, zone = loaded
    try:
        matrix = matrix_for_plan(policy, zone, args.source, args.matrix_file)
    except (OSError, ValueError, AttributeError, RedisError) as exc:
        print(f"cannot read the matrix: {exc}", file=sys.stderr)
        return 1
    plan = rec.plan(policy, matrix, zone, LIMITS)
    if args.json:
        out = {
            "changes": [c.to_log() for c in plan.changes],
            "problems": list(plan.problems),
            "batches": len(plan.batches),
        }
        print(json.dumps(out, indent=2))
    else:
        if not plan.changes:
            print("no changes")
        for i, batch in enumerate(plan.batches, 1):
            wait = " (after the previous one is INSYNC)" if batch.after_insync else ""
            print(f"batch {i}{wait}:")
            for c in batch.changes:
                action = "CREATE " if c.before is None else "REPLACE"
                print(f"  {action} {_key(c)}: {_brief(c.before)} → {_brief(c.after)}")
        for p in plan.problems:
            print(f"INVALID: {p}", file=sys.stderr)
    if plan.problems:
        return 1
    return EX_CHANGES_PENDING if args.detailed_exitcode and plan.changes else 0


def _key(c: rec.Change) -> str:
    return f"{c.after.name} {c.after.type} {c.after.set_identifier}".rstrip()


def _brief(r: Record | None) -> str:
    if r is None:
        return "(absent)"
    if r.alias_target is not None:
        return f"latency {r.region} alias {r.alias_target}"
    w = f"weight {r.weight} " if r.weight is not None else ""
    return f"{w}ttl {r.ttl} {','.join(r.values)}"


def _bootstrap(args: argparse.Namespace) -> int:
    from trafficd.dns.provider import ReconcileContext
    from trafficd.dns.route53.provider import Route53Provider

    policy = _load(args.policy)
    provider = Route53Provider.from_policy(policy, writer="trafficd-dns-bootstrap")
    result = provider.bootstrap(context=ReconcileContext.for_cli("bootstrap"))
    if not result.complete:
        print(f"Route 53: bootstrap {result.status}: {'; '.join(result.problems) or result.error}", file=sys.stderr)
        return 1
    print(
        f"{result.status}: {len(result.changes)} record(s) created"
        + (f", change {result.change_id}" if result.change_id else "")
    )
    return 0


def iam_policy(policy: Policy) -> dict[str, Any]:
    """The least-privilege IAM policy for this policy file: CREATE and DELETE of the owned names (and the writer
    epoch TXT name) only, never UPSERT, plus the two reads."""
    from trafficd.dns import fence
    from trafficd.dns import records as rec

    zone_arn = f"arn:aws:route53:::hostedzone/{policy.dns.zone_id}"
    names = sorted({k[0].rstrip(".") for k in rec.owned_keys(policy)} | {fence.epoch_name(policy).rstrip(".")})
    return {
        "Version": "2012-10-17",
        "Statement": [
            {
                "Sid": "TrafficdReplaceOwnedRecordsOnly",
                "Effect": "Allow",
                "Action": "route53:ChangeResourceRecordSets",
                "Resource": zone_arn,
                "Condition": {
                    "ForAllValues:StringEquals": {
                        "route53:ChangeResourceRecordSetsNormalizedRecordNames": names,
                        "route53:ChangeResourceRecordSetsRecordTypes": sorted({policy.dns.record_type, "TXT"}),
                        "route53:ChangeResourceRecordSetsActions": ["CREATE", "DELETE"],
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
    print(json.dumps(iam_policy(policy), indent=2))
    return 0


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("dns", help="show the Route 53 records, plan what reconcile would change, bootstrap")
    cmds = p.add_subparsers(dest="dns_command", metavar="ACTION")
    cmds.required = True

    c = cmds.add_parser("show", help="owned records and weights per region now")
    add_policy_argument(c)
    c.add_argument("--json", action="store_true")
    c.set_defaults(func=_show)

    c = cmds.add_parser("plan", help="what reconcile would change now (writes nothing; exit 1 if invalid)")
    add_policy_argument(c)
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
    c.add_argument(
        "--detailed-exitcode",
        action="store_true",
        help="exit 0 when nothing would change, 2 when changes are pending, 1 on error (as terraform plan does)",
    )
    c.set_defaults(func=_plan)

    c = cmds.add_parser("iam-policy", help="print the least-privilege IAM policy for this policy file")
    add_policy_argument(c)
    c.set_defaults(func=_iam)

    c = cmds.add_parser("bootstrap", help="create the owned records that are absent (identity weights)")
    add_policy_argument(c)
    c.set_defaults(func=_bootstrap)
