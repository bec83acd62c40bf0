"""`KeyFilter`: the processor's compact memory of which request ids it may have seen.

The processor keeps in memory only what is in flight and what it completed recently; everything it
counted earlier is in the store (call records keyed by request id and tenant, expired pending
entries). The filter answers "could this request id be in the store?" with no false negatives and
about 1 % false positives, at about 1.2 bytes a key (Bloom filters, `rbloom`), so the store is asked
only about ids it may know: duplicates, late halves, and the odd false positive.

Keys are kept until they expire: each goes into the generation of its expiry time (`span_s` wide),
and a generation is dropped whole once it has expired. A generation is a list of Bloom filters, the
first sized for what the previous generation held (at least `capacity` keys) and each further one
twice the size of the last, so the false-positive rate holds whatever the traffic and a lookup
checks few filters (one or two per generation at a steady rate). CPU-only; not thread-safe.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Final

from rbloom import Bloom

#: False-positive rate of each Bloom filter.
FALSE_POSITIVE_RATE: Final = 0.01
#: Keys of a generation's first Bloom filter at least (about 120 KB at 1 %).
DEFAULT_CAPACITY: Final = 100_000


class KeyFilter:
    """A set of strings with expiry, no false negatives, ~1 % false positives, ~1.2 bytes a key.

    Args:
        span_s: width of a generation (keys expiring within one span are dropped together, up to
            `span_s` after their expiry).
        capacity: the smallest first filter of a generation, in keys.
    """

    def __init__(self, span_s: float, capacity: int = DEFAULT_CAPACITY) -> None:
        if not span_s > 0 or not math.isfinite(span_s):
            raise ValueError(f"span_s must be a positive number, got {span_s!r}")
        if capacity < 1:
            raise ValueError(f"capacity must be positive, got {capacity!r}")
        self._span = span_s
        self._capacity = capacity
        # generation (expiry time // span) -> (filters, [keys in the last filter, its capacity, keys])
        self._generations: dict[int, tuple[list[Bloom], list[int]]] = {}
        self._filters: list[Bloom] = []  # every filter, newest generation first (for lookups)
        self._keys = 0
        self._last_size = capacity

    def add(self, key: str, expires_at: float) -> None:
        """Remember `key` until `expires_at` (epoch seconds)."""
        self.add_many((key,), expires_at)

    def add_many(self, keys: Sequence[str], expires_at: float) -> None:
        """Remember every key of `keys` until `expires_at` (one pass in the Bloom filter's own code)."""
        if not keys:
            return
        gen = int(expires_at // self._span)
        found = self._generations.get(gen)
        if found is None:
            size = max(self._capacity, self._last_size * 5 // 4)
            found = self._generations[gen] = ([Bloom(size, FALSE_POSITIVE_RATE)], [0, size, 0])
            self._refresh()
        filters, count = found
        start = 0
        while start < len(keys):
            if count[0] >= count[1]:
                count[1] *= 2
                filters.append(Bloom(count[1], FALSE_POSITIVE_RATE))
                count[0] = 0
                self._refresh()
            room = count[1] - count[0]
            chunk = keys[start : start + room]
            filters[-1].update(chunk)
            count[0] += len(chunk)
            count[2] += len(chunk)
            self._keys += len(chunk)
            start += len(chunk)

    def _refresh(self) -> None:
        self._filters = [b for g in sorted(self._generations, reverse=True) for b in self._generations[g][0]]

    def __contains__(self, key: object) -> bool:
        """True when `key` may have been added (and has not expired); False when it surely was not."""
        for bloom in self._filters:  # noqa: SIM110  (a loop: any() over a generator is slower here)
            if key in bloom:
                return True
        return False

    def expire(self, now: float) -> None:
        """Drop the generations whose every key has expired at `now`."""
        last = int(now // self._span)
        gone = [g for g in self._generations if g < last]
        for gen in gone:
            _, count = self._generations.pop(gen)
            self._keys -= count[2]
            self._last_size = max(self._capacity, count[2])
        if gone:
            self._refresh()

    def __len__(self) -> int:
        """Keys remembered (counting repeats)."""
        return self._keys

    @property
    def size_bytes(self) -> int:
        """Memory held by the Bloom filters' bit arrays."""
        return sum(b.size_in_bits // 8 for filters, _ in self._generations.values() for b in filters)
