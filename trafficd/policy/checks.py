"""Checks across fields of a policy whose fields are each valid: errors (the policy is refused) and warnings.

Each check returns `(location, reason)` with the location relative to the policy root, so the loader can point
at the line in the file. Errors are things that would make the daemons do something wrong or nothing at all;
warnings are legal but probably not meant (and are printed by `trafficd policy check`).
"""

from __future__ import annotations

import difflib

from trafficd.policy.load import Loc
from trafficd.policy.schema import DeadlinesOverride, Policy
from trafficd.policy.values import check_name
from trafficd.policy.values import format_duration as _fmt

MIN_SAMPLES_FOR_P99 = 368  # a distribution-free 95 % interval on the p99 needs at least this many samples


def _unknown_region(name: str, regions: list[str]) -> str:
    close = difflib.get_close_matches(name, regions, n=1, cutoff=0.6)
    hint = f"; did you mean '{close[0]}'?" if close else f"; the regions are {', '.join(regions)}"
    return f"unknown region '{name}'{hint}"


def _duplicates(names: list[str]) -> list[int]:
    """Indexes of the entries whose name appeared earlier in the list."""
    return [i for i, n in enumerate(names) if n in names[:i]]


def errors(p: Policy) -> list[tuple[Loc, str]]:
    """Every cross-field error; empty when the policy is consistent."""
    out: list[tuple[Loc, str]] = []
    regions = list(p.regions)
    for name, region in p.regions.items():
        try:
            check_name(name)
        except ValueError as exc:
            out.append((("regions", name), str(exc)))
        for i, n in enumerate(region.neighbours):
            if n == name:
                out.append((("regions", name, "neighbours", i), "a region cannot be its own neighbour"))
            elif n not in p.regions:
                out.append((("regions", name, "neighbours", i), _unknown_region(n, regions)))
        for i in _duplicates([w.name for w in region.workers]):
            out.append((("regions", name, "workers", i, "name"), f"worker '{region.workers[i].name}' is listed twice"))
        region_models = region.models or []
        for i in _duplicates([m.name for m in region_models]):
            out.append((("regions", name, "models", i, "name"), f"model '{region_models[i].name}' is listed twice"))
    for i in _duplicates([m.name for m in p.models]):
        out.append((("models", i, "name"), f"model '{p.models[i].name}' is listed twice"))
    for i, n in enumerate(p.guards.never_drain):
        if n not in p.regions:
            out.append((("guards", "never_drain", i), _unknown_region(n, regions)))

    owner: dict[str, str] = {}
    for name in regions:
        ident = p.set_identifier(name)
        if ident in owner:
            explicit = p.regions[name].dns.set_identifier is not None
            loc: Loc = ("regions", name, "dns", "set_identifier") if explicit else ("regions", name, "dns")
            out.append((loc, f"SetIdentifier '{ident}' is already used by region '{owner[ident]}'; each needs its own"))
        owner.setdefault(ident, name)

    if p.guards.min_serving_regions > len(regions):
        out.append(
            (
                ("guards", "min_serving_regions"),
                f"is {p.guards.min_serving_regions} but the policy has only {len(regions)} "
                f"region{'s' if len(regions) != 1 else ''}",
            )
        )
    w = p.windows
    if w.trip < w.slice:
        out.append((("windows", "trip"), f"({_fmt(w.trip)}) must be at least windows.slice ({_fmt(w.slice)})"))
    if w.long < w.trip:
        out.append((("windows", "long"), f"({_fmt(w.long)}) must be at least windows.trip ({_fmt(w.trip)})"))
    if w.stale_after < p.probe.interval:
        out.append(
            (
                ("windows", "stale_after"),
                f"({_fmt(w.stale_after)}) is shorter than probe.interval ({_fmt(p.probe.interval)}): "
                "every region would keep turning unknown between two probes",
            )
        )
    if p.recover.hold_down > p.recover.hold_down_max:
        out.append(
            (
                ("recover", "hold_down"),
                f"({_fmt(p.recover.hold_down)}) is longer than recover.hold_down_max ({_fmt(p.recover.hold_down_max)})",
            )
        )
    if p.dns.topology == "latency-weighted" and "{region}" not in p.dns.pool_name:
        out.append((("dns", "pool_name"), "must contain '{region}': every region needs a pool of its own"))
    out += _deadline_errors(p)
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
    """Legal but probably not meant."""
    out: list[tuple[Loc, str]] = []
    if p.ramp.cooldown < p.dns.ttl:
        out.append(
            (
                ("ramp", "cooldown"),
                f"({_fmt(p.ramp.cooldown)}) is shorter than dns.ttl ({p.dns.ttl}s): resolvers may still hold the "
                "previous weights when the next step is judged",
            )
        )
    if p.windows.min_samples < MIN_SAMPLES_FOR_P99:
        out.append(
            (
                ("windows", "min_samples"),
                f"({p.windows.min_samples}) is below {MIN_SAMPLES_FOR_P99}, the fewest samples that give a p99 a "
                "95% confidence interval: expect noisy decisions",
            )
        )
    if p.windows.evaluate_every > p.windows.trip:
        out.append((("windows", "evaluate_every"), "is longer than windows.trip: some slices are never judged"))
    if p.probe.deadlines.total <= p.slo.total_p99:
        out.append(
            (
                ("probe", "deadlines", "total"),
                f"({_fmt(p.probe.deadlines.total)}) is not above slo.total_p99 ({_fmt(p.slo.total_p99)}): a probe "
                "that times out is recorded at its deadline and never counts as over the SLO",
            )
        )
    if p.slo.ttft_p99 is not None and p.probe.deadlines.first_token <= p.slo.ttft_p99:
        out.append(
            (
                ("probe", "deadlines", "first_token"),
                f"({_fmt(p.probe.deadlines.first_token)}) is not above slo.ttft_p99 ({_fmt(p.slo.ttft_p99)}): "
                "a probe that times out never counts as over the TTFT SLO",
            )
        )
    for name, region in p.regions.items():
        if not region.workers or region.discovery is not None:
            continue  # discovered fleets vary in size: nothing to count here
        expected = int(len(region.workers) * len(p.models_for(name)) * p.windows.trip / p.probe.interval)
        if expected < p.windows.min_samples:
            out.append(
                (
                    ("regions", name, "workers"),
                    f"give about {expected} samples per trip window ({len(region.workers)} workers × "
                    f"{len(p.models_for(name))} models × {_fmt(p.windows.trip)} / {_fmt(p.probe.interval)}), fewer "
                    f"than windows.min_samples ({p.windows.min_samples}): the region would stay unknown (never "
                    "judged); probe more often, lengthen windows.trip or list more workers",
                )
            )
    if p.regions and set(p.guards.never_drain) >= set(p.regions):
        out.append((("guards", "never_drain"), "lists every region: trafficd will never drain anything"))
    return out
