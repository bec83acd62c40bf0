"""Mergeable log-bucket histograms (DDSketch-style) for latency and time to first token.

A value x > 0 falls in bucket i = ceil(log(x) / log(gamma)) with gamma = (1 + a) / (1 - a) and relative
accuracy a = 1 %; the bucket's representative value 2·gamma^i / (gamma + 1) is within 1 % of every value
in it. Values at or below `MIN_VALUE` share the zero bucket. A histogram is a plain `dict[int, int]`
(bucket → count), so histograms from different windows or workers merge by adding counts.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from typing import Final

RELATIVE_ACCURACY: Final = 0.01
GAMMA: Final = (1 + RELATIVE_ACCURACY) / (1 - RELATIVE_ACCURACY)
_INV_LOG_GAMMA: Final = 1.0 / math.log(GAMMA)
#: Values at or below this (in ms) count in the zero bucket.
MIN_VALUE: Final = 1e-3
#: Key of the zero bucket.
ZERO_BUCKET: Final = -32768

Histogram = dict[int, int]


def bucket_of(value: float) -> int:
    """The bucket index of a non-negative value."""
    if value <= MIN_VALUE:
        return ZERO_BUCKET
    return math.ceil(math.log(value) * _INV_LOG_GAMMA)


def value_of(bucket: int) -> float:
    """The representative value of a bucket (within 1 % of every value in it)."""
    if bucket == ZERO_BUCKET:
        return 0.0
    return 2.0 * GAMMA**bucket / (GAMMA + 1.0)


def add(hist: Histogram, value: float, count: int = 1) -> None:
    """Count `value` in `hist` (in place)."""
    b = bucket_of(value)
    hist[b] = hist.get(b, 0) + count


def merge_into(target: Histogram, other: Mapping[int, int]) -> Histogram:
    """Add `other`'s counts into `target` (in place) and return it; empty buckets are removed."""
    for b, c in other.items():
        n = target.get(b, 0) + c
        if n:
            target[b] = n
        else:
            target.pop(b, None)
    return target


def merged(hists: Iterable[Mapping[int, int]]) -> Histogram:
    """A new histogram holding the sum of `hists`."""
    out: Histogram = {}
    for h in hists:
        merge_into(out, h)
    return out


def total(hist: Mapping[int, int]) -> int:
    """The number of values counted."""
    return sum(hist.values())


def quantile(hist: Mapping[int, int], q: float) -> float | None:
    """The nearest-rank q-quantile (0 < q ≤ 1), within 1 % of the exact one; None when empty."""
    if not 0 < q <= 1:
        raise ValueError(f"q must be in (0, 1], got {q!r}")
    n = total(hist)
    if n <= 0:
        return None
    rank = max(1, math.ceil(q * n - 1e-9))
    seen = 0
    for b in sorted(hist):
        seen += hist[b]
        if seen >= rank:
            return value_of(b)
    return value_of(max(hist))
