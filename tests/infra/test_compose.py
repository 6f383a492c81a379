"""The Compose stack: schema-valid, pinned, healthy-ordered, consistent with the code."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import jsonschema
import pytest
import yaml

from frontend.settings import UISettings
from inference_service.config import InferenceSettings
from learning_service.config import LearnerSettings
from tests.fixtures.observability import ALERTS, DASHBOARD

ROOT = Path(__file__).resolve().parents[2]
COMPOSE = ROOT / "compose"
SETTINGS: dict[str, Any] = {
    "learning": LearnerSettings,
    "inference": InferenceSettings,
    "ui": UISettings,
}
CODE = ["tagloop", "learning_service", "inference_service", "frontend"]
# Read by boto3 itself (contracts §2), not by tagloop's code.
BOTO3_VARIABLES = {"AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_DEFAULT_REGION"}


class RecordingEnv(dict[str, str]):
    """An environment that remembers every variable a settings class asks for, and its default."""

    def __init__(self, values: dict[str, str]) -> None:
        super().__init__(values)
        self.asked: dict[str, str | None] = {}

    def get(self, key: str, default: Any = None) -> Any:  # type: ignore[override]
        self.asked[key] = default
        return super().get(key, default)


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    return yaml.safe_load((COMPOSE / "compose.yaml").read_text())


def tagloop_services(compose: dict[str, Any]) -> Iterator[tuple[str, str, dict[str, Any]]]:
    """(service name, tagloop component, definition) for the services built from this repo."""
    for name, service in compose["services"].items():
        if "build" in service:
            yield name, service["build"]["target"], service


def environment(service: dict[str, Any]) -> dict[str, str]:
    return {key: str(value) for key, value in service.get("environment", {}).items()}


def variables_read_by_the_code() -> set[str]:
    names: set[str] = set()
    for package in CODE:
        for path in (ROOT / package).rglob("*.py"):
            names |= set(
                re.findall(r"\"((?:TAGLOOP|PUBSUB|PROMETHEUS)_[A-Z0-9_]+)\"", path.read_text())
            )
    return names


def test_compose_file_is_valid_against_the_compose_specification(compose: dict[str, Any]) -> None:
    schema = json.loads((COMPOSE / "compose-spec.json").read_text())
    validator = jsonschema.Draft201909Validator(schema)
    errors = [f"{list(e.absolute_path)}: {e.message}" for e in validator.iter_errors(compose)]
    assert errors == []


def test_schema_check_catches_a_broken_file(compose: dict[str, Any]) -> None:
    schema = json.loads((COMPOSE / "compose-spec.json").read_text())
    broken = {
        **compose,
        "services": {**compose["services"], "ui": {"image": "x", "helthcheck": {}}},
    }
    with pytest.raises(jsonschema.ValidationError, match="helthcheck"):
        jsonschema.validate(broken, schema, cls=jsonschema.Draft201909Validator)


def test_same_topology_as_the_local_stack(compose: dict[str, Any]) -> None:
    components = sorted(component for _, component, _ in tagloop_services(compose))
    assert components == ["inference", "inference", "learning", "ui"]
    assert {"pubsub", "minio", "create-bucket", "prometheus", "grafana"} <= set(compose["services"])
    assert "gcloud beta emulators pubsub start" in " ".join(
        compose["services"]["pubsub"]["command"]
    )
    learner = compose["services"]["learning"]
    data_dir = environment(learner)["TAGLOOP_DATA_DIR"]
    assert any(
        v.split(":")[0] in compose["volumes"] and v.split(":")[1] == data_dir
        for v in learner["volumes"]
    )


def test_every_image_is_pinned_and_every_server_has_a_healthcheck(compose: dict[str, Any]) -> None:
    for name, service in compose["services"].items():
        image = service["image"]
        tag = image.rsplit(":", 1)[1] if ":" in image.rsplit("/", 1)[-1] else ""
        assert tag and tag != "latest", f"{name}: {image} is not pinned"
        if service.get("restart") != "no":
            assert service["healthcheck"]["test"], name
        for dependency, condition in service.get("depends_on", {}).items():
            assert dependency in compose["services"]
            assert condition["condition"] in {
                "service_started",
                "service_healthy",
                "service_completed_successfully",
            }


def test_variables_are_read_by_the_code_and_accepted_by_the_settings(
    compose: dict[str, Any],
) -> None:
    known = variables_read_by_the_code() | BOTO3_VARIABLES
    for name, component, service in tagloop_services(compose):
        env = environment(service)
        unknown = set(env) - known
        assert not unknown, f"{name} sets variables no code reads: {sorted(unknown)}"
        recording = RecordingEnv(env)
        SETTINGS[component].from_env(recording)  # ConfigError on a bad value
        # Defaults that point at loopback cannot work between containers: they must be set.
        loopback = {
            key
            for key, default in recording.asked.items()
            if default and ("127.0.0.1" in default or "localhost" in default)
        }
        required = loopback
        if "TAGLOOP_S3_ENDPOINT_URL" in recording.asked:
            required |= {"PUBSUB_EMULATOR_HOST", *BOTO3_VARIABLES}
        assert required <= set(env), f"{name} misses {sorted(required - set(env))}"


def test_ports_agree_between_services_healthchecks_ui_and_prometheus(
    compose: dict[str, Any],
) -> None:
    ports = {}
    for name, _, service in tagloop_services(compose):
        port = environment(service)["TAGLOOP_PORT"]
        assert f"127.0.0.1:{port}/readyz" in " ".join(service["healthcheck"]["test"]), name
        ports[name] = port
    upstreams = environment(compose["services"]["ui"])["TAGLOOP_UI_UPSTREAMS"].split(",")
    inference = {
        name for name, component, _ in tagloop_services(compose) if component == "inference"
    }
    assert {f"http://{name}:{ports[name]}" for name in inference} == set(upstreams)
    learner = environment(compose["services"]["ui"])["TAGLOOP_UI_LEARNER_URL"]
    assert learner == f"http://learning:{ports['learning']}"
    prometheus = yaml.safe_load((COMPOSE / "prometheus.yml").read_text())
    targets = {
        t
        for job in prometheus["scrape_configs"]
        for c in job["static_configs"]
        for t in c["targets"]
    }
    assert {f"{name}:{port}" for name, port in ports.items()} <= targets
    grafana = yaml.safe_load(
        (COMPOSE / "grafana/provisioning/datasources/prometheus.yml").read_text()
    )
    url = urlsplit(grafana["datasources"][0]["url"])
    assert url.hostname == "prometheus" and url.port == 9090


def test_mounted_files_exist_and_grafana_gets_the_dashboard(compose: dict[str, Any]) -> None:
    mounts = {}
    for service in compose["services"].values():
        for volume in service.get("volumes", []):
            source, target = volume.split(":")[:2]
            if source.startswith("."):
                assert (COMPOSE / source).exists(), source
                mounts[target] = (COMPOSE / source).resolve()
    assert mounts["/etc/prometheus/alerts.yml"] == ALERTS
    assert mounts["/var/lib/grafana/dashboards"] == DASHBOARD.parent
    provider = yaml.safe_load((COMPOSE / "grafana/provisioning/dashboards/tagloop.yml").read_text())
    assert provider["providers"][0]["options"]["path"] == "/var/lib/grafana/dashboards"


def test_prometheus_config_passes_promtool_with_the_alert_rules(
    promtool: str, tmp_path: Path
) -> None:
    shutil.copy(COMPOSE / "prometheus.yml", tmp_path / "prometheus.yml")
    shutil.copy(ALERTS, tmp_path / "alerts.yml")
    result = subprocess.run(
        [promtool, "check", "config", str(tmp_path / "prometheus.yml")],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS" in result.stdout + result.stderr


def compose_config(*files: Path, **env: str) -> subprocess.CompletedProcess[str]:
    """`docker compose config` (Compose v2 itself: parsing, merging, interpolation; no engine)."""
    from tagloop_dev.docker_engine import compose_binary

    options = [arg for path in files for arg in ("--file", str(path))]
    return subprocess.run(
        [
            str(compose_binary()),
            "--project-name",
            "tagloop",
            *options,
            "config",
            "--format",
            "json",
        ],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        env={"PATH": "/usr/bin:/bin", **env},
    )


def test_compose_v2_accepts_the_file_and_publishes_the_contract_ports_on_loopback() -> None:
    result = compose_config(COMPOSE / "compose.yaml")
    assert result.returncode == 0, result.stderr
    services = json.loads(result.stdout)["services"]
    published = {
        name: {(p["host_ip"], p["published"]) for p in service.get("ports", [])}
        for name, service in services.items()
    }
    assert published["ui"] == {("127.0.0.1", "8080")}
    assert published["inference-1"] == {("127.0.0.1", "8001")}
    assert published["inference-2"] == {("127.0.0.1", "8002")}
    assert published["learning"] == {("127.0.0.1", "8010")}
    assert published["prometheus"] == {("127.0.0.1", "9090")}
    moved = json.loads(compose_config(COMPOSE / "compose.yaml", TAGLOOP_UI_PORT="18080").stdout)
    assert moved["services"]["ui"]["ports"][0]["published"] == "18080"
    for name, _, service in tagloop_services({"services": services}):
        assert service["read_only"] is True, name  # as in Kubernetes


def test_local_override_builds_everything_on_the_given_base_and_pulls_nothing() -> None:
    assert compose_config(COMPOSE / "compose.yaml", COMPOSE / "local.yaml").returncode != 0
    result = compose_config(
        COMPOSE / "compose.yaml", COMPOSE / "local.yaml", TAGLOOP_BASE_IMAGE="local/base:1"
    )
    assert result.returncode == 0, result.stderr
    services = json.loads(result.stdout)["services"]
    assert "grafana" not in services  # no stand-in: only in the "grafana" profile
    for name, service in services.items():
        assert "build" in service, f"{name} would be pulled: {service['image']}"
        assert service["build"]["args"]["PYTHON_IMAGE"] == "local/base:1", name
    assert services["pubsub"]["command"][:2] == ["tagloop", "pubsub-emulator"]
    assert services["minio"]["command"][:2] == ["tagloop", "s3-server"]
    # The stand-ins keep the names and ports the tagloop services are configured with.
    assert "--port 8085" in " ".join(services["pubsub"]["command"])
    assert "--port 9000" in " ".join(services["minio"]["command"])
