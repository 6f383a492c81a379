"""The way to a fresh stack's first model: start order, fit threads, what compiles at install
(tests/integration/test_start_up_imports.py: what the services import)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from learning_service.config import DEFAULT_FIT_JOBS, LearnerSettings
from tagloop.domain.data import LabeledData
from tagloop.domain.model import TagModel
from tagloop.settings import ConfigError
from tagloop_dev.bytecode import sources
from tagloop_dev.stack.config import Ports, Stack

ROWS = 600


def test_the_learner_starts_with_the_infrastructure_and_stops_with_the_services(
    tmp_path: Path,
) -> None:
    programs = {p.name: p for p in Stack(tmp_path, Path.cwd(), Ports.from_base()).programs()}
    assert programs["learning"].start_stage == 0
    assert programs["learning"].supervisor_name == "services:learning"
    assert {programs[name].start_stage for name in ("ui", "inference-1", "inference-2")} == {1}


def test_the_fit_threads_setting() -> None:
    def jobs(value: str | None) -> int:
        env = {} if value is None else {"TAGLOOP_FIT_JOBS": value}
        return LearnerSettings.from_env(env).fit_jobs

    assert jobs(None) == DEFAULT_FIT_JOBS
    assert jobs("1") == 1
    for bad in ("0", "-2", "all"):
        with pytest.raises(ConfigError, match="TAGLOOP_FIT_JOBS"):
            jobs(bad)


def test_one_pool_fits_each_set_as_alone(train_data: LabeledData) -> None:
    """The final fit and the fold fits share one pool: each set's weights come out as if
    fitted on its own (one thread: liblinear's shared random generator is not raced)."""
    model = TagModel(n_jobs=1, min_df=1)
    X = model._vectorizer().fit_transform(train_data.titles[:ROWS]).tocsr()
    Y = np.zeros((ROWS, 3), dtype=int)
    for row, tags in enumerate(train_data.tags[:ROWS]):
        for column, tag in enumerate(("java", "php", "python")):
            Y[row, column] = tag in tags
    Y[:, 2] = 0  # a tag without positives gets a constant margin, no SVM
    sets = [(X, Y), (X[: ROWS // 2], Y[: ROWS // 2])]
    together = model._fit_svm_sets(sets)
    for (svms, coef, intercept), one in zip(together, sets, strict=True):
        _, alone_coef, alone_intercept = model._fit_svm_sets([one])[0]
        assert [svm is None for svm in svms] == [False, False, True]
        assert np.array_equal(coef, alone_coef)
        assert np.array_equal(intercept, alone_intercept)
        assert intercept[2] == -1.0


def test_install_compiles_the_runtime_packages_only() -> None:
    paths = [str(path) for path in sources()]
    assert any("/sklearn/svm/" in path for path in paths)
    assert any("/supervisor/" in path for path in paths)
    assert any(path.endswith("learning_service/fit_worker.py") for path in paths)
    assert not any("/playwright/" in path or "/mypy/" in path for path in paths), "dev only"
    assert not any("/tests/" in path.split("site-packages", 1)[-1] for path in paths)
