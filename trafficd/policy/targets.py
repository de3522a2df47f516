"""Which addresses an agent may probe (pure): no SSRF into cloud metadata, loopback or private ranges by accident.

The agent sends its API key to whatever the policy (or DNS discovery) names, from inside the network. So:

- link-local addresses (169.254.0.0/16, fe80::/10) and the cloud metadata endpoints (169.254.169.254,
  fd00:ec2::254, 100.100.100.200, 168.63.129.16, `metadata.google.internal`…) are **always** refused, as are
  unspecified, multicast and reserved addresses;
- loopback (127.0.0.0/8, ::1, `localhost`) only with `probe.targets.allow_loopback: true`;
- private ranges (10/8, 172.16/12, 192.168/16, 100.64/10, fc00::/7) only with `probe.targets.allow_private: true`;
- an API key is sent only over https, unless `probe.targets.allow_cleartext_api_key: true`.

Host names are not resolved here (the policy check runs anywhere); discovered workers are checked by address
when found (probe/discovery.py), and the agent's systemd unit denies the metadata addresses (`IPAddressDeny=`).
"""

from __future__ import annotations

import ipaddress
from urllib.parse import urlsplit

METADATA_ADDRESSES = frozenset(
    ipaddress.ip_address(a)
    for a in (
        "169.254.169.254",  # AWS, GCP, Azure, OpenStack, DigitalOcean, Oracle …
        "169.254.170.2",  # AWS ECS task metadata
        "fd00:ec2::254",  # AWS IMDS over IPv6
        "100.100.100.200",  # Alibaba Cloud
        "168.63.129.16",  # Azure WireServer
    )
)
METADATA_NAMES = frozenset({"metadata.google.internal", "metadata.goog", "metadata", "instance-data"})
_CGNAT = ipaddress.ip_network("100.64.0.0/10")


def address_problem(host: str, *, allow_loopback: bool = False, allow_private: bool = False) -> str | None:
    """Why `host` (an IP literal or a host name) must not be probed, or None. Names other than localhost and the
    metadata names are not resolved (None)."""
    name = host.strip("[]").rstrip(".").lower()
    if name in METADATA_NAMES or name.startswith("metadata.google."):
        return f"'{host}' is a cloud metadata endpoint; probes may never go there"
    if name == "localhost" or name.endswith(".localhost"):
        return None if allow_loopback else _needs(host, "loopback", "allow_loopback")
    try:
        ip = ipaddress.ip_address(name.split("%", 1)[0])
    except ValueError:
        return None
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    return _ip_problem(host, ip, allow_loopback=allow_loopback, allow_private=allow_private)


def _ip_problem(
    host: str, ip: ipaddress.IPv4Address | ipaddress.IPv6Address, *, allow_loopback: bool, allow_private: bool
) -> str | None:
    if ip in METADATA_ADDRESSES:
        return f"{host} is a cloud metadata address; probes may never go there"
    if ip.is_link_local:
        return f"{host} is a link-local address (where cloud metadata lives); probes may never go there"
    if ip.is_unspecified or ip.is_multicast or ip.is_reserved:
        return f"{host} is not an address a worker can have (unspecified, multicast or reserved)"
    if ip.is_loopback:
        return None if allow_loopback else _needs(host, "loopback", "allow_loopback")
    if ip.is_private or ip in _CGNAT:
        return None if allow_private else _needs(host, "private", "allow_private")
    return None


def _needs(host: str, kind: str, switch: str) -> str:
    return f"{host} is a {kind} address; probing it needs probe.targets.{switch}: true"


def url_host(url: str) -> str:
    try:
        return urlsplit(url).hostname or ""
    except ValueError:
        return ""


def cleartext_key_problem(url: str, *, has_api_key: bool, allow_cleartext: bool) -> str | None:
    """An API key would go over plain http."""
    if has_api_key and url.lower().startswith("http://") and not allow_cleartext:
        return (
            "the API key would be sent in clear text over http://; use https://, or set "
            "probe.targets.allow_cleartext_api_key: true for a trusted network"
        )
    return None
