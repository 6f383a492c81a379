"""Configuration validation and structured logs."""

import json
import logging

import pytest

from tagloop.logs import JsonFormatter
from tagloop.settings import CommonSettings, ConfigError, env_bool, env_float, env_int


def test_defaults_match_the_contract():
    settings = CommonSettings.from_env({})
    assert settings.gcp_project == "tagloop-local"
    assert settings.feedback_topic == "tag-feedback"
    assert settings.feedback_subscription == "learner"
    assert settings.model_topic == "model-updates"
    assert settings.s3_endpoint_url == "http://127.0.0.1:8333"
    assert settings.s3_bucket == "tagloop-models"
    assert settings.pubsub_emulator_host is None


def test_empty_endpoint_means_the_aws_default():
    assert CommonSettings.from_env({"TAGLOOP_S3_ENDPOINT_URL": ""}).s3_endpoint_url is None


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (lambda: env_int({"N": "ten"}, "N", 1), "N must be an integer"),
        (lambda: env_int({"N": "0"}, "N", 1, minimum=1), "N must be >= 1"),
        (lambda: env_float({"F": "nan"}, "F", 0.1), "F must be"),
        (lambda: env_float({"F": "2"}, "F", 0.1, maximum=1), "between 0.0 and 1"),
        (lambda: env_bool({"B": "maybe"}, "B", True), "B must be true or false"),
        (lambda: CommonSettings.from_env({"TAGLOOP_S3_BUCKET": " "}), "TAGLOOP_S3_BUCKET"),
        (lambda: CommonSettings.from_env({"TAGLOOP_S3_ADDRESSING_STYLE": "x"}), "ADDRESSING"),
    ],
)
def test_bad_values_name_the_variable(call, message):
    with pytest.raises(ConfigError, match=message):
        call()


def test_json_logs_carry_extra_fields():
    record = logging.makeLogRecord(
        {"msg": "stored %d rows", "args": (3,), "levelname": "INFO", "name": "x", "batch": 7}
    )
    entry = json.loads(JsonFormatter("learning").format(record))
    assert entry["message"] == "stored 3 rows"
    assert entry["service"] == "learning"
    assert entry["batch"] == 7
    assert entry["level"] == "info"
