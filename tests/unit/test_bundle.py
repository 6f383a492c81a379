"""The on-disk bundle: round trip, and refusal of anything tampered with."""

import json
import shutil

import numpy as np
import pytest

from tagloop.domain.bundle import (
    ARTIFACT_NAME,
    METADATA_NAME,
    BundleError,
    load_bundle,
    sha256_file,
)


@pytest.fixture
def bundle_copy(model_bundle, tmp_path):
    target = tmp_path / "bundle"
    shutil.copytree(model_bundle, target)
    return target


def test_round_trip_gives_identical_predictions(trained_model, model_bundle, test_data):
    model, metadata = load_bundle(
        model_bundle, expected_sha256=sha256_file(model_bundle / ARTIFACT_NAME)
    )
    titles = test_data.titles[:500]
    np.testing.assert_array_equal(
        model.predict_scores(titles), trained_model.predict_scores(titles)
    )
    assert model.predict(titles) == trained_model.predict(titles)
    assert metadata["version"] == "test-bootstrap"
    assert metadata["training_rows"] == trained_model.n_training_rows_
    assert {"numpy", "scikit-learn", "python"} <= set(metadata["library_versions"])


def test_tampered_artifact_is_refused(bundle_copy):
    artifact = bundle_copy / ARTIFACT_NAME
    data = bytearray(artifact.read_bytes())
    data[len(data) // 2] ^= 0xFF
    artifact.write_bytes(bytes(data))
    with pytest.raises(BundleError, match="does not match the metadata"):
        load_bundle(bundle_copy)


def test_unexpected_digest_is_refused_even_when_metadata_agrees(bundle_copy):
    with pytest.raises(BundleError, match="does not match the caller"):
        load_bundle(bundle_copy, expected_sha256="0" * 64)


def test_a_pickle_payload_is_never_executed(bundle_copy, tmp_path):
    """An npz whose arrays are pickled objects fails to load instead of running code."""
    marker = tmp_path / "pwned"
    evil = np.array([Exploit(marker)], dtype=object)
    artifact = bundle_copy / ARTIFACT_NAME
    with open(artifact, "wb") as handle:
        np.savez(handle, coef=evil, header=np.array("{}"))
    metadata = json.loads((bundle_copy / METADATA_NAME).read_text())
    metadata["sha256"] = sha256_file(artifact)
    (bundle_copy / METADATA_NAME).write_text(json.dumps(metadata))
    with pytest.raises(BundleError, match="not a valid tagloop model"):
        load_bundle(bundle_copy, expected_sha256=metadata["sha256"])
    assert not marker.exists()


def test_missing_or_garbled_files_are_refused(bundle_copy):
    (bundle_copy / METADATA_NAME).write_text("{not json")
    with pytest.raises(BundleError, match="unreadable metadata"):
        load_bundle(bundle_copy)
    (bundle_copy / METADATA_NAME).write_text("{}")
    (bundle_copy / ARTIFACT_NAME).unlink()
    with pytest.raises(BundleError, match="missing"):
        load_bundle(bundle_copy)


class Exploit:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (open, (str(self.marker), "w"))
