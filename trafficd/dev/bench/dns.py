"""`trafficd bench-dns`: Route 53 records and API calls at 3 / 10 / 30 regions (moto behind the enforcing proxy).

For each fleet size and pool layout (`full`: no neighbours declared, every pool holds every region; `k=3`: three
neighbours per region, pools hold R × (k + 1) members) it measures, counting the requests the proxy saw:

* records    the owned records after bootstrap
* bootstrap  requests (and batches) to create them
* read       requests for one unchanged reconcile (the owned-name range), and a whole-zone listing for contrast,
             with `--foreign` unrelated records in the zone beside ours
* fleet      a change to every region's row at once (each region sheds 25 % to its first neighbour): requests,
             batches, seconds
* ttl        a TTL change (every traffic record rewritten): requests and batches

Real Route 53 allows about 5 requests/s per account and each ordered batch waits for INSYNC (up to ~60 s), so
the request and batch counts, not moto's seconds, are what a fleet-wide change costs.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from typing import Any

import boto3

from trafficd.dev.bench.probe import machine
from trafficd.dev.services import MotoServer
from trafficd.dns import records as rec
from trafficd.dns.provider import ReconcileContext
from trafficd.dns.route53.client import list_zone
from trafficd.dns.route53.provider import Route53Provider
from trafficd.model import TrafficMatrix, identity_matrix
from trafficd.policy.schema import Policy


def fleet_policy(zone_id: str, zone: str, url: str, n: int, k: int | None, ttl: int = 60) -> Policy:
    names = [f"r{i:02d}" for i in range(n)]
    regions: dict[str, Any] = {}
    for i, name in enumerate(names):
        regions[name] = {
            "workers": [{"name": "w", "url": f"http://127.0.0.1:1/{name}"}],
            "dns": {"endpoint": f"{name}.lb.example.net", "aws_region": "us-east-1"},
        }
        if k is not None:
            regions[name]["neighbours"] = [names[(i + j) % n] for j in range(1, k + 1)]
    doc = {
        "version": 1,
        "service": "bench",
        "models": [{"name": "m"}],
        "regions": regions,
        "guards": {"min_serving_regions": 1},
        "dns": {"zone_id": zone_id, "record_name": f"api.{zone}", "endpoint_url": url, "ttl": ttl},
    }
    return Policy.model_validate(doc)


def shed_to_next(names: list[str]) -> TrafficMatrix:
    return {n: {n: 0.75, names[(i + 1) % len(names)]: 0.25} for i, n in enumerate(names)}


def _ctx(epoch: int | None = None) -> ReconcileContext:
    return ReconcileContext("bench", "", time.monotonic() + 600, "plan", epoch=epoch, writer="bench")


def _add_foreign(client: Any, zone_id: str, zone: str, count: int) -> None:
    changes = [
        {
            "Action": "CREATE",
            "ResourceRecordSet": {
                "Name": f"host{i}.{'aaa' if i % 2 else 'zzz'}.{zone}",
                "Type": "A",
                "TTL": 60,
                "ResourceRecords": [{"Value": "192.0.2.1"}],
            },
        }
        for i in range(count)
    ]
    for i in range(0, len(changes), 100):
        client.change_resource_record_sets(HostedZoneId=zone_id, ChangeBatch={"Changes": changes[i : i + 100]})


def measure(moto: MotoServer, n: int, k: int | None, foreign: int) -> dict[str, Any]:
    """One fleet size and layout in a fresh hosted zone."""
    assert moto.proxy is not None
    client = boto3.client(
        "route53",
        endpoint_url=moto.url,
        region_name="us-east-1",
        aws_access_key_id="testing",  # moto on loopback only
        aws_secret_access_key="testing",
    )
    zone = f"bench{n}-{'full' if k is None else k}-{time.monotonic_ns()}.example.com."
    zone_id = client.create_hosted_zone(Name=zone, CallerReference=zone)["HostedZone"]["Id"].split("/")[-1]
    _add_foreign(client, zone_id, zone, foreign)
    policy = fleet_policy(zone_id, zone, moto.url, n, k)
    provider = Route53Provider(policy, client)
    names = list(policy.region_names)
    ops = moto.proxy.ops

    def counted(step: Any) -> tuple[Any, int, float]:
        before, t0 = len(ops), time.perf_counter()
        out = step()
        return out, len(ops) - before, time.perf_counter() - t0

    boot, boot_calls, _ = counted(lambda: provider.bootstrap(context=_ctx()))
    epoch = provider.take_over(context=_ctx()).epoch
    unchanged, read_calls, _ = counted(lambda: provider.reconcile(identity_matrix(names), context=_ctx(epoch)))
    whole_calls = list_zone(client, zone_id)[1]
    fleet, fleet_calls, fleet_s = counted(lambda: provider.reconcile(shed_to_next(names), context=_ctx(epoch)))
    ttl = Route53Provider(fleet_policy(zone_id, zone, moto.url, n, k, ttl=120), client)
    ttl_result, ttl_calls, _ = counted(lambda: ttl.reconcile(shed_to_next(names), context=_ctx(epoch)))
    return {
        "regions": n,
        "layout": "full" if k is None else f"k={k}",
        "records": len(provider.owned_records()),
        "possible": len(rec.owned_keys(policy)),
        "bootstrap_calls": boot_calls,
        "bootstrap_batches": boot.batches,
        "read_calls": read_calls if str(unchanged.status) == "unchanged" else None,
        "whole_zone_calls": whole_calls,
        "fleet_changes": len(fleet.changes),
        "fleet_calls": fleet_calls,
        "fleet_batches": fleet.batches,
        "fleet_s": round(fleet_s, 3),
        "ttl_changes": len(ttl_result.changes),
        "ttl_calls": ttl_calls,
        "ttl_batches": ttl_result.batches,
    }


def run(sizes: list[int], k: int, foreign: int) -> list[dict[str, Any]]:
    moto = MotoServer().start()
    try:
        return [measure(moto, n, layout, foreign) for n in sizes for layout in (None, min(k, n - 1))]
    finally:
        moto.stop()


COLUMNS = (
    ("regions", "R"),
    ("layout", "pools"),
    ("records", "records"),
    ("bootstrap_calls", "boot req"),
    ("bootstrap_batches", "boot batches"),
    ("read_calls", "read req"),
    ("whole_zone_calls", "whole-zone req"),
    ("fleet_changes", "fleet changes"),
    ("fleet_calls", "fleet req"),
    ("fleet_batches", "fleet batches"),
    ("ttl_calls", "TTL req"),
    ("ttl_batches", "TTL batches"),
)


def report(rows: list[dict[str, Any]], foreign: int) -> str:
    m = machine()
    head = f"machine: {m['nproc']} cores, load {m['loadavg_1m']}; {foreign} foreign records in each zone\n"
    lines = ["| " + " | ".join(t for _, t in COLUMNS) + " |", "|" + "---|" * len(COLUMNS)]
    lines += ["| " + " | ".join(str(r[c]) for c, _ in COLUMNS) + " |" for r in rows]
    return head + "\n".join(lines)


def _parser(p: argparse.ArgumentParser) -> argparse.ArgumentParser:
    p.add_argument("--regions", default="3,10,30", help="fleet sizes, comma-separated (default 3,10,30)")
    p.add_argument("--neighbours", type=int, default=3, help="k for the neighbour-sized layout (default 3)")
    p.add_argument("--foreign", type=int, default=500, help="unrelated records in each zone (default 500)")
    p.add_argument("--json", action="store_true", help="print the figures as JSON")
    return p


def _command(args: argparse.Namespace) -> int:
    rows = run([int(x) for x in args.regions.split(",")], args.neighbours, args.foreign)
    print(json.dumps({"machine": machine(), "results": rows}, indent=2) if args.json else report(rows, args.foreign))
    return 0


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = _parser(sub.add_parser("bench-dns", help="Route 53 records and API requests at 3 / 10 / 30 regions"))
    p.set_defaults(func=_command)


if __name__ == "__main__":
    sys.exit(_command(_parser(argparse.ArgumentParser(prog="python -m trafficd.dev.bench.dns")).parse_args()))
