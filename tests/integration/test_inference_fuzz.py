"""Schemathesis fuzzes a live replica from the OpenAPI document it serves.

Valid and invalid bodies, wrong methods and content types: no answer may be a
5xx, and every answer must match the document (status, content type, headers,
body schema). Examples are bounded so the run stays well under 30 s.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

SCHEMATHESIS = Path(sys.executable).with_name("schemathesis")
CHECKS = ",".join(
    (
        "not_a_server_error",
        "status_code_conformance",
        "content_type_conformance",
        "response_headers_conformance",
        "response_schema_conformance",
        "negative_data_rejection",
        "unsupported_method",
    )
)


def test_fuzzing_the_served_spec_finds_no_server_error(inference_replica, tmp_path):
    replica = inference_replica.replica
    command = [
        str(SCHEMATHESIS),
        "run",
        f"{replica.base_url}/api/openapi.json",
        "--checks",
        CHECKS,
        "--max-examples",
        "40",
        "--seed",
        "1",
        "--workers",
        "2",
        "--request-timeout",
        "10",
        "--generation-database",
        "none",
        "--no-color",
        # A client of its own for the feedback token bucket.
        "--header",
        "X-Forwarded-For: 192.0.2.200",
    ]
    result = subprocess.run(
        command, capture_output=True, text=True, timeout=120, cwd=tmp_path, check=False
    )
    report = (result.stdout + result.stderr)[-6000:]  # the summary; bodies can be huge
    assert result.returncode == 0, report
    failures = replica.metric(
        "tagloop_http_requests_total", endpoint="/api/predict", method="POST", status="500"
    )
    assert failures == 0
