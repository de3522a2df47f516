"""The Route 53 reconciler against moto server over HTTP: both topologies, diffing, ownership, drift."""

from __future__ import annotations

import json
import socket
import threading
from pathlib import Path
from typing import Any

import dns.message
import dns.rrset
import pytest
import yaml
from dns_fixtures import ctx, make_policy
from structlog.testing import capture_logs

from trafficd.cli import build_parser, dispatch
from trafficd.commands.dns import dns_view
from trafficd.dns import records as rec
from trafficd.dns.route53.provider import Route53Provider, bootstrap
from trafficd.model import identity_matrix
from trafficd.policy.schema import Policy

REGIONS = ["us-east", "eu-west", "ap-southeast"]
DRAIN_US = {
    "us-east": {"us-east": 0.25, "eu-west": 0.75, "ap-southeast": 0.0},
    "eu-west": {"us-east": 0.0, "eu-west": 1.0, "ap-southeast": 0.0},
    "ap-southeast": {"us-east": 0.0, "eu-west": 0.0, "ap-southeast": 1.0},
}


def zone_sets(route53: Any, zone_id: str) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = route53.list_resource_record_sets(HostedZoneId=zone_id)["ResourceRecordSets"]
    return out


def upsert(route53: Any, zone_id: str, rrset: dict[str, Any]) -> None:
    batch = {"Changes": [{"Action": "UPSERT", "ResourceRecordSet": rrset}]}
    route53.change_resource_record_sets(HostedZoneId=zone_id, ChangeBatch=batch)


def weights(route53: Any, zone_id: str, name: str) -> dict[str, int]:
    return {
        s["SetIdentifier"]: s["Weight"]
        for s in zone_sets(route53, zone_id)
        if rec.normalize_name(s["Name"]) == name and "Weight" in s
    }


@pytest.fixture
def policy(hosted_zone: dict[str, str], moto: Any) -> Policy:
    return make_policy(hosted_zone["id"], hosted_zone["name"], endpoint_url=moto.url)


def test_bootstrap_creates_latency_aliases_and_pools(policy: Policy, route53: Any, hosted_zone: dict[str, str]) -> None:
    """Bootstrap writes one latency alias per region and a pool per region with full weight to its own endpoint."""
    bootstrap(policy, route53)
    sets = zone_sets(route53, hosted_zone["id"])
    api = f"api.{hosted_zone['name']}"
    aliases = {s["SetIdentifier"]: s for s in sets if s["Name"] == api}
    assert set(aliases) == set(REGIONS)
    assert aliases["eu-west"]["Region"] == "eu-west-1"
    assert rec.normalize_name(aliases["eu-west"]["AliasTarget"]["DNSName"]) == f"eu-west.pool.{api}"
    assert aliases["eu-west"]["AliasTarget"]["EvaluateTargetHealth"] is False
    assert weights(route53, hosted_zone["id"], f"us-east.pool.{api}") == {
        "us-east-to-us-east": 255,
        "us-east-to-eu-west": 0,
        "us-east-to-ap-southeast": 0,
    }
    assert bootstrap(policy, route53).status == "unchanged"


def test_reconcile_applies_only_the_difference_then_nothing(
    policy: Policy, route53: Any, hosted_zone: dict[str, str]
) -> None:
    """Draining us-east changes exactly its pool's two differing members; a second reconcile makes no API write."""
    bootstrap(policy, route53)
    r = Route53Provider(policy, route53)
    with capture_logs() as logs:
        first = r.reconcile(DRAIN_US, context=ctx())
    assert first.status == "applied"
    assert {c.after.set_identifier: c.after.weight for c in first.changes} == {
        "us-east-to-us-east": 64,
        "us-east-to-eu-west": 191,
    }
    applied = [e for e in logs if e["event"] == "route53.changes_applied"]
    assert len(applied) == 1 and applied[0]["change_id"] == first.change_id
    assert applied[0]["changes"][0]["before"]["weight"] in (255, 0)
    api = f"api.{hosted_zone['name']}"
    assert weights(route53, hosted_zone["id"], f"us-east.pool.{api}")["us-east-to-eu-west"] == 191
    second = r.reconcile(DRAIN_US, context=ctx())
    assert second.status == "unchanged" and second.api_calls == 1  # one list, no change call


def test_plan_writes_nothing(policy: Policy, route53: Any, hosted_zone: dict[str, str]) -> None:
    """`plan` reports the batches reconcile would send and leaves the records unchanged."""
    bootstrap(policy, route53)
    before = zone_sets(route53, hosted_zone["id"])
    plan = Route53Provider(policy, route53).plan(DRAIN_US)
    assert plan.ok and len(plan.changes) == 2 and len(plan.batches) == 1
    assert zone_sets(route53, hosted_zone["id"]) == before


def test_plain_weighted_topology(hosted_zone: dict[str, str], moto: Any, route53: Any) -> None:
    """The weighted topology keeps one record per region whose weight follows the matrix's column sums."""
    policy = make_policy(hosted_zone["id"], hosted_zone["name"], endpoint_url=moto.url, topology="weighted")
    bootstrap(policy, route53)
    api = f"api.{hosted_zone['name']}"
    assert weights(route53, hosted_zone["id"], api) == {"us-east": 255, "eu-west": 255, "ap-southeast": 255}
    result = Route53Provider(policy, route53).reconcile(DRAIN_US, context=ctx())
    assert result.status == "applied"
    # column sums 0.25, 1.75, 1.0 → scaled so the largest is 255
    assert weights(route53, hosted_zone["id"], api) == {"us-east": 36, "eu-west": 255, "ap-southeast": 146}
    view = dns_view(policy, Route53Provider(policy, route53).list_zone())
    assert {r: v["share"] for r, v in view["regions"].items()} == {
        "us-east": 0.0824,
        "eu-west": 0.5835,
        "ap-southeast": 0.3341,
    }
    matrix = Route53Provider(policy, route53).current_matrix()
    assert matrix is not None and matrix["eu-west"]["eu-west"] == pytest.approx(255 / 437)


def test_records_not_owned_are_never_modified(policy: Policy, route53: Any, hosted_zone: dict[str, str]) -> None:
    """A foreign SetIdentifier in our pool and an unrelated record survive reconciles unchanged."""
    zid, api = hosted_zone["id"], f"api.{hosted_zone['name']}"
    foreign = {
        "Name": f"us-east.pool.{api}",
        "Type": "CNAME",
        "SetIdentifier": "manual-canary",
        "Weight": 7,
        "TTL": 30,
        "ResourceRecords": [{"Value": "canary.example.net"}],
    }
    unrelated = {
        "Name": f"www.{hosted_zone['name']}",
        "Type": "A",
        "TTL": 300,
        "ResourceRecords": [{"Value": "192.0.2.1"}],
    }
    upsert(route53, zid, foreign)
    upsert(route53, zid, unrelated)
    bootstrap(policy, route53)
    r = Route53Provider(policy, route53)
    r.reconcile(DRAIN_US, context=ctx())
    r.reconcile(identity_matrix(REGIONS), context=ctx())
    sets = zone_sets(route53, zid)
    assert [s for s in sets if s.get("SetIdentifier") == "manual-canary"] == [foreign]
    assert [s for s in sets if s["Name"] == f"www.{hosted_zone['name']}"] == [unrelated]


def test_invalid_batch_is_refused_before_sending(policy: Policy, route53: Any, hosted_zone: dict[str, str]) -> None:
    """A pool holding a simple record would mix routing types: refused (moto would accept), logged once, not resent."""
    zid, api = hosted_zone["id"], f"api.{hosted_zone['name']}"
    upsert(
        route53,
        zid,
        {"Name": f"eu-west.pool.{api}", "Type": "CNAME", "TTL": 60, "ResourceRecords": [{"Value": "x.example.net"}]},
    )
    before = zone_sets(route53, zid)
    r = Route53Provider(policy, route53)
    with capture_logs() as logs:
        result = r.reconcile(identity_matrix(REGIONS), context=ctx())
        again = r.reconcile(identity_matrix(REGIONS), context=ctx())
    assert result.status == again.status == "refused"
    assert any("mixed routing types" in p for p in result.problems)
    assert [e["source"] for e in logs if e["event"] == "route53.batch_rejected"] == ["validation"]
    assert zone_sets(route53, zid) == before


def _hand_edit(route53: Any, hosted_zone: dict[str, str], weight: int) -> None:
    api = f"api.{hosted_zone['name']}"
    upsert(
        route53,
        hosted_zone["id"],
        {
            "Name": f"ap-southeast.pool.{api}",
            "Type": "CNAME",
            "SetIdentifier": "ap-southeast-to-us-east",
            "Weight": weight,
            "TTL": 60,
            "ResourceRecords": [{"Value": "us-east.lb.example.net."}],
        },
    )


def test_drift_is_corrected_when_policy_says_correct(policy: Policy, route53: Any, hosted_zone: dict[str, str]) -> None:
    """A weight changed by hand is logged with before/after and written back."""
    bootstrap(policy, route53)
    r = Route53Provider(policy, route53)
    assert r.reconcile(identity_matrix(REGIONS), context=ctx()).status == "unchanged"
    _hand_edit(route53, hosted_zone, 40)
    with capture_logs() as logs:
        result = r.reconcile(identity_matrix(REGIONS), context=ctx())
    drift = [e for e in logs if e["event"] == "route53.drift_detected"]
    assert len(drift) == 1 and drift[0]["action"] == "correct"
    assert drift[0]["before"]["weight"] == 0 and drift[0]["after"]["weight"] == 40
    assert result.status == "applied" and [c.after.weight for c in result.changes] == [0]
    assert [e["cause"] for e in logs if e["event"] == "route53.changes_applied"] == ["drift"]
    api = f"api.{hosted_zone['name']}"
    assert weights(route53, hosted_zone["id"], f"ap-southeast.pool.{api}")["ap-southeast-to-us-east"] == 0


def test_drift_is_respected_when_policy_says_respect(hosted_zone: dict[str, str], moto: Any, route53: Any) -> None:
    """With drift: respect, a hand-edited record is logged once and left alone while other records still follow."""
    policy = make_policy(hosted_zone["id"], hosted_zone["name"], endpoint_url=moto.url, drift="respect")
    bootstrap(policy, route53)
    r = Route53Provider(policy, route53)
    r.reconcile(identity_matrix(REGIONS), context=ctx())
    _hand_edit(route53, hosted_zone, 40)
    with capture_logs() as logs:
        first = r.reconcile(identity_matrix(REGIONS), context=ctx())
        second = r.reconcile(DRAIN_US, context=ctx())
    assert [e["action"] for e in logs if e["event"] == "route53.drift_detected"] == ["respect"]
    assert first.status == "unchanged"
    assert second.status == "applied"
    api = f"api.{hosted_zone['name']}"
    assert weights(route53, hosted_zone["id"], f"ap-southeast.pool.{api}")["ap-southeast-to-us-east"] == 40
    assert weights(route53, hosted_zone["id"], f"us-east.pool.{api}")["us-east-to-eu-west"] == 191


def cli(argv: list[str]) -> int:
    """Run a `trafficd` sub-command in-process without re-configuring structlog (cli.main would)."""
    return dispatch(build_parser(argv).parse_args(argv))


def _policy_file(tmp_path: Any, policy: Policy) -> str:
    path = tmp_path / "policy.yaml"
    path.write_text(yaml.safe_dump(policy.model_dump(mode="json", exclude_none=True)))
    return str(path)


def test_dns_show_reports_weights_per_region(
    policy: Policy, route53: Any, hosted_zone: dict[str, str], tmp_path: Any, capsys: Any
) -> None:
    """`trafficd dns show --json` gives each region's latency record, pool weights and shares, and foreign records."""
    bootstrap(policy, route53)
    Route53Provider(policy, route53).reconcile(DRAIN_US, context=ctx())
    api = f"api.{hosted_zone['name']}"
    upsert(
        route53,
        hosted_zone["id"],
        {
            "Name": api,
            "Type": "CNAME",
            "SetIdentifier": "hand",
            "Region": "sa-east-1",
            "AliasTarget": {
                "HostedZoneId": hosted_zone["id"],
                "DNSName": f"eu-west.pool.{api}",
                "EvaluateTargetHealth": False,
            },
        },
    )
    capsys.readouterr()
    assert cli(["dns", "show", "--policy", _policy_file(tmp_path, policy), "--json"]) == 0
    view = json.loads(capsys.readouterr().out)
    us = view["regions"]["us-east"]
    assert us["latency"]["region"] == "us-east-1"
    assert us["members"]["eu-west"] == {"weight": 191, "share": 0.749, "values": ["eu-west.lb.example.net."]}
    assert view["matrix"]["eu-west"]["eu-west"] == 1.0
    assert [r["set_identifier"] for r in view["not_owned"]] == ["hand"]
    assert cli(["dns", "show", "--policy", _policy_file(tmp_path, policy)]) == 0
    assert "to eu-west" in capsys.readouterr().out


def test_dns_plan_writes_nothing(
    policy: Policy, route53: Any, hosted_zone: dict[str, str], tmp_path: Any, capsys: Any
) -> None:
    """`trafficd dns plan` lists the batch for a matrix file, or for healthy weights, and changes no record."""
    bootstrap(policy, route53)
    before = zone_sets(route53, hosted_zone["id"])
    pfile = _policy_file(tmp_path, policy)
    capsys.readouterr()
    assert cli(["dns", "plan", "--policy", pfile, "--from", "current"]) == 0
    assert capsys.readouterr().out.strip() == "no changes"
    mfile = tmp_path / "matrix.json"
    mfile.write_text(json.dumps(DRAIN_US))
    assert cli(["dns", "plan", "--policy", pfile, "--matrix-file", str(mfile), "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert sorted(c["after"]["weight"] for c in out["changes"]) == [64, 191]
    assert zone_sets(route53, hosted_zone["id"]) == before


def test_dns_commands_exit_78_on_a_bad_policy(tmp_path: Any, capsys: Any) -> None:
    """An invalid policy file makes every dns command exit 78 (EX_CONFIG) before any Route 53 call."""
    bad = tmp_path / "bad.yaml"
    bad.write_text("version: 1\n")
    for cmd in ("show", "plan", "bootstrap"):
        assert cli(["dns", cmd, "--policy", str(bad)]) == 78
    assert "bad.yaml" in capsys.readouterr().err


class FakeAuthority:
    """A tiny authoritative DNS server on loopback (UDP) answering CNAME queries from a dict."""

    def __init__(self, answers: dict[str, str]) -> None:
        self.answers = answers
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.settimeout(0.1)
        self.port = self.sock.getsockname()[1]
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self) -> None:
        while not self.stop.is_set():
            try:
                data, peer = self.sock.recvfrom(4096)
            except TimeoutError:
                continue
            query = dns.message.from_wire(data)
            response = dns.message.make_response(query)
            name = query.question[0].name.to_text()
            if name in self.answers:
                response.answer.append(dns.rrset.from_text(name, 60, "IN", "CNAME", self.answers[name] + "."))
            self.sock.sendto(response.to_wire(), peer)

    def close(self) -> None:
        self.stop.set()
        self.thread.join()
        self.sock.close()


def test_verification_asks_the_authoritative_servers(hosted_zone: dict[str, str], moto: Any, route53: Any) -> None:
    """With dns.verify, after INSYNC each owned name is asked; a drained or missing answer is flagged not ok."""
    policy = make_policy(hosted_zone["id"], hosted_zone["name"], endpoint_url=moto.url, verify=True)
    api = f"api.{hosted_zone['name']}"
    server = FakeAuthority(
        {
            f"us-east.pool.{api}": "eu-west.lb.example.net",  # allowed after the drain
            f"eu-west.pool.{api}": "us-east.lb.example.net",  # weight 0 in eu-west's pool: not ok
            api: "eu-west.lb.example.net",
        }
    )
    try:
        r = Route53Provider(policy, route53, verify_nameservers=[f"127.0.0.1:{server.port}"])
        r.bootstrap(context=ctx())
        with capture_logs() as logs:
            assert r.reconcile(DRAIN_US, context=ctx()).status == "applied"
    finally:
        server.close()
    verified = {e["name"]: e for e in logs if e["event"] == "route53.verified"}
    assert verified[f"us-east.pool.{api}"]["ok"] is True
    assert verified[f"us-east.pool.{api}"]["expected"] == ["eu-west.lb.example.net", "us-east.lb.example.net"]
    assert verified[f"eu-west.pool.{api}"]["ok"] is False
    assert (verified[f"ap-southeast.pool.{api}"]["answers"], verified[f"ap-southeast.pool.{api}"]["ok"]) == ([], False)
    assert verified[api]["ok"] is True


def test_shipped_iam_policy_is_least_privilege_and_current(capsys: Any) -> None:
    """docs/iam-policy.json is what `dns iam-policy` prints for the example: CREATE and DELETE of the owned names
    and the epoch TXT name only (no UPSERT), and reads."""
    root = Path(__file__).resolve().parent.parent
    assert cli(["dns", "iam-policy", "--policy", str(root / "policies" / "example.yaml")]) == 0
    printed = json.loads(capsys.readouterr().out)
    assert json.loads((root / "docs" / "iam-policy.json").read_text()) == printed
    actions = sorted(s["Action"] for s in printed["Statement"])
    assert actions == ["route53:ChangeResourceRecordSets", "route53:GetChange", "route53:ListResourceRecordSets"]
    cond = printed["Statement"][0]["Condition"]["ForAllValues:StringEquals"]
    assert cond["route53:ChangeResourceRecordSetsActions"] == ["CREATE", "DELETE"]
    assert cond["route53:ChangeResourceRecordSetsRecordTypes"] == ["CNAME", "TXT"]
    names = cond["route53:ChangeResourceRecordSetsNormalizedRecordNames"]
    assert "api.example.com" in names and "_trafficd-epoch.api.example.com" in names
    assert all(n == n.lower() and not n.endswith(".") for n in names)


def test_verification_stops_before_the_deadline(hosted_zone: dict[str, str], moto: Any, route53: Any) -> None:
    """With less time left than one query's timeout, no server is asked: one verify_failed event says deadline."""
    from trafficd.dns.route53.verify import verify

    policy = make_policy(hosted_zone["id"], hosted_zone["name"], endpoint_url=moto.url, verify=True)
    bootstrap(policy, route53)
    zone = Route53Provider(policy, route53).list_zone()
    with capture_logs() as logs:
        asked = verify(policy, zone, ["127.0.0.1:9"], time_left=lambda: 1.0)
    assert asked == []
    assert [(e["event"], e["error"]) for e in logs] == [("route53.verify_failed", "deadline")]
