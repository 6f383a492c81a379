"""The on-disk model bundle: `model.npz` (plain arrays, no pickle) + `metadata.json`.

Loading never unpickles anything: `np.load(allow_pickle=False)` reads numbers
and strings only, so a bundle that came over the network cannot execute code.
When the caller knows the expected digest (from the registry or a broadcast),
the artifact's sha256 is checked before it is parsed at all.
"""

from __future__ import annotations

import hashlib
import json
import os
import platform
import tempfile
from importlib import metadata as importlib_metadata
from pathlib import Path
from typing import Any

import numpy as np

from tagloop.domain.messages import utc_now
from tagloop.domain.model import TagModel
from tagloop.errors import TagloopError

ARTIFACT_NAME = "model.npz"
METADATA_NAME = "metadata.json"
FORMAT_VERSION = 2  # 2: character n-grams and isotonic calibration knots
_READABLE_FORMATS = (1, 2)
_ARRAYS = ("coef", "intercept", "thresholds", "idf", "terms", "term_columns", "classes")
_PARAMS = (
    "C",
    "min_df",
    "char_ngram",
    "cv_folds",
    "calibration_rows",
    "threshold_smoothing",
    "threshold_prior",
    "max_tags",
    "random_state",
)


class BundleError(TagloopError, ValueError):
    """A bundle that is missing, tampered with, or not a tagloop model."""


def sha256_file(path: str | Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def library_versions() -> dict[str, str]:
    names = ("tagloop", "numpy", "scipy", "scikit-learn")
    return {"python": platform.python_version()} | {
        name: importlib_metadata.version(name) for name in names
    }


def _write_atomically(path: Path, write: Any) -> None:
    """Write via a temp file + rename so a crash never leaves a half-written file."""
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        with os.fdopen(fd, "wb") as handle:
            write(handle)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def save_bundle(
    model: TagModel, out_dir: str | Path, extra_metadata: dict[str, Any] | None = None
) -> dict[str, Any]:
    """Write the artifact then its metadata (with the artifact's sha256); return the metadata."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    terms = np.array(list(model.vocabulary_), dtype=str)
    arrays = {
        "coef": model.coef_,
        "intercept": model.intercept_,
        "thresholds": model.thresholds_,
        "idf": model.idf_,
        "terms": terms,
        "term_columns": np.fromiter(model.vocabulary_.values(), dtype=np.int64, count=len(terms)),
        "classes": model.classes_.astype(str),
        "header": np.array(
            json.dumps(
                {
                    "format_version": FORMAT_VERSION,
                    "calibration": [knots.tolist() for knots in model.calibration_],
                    "n_training_rows": model.n_training_rows_,
                    "params": {name: getattr(model, name) for name in _PARAMS},
                }
            )
        ),
    }
    _write_atomically(out / ARTIFACT_NAME, lambda handle: np.savez(handle, **arrays))
    metadata = {
        "created_at": utc_now(),
        "training_rows": model.n_training_rows_,
        "n_tags": len(model.classes_),
        "n_features": len(terms),
        "artifact": ARTIFACT_NAME,
        "format_version": FORMAT_VERSION,
        "library_versions": library_versions(),
        **(extra_metadata or {}),
        "sha256": sha256_file(out / ARTIFACT_NAME),
    }
    write_metadata(out, metadata)
    return metadata


def write_metadata(bundle_dir: str | Path, metadata: dict[str, Any]) -> None:
    text = json.dumps(metadata, indent=2, sort_keys=True).encode()
    _write_atomically(Path(bundle_dir) / METADATA_NAME, lambda handle: handle.write(text))


def read_metadata(bundle_dir: str | Path) -> dict[str, Any]:
    path = Path(bundle_dir) / METADATA_NAME
    try:
        metadata = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        raise BundleError(f"{path}: unreadable metadata ({error})") from None
    if not isinstance(metadata, dict):
        raise BundleError(f"{path}: metadata must be a JSON object")
    return metadata


def load_bundle(
    bundle_dir: str | Path, expected_sha256: str | None = None
) -> tuple[TagModel, dict[str, Any]]:
    """Load and validate a bundle; refuse it if its digest is not the expected one.

    Without `expected_sha256` the digest recorded in metadata.json is checked,
    which catches corruption but not a consistent forgery: callers that got
    the bundle over the network pass the digest they trust.
    """
    bundle_dir = Path(bundle_dir)
    metadata = read_metadata(bundle_dir)
    artifact = bundle_dir / ARTIFACT_NAME
    if not artifact.is_file():
        raise BundleError(f"{artifact}: missing")
    actual = sha256_file(artifact)
    for source, expected in (("caller", expected_sha256), ("metadata", metadata.get("sha256"))):
        if expected is not None and actual != expected:
            raise BundleError(
                f"{artifact}: sha256 {actual} does not match the {source}'s {expected}"
            )
    try:
        with np.load(artifact, allow_pickle=False) as npz:
            arrays = {name: npz[name] for name in (*_ARRAYS, "header")}
        header = json.loads(str(arrays["header"]))
        model = _model_from_arrays(arrays, header)
    except BundleError:
        raise
    except Exception as error:  # any malformed content is a refused bundle, not a crash
        raise BundleError(f"{artifact}: not a valid tagloop model ({error})") from None
    return model, metadata


def _calibration_knots(header: dict[str, Any]) -> tuple[np.ndarray, np.ndarray]:
    """Format 2 stores the knots; a format 1 bundle (words only, scores
    sigmoid(slope * (margin - threshold))) is read as knots on that sigmoid, so a
    registry written before the upgrade still serves until the next refit."""
    if header["format_version"] == 1:
        slope = float(header["slope"])
        knots_x = np.linspace(-30.0, 30.0, 241) / slope
        return knots_x, 1.0 / (1.0 + np.exp(-slope * knots_x))
    knots_x, knots_y = (np.asarray(knots, dtype=np.float64) for knots in header["calibration"])
    return knots_x, knots_y


def _model_from_arrays(arrays: dict[str, np.ndarray], header: dict[str, Any]) -> TagModel:
    if header.get("format_version") not in _READABLE_FORMATS:
        raise BundleError(f"unsupported bundle format {header.get('format_version')!r}")
    params = {"char_ngram": 0} | {k: v for k, v in header["params"].items() if k in _PARAMS}
    model = TagModel(**params)
    coef, classes = arrays["coef"].astype(np.float32), arrays["classes"].astype(str)
    n_features, n_tags = coef.shape
    columns = arrays["term_columns"]
    shapes_ok = (
        len(classes) == n_tags
        and arrays["intercept"].shape == (n_tags,)
        and arrays["thresholds"].shape == (n_tags,)
        and arrays["idf"].shape == (n_features,)
        and arrays["terms"].shape == columns.shape
        and (columns.size == 0 or (columns.min() >= 0 and columns.max() < n_features))
    )
    if not shapes_ok:
        raise BundleError("inconsistent array shapes")
    model.coef_ = np.ascontiguousarray(coef)
    model.intercept_ = arrays["intercept"].astype(np.float32)
    model.thresholds_ = arrays["thresholds"].astype(np.float32)
    model.idf_ = arrays["idf"].astype(np.float32)
    model.classes_ = classes
    model.vocabulary_ = dict(
        zip(arrays["terms"].tolist(), arrays["term_columns"].tolist(), strict=True)
    )
    knots_x, knots_y = _calibration_knots(header)
    increasing = bool(np.all(np.diff(knots_x) >= 0) and np.all(np.diff(knots_y) >= 0))
    if not (knots_x.shape == knots_y.shape and knots_x.size and increasing):
        raise BundleError("calibration knots must be two equal-length increasing lists")
    if not ((knots_y >= 0) & (knots_y <= 1)).all():
        raise BundleError("calibrated scores must lie in [0, 1]")
    model.calibration_ = (knots_x, knots_y)
    model.n_training_rows_ = int(header["n_training_rows"])
    return model
