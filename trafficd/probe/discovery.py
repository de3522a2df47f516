"""A region's workers from DNS: SRV records, or A/AAAA records with a fixed port (dnspython).

Fleets behind an internal load balancer scale up and down, so the list is refreshed every `discovery.refresh`.
Each discovered worker is its own series, named after its address (`10-0-0-7-8443`, `w1-svc-internal-8443`).
The probe connects to the discovered IP while TLS verifies the certificate for the URL's host name: for A/AAAA
records the discovery name, for SRV records the SRV target.

A refresh that fails (timeout, SERVFAIL, NXDOMAIN, no records) keeps the last good list and logs
`discovery.failed`; a successful one logs `discovery.refreshed` with what was added and removed.
"""

from __future__ import annotations

import hashlib
import ipaddress
import re
from collections.abc import Sequence
from dataclasses import dataclass

import dns.asyncresolver
import dns.exception
import dns.rdatatype
import dns.resolver

from trafficd.errors import TransientError
from trafficd.policy.schema import Discovery as DiscoveryConfig
from trafficd.policy.schema import Targets, Worker
from trafficd.policy.targets import address_problem, url_host
from trafficd.runtime.logs import get_logger

log = get_logger("discovery")

_NOT_NAME = re.compile(r"[^a-z0-9]+")


class DiscoveryError(TransientError):
    """DNS did not give a usable list of workers."""


@dataclass(frozen=True, slots=True)
class WorkerRef:
    """A worker to probe, listed in the policy or discovered: series name, base URL, optional IP to connect to."""

    name: str
    url: str
    address: str | None = None
    api: str | None = None  # the API it speaks (None: probe.api)

    @classmethod
    def from_policy(cls, w: Worker) -> WorkerRef:
        return cls(name=w.name, url=w.url, address=w.address, api=w.api)


def series_name(*parts: str) -> str:
    """A worker name valid as a policy name (lower case, digits, '-', ≤ 63 chars), stable for the same input."""
    raw = "-".join(parts).lower()
    name = _NOT_NAME.sub("-", raw).strip("-") or "worker"
    if len(name) > 63:
        name = name[:54].rstrip("-") + "-" + hashlib.sha256(raw.encode()).hexdigest()[:8]
    return name


def _host_for_url(host: str) -> str:
    try:
        return f"[{host}]" if ipaddress.ip_address(host).version == 6 else host
    except ValueError:
        return host


def _default_port(cfg: DiscoveryConfig) -> int:
    return cfg.port or (443 if cfg.scheme == "https" else 80)


class Discovery:
    """Resolves one region's discovery name; `workers` is the last good list (empty until one succeeds)."""

    def __init__(
        self, cfg: DiscoveryConfig, region: str, *, targets: Targets | None = None, lifetime_s: float = 3.0
    ) -> None:
        self.cfg = cfg
        self.targets = targets or Targets()
        self.region = region
        self.workers: list[WorkerRef] = []
        self.last_refresh: float | None = None  # loop time of the last attempt
        self.failures = 0  # consecutive
        self._resolver = dns.asyncresolver.Resolver(configure=cfg.nameserver is None)
        if cfg.nameserver is not None:
            host, port = _split_hostport(cfg.nameserver)
            self._resolver.nameservers = [host]
            self._resolver.port = port
        self._resolver.lifetime = min(lifetime_s, cfg.refresh)
        self._resolver.timeout = self._resolver.lifetime

    def due(self, now: float) -> bool:
        return self.last_refresh is None or now - self.last_refresh >= self.cfg.refresh

    async def refresh(self, now: float) -> list[WorkerRef]:
        """Resolve again; on failure keep (and return) the last good list."""
        self.last_refresh = now
        try:
            found = await self.resolve()
        except DiscoveryError as exc:
            self.failures += 1
            # once per episode at WARNING (log budget); the retries every `refresh` are DEBUG
            (log.warning if self.failures == 1 else log.debug)(
                "discovery.failed",
                region=self.region,
                name=self.cfg.name,
                type=self.cfg.type,
                error=str(exc),
                consecutive_failures=self.failures,
                kept_workers=len(self.workers),
            )
            return self.workers
        before = {w.name for w in self.workers}
        after = {w.name for w in found}
        failed_before, self.failures = self.failures, 0
        self.workers = found
        changed = before != after or failed_before > 0
        (log.info if changed else log.debug)(  # an unchanged answer every `refresh` is DEBUG (log budget)
            "discovery.refreshed",
            region=self.region,
            name=self.cfg.name,
            type=self.cfg.type,
            workers=len(found),
            added=sorted(after - before),
            removed=sorted(before - after),
            after_failures=failed_before,
        )
        return found

    async def resolve(self) -> list[WorkerRef]:
        """The current workers, sorted by name; raises `DiscoveryError` for a failure or an empty answer."""
        try:
            if self.cfg.type == "SRV":
                workers = await self._resolve_srv()
            else:
                workers = await self._resolve_addresses(self.cfg.name, self.cfg.type, _default_port(self.cfg))
        except dns.exception.DNSException as exc:
            raise DiscoveryError(f"{type(exc).__name__}: {exc}") from None
        workers = [w for w in workers if self._allowed(w)]
        if not workers:
            raise DiscoveryError("no records")
        unique = {w.name: w for w in workers}
        return [unique[k] for k in sorted(unique)]

    def _allowed(self, worker: WorkerRef) -> bool:
        """The probe-target rules of the policy (policy/targets.py) for a discovered address; refused ones logged."""
        t = self.targets
        problem = address_problem(
            worker.address or url_host(worker.url), allow_loopback=t.allow_loopback, allow_private=t.allow_private
        )
        if problem:
            log.warning(
                "discovery.target_refused",
                region=self.region,
                name=self.cfg.name,
                worker=worker.name,
                address=worker.address,
                reason=problem,
            )
        return problem is None

    async def _resolve_addresses(self, name: str, rdtype: str, port: int) -> list[WorkerRef]:
        answer = await self._resolver.resolve(name, rdtype)
        host = name.rstrip(".")
        out = []
        for rr in answer:
            ip = ipaddress.ip_address(rr.address)
            out.append(
                WorkerRef(
                    name=series_name(ip.exploded, str(port)),
                    url=f"{self.cfg.scheme}://{_host_for_url(host)}:{port}",
                    address=str(ip),
                    api=self.cfg.api,
                )
            )
        return out

    async def _resolve_srv(self) -> list[WorkerRef]:
        answer = await self._resolver.resolve(self.cfg.name, "SRV")
        out = []
        for rr in sorted(answer, key=lambda r: (r.priority, -r.weight, str(r.target))):
            target = str(rr.target).rstrip(".")
            port = int(self.cfg.port or rr.port)
            address = _address_in(answer.response.additional, target) or await self._lookup(target)
            if address is None:
                log.warning("discovery.target_unresolved", region=self.region, name=self.cfg.name, target=target)
                continue
            out.append(
                WorkerRef(
                    name=series_name(target, str(port)),
                    url=f"{self.cfg.scheme}://{_host_for_url(target)}:{port}",
                    address=address,
                    api=self.cfg.api,
                )
            )
        return out

    async def _lookup(self, host: str) -> str | None:
        try:
            ipaddress.ip_address(host)
            return host
        except ValueError:
            pass
        for rdtype in ("A", "AAAA"):
            try:
                answer = await self._resolver.resolve(host, rdtype)
            except dns.exception.DNSException:
                continue
            for rr in answer:
                return str(rr.address)
        return None


def _address_in(additional: Sequence[object], host: str) -> str | None:
    """The first A/AAAA address for `host` in an answer's additional section (saves a query per target)."""
    for rrset in additional:
        name = str(getattr(rrset, "name", "")).rstrip(".")
        if name.lower() == host.lower() and getattr(rrset, "rdtype", None) in (
            dns.rdatatype.A,
            dns.rdatatype.AAAA,
        ):
            for rr in rrset:  # type: ignore[attr-defined]
                return str(rr.address)
    return None


def _split_hostport(value: str) -> tuple[str, int]:
    """`127.0.0.1:5353` → ('127.0.0.1', 5353); `[::1]:53`, `::1`, `10.0.0.2` (port 53)."""
    if value.startswith("["):
        host, _, rest = value[1:].partition("]")
        return host, int(rest[1:]) if rest.startswith(":") else 53
    if value.count(":") == 1:
        host, _, port = value.partition(":")
        return host, int(port)
    return value, 53
