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


def rewrite_header(bundle_dir, change) -> None:
    """Rewrite the artifact's JSON header (and the recorded digest) with `change` applied."""
    artifact = bundle_dir / ARTIFACT_NAME
    with np.load(artifact, allow_pickle=False) as npz:
        arrays = {name: npz[name] for name in npz.files}
    header = json.loads(str(arrays["header"]))
    change(header)
    arrays["header"] = np.array(json.dumps(header))
    with open(artifact, "wb") as handle:
        np.savez(handle, **arrays)
    metadata = json.loads((bundle_dir / METADATA_NAME).read_text())
    metadata["sha256"] = sha256_file(artifact)
    (bundle_dir / METADATA_NAME).write_text(json.dumps(metadata))


def test_a_format_1_bundle_still_serves_with_its_sigmoid_scores(bundle_copy, test_data):
    """A registry written before calibration loads, with its sigmoid scores."""

    def as_format_1(header):
        header.update(format_version=1, slope=4.0)
        del header["calibration"]
        header["params"].pop("char_ngram")

    rewrite_header(bundle_copy, as_format_1)
    old, _ = load_bundle(bundle_copy)
    titles = test_data.titles[:100]
    centered = old.decision_function(titles) - old.thresholds_
    np.testing.assert_allclose(
        old.predict_scores(titles), 1 / (1 + np.exp(-4.0 * centered)), atol=1e-3
    )
    assert old.char_ngram == 0  # format 1 had words only


@pytest.mark.parametrize(
    "knots",
    [[[0.0, 1.0], [0.9, 0.1]], [[0.0, 1.0], [0.1, 1.5]], [[0.0], [0.1, 0.2]], [[], []]],
)
def test_bad_calibration_knots_are_refused(bundle_copy, knots):
    rewrite_header(bundle_copy, lambda header: header.update(calibration=knots))
    with pytest.raises(BundleError, match="calibrat"):
        load_bundle(bundle_copy)
