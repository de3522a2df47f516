"""The pure histogram: bucket accuracy, exact merges, quantiles within 1 %, exact over-threshold decisions."""

from __future__ import annotations

import math

from hypothesis import given, settings
from hypothesis import strategies as st

from trafficd.model import Sample
from trafficd.stats import sketch
from trafficd.stats.sketch import Sketch

latency_ms = st.floats(min_value=sketch.MIN_MS, max_value=sketch.MAX_MS, allow_nan=False)


def _sample(total_ms: float, ok: bool = True, ttft_ms: float | None = None) -> Sample:
    return Sample("r", "w", "m", 0.0, ok, None if ok else "http_5xx", total_ms, ttft_ms=ttft_ms)


def _exact_quantile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[max(1, math.ceil(q * len(ordered) - 1e-9)) - 1]


@given(latency_ms)
def test_bucket_representative_is_within_one_percent(value: float) -> None:
    """Every value in [MIN_MS, MAX_MS] is within 1 % of its bucket's representative value."""
    rep = sketch.bucket_value_ms(sketch.bucket_index(value))
    assert abs(rep - value) <= sketch.RELATIVE_ACCURACY * value * (1 + 1e-9)


@given(st.lists(latency_ms, min_size=1, max_size=300), st.sampled_from([0.5, 0.9, 0.99, 0.999]))
@settings(max_examples=200)
def test_quantile_is_within_one_percent_of_exact(values: list[float], q: float) -> None:
    """A histogram quantile is within 1 % of the exact nearest-rank quantile of the same samples."""
    sk = Sketch.from_samples([_sample(v) for v in values], 3000.0, None)
    got = sk.quantile("total", q)
    exact = _exact_quantile(values, q)
    assert got is not None
    assert abs(got - exact) <= sketch.RELATIVE_ACCURACY * exact * (1 + 1e-9)


@given(st.lists(latency_ms, max_size=100), st.lists(latency_ms, max_size=100), st.floats(1.0, 60_000.0))
def test_merge_equals_sketch_of_all_samples(a: list[float], b: list[float], threshold: float) -> None:
    """Adding two sketches gives exactly the sketch of the concatenated samples; subtracting undoes it."""
    sa = Sketch.from_samples([_sample(v, ok=v < 500) for v in a], threshold, threshold / 10)
    sb = Sketch.from_samples([_sample(v, ok=v < 500) for v in b], threshold, threshold / 10)
    both = Sketch.from_samples([_sample(v, ok=v < 500) for v in a + b], threshold, threshold / 10)
    assert sa + sb == both
    assert both - sb == sa
    assert both.n == len(a) + len(b)
    assert both.over("total") == sum(1 for v in a + b if v > threshold)
    assert both.errors == sum(1 for v in a + b if v >= 500)


def test_over_count_is_decided_on_the_raw_value_not_the_bucket_edge() -> None:
    """Values equal to the threshold are not over it, values a hair above are, though they share a bucket."""
    threshold = 3000.0
    at, above = threshold, math.nextafter(threshold, math.inf)
    assert sketch.bucket_index(at) == sketch.bucket_index(above)
    sk = Sketch.from_samples([_sample(at), _sample(above), _sample(above)], threshold, None)
    assert sk.over("total") == 2
    assert sk.over_fraction("total") == 2 / 3


@given(st.lists(st.floats(0.5, 10_000.0), min_size=1, max_size=400), st.sampled_from([0.9, 0.95, 0.99, 0.999]))
@settings(max_examples=300)
def test_exceeds_quantile_matches_the_sorted_decision(values: list[float], q: float) -> None:
    """`exceeds_quantile(over, n, q)` agrees with sorting the samples and comparing their q-quantile."""
    threshold = sorted(values)[len(values) // 2]
    over = sum(1 for v in values if v > threshold)
    assert sketch.exceeds_quantile(over, len(values), q) == (_exact_quantile(values, q) > threshold)


def test_exceeds_quantile_avoids_the_float_trap_at_q_0_9() -> None:
    """1 of 10 over the threshold is not a p90 breach, though 1/10 > 1 - 0.9 in floating point."""
    assert 1 / 10 > 1 - 0.9  # the trap
    assert not sketch.exceeds_quantile(1, 10, 0.9)
    assert sketch.exceeds_quantile(2, 10, 0.9)


def test_missing_ttft_counts_as_at_least_the_total_time() -> None:
    """A probe without a first token records its total time as TTFT, so it is over a TTFT SLO it waited past."""
    sk = Sketch.from_samples([_sample(5000.0, ok=False, ttft_ms=None), _sample(900.0, ttft_ms=100.0)], 3000, 300)
    assert sk.over("ttft") == 1
    assert sk.over("total") == 1
    assert sk.quantile("ttft", 1.0) is not None
    assert abs((sk.quantile("ttft", 1.0) or 0) - 5000.0) <= 50.0


@given(st.dictionaries(st.integers(0, 2 * sketch.MAX_INDEX + 5), st.integers(1, 70_000), max_size=50))
def test_redis_encoding_round_trips_with_saturation(words: dict[int, int]) -> None:
    """The big-endian u16 string BITFIELD builds widens back to the same counts (saturated at 65535)."""
    raw = sketch.encode_be(words)
    assert Sketch.from_redis(raw) == Sketch.from_words({w: min(c, sketch.U16_MAX) for w, c in words.items()})


@given(st.dictionaries(st.integers(0, 2 * sketch.MAX_INDEX + 5), st.integers(1, 2**32 + 5), max_size=50))
def test_region_aggregate_encoding_round_trips(words: dict[int, int]) -> None:
    """The region aggregate (u32 header, u16 buckets) reads back the same counts, saturation flagged."""
    cap = {w: min(c, 2**32 - 1 if w < sketch.HEADER_WORDS else sketch.U16_MAX) for w, c in words.items()}
    expected = Sketch.from_words(cap)
    raw = sketch.encode_aggregate(Sketch.from_words(words))
    assert Sketch.from_aggregate(raw) == expected
    saturated = any(c >= sketch.U16_MAX for w, c in words.items() if w >= sketch.HEADER_WORDS)
    assert sketch.aggregate_saturated(raw) == saturated


def test_slice_size_depends_on_the_largest_value_not_the_count() -> None:
    """Ten or ten thousand samples over the same range of values encode to the same number of bytes."""
    values = [100.0 + i for i in range(10)] + [30_000.0]
    few = sketch.encode_be(sketch.increments([_sample(v) for v in values], 3000, 300))
    many = sketch.encode_be(sketch.increments([_sample(v) for v in values * 1000], 3000, 300))
    assert len(few) == len(many)
    assert len(few) <= 2 * (sketch.word_of("ttft", sketch.bucket_index(30_000.0)) + 1)


def test_empty_sketch_has_no_quantiles() -> None:
    """An empty sketch reports n = 0 and None for every quantile."""
    assert Sketch().n == 0
    assert Sketch().quantiles("total", (0.5, 0.99)) == (None, None)
    assert Sketch().over_fraction("total") == 0.0
