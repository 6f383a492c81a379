"""Alert rules (promtool check + unit tests) and the Grafana dashboard's queries."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest
import yaml

from tests.fixtures.observability import (
    ALERT_TESTS,
    ALERTS,
    BROKEN_ALERTS,
    alert_rules,
    dashboard,
    dashboard_exprs,
    dashboard_panels,
    metric_names,
    plain_promql,
    referenced_metrics,
)


def run(*command: str | Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(part) for part in command], capture_output=True, text=True, timeout=60, check=False
    )


def test_alert_rules_pass_promtool_check(promtool: str) -> None:
    result = run(promtool, "check", "rules", ALERTS)
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"SUCCESS: {len(alert_rules())} rules found" in result.stdout


def test_alert_unit_tests_pass(promtool: str) -> None:
    result = run(promtool, "test", "rules", ALERT_TESTS)
    assert result.returncode == 0, result.stdout + result.stderr


def test_a_broken_rules_file_fails_the_check(promtool: str) -> None:
    result = run(promtool, "check", "rules", BROKEN_ALERTS)
    assert result.returncode != 0
    assert "unclosed left parenthesis" in result.stdout + result.stderr


def test_the_unit_tests_fail_when_an_alert_no_longer_fires(promtool: str, tmp_path: Path) -> None:
    # Same tests against rules whose F1 threshold was raised out of reach.
    rules = ALERTS.read_text().replace(
        "tagloop_model_f1_macro) > 0.05", "tagloop_model_f1_macro) > 5"
    )
    assert rules != ALERTS.read_text()
    (tmp_path / "alerts.yml").write_text(rules)
    (tmp_path / "alerts.test.yml").write_text(ALERT_TESTS.read_text())
    result = run(promtool, "test", "rules", tmp_path / "alerts.test.yml")
    assert result.returncode != 0
    assert "TagloopModelF1Dropped" in result.stdout + result.stderr


def test_the_required_alerts_exist_and_each_is_proven_to_fire() -> None:
    names = {rule["alert"] for rule in alert_rules()}
    assert names >= {
        "TagloopModelF1Dropped",
        "TagloopModelStale",
        "TagloopFeedbackRejectionRateHigh",
        "TagloopReplicasOnDifferentVersions",
        "TagloopHTTPErrorRateHigh",
        "TagloopHTTPLatencyP99High",
        "TagloopLearnerDown",
        "TagloopLearnerNotReady",
        "TagloopFeedbackBacklogOld",
        "TagloopTitleVocabularyDrift",
        "TagloopPredictedTagMixDrift",
    }
    firing = {
        case["alertname"]
        for test in yaml.safe_load(ALERT_TESTS.read_text())["tests"]
        for case in test.get("alert_rule_test", [])
        if case.get("exp_alerts")
    }
    assert firing == names
    skew = next(r for r in alert_rules() if r["alert"] == "TagloopReplicasOnDifferentVersions")
    assert skew["for"] == "5m"


def test_dashboard_queries_are_valid_promql(promtool: str, tmp_path: Path) -> None:
    # promtool parses expressions with Prometheus' own parser: wrap them as recording rules.
    rules = [
        {"record": f"tagloop:dashboard_query_{index}", "expr": plain_promql(expr)}
        for index, expr in enumerate(dashboard_exprs())
    ]
    path = tmp_path / "dashboard-rules.yml"
    path.write_text(yaml.safe_dump({"groups": [{"name": "dashboard", "rules": rules}]}))
    result = run(promtool, "check", "rules", path)
    assert result.returncode == 0, result.stdout + result.stderr


def test_dashboard_shows_quality_feedback_fits_requests_versions_and_drift() -> None:
    assert referenced_metrics() >= {
        "tagloop_model_f1_macro",
        "tagloop_feedback_received_total",
        "tagloop_feedback_rejected_total",
        "tagloop_fit_duration_seconds_bucket",
        "tagloop_http_requests_total",
        "tagloop_http_request_duration_seconds_bucket",
        "tagloop_inference_model_info",
        "tagloop_inference_drift_unknown_words_total",
        "tagloop_inference_drift_words_total",
        "tagloop_inference_predicted_tags_total",
        "tagloop_inference_training_tag_share",
    }
    assert all(name.startswith("tagloop_") for name in referenced_metrics())


def test_dashboard_is_well_formed_for_provisioning() -> None:
    board = dashboard()
    assert board["uid"] == "tagloop"
    ids = [panel["id"] for panel in board["panels"]]
    assert len(ids) == len(set(ids))
    variables = {item["name"]: item for item in board["templating"]["list"]}
    assert variables["datasource"]["query"] == "prometheus"
    cells: set[tuple[int, int]] = set()
    for panel in board["panels"]:
        grid = panel["gridPos"]
        assert grid["x"] >= 0 and grid["x"] + grid["w"] <= 24, panel["title"]
        area = {
            (x, y)
            for x in range(grid["x"], grid["x"] + grid["w"])
            for y in range(grid["y"], grid["y"] + grid["h"])
        }
        assert not area & cells, f"{panel['title']} overlaps another panel"
        cells |= area
    for panel in dashboard_panels():
        assert panel["title"] and panel["description"]
        assert panel["datasource"] == {"type": "prometheus", "uid": "${datasource}"}
        assert panel["targets"], panel["title"]
        assert [t["refId"] for t in panel["targets"]] == [
            chr(ord("A") + i) for i in range(len(panel["targets"]))
        ]
    json.dumps(board)  # round-trips


@pytest.mark.parametrize(
    ("expr", "names"),
    [
        ("tagloop_model_f1_macro", {"tagloop_model_f1_macro"}),
        ('sum by (job, le) (rate(a_bucket{status=~"5..", le!="x"}[5m]))', {"a_bucket"}),
        (
            "time() - max(b_seconds) > 3600 and on() sum(increase(c_total[1h])) > 100",
            {"b_seconds", "c_total"},
        ),
        (
            "histogram_quantile(0.99, sum without (pid) (rate(d_bucket[$__rate_interval])))",
            {"d_bucket"},
        ),
        ("count(count by (version) (e_info == 1)) > bool 1", {"e_info"}),
    ],
)
def test_metric_names_are_extracted_from_promql(expr: str, names: set[str]) -> None:
    assert metric_names(expr) == names
