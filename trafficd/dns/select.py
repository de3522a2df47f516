"""Which `DnsProvider` a policy uses. The only module outside a provider's package that names providers:
adding one (docs/route53.md, "A second provider") means a package under `trafficd/dns/` and a line here."""

from __future__ import annotations

from trafficd.dns.provider import DnsProvider
from trafficd.policy.schema import Policy


def provider_for(policy: Policy, *, writer: str = "") -> DnsProvider:
    """The provider for the policy's `dns` section (Route 53 today); `writer` names the process (host:pid)."""
    from trafficd.dns.route53.provider import Route53Provider

    return Route53Provider.from_policy(policy, writer=writer)
