"""Drift metrics on a real replica (gunicorn, 2 workers, multiprocess metrics): familiar
titles keep the out-of-vocabulary share low, made-up words raise it, every chosen tag is
counted, and the version's training tag shares are exported beside them."""

from __future__ import annotations

from pathlib import Path

import pytest

from tagloop.domain.bundle import save_bundle
from tagloop.domain.data import LabeledData
from tagloop.domain.drift import TAG_COUNTS_KEY, tag_counts, tag_shares
from tagloop.domain.model import TagModel
from tagloop_dev.s3server import S3Server
from tests.fixtures.inference import Replica, inference_setup
from tests.fixtures.wait import wait_until

WORDS = "tagloop_inference_drift_words_total"
UNKNOWN = "tagloop_inference_drift_unknown_words_total"
PREDICTED = "tagloop_inference_predicted_tags_total"
SHARE = "tagloop_inference_training_tag_share"


def totals(replica: Replica) -> tuple[float, float, float]:
    """Words, unknown words and chosen tags counted so far (over every worker)."""
    samples = replica.metrics()
    chosen = sum(value for (name, _), value in samples.items() if name == PREDICTED)
    return replica.metric(WORDS), replica.metric(UNKNOWN), chosen


def predict_one_by_one(replica: Replica, titles: list[str]) -> int:
    """Single-title requests (they spread over both workers); returns the tags chosen."""
    chosen = 0
    for title in titles:
        answer = replica.post("/api/predict", json={"title": title})
        assert answer.status_code == 200, answer.text
        chosen += len(answer.json()["tags"])
    return chosen


@pytest.mark.slow
def test_drift_metrics_move_with_out_of_vocabulary_titles(
    s3_server: S3Server,
    pubsub_emulator: str,
    trained_model: TagModel,
    train_data: LabeledData,
    test_data: LabeledData,
    tmp_path: Path,
) -> None:
    bundle = tmp_path / "bundle"
    save_bundle(trained_model, bundle)
    counts = tag_counts(train_data.tags)
    with inference_setup(
        s3_server, pubsub_emulator, bundle, tmp_path / "cache", False, TAGLOOP_WORKERS="2"
    ) as setup:
        replica = setup.replica
        version = setup.publisher.publish(metadata={TAG_COUNTS_KEY: counts})
        wait_until(lambda: replica.all_workers_serve(version), timeout=60, what="the model")
        # The info gauge is a max over workers, so a worker still without any model does not
        # show in it: also wait until a prediction is answered.
        wait_until(
            lambda: replica.post("/api/predict", json={"title": "warm"}).status_code == 200,
            timeout=60,
            what="a prediction from the worker this test talks to",
        )
        before = totals(replica)

        chosen = predict_one_by_one(replica, test_data.titles[:60])
        familiar = totals(replica)
        words, unknown = familiar[0] - before[0], familiar[1] - before[1]
        assert words > 300 and unknown / words < 0.2
        assert familiar[2] - before[2] == chosen

        made_up = [f"zqxv{i} blorptang{i} wubbafrotz{i} quillomane{i}" for i in range(40)]
        chosen = predict_one_by_one(replica, made_up)
        drifted = totals(replica)
        assert drifted[0] - familiar[0] == 4 * len(made_up)
        assert drifted[1] - familiar[1] == 4 * len(made_up)  # every word out of vocabulary
        assert drifted[2] - familiar[2] == chosen

        exported = {
            dict(labels)["tag"]: value
            for (name, labels), value in replica.metrics().items()
            if name == SHARE
        }
        assert exported == pytest.approx(tag_shares({TAG_COUNTS_KEY: counts}))
        assert sum(exported.values()) == pytest.approx(1.0)
