"""`tagloop.metric_writes` records exactly what prometheus-client's own `inc` and `observe`
record: the same samples in a process registry, and the same values in the multiprocess
files `/metrics` aggregates under gunicorn, for any amounts (bucket bounds, 0, huge, inf,
NaN)."""

from __future__ import annotations

import math
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from prometheus_client import CollectorRegistry, Counter, Histogram, multiprocess, values

from tagloop.metric_writes import adder, observer

BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
AMOUNTS = st.one_of(
    st.sampled_from([*BUCKETS, 0.0, -0.0, math.inf, math.nan, 1e300]),
    st.floats(min_value=0.0, allow_infinity=True),
)
COUNTS = st.one_of(st.integers(0, 10**6), st.floats(0.0, 1e12))


def samples(registry: CollectorRegistry) -> dict[tuple[str, tuple[tuple[str, str], ...]], Any]:
    """Every sample but creation times; NaN sums compare equal as their text."""
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): repr(sample.value)
        for metric in registry.collect()
        for sample in metric.samples
        if not sample.name.endswith("_created")
    }


def pair(
    registry: CollectorRegistry,
) -> tuple[Callable[[str], Counter], Callable[[str], Histogram]]:
    def counter(name: str) -> Counter:
        return Counter(name, "test", ["route"], registry=registry).labels("/x")

    def histogram(name: str) -> Histogram:
        return Histogram(name, "test", ["route"], buckets=BUCKETS, registry=registry).labels("/x")

    return counter, histogram


def record(
    registry: CollectorRegistry, observed: list[float], counted: list[float], fast: bool
) -> None:
    counter, histogram = pair(registry)
    timed, tagged = histogram("t_seconds"), counter("t_tags")
    observe = observer(timed) if fast else timed.observe
    add = adder(tagged) if fast else tagged.inc
    for amount in observed:
        observe(amount)
    for amount in counted:
        add(amount)


@settings(max_examples=200, deadline=None)
@given(observed=st.lists(AMOUNTS, max_size=30), counted=st.lists(COUNTS, max_size=10))
def test_same_samples_as_inc_and_observe(observed: list[float], counted: list[float]) -> None:
    library, fast = CollectorRegistry(), CollectorRegistry()
    record(library, observed, counted, fast=False)
    record(fast, observed, counted, fast=True)
    assert samples(fast) == samples(library)


def test_same_multiprocess_files_as_inc_and_observe(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """As under gunicorn: values in mmap files, read back by the `/metrics` collector."""
    observed = [*BUCKETS, 0.0, 0.0007, 0.003, 7.0, 11.0, math.inf]
    counted = [1, 3, 0, 2.5]
    results = []
    for fast in (False, True):
        directory = tmp_path / str(fast)
        directory.mkdir()
        monkeypatch.setenv("PROMETHEUS_MULTIPROC_DIR", str(directory))
        monkeypatch.setattr(values, "ValueClass", values.MultiProcessValue())
        record(CollectorRegistry(), observed, counted, fast)
        reader = CollectorRegistry()
        multiprocess.MultiProcessCollector(reader, path=str(directory))
        results.append(samples(reader))
    assert results[0] == results[1]
    assert results[1][("t_tags_total", (("route", "/x"),))] == repr(6.5)


def test_a_parent_with_unbound_labels_is_refused() -> None:
    counter, histogram = (
        Counter("u_total", "test", ["route"], registry=CollectorRegistry()),
        Histogram("u_seconds", "test", ["route"], registry=CollectorRegistry()),
    )
    with pytest.raises(AttributeError):
        adder(counter)
    with pytest.raises(AttributeError):
        observer(histogram)
