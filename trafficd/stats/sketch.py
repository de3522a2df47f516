"""Mergeable log-bucketed latency histograms (~1 % relative error) with exact over-threshold counts beside them.

Pure: no I/O, no clock. One `Sketch` holds the counts of one series (worker × model) over one or more time slices,
for both metrics (`total` latency and `ttft`):

    word 0: n          samples
    word 1: errors     samples with ok=False
    word 2: over_total samples with total_ms > the total-latency SLO threshold   (exact, decided on the raw value)
    word 3: over_ttft  samples with ttft > the TTFT SLO threshold               (exact; 0 when no TTFT SLO)
    word 4 + 2·i:      total-latency bucket i
    word 5 + 2·i:      TTFT bucket i

Bucket i > 0 holds values in (MIN_MS·γ^(i-1), MIN_MS·γ^i] with γ = (1+α)/(1-α), α = 1 %; its representative value
2·MIN_MS·γ^i/(γ+1) is within α of every value in the bucket, so a quantile read from the histogram (nearest rank)
is within 1 % of the exact sample quantile for values in [MIN_MS, MAX_MS]. Values ≤ MIN_MS land in bucket 0 and
values above MAX_MS in the last bucket (reported as MIN_MS and MAX_MS).

In Redis a slice is a dense string of big-endian u16 words written with `BITFIELD ... OVERFLOW SAT INCRBY u16 #w`
(`increments()` computes the words of a batch); the string only grows up to the highest bucket touched, so its size
does not depend on the probe rate. The region's aggregate slice holds the same words with the four header words
as u32 (n and the exact counts must never saturate, however many series it merges) and the buckets as u16.
In memory the even and the odd words are each spread into 32-bit fields of one Python int (one int per metric),
so merging slices or workers is big-integer addition (exact, no carries below 2³²).

A probe that runs past an SLO threshold is written as early records and a final one (records.py, docs/stats.md
"Early records"): n and each over-count once in all of them, the error and the buckets in the final record, each
in the slice of its own record — so one slice's errors and over-counts may exceed its n.

A TTFT is always recorded: a probe that never produced a first token has a TTFT of at least its total time, so
`ttft_ms or total_ms` is used (a lower bound, which is the safe side for an "over the SLO" count).
"""

from __future__ import annotations

import array
import math
import sys
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Literal

from trafficd.model import Sample

RELATIVE_ACCURACY = 0.01
GAMMA = (1.0 + RELATIVE_ACCURACY) / (1.0 - RELATIVE_ACCURACY)
_LOG_GAMMA = math.log(GAMMA)
MIN_MS = 5.0  # percentiles below 5 ms read as 5 ms: no LLM probe is that fast, and every bucket costs memory
MAX_MS = 1_000_000.0  # 1,000 s: longer than any probe deadline
MAX_INDEX = math.ceil(math.log(MAX_MS / MIN_MS) / _LOG_GAMMA)
HEADER_WORDS = 4
W_N, W_ERRORS, W_OVER_TOTAL, W_OVER_TTFT = 0, 1, 2, 3
U16_MAX = 65535  # a slice word saturates here (BITFIELD OVERFLOW SAT): 6,553 samples/s per series per 10-s slice
_FIELD_BITS = 32
_FIELD_MASK = (1 << _FIELD_BITS) - 1

Metric = Literal["total", "ttft"]


def bucket_index(value_ms: float) -> int:
    """The bucket holding `value_ms` (0 for values ≤ MIN_MS, MAX_INDEX for values beyond MAX_MS)."""
    if not value_ms > MIN_MS:  # also catches NaN
        return 0
    i = math.ceil(math.log(value_ms / MIN_MS) / _LOG_GAMMA)
    return MAX_INDEX if i > MAX_INDEX else i


def bucket_value_ms(index: int) -> float:
    """The representative value of a bucket: within RELATIVE_ACCURACY of every value it holds."""
    if index <= 0:
        return MIN_MS
    return MIN_MS * 2.0 * GAMMA**index / (GAMMA + 1.0)


def word_of(metric: Metric, index: int) -> int:
    return HEADER_WORDS + 2 * index + (0 if metric == "total" else 1)


def ttft_value_ms(sample: Sample) -> float:
    """TTFT of a sample; without a first token it is at least the total time."""
    return sample.ttft_ms if sample.ttft_ms is not None else sample.total_ms


COUNTED_N, COUNTED_TOTAL, COUNTED_TTFT = 1, 2, 4  # `Sample.counted`: what a probe's earlier records counted


def counts_of(sample: Sample, total_threshold_ms: float, ttft_threshold_ms: float | None) -> int:
    """What a record of a probe counts (COUNTED_* bits): n, and each signal over its threshold, unless an
    earlier record of the probe counted it already."""
    bits = COUNTED_N
    if sample.total_ms > total_threshold_ms:
        bits |= COUNTED_TOTAL
    if ttft_threshold_ms is not None and ttft_value_ms(sample) > ttft_threshold_ms:
        bits |= COUNTED_TTFT
    return bits & ~sample.counted


def increments(samples: Iterable[Sample], total_threshold_ms: float, ttft_threshold_ms: float | None) -> Counter[int]:
    """Word index → increment for a batch of records of one series and one slice (what BITFIELD adds).

    A probe is one record, or (when it ran past an SLO threshold) early records and a final one: n and each
    over-count once in all of them, the error and the two histogram buckets in the final record only."""
    words: Counter[int] = Counter()
    for s in samples:
        bits = counts_of(s, total_threshold_ms, ttft_threshold_ms)
        if bits & COUNTED_N:
            words[W_N] += 1
        if bits & COUNTED_TOTAL:
            words[W_OVER_TOTAL] += 1
        if bits & COUNTED_TTFT:
            words[W_OVER_TTFT] += 1
        if s.early:
            continue
        if not s.ok:
            words[W_ERRORS] += 1
        words[HEADER_WORDS + 2 * bucket_index(s.total_ms)] += 1
        words[HEADER_WORDS + 1 + 2 * bucket_index(ttft_value_ms(s))] += 1
    return words


# Masks selecting every other 16-bit word of an int: the even words land in 32-bit fields (no carries on merge).
_EVEN_MASK = int.from_bytes(b"\xff\xff\x00\x00" * (MAX_INDEX + HEADER_WORDS + 2), "little")


def split_u16be(raw: bytes) -> tuple[int, int]:
    """Big-endian u16 words (a Redis BITFIELD string) → (even words, odd words), each as 32-bit fields."""
    if len(raw) % 2:
        raw = raw + b"\x00"
    words = array.array("H")
    words.frombytes(raw)
    words.byteswap()  # the bytes are big-endian words whatever the machine; make them little-endian words
    x = int.from_bytes(words.tobytes(), "little")
    return x & _EVEN_MASK, (x >> 16) & _EVEN_MASK


def split_aggregate(raw: bytes) -> tuple[int, int]:
    """A region aggregate string (4 header words as u32, then u16 bucket words) → (even words, odd words)."""
    head = raw[: 4 * HEADER_WORDS].ljust(4 * HEADER_WORDS, b"\x00")
    n, errors, over_total, over_ttft = (int.from_bytes(head[i : i + 4], "big") for i in range(0, 16, 4))
    even_b, odd_b = split_u16be(raw[4 * HEADER_WORDS :])
    shift = _FIELD_BITS * HEADER_WORDS // 2
    return n | over_total << _FIELD_BITS | even_b << shift, errors | over_ttft << _FIELD_BITS | odd_b << shift


def aggregate_fields(words: dict[int, int]) -> list[tuple[str, int, int]]:
    """(type, bit offset, increment) of a region aggregate BITFIELD: u32 header words, u16 bucket words."""
    out = []
    for w, c in sorted(words.items()):
        if w < HEADER_WORDS:
            out.append(("u32", 32 * w, c))
        else:
            out.append(("u16", 32 * HEADER_WORDS + 16 * (w - HEADER_WORDS), c))
    return out


def aggregate_saturated(raw: bytes) -> bool:
    """True when a bucket of a region aggregate hit 65535 (its percentiles are then a lower bound)."""
    body = array.array("H")
    body.frombytes(raw[4 * HEADER_WORDS : len(raw) - (len(raw) % 2)])
    return U16_MAX in body  # 0xFFFF reads the same in either byte order


def encode_be(words: dict[int, int], width_bits: int = 16) -> bytes:
    """Word index → count → the Redis string BITFIELD would build (saturated unsigned, big-endian)."""
    if not words:
        return b""
    size, top = width_bits // 8, (1 << width_bits) - 1
    out = bytearray(size * (max(words) + 1))
    for w, c in words.items():
        out[size * w : size * (w + 1)] = min(c, top).to_bytes(size, "big")
    return bytes(out)


def encode_aggregate(sk: Sketch) -> bytes:
    """A sketch as a region aggregate string (what the BITFIELDs of `aggregate_fields` build)."""
    head = b"".join(min(sk.word(w), 2**32 - 1).to_bytes(4, "big") for w in range(HEADER_WORDS))
    buckets = {2 * i: c for i, c in enumerate(sk.counts("total")) if c}
    buckets.update({2 * i + 1: c for i, c in enumerate(sk.counts("ttft")) if c})
    return head + encode_be(buckets)


@dataclass(frozen=True, slots=True)
class Sketch:
    """Counts of one or more series over one or more slices; `a + b` is the exact merge.

    `even` holds the even slice words as 32-bit fields (n, over_total, total buckets…), `odd` the odd ones
    (errors, over_ttft, TTFT buckets…): one int per metric, merged by integer addition.
    """

    even: int = 0
    odd: int = 0

    @classmethod
    def from_redis(cls, raw: bytes | None) -> Sketch:
        """From a series slice string (u16 words)."""
        return cls(*split_u16be(raw)) if raw else cls()

    @classmethod
    def from_aggregate(cls, raw: bytes | None) -> Sketch:
        """From a region aggregate slice string (u32 header words, u16 bucket words)."""
        return cls(*split_aggregate(raw)) if raw else cls()

    @classmethod
    def from_words(cls, words: dict[int, int]) -> Sketch:
        even = odd = 0
        for w, c in words.items():
            field = min(c, _FIELD_MASK) << (_FIELD_BITS * (w // 2))
            if w % 2:
                odd += field
            else:
                even += field
        return cls(even, odd)

    @classmethod
    def from_samples(
        cls, samples: Iterable[Sample], total_threshold_ms: float, ttft_threshold_ms: float | None
    ) -> Sketch:
        return cls.from_words(increments(samples, total_threshold_ms, ttft_threshold_ms))

    def __add__(self, other: Sketch) -> Sketch:
        return Sketch(self.even + other.even, self.odd + other.odd)

    def __sub__(self, other: Sketch) -> Sketch:
        if other.even > self.even or other.odd > self.odd:
            raise ValueError("cannot subtract a sketch that is not contained in this one")
        return Sketch(self.even - other.even, self.odd - other.odd)

    def __bool__(self) -> bool:
        return bool(self.even or self.odd)

    def word(self, index: int) -> int:
        half = self.odd if index % 2 else self.even
        return (half >> (_FIELD_BITS * (index // 2))) & _FIELD_MASK

    @property
    def n(self) -> int:
        return self.word(W_N)

    @property
    def errors(self) -> int:
        return self.word(W_ERRORS)

    def over(self, metric: Metric) -> int:
        """Exact number of samples whose `metric` was over its SLO threshold."""
        return self.word(W_OVER_TOTAL if metric == "total" else W_OVER_TTFT)

    def over_fraction(self, metric: Metric) -> float:
        """Share of n over the threshold, at most 1 (a window's edge may hold an over-count whose n is in an
        earlier slice: docs/stats.md "Early records")."""
        n = self.n
        return min(1.0, self.over(metric) / n) if n else 0.0

    def error_rate(self) -> float:
        """Share of n that failed, at most 1 (the same edge as `over_fraction`)."""
        n = self.n
        return min(1.0, self.errors / n) if n else 0.0

    def counts(self, metric: Metric) -> list[int]:
        """Bucket counts of one metric, index 0 … highest non-empty bucket."""
        return _fields(self.even if metric == "total" else self.odd)[HEADER_WORDS // 2 :]

    def quantiles(self, metric: Metric, qs: Sequence[float]) -> tuple[float | None, ...]:
        """Nearest-rank quantiles from the histogram (None when empty); `qs` ascending."""
        counts = self.counts(metric)
        total = sum(counts)
        if total == 0:
            return tuple(None for _ in qs)
        ranks = [max(1, math.ceil(q * total - 1e-9)) for q in qs]
        out: list[float | None] = []
        cum = 0
        it = iter(enumerate(counts))
        i = -1
        for rank in ranks:
            while cum < rank:
                i, c = next(it)
                cum += c
            out.append(bucket_value_ms(i))
        return tuple(out)

    def quantile(self, metric: Metric, q: float) -> float | None:
        return self.quantiles(metric, (q,))[0]


def _fields(half: int) -> list[int]:
    nbytes = (half.bit_length() + 7) // 8
    return _little_fields(half.to_bytes(nbytes + (-nbytes) % 4, "little"))


def merge(sketches: Iterable[Sketch]) -> Sketch:
    """Exact merge of many sketches (one pass of integer additions)."""
    even = odd = 0
    for sk in sketches:
        even += sk.even
        odd += sk.odd
    return Sketch(even, odd)


def _little_fields(data: bytes) -> list[int]:
    """Little-endian u32 fields of `data` (length a multiple of 4), whatever the machine's byte order."""
    arr = array.array("I")
    if arr.itemsize != 4:  # pragma: no cover - every supported platform has 4-byte unsigned int
        return [int.from_bytes(data[i : i + 4], "little") for i in range(0, len(data), 4)]
    arr.frombytes(data)
    if sys.byteorder == "big":  # pragma: no cover
        arr.byteswap()
    return arr.tolist()


def exceeds_quantile(over: int, n: int, q: float) -> bool:
    """Exact: is the nearest-rank q-quantile over the threshold, given `over` of `n` samples are over it?

    The q-quantile x₍⌈qn⌉₎ is over the threshold iff more than n − ⌈qn⌉ samples are. Integer arithmetic avoids the
    float trap of `over / n > 1 - q` at q = 0.9 (1 − 0.9 = 0.0999…98, so 1 of 10 would count as a breach).
    """
    if n <= 0:
        return False
    return over > n - math.ceil(q * n - 1e-9)
