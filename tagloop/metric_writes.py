"""Counter increments and histogram observations for the per-request hot path (issue 19).

A served prediction records about a dozen Prometheus values (request count and
latency, model time, predictions, tags per prediction, drift words and tags).
In multiprocess mode each write is the value's own `inc`: one lock, one pid
check (a fork resets the files), one write into the worker's mmap file; that
part stays as it is, so what reaches the files and `/metrics` cannot differ.
What these helpers drop is prometheus-client's Python around it, which costs
as much again: `Counter.inc` re-checks on every call that the child is
observable (labels bound) and that the amount is not negative, and
`Histogram.observe` walks the bucket bounds in a Python loop. Here the
labels are checked once, when the writer is made (a parent whose labels are not
bound has no values: AttributeError), the callers pass counts and
durations (never negative), and the bucket is found by bisection, which picks
the same one (the first bound the amount is <= to; none for NaN, as the loop).

Make a writer once per child (module level, or cached per label set), not per
request: creating it looks up the child's value objects.
"""

from __future__ import annotations

import bisect
from collections.abc import Callable

from prometheus_client import Counter, Histogram

Write = Callable[[float], None]


def adder(counter: Counter) -> Write:
    """`counter.inc(amount)` for amounts known not to be negative (counts, sizes)."""
    inc: Write = counter._value.inc  # a parent with unbound labels has none: AttributeError
    return inc


def observer(histogram: Histogram) -> Write:
    """`histogram.observe(amount)`: its sum, then the one bucket the amount falls in."""
    bounds: list[float] = list(histogram._upper_bounds)  # ascending, the last is +Inf
    add_to_sum: Write = histogram._sum.inc
    add_to_bucket = [bucket.inc for bucket in histogram._buckets]
    first_at_or_above = bisect.bisect_left

    def observe(amount: float) -> None:
        add_to_sum(amount)
        i = first_at_or_above(bounds, amount)
        if amount <= bounds[i]:  # False only for NaN, which no bucket counts
            add_to_bucket[i](1)

    return observe
