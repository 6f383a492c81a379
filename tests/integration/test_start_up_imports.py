"""What the services import at start-up, in a fresh interpreter (tests/unit: the rest of the
way to a fresh stack's first model)."""

from __future__ import annotations

import subprocess
import sys


def test_serving_and_the_learner_process_do_not_import_scikit_learn() -> None:
    """Replicas score with NumPy alone and the learner leaves scikit-learn to its fit worker:
    each skipped import is about 2 CPU-seconds of a stack's start."""
    code = (
        "import sys, inference_service.app, learning_service.learner, learning_service.app;"
        "print(sorted({'sklearn', 'scipy'} & {m.split('.')[0] for m in sys.modules}))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
