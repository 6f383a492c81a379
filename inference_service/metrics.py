"""Inference metrics (prometheus-client; multiprocess mode under gunicorn).

Request count and latency come from `tagloop.web.httpmetrics`, shared with the
learner. Gauges say how to merge the workers' values: a dead worker's gauges
disappear (`live*` modes, see `child_exit` in gunicorn.conf.py). The staged
rollout's series (model time, shadow agreement, the candidate) are labelled
by model version and stage; inference_service.rollout records them.
"""

from __future__ import annotations

import functools

from prometheus_client import Counter, Gauge, Histogram

from tagloop import metric_writes
from tagloop.metric_writes import Write

PREDICTIONS = Counter(
    "tagloop_inference_predictions_total",
    "Titles tagged, by the model version that tagged them and its rollout stage (full: the "
    "served model; shadow: predicted beside it, never shown; canary).",
    ["model_version", "stage"],
)
TAGS_PER_PREDICTION = Histogram(
    "tagloop_inference_tags_per_prediction",
    "Number of tags chosen per title.",
    buckets=(1, 2, 3, 4, 5, 10),
)
MODEL_INFO = Gauge(
    "tagloop_inference_model_info",
    "1 for the model version a process serves, 0 for versions it served before.",
    ["version"],
    multiprocess_mode="livemax",
)
MODEL_LOADED_AT = Gauge(
    "tagloop_inference_model_loaded_timestamp_seconds",
    "Unix time the served version was swapped in (the latest across live workers).",
    ["version"],
    multiprocess_mode="livemax",
)
RELOADS = Counter(
    "tagloop_inference_model_reloads_total",
    "Model versions loaded and swapped in, by what triggered the load.",
    ["trigger"],
)
RELOAD_FAILURES = Counter(
    "tagloop_inference_model_reload_failures_total",
    "Failed model loads (download, verification, parsing), by reason; the old model stays.",
    ["reason"],
)
MODEL_REFUSALS = Counter(
    "tagloop_inference_model_refusals_total",
    "Model updates, pointers and bundles refused as untrusted (the old model stays), by reason: "
    "unsigned, bad_signature, unknown_key, malformed, wrong_version, digest_mismatch, "
    "stale_pointer, stale_record, not_current, invalid_version, invalid_message.",
    ["reason"],
)
MODEL_LOAD_SECONDS = Histogram(
    "tagloop_inference_model_load_duration_seconds",
    "Download, verification, loading and warm-up of a model version.",
    buckets=(0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0),
)
MODEL_UPDATES = Counter(
    "tagloop_inference_model_updates_received_total",
    "Model-update broadcasts received, by what was done with them.",
    ["outcome"],
)
MODEL_SECONDS = Histogram(
    "tagloop_inference_model_duration_seconds",
    "Model time per request, by model version and stage (full: the served model).",
    ["model_version", "stage"],
    buckets=(0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.1),
)
SHADOW_COMPARED = Counter(
    "tagloop_inference_shadow_compared_total",
    "Titles the shadow candidate predicted beside the served model.",
    ["model_version"],
)
SHADOW_AGREEMENT = Counter(
    "tagloop_inference_shadow_agreement_sum_total",
    "Sum of the Jaccard agreement of shadow and served tag sets (divide by compared).",
    ["model_version"],
)
CANDIDATE_INFO = Gauge(
    "tagloop_inference_candidate_info",
    "1 for the candidate version and stage a process runs beside the served model.",
    ["version", "stage"],
    multiprocess_mode="livemax",
)
FEEDBACK_PUBLISHED = Counter(
    "tagloop_inference_feedback_published_total",
    "Feedback messages Pub/Sub confirmed (answered 202).",
)
FEEDBACK_FAILED = Counter(
    "tagloop_inference_feedback_publish_failures_total",
    "Feedback messages Pub/Sub did not confirm in time (answered 503).",
)
FEEDBACK_INVALID = Counter(
    "tagloop_inference_feedback_invalid_total",
    "Feedback bodies refused with 422, by reason.",
    ["reason"],
)
FEEDBACK_RATE_LIMITED = Counter(
    "tagloop_inference_feedback_rate_limited_total",
    "Feedback requests refused with 429 by the per-client token bucket.",
)


@functools.lru_cache(maxsize=16)
def predictions(version: str, stage: str) -> Write:
    """Adds to the per-version prediction counter (made once per version, not per request)."""
    return metric_writes.adder(PREDICTIONS.labels(version, stage))


@functools.lru_cache(maxsize=16)
def model_seconds(version: str, stage: str) -> Write:
    """Observes the per-version model time (made once per version, not per request)."""
    return metric_writes.observer(MODEL_SECONDS.labels(version, stage))


observe_tags_per_prediction = metric_writes.observer(TAGS_PER_PREDICTION)


def record_swap(previous: str | None, version: str, loaded_at_unix: float, trigger: str) -> None:
    """Move this process's info gauge from the old version to the new one."""
    if previous is not None and previous != version:
        MODEL_INFO.labels(previous).set(0)
        MODEL_LOADED_AT.labels(previous).set(0)
    MODEL_INFO.labels(version).set(1)
    MODEL_LOADED_AT.labels(version).set(loaded_at_unix)
    RELOADS.labels(trigger).inc()
