"""The `tagloop` command as users and other parts call it (contracts §1)."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

from tagloop.domain.evaluation import METRIC_NAMES

TAGLOOP = [sys.executable, "-m", "tagloop.cli"]


def run(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [*TAGLOOP, *args], capture_output=True, text=True, timeout=120, check=False
    )


@pytest.fixture(scope="module")
def small_train(tmp_path_factory) -> Path:
    lines = Path("data/train.tsv").read_text(encoding="utf-8").splitlines()[:3001]
    path = tmp_path_factory.mktemp("cli") / "train.tsv"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def test_train_evaluate_predict(small_train, tmp_path):
    out = tmp_path / "model"
    trained = run("train", "--data", str(small_train), "--out", str(out))
    assert trained.returncode == 0, trained.stderr
    assert {p.name for p in out.iterdir()} == {"model.npz", "metadata.json"}

    evaluated = run("evaluate", "--model", str(out), "--data", "data/test.tsv", "--json")
    assert evaluated.returncode == 0, evaluated.stderr
    report = json.loads(evaluated.stdout)
    assert report["rows"] == 4000
    assert set(METRIC_NAMES) <= set(report)
    assert 0.3 < report["f1_micro"] < 1

    predicted = run("predict", "--model", str(out), "How to parse JSON in Python?", "jQuery click")
    assert predicted.returncode == 0, predicted.stderr
    lines = [json.loads(line) for line in predicted.stdout.splitlines()]
    assert [line["title"] for line in lines] == ["How to parse JSON in Python?", "jQuery click"]
    assert "python" in lines[0]["tags"]
    assert "jquery" in lines[1]["tags"]


def test_errors_are_one_clear_line_and_exit_code_2(tmp_path):
    missing = run("evaluate", "--model", str(tmp_path), "--data", "data/test.tsv")
    assert missing.returncode == 2
    assert "unreadable metadata" in missing.stderr
    assert "Traceback" not in missing.stderr
    bad_data = tmp_path / "bad.tsv"
    bad_data.write_text("name\tlabels\n")
    failed = run("train", "--data", str(bad_data), "--out", str(tmp_path / "m"))
    assert failed.returncode == 2
    assert "missing column" in failed.stderr
