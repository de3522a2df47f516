"""Worker discovery from DNS against a tiny real DNS server on loopback: SRV, A, AAAA, refresh, last good list."""

from __future__ import annotations

import asyncio
import random
from collections.abc import AsyncIterator
from typing import Any

import dns.message
import dns.rcode
import dns.rdataclass
import dns.rdatatype
import dns.rrset
import pytest
from probekit import FakeSink, ScriptedWorker, make_policy, wait_until
from structlog.testing import capture_logs

from trafficd.policy.schema import Discovery as DiscoveryConfig
from trafficd.policy.schema import Targets
from trafficd.probe.agent import run_agent
from trafficd.probe.discovery import Discovery, WorkerRef, series_name


class TinyDns(asyncio.DatagramProtocol):
    """Answers from `records[(name, type)] = [rdata text]`; `mode` 'servfail' / 'nxdomain' / 'drop' breaks it."""

    def __init__(self) -> None:
        self.records: dict[tuple[str, str], list[str]] = {}
        self.mode = "ok"
        self.queries: list[tuple[str, str]] = []
        self.transport: asyncio.DatagramTransport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def datagram_received(self, data: bytes, addr: tuple[str | Any, int]) -> None:
        query = dns.message.from_wire(data)
        q = query.question[0]
        name, rdtype = q.name.to_text().rstrip("."), dns.rdatatype.to_text(q.rdtype)
        self.queries.append((name, rdtype))
        if self.mode == "drop":
            return
        resp = dns.message.make_response(query)
        if self.mode == "servfail":
            resp.set_rcode(dns.rcode.SERVFAIL)
        elif self.mode == "nxdomain" or not any(n == name for n, _ in self.records):
            resp.set_rcode(dns.rcode.NXDOMAIN)
        else:
            values = self.records.get((name, rdtype), [])
            if values:
                resp.answer.append(dns.rrset.from_text_list(name + ".", 5, "IN", rdtype, values))
            if rdtype == "SRV":  # glue: the targets' addresses in the additional section
                for v in values:
                    target = v.split()[-1].rstrip(".")
                    glue = self.records.get((target, "A"))
                    if glue and self.records.get(("glue", "on")):
                        resp.additional.append(dns.rrset.from_text_list(target + ".", 5, "IN", "A", glue))
        assert self.transport is not None
        self.transport.sendto(resp.to_wire(), addr)


@pytest.fixture
async def dns_server() -> AsyncIterator[tuple[TinyDns, str]]:
    loop = asyncio.get_running_loop()
    transport, proto = await loop.create_datagram_endpoint(TinyDns, local_addr=("127.0.0.1", 0))
    port = transport.get_extra_info("sockname")[1]
    yield proto, f"127.0.0.1:{port}"
    transport.close()


INTERNAL = Targets(allow_private=True)  # the discovered fleets below live on private addresses


def config(nameserver: str, **kw: Any) -> DiscoveryConfig:
    return DiscoveryConfig.model_validate({"name": "svc.test", "nameserver": nameserver, **kw})


async def test_a_records_give_one_worker_per_address(dns_server: tuple[TinyDns, str]) -> None:
    """Two A records give two workers named by address, connecting to each IP under the discovery name."""
    dns_, ns = dns_server
    dns_.records[("svc.test", "A")] = ["10.1.0.2", "10.1.0.1"]
    d = Discovery(config(ns, type="A", port=8443), "r1", targets=INTERNAL)
    workers = await d.refresh(0.0)
    assert workers == [
        WorkerRef("10-1-0-1-8443", "https://svc.test:8443", "10.1.0.1"),
        WorkerRef("10-1-0-2-8443", "https://svc.test:8443", "10.1.0.2"),
    ]


async def test_aaaa_records(dns_server: tuple[TinyDns, str]) -> None:
    """AAAA records give IPv6 workers, connecting to each address under the discovery name."""
    dns_, ns = dns_server
    dns_.records[("svc.test", "AAAA")] = ["fd00::7"]
    (w,) = await Discovery(config(ns, type="AAAA", scheme="http", port=8080), "r1", targets=INTERNAL).refresh(0.0)
    assert w.address == "fd00::7" and w.url == "http://svc.test:8080"
    assert w.name == "fd00-0000-0000-0000-0000-0000-0000-0007-8080"


@pytest.mark.parametrize("glue", [True, False])
async def test_srv_records_with_or_without_glue(dns_server: tuple[TinyDns, str], glue: bool) -> None:
    """SRV targets become workers with their own ports, addressed from glue records or A lookups."""
    dns_, ns = dns_server
    dns_.records[("svc.test", "SRV")] = ["10 5 8001 w1.svc.test.", "20 5 8002 w2.svc.test."]
    dns_.records[("w1.svc.test", "A")] = ["10.0.0.1"]
    dns_.records[("w2.svc.test", "A")] = ["10.0.0.2"]
    if glue:
        dns_.records[("glue", "on")] = ["1"]
    workers = await Discovery(config(ns), "r1", targets=INTERNAL).refresh(0.0)
    assert workers == [
        WorkerRef("w1-svc-test-8001", "https://w1.svc.test:8001", "10.0.0.1"),
        WorkerRef("w2-svc-test-8002", "https://w2.svc.test:8002", "10.0.0.2"),
    ]
    asked_a = [q for q in dns_.queries if q[1] == "A"]
    assert bool(asked_a) is not glue


async def test_refresh_logs_changes_and_failure_keeps_last_good_list(dns_server: tuple[TinyDns, str]) -> None:
    """A scale-up is logged as added; SERVFAIL, NXDOMAIN and a timeout keep the last good list and log the failure."""
    dns_, ns = dns_server
    dns_.records[("svc.test", "A")] = ["10.0.0.1"]
    d = Discovery(config(ns, type="A", port=80), "r1", targets=INTERNAL, lifetime_s=0.3)
    with capture_logs() as logs:
        await d.refresh(0.0)
        dns_.records[("svc.test", "A")] = ["10.0.0.1", "10.0.0.2"]
        good = await d.refresh(1.0)
        for mode in ("servfail", "nxdomain", "drop"):
            dns_.mode = mode
            assert await d.refresh(2.0) == good
    refreshed = [e for e in logs if e["event"] == "discovery.refreshed"]
    assert refreshed[1]["added"] == ["10-0-0-2-80"] and refreshed[1]["workers"] == 2
    failed = [e for e in logs if e["event"] == "discovery.failed"]
    assert [e["consecutive_failures"] for e in failed] == [1, 2, 3]
    assert [e["log_level"] for e in failed] == ["warning", "debug", "debug"]  # once per episode (log budget)
    assert all(e["kept_workers"] == 2 and e["region"] == "r1" for e in failed)
    assert d.workers == good


def test_series_names_are_valid_policy_names() -> None:
    """Discovered names use only lower-case letters, digits and '-', at most 63 characters."""
    long = series_name("a" * 80 + ".example.internal", "443")
    assert len(long) <= 63 and long == series_name("a" * 80 + ".example.internal", "443")
    assert series_name("W1.Svc.Test.", "8443") == "w1-svc-test-8443"


async def test_agent_probes_each_discovered_worker_as_its_own_series(dns_server: tuple[TinyDns, str]) -> None:
    """An agent with SRV discovery probes both discovered workers, then picks up a third after a refresh."""
    dns_, ns = dns_server
    workers = [await ScriptedWorker().start() for _ in range(3)]
    try:
        for i in (1, 2):
            dns_.records[(f"w{i}.svc.test", "A")] = ["127.0.0.1"]
        dns_.records[("svc.test", "SRV")] = [f"10 5 {w.port} w{i}.svc.test." for i, w in enumerate(workers[:2], 1)]
        policy = make_policy(
            discovery={"name": "svc.test", "nameserver": ns, "scheme": "http", "refresh": "200ms"},
            probe={"interval": "100ms"},
        )
        sink, stop = FakeSink(), asyncio.Event()
        with capture_logs() as logs:
            task = asyncio.create_task(run_agent(policy, "r1", stop=stop, sink=sink, rng=random.Random(3)))
            await wait_until(lambda: {s.worker for s in sink.samples} >= {f"w1-svc-test-{workers[0].port}"})
            dns_.records[("w3.svc.test", "A")] = ["127.0.0.1"]
            dns_.records[("svc.test", "SRV")].append(f"10 5 {workers[2].port} w3.svc.test.")
            third = f"w3-svc-test-{workers[2].port}"
            await wait_until(lambda: third in {s.worker for s in sink.samples}, what="the third worker")
            stop.set()
            await asyncio.wait_for(task, 10)
    finally:
        for w in workers:
            await w.stop()
    assert len({s.worker for s in sink.samples}) == 3 and all(s.ok for s in sink.samples)
    assert all(w.headers and w.headers[0]["Host"].startswith("w") for w in workers)
    assert any(e["event"] == "discovery.refreshed" and e["added"] == [third] for e in logs)


async def test_an_unchanged_answer_is_debug_and_a_change_is_info(dns_server: tuple[TinyDns, str]) -> None:
    """Log budget: the same workers every `refresh` (30 s) is DEBUG; a scale-up or the first answer after a
    failure is INFO."""
    dns_, ns = dns_server
    dns_.records[("svc.test", "A")] = ["10.0.0.1"]
    d = Discovery(config(ns, type="A", port=80), "r1", targets=INTERNAL, lifetime_s=0.3)
    with capture_logs() as logs:
        for t in range(5):
            await d.refresh(float(t))
        dns_.records[("svc.test", "A")] = ["10.0.0.1", "10.0.0.2"]
        await d.refresh(5.0)
    levels = [e["log_level"] for e in logs if e["event"] == "discovery.refreshed"]
    assert levels == ["info", "debug", "debug", "debug", "debug", "info"]


async def test_discovered_metadata_loopback_and_unswitched_private_addresses_are_refused_and_logged(
    dns_server: tuple[TinyDns, str],
) -> None:
    """DNS that answers the metadata address, loopback or (without allow_private) a private address gets those
    workers skipped, each logged as discovery.target_refused with its reason; the public one is kept."""
    dns_, ns = dns_server
    dns_.records[("svc.test", "A")] = ["169.254.169.254", "127.0.0.1", "10.0.0.9", "93.184.216.34"]
    with capture_logs() as logs:
        workers = await Discovery(config(ns, type="A", port=443), "r1").refresh(0.0)
    assert [w.address for w in workers] == ["93.184.216.34"]
    refused = {e["address"]: e["reason"] for e in logs if e["event"] == "discovery.target_refused"}
    assert refused == {
        "169.254.169.254": "169.254.169.254 is a cloud metadata address; probes may never go there",
        "127.0.0.1": "127.0.0.1 is a loopback address; probing it needs probe.targets.allow_loopback: true",
        "10.0.0.9": "10.0.0.9 is a private address; probing it needs probe.targets.allow_private: true",
    }
