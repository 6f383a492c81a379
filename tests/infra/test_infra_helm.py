"""The Helm chart: linted by Helm's own library, rendered offline for the
default values and each environment, every manifest validated against the
Kubernetes schemas, and the deployment policies asserted on what renders.
"""

from __future__ import annotations

import re
from typing import Any

import helm_python
import pytest
import yaml

from tagloop.settings import CommonSettings
from tests.fixtures.infra import (
    CHART,
    COMPONENTS,
    ENVIRONMENTS,
    FIXTURES,
    ROOT,
    by_kind,
    environment_values,
    kubernetes_errors,
    lint_errors,
    pod_specs,
    render,
)

Rendered = dict[str | None, list[dict[str, Any]]]
SETUPS = (None, *ENVIRONMENTS)


@pytest.mark.parametrize("environment", SETUPS)
def test_strict_lint_passes_for_every_environment(environment: str | None) -> None:
    assert lint_errors(CHART, environment_values(environment)) == []


def test_lint_rejects_a_broken_chart() -> None:
    assert lint_errors(FIXTURES / "broken-chart"), (
        "a chart with a template syntax error passed lint"
    )


@pytest.mark.parametrize("environment", SETUPS)
def test_every_rendered_manifest_passes_kubernetes_schema_validation(
    rendered: Rendered, environment: str | None
) -> None:
    manifests = rendered[environment]
    assert len(manifests) > 10
    assert [error for m in manifests for error in kubernetes_errors(m)] == []


def test_schema_validation_rejects_broken_manifests() -> None:
    broken = list(yaml.safe_load_all((FIXTURES / "broken-manifests.yaml").read_text()))
    errors = {m["kind"]: kubernetes_errors(m) for m in broken}
    assert all(errors.values()), errors
    assert "replicas" in errors["Deployment"][0] or "imagePullPolicy" in errors["Deployment"][0]
    assert "endpoints" in errors["PodMonitoring"][0]


def test_environments_render_their_cloud_resources(rendered: Rendered) -> None:
    defaults = {m["kind"] for m in rendered[None]}
    assert not defaults & {"Ingress", "NetworkPolicy", "PodMonitoring", "Rules"}
    for environment in ENVIRONMENTS:
        kinds = {m["kind"] for m in rendered[environment]}
        assert {"Ingress", "NetworkPolicy", "PodMonitoring", "Rules", "ManagedCertificate"} <= kinds


def test_there_is_exactly_one_learner_in_every_environment(rendered: Rendered) -> None:
    for environment in SETUPS:
        manifests = rendered[environment]
        statefulsets = by_kind(manifests, "StatefulSet")
        assert list(statefulsets) == ["tagloop-learning"]
        assert statefulsets["tagloop-learning"]["spec"]["replicas"] == 1
        assert by_kind(manifests, "PersistentVolumeClaim") == {}  # it owns a claim template
        claims = statefulsets["tagloop-learning"]["spec"]["volumeClaimTemplates"]
        assert [c["metadata"]["name"] for c in claims] == ["data"]
        # Nothing may scale it: no autoscaler targets the learner.
        targets = [
            h["spec"]["scaleTargetRef"]["name"]
            for h in by_kind(manifests, "HorizontalPodAutoscaler").values()
        ]
        assert targets == ["tagloop-inference"]


@pytest.mark.parametrize(
    "values",
    [
        {"learning": {"replicas": 2}},
        {"learning": {"replicaCount": 2}},
        {"learning": {"autoscaling": {"enabled": True, "maxReplicas": 3}}},
    ],
)
def test_values_cannot_scale_the_learner(values: dict[str, Any]) -> None:
    with (
        helm_python.Chart.load(str(CHART)) as chart,
        pytest.raises(helm_python.HelmError, match="learning"),
    ):
        chart.validate_schema(values)
    assert any("learning" in error for error in lint_errors(CHART, values))


@pytest.mark.parametrize(
    "values",
    [
        {"containerSecurityContext": {"readOnlyRootFilesystem": False}},
        {"containerSecurityContext": {"allowPrivilegeEscalation": True}},
        {"podSecurityContext": {"runAsNonRoot": False}},
        {"inference": {"s3Credentials": {"existingSecret": ""}}},
        {"learning": {"s3Credentials": {"accessKey": "AKIA...", "secretKey": "inline"}}},
        {"monitoring": {"provider": "datadog"}},
        {"ingress": {"managedCertificate": {"enabled": True}, "host": ""}},
        {"image": {"tag": "not a tag"}},
    ],
)
def test_schema_rejects_unsafe_or_invalid_values(values: dict[str, Any]) -> None:
    with helm_python.Chart.load(str(CHART)) as chart, pytest.raises(helm_python.HelmError):
        chart.validate_schema(values)


@pytest.mark.parametrize("environment", SETUPS)
def test_every_pod_is_hardened_probed_and_bounded(
    rendered: Rendered, environment: str | None
) -> None:
    pods = pod_specs(rendered[environment])
    assert len(pods) == len(COMPONENTS)
    for name, pod in pods.items():
        context = pod["securityContext"]
        assert (
            context["runAsNonRoot"] is True
            and context["seccompProfile"]["type"] == "RuntimeDefault"
        ), name
        assert pod["automountServiceAccountToken"] is False, name
        mounts_by_volume = {}
        for container in pod["containers"]:
            security = container["securityContext"]
            assert security["readOnlyRootFilesystem"] is True, name
            assert security["allowPrivilegeEscalation"] is False, name
            assert security["capabilities"]["drop"] == ["ALL"], name
            assert container["readinessProbe"]["httpGet"]["path"] == "/readyz", name
            assert container["livenessProbe"]["httpGet"]["path"] == "/healthz", name
            assert {"cpu", "memory"} <= set(container["resources"]["requests"]), name
            assert "memory" in container["resources"]["limits"], name
            assert not container["image"].endswith(":latest"), name
            mounts_by_volume.update({m["mountPath"]: m["name"] for m in container["volumeMounts"]})
        volumes = {v["name"]: v for v in pod.get("volumes", [])}
        assert "emptyDir" in volumes[mounts_by_volume["/tmp"]], f"{name}: /tmp must be an emptyDir"


def test_no_secret_is_rendered_only_references(rendered: Rendered) -> None:
    for environment in SETUPS:
        manifests = rendered[environment]
        assert by_kind(manifests, "Secret") == {}
        for name, pod in pod_specs(manifests).items():
            for container in pod["containers"]:
                for variable in container.get("env", []):
                    if variable["name"].startswith("AWS_") or "TOKEN" in variable["name"]:
                        assert set(variable) == {"name", "valueFrom"}, (
                            f"{name}: {variable['name']} inline"
                        )


def config_data(manifests: list[dict[str, Any]], component: str) -> dict[str, str]:
    """The environment a component's container gets from its ConfigMaps."""
    maps = by_kind(manifests, "ConfigMap")
    return {**maps["tagloop-common"]["data"], **maps[f"tagloop-{component}"]["data"]}


class RecordingEnv(dict[str, str]):
    """An empty environment that remembers which variables a reader looked up."""

    def __init__(self) -> None:
        super().__init__()
        self.asked: set[str] = set()

    def get(self, key: str, default: Any = None) -> Any:
        self.asked.add(key)
        return default


def test_configmaps_carry_every_shared_setting_with_the_services_defaults(
    rendered: Rendered,
) -> None:
    env = RecordingEnv()
    defaults = CommonSettings.from_env(env)
    emulator_only = {"PUBSUB_EMULATOR_HOST"}
    for component in ("learning", "inference"):
        data = config_data(rendered[None], component)
        assert env.asked - emulator_only <= set(data), component
    data = config_data(rendered[None], "learning")
    assert data["TAGLOOP_FEEDBACK_TOPIC"] == defaults.feedback_topic
    assert data["TAGLOOP_FEEDBACK_SUBSCRIPTION"] == defaults.feedback_subscription
    assert data["TAGLOOP_MODEL_TOPIC"] == defaults.model_topic
    assert data["TAGLOOP_S3_BUCKET"] == defaults.s3_bucket
    # Every value is a valid setting for the services' own parser.
    assert CommonSettings.from_env(data).s3_addressing_style == "path"


def test_component_settings_and_wiring(rendered: Rendered) -> None:
    manifests = rendered["production"]
    learning = config_data(manifests, "learning")
    assert learning["TAGLOOP_DATA_DIR"] == "/var/lib/tagloop"
    statefulset = by_kind(manifests, "StatefulSet")["tagloop-learning"]
    mounts = statefulset["spec"]["template"]["spec"]["containers"][0]["volumeMounts"]
    assert {"name": "data", "mountPath": "/var/lib/tagloop"} in mounts
    ui = config_data(manifests, "ui")
    inference_service = by_kind(manifests, "Service")["tagloop-inference"]
    port = inference_service["spec"]["ports"][0]["port"]
    assert ui["TAGLOOP_UI_UPSTREAMS"] == f"http://tagloop-inference:{port}"
    assert (
        config_data(manifests, "inference")["TAGLOOP_CORS_ORIGIN"] == "https://tagloop.example.com"
    )
    ingress = by_kind(manifests, "Ingress")["tagloop"]
    assert ingress["spec"]["defaultBackend"]["service"]["name"] == "tagloop-ui"
    annotations = ingress["metadata"]["annotations"]
    assert annotations["networking.gke.io/managed-certificates"] == "tagloop"
    assert annotations["kubernetes.io/ingress.global-static-ip-name"] == "tagloop-test-ingress"
    budgets = by_kind(manifests, "PodDisruptionBudget")
    assert budgets["tagloop-inference"]["spec"]["minAvailable"] == 2
    accounts = by_kind(manifests, "ServiceAccount")
    assert (
        "iam.gke.io/gcp-service-account" in accounts["tagloop-learning"]["metadata"]["annotations"]
    )


def test_network_policies_let_only_the_ui_and_monitoring_reach_inference_and_learner(
    rendered: Rendered,
) -> None:
    """Inference serves the UI; the learner serves the UI's history page (its admin
    actions carry the learner's token); both are scraped from the monitoring namespaces."""
    policies = by_kind(rendered["test"], "NetworkPolicy")
    for component in ("inference", "learning"):
        sources = [
            p for rule in policies[f"tagloop-{component}"]["spec"]["ingress"] for p in rule["from"]
        ]
        pods = [p["podSelector"]["matchLabels"] for p in sources if "podSelector" in p]
        assert [s["app.kubernetes.io/component"] for s in pods] == ["ui"], component
        others = [p for p in sources if "podSelector" not in p]
        assert others and all("namespaceSelector" in p for p in others), component


def test_prometheus_operator_flavour_renders_valid_objects() -> None:
    manifests = render({"monitoring": {"provider": "prometheus-operator"}})
    kinds = {m["kind"] for m in manifests}
    assert {"ServiceMonitor", "PrometheusRule"} <= kinds
    assert [error for m in manifests for error in kubernetes_errors(m)] == []


def test_alert_rules_are_the_shared_observability_file(rendered: Rendered) -> None:
    shared = ROOT / "observability" / "alerts.yml"
    assert (CHART / "files" / "alerts.yml").read_bytes() == shared.read_bytes(), (
        "copy observability/alerts.yml to helm/tagloop/files/alerts.yml"
    )
    rules = by_kind(rendered["test"], "Rules")["tagloop"]
    assert rules["spec"]["groups"] == yaml.safe_load(shared.read_text())["groups"]


def test_alert_rules_cover_the_agreed_signals() -> None:
    groups = yaml.safe_load((ROOT / "observability" / "alerts.yml").read_text())["groups"]
    exprs = {rule["alert"]: rule["expr"] for group in groups for rule in group["rules"]}
    metrics = {
        metric for expr in exprs.values() for metric in re.findall(r"tagloop_[a-z0-9_]+", expr)
    }
    assert {
        "tagloop_model_f1_macro",
        "tagloop_model_last_update_timestamp_seconds",
        "tagloop_feedback_received_total",
        "tagloop_feedback_rejected_total",
        "tagloop_inference_model_info",
        "tagloop_http_requests_total",
        "tagloop_http_request_duration_seconds_bucket",
    } <= metrics
    skew = next(
        group for group in groups for rule in group["rules"] if "model_info" in rule["expr"]
    )
    assert any(rule.get("for") == "5m" for rule in skew["rules"])


def test_values_schema_documents_the_singleton() -> None:
    with helm_python.Chart.load(str(CHART)) as chart:
        assert chart.schema is not None
        learning = chart.schema["properties"]["learning"]
    assert learning["additionalProperties"] is False and "replicas" not in learning["properties"]


def pod_templates(values: dict[str, Any]) -> dict[str, Any]:
    """Each workload's pod template (labels, annotations, spec), by component."""
    return {
        m["metadata"]["labels"]["app.kubernetes.io/component"]: m["spec"]["template"]
        for m in render(values)
        if m["kind"] in {"Deployment", "StatefulSet"}
    }


def test_a_component_rolls_only_when_its_own_configuration_changes() -> None:
    """Each pod's checksum covers the shared ConfigMap and its own: a UI setting leaves
    the singleton learner (and inference) alone, a shared setting rolls every pod."""
    before = pod_templates({})
    ui_change = pod_templates({"ui": {"proxyHops": 2, "threads": 8}})
    assert ui_change["learning"] == before["learning"]
    assert ui_change["inference"] == before["inference"]
    assert ui_change["ui"] != before["ui"]

    learning_change = pod_templates({"learning": {"refitEvery": 50}})
    assert learning_change["learning"] != before["learning"]
    assert learning_change["ui"] == before["ui"]

    shared_change = pod_templates({"config": {"logLevel": "DEBUG"}})
    assert all(shared_change[c] != before[c] for c in COMPONENTS)


def test_every_component_has_its_own_templates() -> None:
    """Config, policy and monitoring of a component live in its own template directory."""
    for component in COMPONENTS:
        files = {p.name for p in (CHART / "templates" / component).glob("*.yaml")}
        assert {"configmap.yaml", "networkpolicy.yaml", "monitoring.yaml"} <= files, component


def test_the_cloud_armor_policy_is_attached_to_the_ui_backend(rendered: Rendered) -> None:
    for environment in ENVIRONMENTS:
        manifests = rendered[environment]
        (backend,) = by_kind(manifests, "BackendConfig").values()
        assert backend["spec"]["securityPolicy"] == {"name": "tagloop-test-edge"}
        service = by_kind(manifests, "Service")["tagloop-ui"]
        annotation = service["metadata"]["annotations"]["cloud.google.com/backend-config"]
        assert yaml.safe_load(annotation) == {"default": backend["metadata"]["name"]}
    assert not by_kind(rendered[None], "BackendConfig")  # no policy set, none rendered


def test_behind_googles_load_balancer_the_ui_trusts_its_two_entries(rendered: Rendered) -> None:
    for environment in ENVIRONMENTS:
        ui = by_kind(rendered[environment], "ConfigMap")["tagloop-ui"]["data"]
        assert ui["TAGLOOP_PROXY_HOPS"] == "1"
        assert ui["TAGLOOP_PROXY_FORWARDED_FOR_ENTRIES"] == "2"
        assert ui["TAGLOOP_TRUSTED_PROXY_NETWORKS"] == "35.191.0.0/16,130.211.0.0/22"


def test_cloud_services_do_not_provision_pubsub_and_run_images_by_digest(
    rendered: Rendered,
) -> None:
    for environment in ENVIRONMENTS:
        manifests = rendered[environment]
        common = by_kind(manifests, "ConfigMap")["tagloop-common"]["data"]
        assert common["TAGLOOP_PUBSUB_PROVISION"] == "false"
        for component, spec in pod_specs(manifests).items():
            (container,) = spec["containers"]
            assert re.fullmatch(
                r"ghcr\.io/tagloop/tagloop-\w+:1\.2\.3@sha256:[0-9a-f]{64}", container["image"]
            ), (component, container["image"])
