"""Is a breach regional or global? The peer hold's statistics (pure; docs/judge.md §1, episode.py).

When region A's evidence reaches its threshold, the question is whether the other regions are at the breach rate
too (a global or probe problem: nothing should move) or healthy (A trips). A's own evidence began at the onset of
whatever it sees, so the others are judged over the **same span**: each region keeps the exact counts every
region consumed since its own breach evidence was last 0 (`RegionState.span_counts`, A itself included).

Per signal that breaches A, the m other regions showing the most breach evidence are **pooled**, where m is how
many others `guards.fail_open_share` needs besides A (all of them with three regions at 75 %): their Bernoulli
log-likelihood ratio over A's span, of the rate a global problem would give them against the healthy rate p0,

    llr = Σ over the m regions: over · ln(p / p0) + within · ln((1 − p) / (1 − p0))

(each region's share capped at +PEER_MARGIN × h: one region far into a breach must not outweigh a healthy one),
with p = max(breach rate p1, a lower confidence bound on A's own rate over its span (Wilson, z = `Z_LOW`)):
a hard stall or a 20 % breach in A would show as that much in a global problem, so healthy others rule it out
within one or two evaluations; at the breach rate p = p1. The trip waits while llr > −`PEER_MARGIN` × h and goes
ahead once the pooled others are clearly healthy. Pooling matters at short spans: two healthy regions over 60 s
show 2.4 over-SLO probes in all, two at 2 % show 9.6 — per region (each must look healthy) the two could not be
told apart with the confidence a fleet-wide false drain needs.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

from trafficd.decide.characteristic import signals
from trafficd.policy.schema import Policy

Z_LOW = 3.0  # one-sided lower confidence bound on A's rate (a global problem would give the others at least this)
# spans start when the region's evidence was last at or below these shares of its threshold; the trip waits while
# the others are not clearly healthy over any of them (the shorter spans guard against a region whose evidence was
# already up before a global onset: its long span holds healthy data of the others from before it)
SPAN_FROM = (0.25, 0.5)
PEER_MARGIN = 0.35  # the others are clearly healthy when their pooled evidence is ≤ −PEER_MARGIN × h
COLUMN = {"latency": 1, "errors": 2, "ttft": 3}  # where a signal's count is in (n, over, errors, ttft_over)
Span = tuple[int, int, int, int]


def lower_rate(n: int, k: int, z: float = Z_LOW) -> float:
    """Wilson score lower bound of a rate from k of n."""
    if n <= 0:
        return 0.0
    p = min(1.0, max(0.0, k / n))  # a count over n (inconsistent input) is read as all of them
    z2 = z * z
    centre = p + z2 / (2 * n)
    spread = z * math.sqrt(p * (1 - p) / n + z2 / (4 * n * n))
    return max(0.0, (centre - spread) / (1 + z2 / n))


def needed(policy: Policy) -> int:
    """How many other regions must show breach evidence with a breaching one for `fail_open_share`."""
    return max(0, math.ceil(policy.guards.fail_open_share * len(policy.region_names) - 1 - 1e-9))


def _llr(span: Span, col: int, p: float, p0: float) -> float:
    """Linear in the counts, as the judge's own sums (evidence.py): a probe counted in n before the span and over
    its threshold within it adds its over − within term."""
    over = span[col]
    return over * math.log(p / p0) + (span[0] - over) * math.log((1 - p) / (1 - p0))


def pooled(policy: Policy, own: Span, others: Sequence[Span], signal: str, cap: float) -> float | None:
    """The pooled evidence of the `needed` others showing most, on `signal`, over the span whose counts in the
    breaching region are `own`, each region's share capped at `cap` so that one breaching region cannot outweigh a
    healthy one (None: fewer others than needed — the trip cannot be a global one's)."""
    m = needed(policy)
    if len(others) < m:
        return None
    if m == 0:
        return math.inf
    llr = {s.name: s.llr for s in signals(policy)}[signal]
    col = COLUMN[signal]
    p = min(0.999, max(llr.p1, lower_rate(own[0], own[col])))
    each = sorted((min(cap, _llr(o, col, p, llr.p0)) for o in others), reverse=True)
    return sum(each[:m])


def hold(
    policy: Policy,
    region: str,
    spans: Sequence[Mapping[str, Span]],
    known: Sequence[str],
    signal_h: Mapping[str, float],
) -> dict[str, float]:
    """Per breaching signal (`signal_h`: signal → A's threshold) whose pooled others are not clearly healthy over
    some span, their evidence as a share of h (the most over the spans); empty: A may trip. `known`: the other
    regions with evidence (unknown ones do not count, nor do regions without a probe in the span)."""
    out: dict[str, float] = {}
    for span in spans:
        if not span:
            continue
        own = span.get(region, (0, 0, 0, 0))
        others = [c for c in (span.get(q, (0, 0, 0, 0)) for q in known) if c[0] > 0]  # no probes: no evidence
        for s, h in signal_h.items():
            v = pooled(policy, own, others, s, PEER_MARGIN * h)
            if v is not None and v > -PEER_MARGIN * h:
                out[s] = max(out.get(s, -math.inf), v / h if math.isfinite(v) else math.inf)
    return out
