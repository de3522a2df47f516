"""Checks across fields of a policy whose fields are each valid: errors (the policy is refused) and warnings.

Each check returns `(location, reason)` with the location relative to the policy root, so the loader can point
at the line in the file. Errors are things that would make the daemons do something wrong or nothing at all;
warnings are legal but probably not meant (and are printed by `trafficd policy check`); their steps are in
`check_warnings.py`.
"""

from __future__ import annotations

import difflib
from collections.abc import Callable

from pydantic import ValidationError

from trafficd.policy import check_warnings
from trafficd.policy.capacity import CapacityFields
from trafficd.policy.capacity import resolve as resolve_capacity
from trafficd.policy.load import Loc
from trafficd.policy.schema import DeadlinesOverride, Policy
from trafficd.policy.targets import address_problem, cleartext_key_problem, url_host
from trafficd.policy.values import check_name, is_host_name, is_ip
from trafficd.policy.values import format_duration as _fmt
from trafficd.policy.values import format_percent as _pct


def _unknown_region(name: str, regions: list[str]) -> str:
    close = difflib.get_close_matches(name, regions, n=1, cutoff=0.6)
    hint = f"; did you mean '{close[0]}'?" if close else f"; the regions are {', '.join(regions)}"
    return f"unknown region '{name}'{hint}"


def _duplicates(names: list[str]) -> list[int]:
    """Indexes of the entries whose name appeared earlier in the list."""
    return [i for i, n in enumerate(names) if n in names[:i]]


def errors(p: Policy) -> list[tuple[Loc, str]]:
    """Every cross-field error; empty when the policy is consistent."""
    steps = (
        _region_errors,
        _list_errors,
        _set_identifier_errors,
        _endpoint_errors,
        _guard_errors,
        _window_errors,
        _slo_errors,
        _timer_errors,
        _deadline_errors,
        _target_errors,
        _capacity_errors,
    )
    return [problem for step in steps for problem in step(p)]


def _capacity_problem(loc: Loc, *layers: CapacityFields | None) -> list[tuple[Loc, str]]:
    """The first inconsistency of these merged capacity layers, at `loc` (the most specific layer given)."""
    try:
        resolve_capacity(*layers)
    except ValidationError as exc:
        err = exc.errors()[0]
        return [(loc, str(err.get("ctx", {}).get("error", err["msg"])))]
    return []


def _capacity_errors(p: Policy) -> list[tuple[Loc, str]]:
    """Each capacity section merged with the ones above it: once where it is written, not once per worker."""
    out = _capacity_problem(("capacity",), p.capacity)
    if out:
        return out
    for name, region in p.regions.items():
        found = _capacity_problem(("regions", name, "capacity"), p.capacity, region.capacity)
        if found and region.capacity is not None:
            out += found
            continue
        for i, w in enumerate(region.workers):
            if w.capacity is not None:
                out += _capacity_problem(
                    ("regions", name, "workers", i, "capacity"), p.capacity, region.capacity, w.capacity
                )
    return out


def _region_errors(p: Policy) -> list[tuple[Loc, str]]:
    """Region names, and each region's neighbours, workers and models."""
    out: list[tuple[Loc, str]] = []
    regions = list(p.regions)
    for name, region in p.regions.items():
        try:
            check_name(name)
        except ValueError as exc:
            out.append((("regions", name), str(exc)))
        for i, n in enumerate(region.neighbours):
            loc: Loc = ("regions", name, "neighbours", i)
            if n == name:
                out.append((loc, "a region cannot be its own neighbour"))
            elif n not in p.regions:
                out.append((loc, _unknown_region(n, regions)))
            elif n in region.neighbours[:i]:
                out.append((loc, f"neighbour '{n}' is listed twice; list each neighbour once, preferred first"))
        for i in _duplicates([w.name for w in region.workers]):
            out.append((("regions", name, "workers", i, "name"), f"worker '{region.workers[i].name}' is listed twice"))
        region_models = region.models or []
        for i in _duplicates([m.name for m in region_models]):
            out.append((("regions", name, "models", i, "name"), f"model '{region_models[i].name}' is listed twice"))
    return out


def _list_errors(p: Policy) -> list[tuple[Loc, str]]:
    """The policy's models and the regions named by guards."""
    out: list[tuple[Loc, str]] = []
    for i in _duplicates([m.name for m in p.models]):
        out.append((("models", i, "name"), f"model '{p.models[i].name}' is listed twice"))
    for i, n in enumerate(p.guards.never_drain):
        if n not in p.regions:
            out.append((("guards", "never_drain", i), _unknown_region(n, list(p.regions))))
    return out


def _set_identifier_errors(p: Policy) -> list[tuple[Loc, str]]:
    out: list[tuple[Loc, str]] = []
    owner: dict[str, str] = {}
    for name in p.regions:
        ident = p.set_identifier(name)
        if ident in owner:
            explicit = p.regions[name].dns.set_identifier is not None
            loc: Loc = ("regions", name, "dns", "set_identifier") if explicit else ("regions", name, "dns")
            out.append((loc, f"SetIdentifier '{ident}' is already used by region '{owner[ident]}'; each needs its own"))
        owner.setdefault(ident, name)
    return out


def _is_ipv4(value: str) -> bool:
    return is_ip(value, 4)


def _is_ipv6(value: str) -> bool:
    return is_ip(value, 6)


_RECORD_VALUE: dict[str, tuple[str, Callable[[str], bool], str]] = {
    "CNAME": ("a host name", is_host_name, "a CNAME points at a name, like 'us-east.lb.example.com'"),
    "A": ("an IPv4 address", _is_ipv4, "an A record holds an IPv4 address, like '192.0.2.10'"),
    "AAAA": ("an IPv6 address", _is_ipv6, "an AAAA record holds an IPv6 address, like '2001:db8::10'"),
}


def _endpoint_errors(p: Policy) -> list[tuple[Loc, str]]:
    """Each region's endpoint must fit dns.record_type."""
    what, fits, hint = _RECORD_VALUE[p.dns.record_type]
    return [
        (
            ("regions", name, "dns", "endpoint"),
            f"'{region.dns.endpoint}' is not {what}, but dns.record_type is {p.dns.record_type}: {hint} "
            "(or change dns.record_type)",
        )
        for name, region in p.regions.items()
        if not fits(region.dns.endpoint)
    ]


def _guard_errors(p: Policy) -> list[tuple[Loc, str]]:
    out: list[tuple[Loc, str]] = []
    n = len(p.regions)
    if p.guards.min_serving_regions > n:
        out.append(
            (
                ("guards", "min_serving_regions"),
                f"is {p.guards.min_serving_regions} but the policy has only {n} region{'s' if n != 1 else ''}",
            )
        )
    if p.dns.topology == "latency-weighted" and "{region}" not in p.dns.pool_name:
        out.append((("dns", "pool_name"), "must contain '{region}': every region needs a pool of its own"))
    return out


def _window_errors(p: Policy) -> list[tuple[Loc, str]]:
    out: list[tuple[Loc, str]] = []
    w = p.windows
    if w.trip < w.slice:
        out.append((("windows", "trip"), f"({_fmt(w.trip)}) must be at least windows.slice ({_fmt(w.slice)})"))
    if w.long < w.trip:
        out.append((("windows", "long"), f"({_fmt(w.long)}) must be at least windows.trip ({_fmt(w.trip)})"))
    if w.stale_after < p.probe.interval:
        if "stale_after" in w.model_fields_set or "interval" not in p.probe.model_fields_set:
            loc: Loc = ("windows", "stale_after")
            reason = f"({_fmt(w.stale_after)}) is shorter than probe.interval ({_fmt(p.probe.interval)})"
        else:  # blame the value that was written
            loc = ("probe", "interval")
            reason = f"({_fmt(p.probe.interval)}) is longer than windows.stale_after ({_fmt(w.stale_after)})"
        out.append((loc, f"{reason}: every region would keep turning unknown between two probes"))
    return out


MIN_QUANTILE = 0.9  # the SLO fields are tail latencies (total_p99, ttft_p99)


def _slo_errors(p: Policy) -> list[tuple[Loc, str]]:
    out: list[tuple[Loc, str]] = []
    q = p.slo.quantile
    if not MIN_QUANTILE <= q < 1.0:
        out.append(
            (
                ("slo", "quantile"),
                f"({_pct(q)}) must be at least {_pct(MIN_QUANTILE)} and under 100%: total_p99 and ttft_p99 are "
                "tail latencies judged at this quantile (write e.g. '99%')",
            )
        )
    if p.slo.ttft_p99 is not None and p.slo.ttft_p99 > p.slo.total_p99:
        out.append(
            (
                ("slo", "ttft_p99"),
                f"({_fmt(p.slo.ttft_p99)}) is above slo.total_p99 ({_fmt(p.slo.total_p99)}): the first token "
                "arrives before the answer ends; lower ttft_p99 or raise total_p99",
            )
        )
    return out


def _timer_errors(p: Policy) -> list[tuple[Loc, str]]:
    """The lease and the hold-down timers against the loop that uses them."""
    out: list[tuple[Loc, str]] = []
    r = p.recover
    if r.hold_down > r.hold_down_max:
        out.append(
            (
                ("recover", "hold_down"),
                f"({_fmt(r.hold_down)}) is longer than recover.hold_down_max ({_fmt(r.hold_down_max)})",
            )
        )
    if r.hold_down_decay < r.hold_down:
        out.append(
            (
                ("recover", "hold_down_decay"),
                f"({_fmt(r.hold_down_decay)}) is shorter than recover.hold_down ({_fmt(r.hold_down)}): a trip "
                "would be forgotten before its hold-down ends, so repeated trips never lengthen it; write at "
                f"least {_fmt(r.hold_down)} (default 1h)",
            )
        )
    if p.controller.lease_ttl <= p.windows.evaluate_every:
        out.append(
            (
                ("controller", "lease_ttl"),
                f"({_fmt(p.controller.lease_ttl)}) must be longer than windows.evaluate_every "
                f"({_fmt(p.windows.evaluate_every)}): the leader renews its lease once per evaluation, so a "
                "shorter lease lapses between renewals and leadership flaps (default 15s)",
            )
        )
    return out


def _target_errors(p: Policy) -> list[tuple[Loc, str]]:
    """Probe targets: never metadata or link-local; loopback, private and clear-text keys only when allowed."""
    t = p.probe.targets
    has_key = bool(p.probe.auth.api_key_env or p.probe.auth.api_key_file)
    out: list[tuple[Loc, str]] = []
    for name, region in p.regions.items():
        for i, w in enumerate(region.workers):
            loc: Loc = ("regions", name, "workers", i)
            for field, host in (("url", url_host(w.url)), ("address", w.address)):
                problem = host and address_problem(host, allow_loopback=t.allow_loopback, allow_private=t.allow_private)
                if problem:
                    out.append(((*loc, field), problem))
            clear = cleartext_key_problem(w.url, has_api_key=has_key, allow_cleartext=t.allow_cleartext_api_key)
            if clear:
                out.append(((*loc, "url"), clear))
        d = region.discovery
        if d is not None and d.scheme == "http":
            url = f"http://{d.name}"
            clear = cleartext_key_problem(url, has_api_key=has_key, allow_cleartext=t.allow_cleartext_api_key)
            if clear:
                out.append((("regions", name, "discovery", "scheme"), clear))
    return out


def _deadline_errors(p: Policy) -> list[tuple[Loc, str]]:
    """first_token and connect must fit within total, after region and model overrides are merged."""
    found: dict[Loc, str] = {}
    for region in p.regions:
        region_models = p.regions[region].models
        for i, model in enumerate(p.models_for(region)):
            d = p.deadlines_for(region, model.name)
            for part in ("first_token", "connect"):
                if getattr(d, part) <= d.total:
                    continue
                # blame the most specific place that set one of the two
                model_loc: Loc = ("regions", region, "models", i) if region_models else ("models", i)
                places: list[tuple[Loc, DeadlinesOverride]] = [
                    ((*model_loc, "deadlines"), model.deadlines),
                    (("regions", region, "deadlines"), p.regions[region].deadlines),
                ]
                loc: Loc = ("probe", "deadlines")
                for where, o in places:
                    if getattr(o, part) is not None or o.total is not None:
                        loc = where
                        break
                found.setdefault(
                    (*loc, part),
                    f"({_fmt(getattr(d, part))}) is longer than the total deadline ({_fmt(d.total)})"
                    + (f" for region '{region}', model '{model.name}'" if loc[0] != "probe" else ""),
                )
    return list(found.items())


def warnings(p: Policy) -> list[tuple[Loc, str]]:
    """Legal but probably not meant (the steps are in `check_warnings.py`)."""
    steps = (
        check_warnings.timing_warnings,
        check_warnings.deprecated,
        check_warnings.never_drain_warnings,
        check_warnings.capacity_warnings,
    )
    return [problem for step in steps for problem in step(p)]
