"""Terraform: parsed with python-hcl2 (providers cannot be downloaded here, so
`terraform validate` runs in CI only), formatted per `terraform fmt`, every
variable declared and set per environment, module interfaces consistent,
resource names equal to the services' configuration, and a focused security
policy (in place of checkov, whose pins would downgrade the services' boto3).
"""

from __future__ import annotations

import os
import re
import shutil
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pytest
from lark.exceptions import LarkError

from tagloop.settings import CommonSettings
from tests.fixtures.infra import (
    CHART,
    ENVIRONMENTS,
    FIXTURES,
    LEARNER_ONLY,
    TERRAFORM,
    TERRAFORM_VALUES,
    load_hcl,
    load_module,
    names,
    references,
    resources,
    run,
    tool,
)

MODULES = sorted(p for p in (TERRAFORM / "modules").iterdir() if p.is_dir())
PER_DEPLOYMENT = {"app_version"}  # passed by the Taskfile, not a tfvars file
FROM_RELEASE = {"image_digests"}  # TF_VAR_image_digests from the release workflow
META_ARGUMENTS = {"source", "depends_on", "providers", "count", "for_each", "version"}
PRIMITIVE_ROLES = {"roles/owner", "roles/editor", "roles/viewer"}


@pytest.fixture(scope="module")
def root() -> dict[str, list[Any]]:
    return load_module(TERRAFORM)


def tfvars(environment: str) -> dict[str, Any]:
    return load_hcl(TERRAFORM / "environments" / f"{environment}.tfvars")


def variable_problems(values: Mapping[str, Any], declared: set[str]) -> list[str]:
    """What `terraform plan -var-file` would reject or silently default."""
    problems = [f"{name} is not a declared variable" for name in sorted(set(values) - declared)]
    missing = declared - PER_DEPLOYMENT - FROM_RELEASE - set(values)
    return problems + [f"{name} is not set" for name in sorted(missing)]


def test_every_file_parses() -> None:
    files = sorted(TERRAFORM.rglob("*.tf")) + sorted(TERRAFORM.rglob("*.tfvars"))
    assert len(files) > 15
    for path in files:
        assert load_hcl(path), path


def test_the_parser_rejects_invalid_hcl() -> None:
    with pytest.raises(LarkError):
        load_hcl(FIXTURES / "invalid.tf")


def test_terraform_fmt() -> None:
    """`terraform fmt -check` when the binary is installed (this machine, the
    builder image, CI's infra job); without it, formatting is still checked
    in CI's infra job, and here only what python-hcl2 can assert remains."""
    if shutil.which("terraform") is None:
        for path in TERRAFORM.rglob("*.tf"):
            text = path.read_text()
            assert "\t" not in text and text.endswith("\n") and not re.search(r" +\n", text), path
        return
    environment = {**os.environ, "TF_CLI_CONFIG_FILE": os.devnull}
    ok = run("terraform", "fmt", "-check", "-recursive", TERRAFORM, env=environment)
    assert ok.returncode == 0, ok.stdout + ok.stderr
    broken = run("terraform", "fmt", "-check", FIXTURES / "unformatted.tf", env=environment)
    assert broken.returncode != 0 and "unformatted.tf" in broken.stdout


@pytest.mark.parametrize("environment", ENVIRONMENTS)
def test_every_variable_is_declared_and_set(root: dict[str, list[Any]], environment: str) -> None:
    values = tfvars(environment)
    assert variable_problems(values, names(root["variable"])) == []
    assert values["environment"] == environment
    assert (CHART / f"values-{environment}.yaml").exists()


def test_the_variable_check_rejects_a_broken_tfvars(root: dict[str, list[Any]]) -> None:
    problems = variable_problems(load_hcl(FIXTURES / "broken.tfvars"), names(root["variable"]))
    assert "nodes_max_cnt is not a declared variable" in problems
    assert "node_max_count is not set" in problems


def test_no_secret_in_variables_files() -> None:
    for environment in ENVIRONMENTS:
        for name in tfvars(environment):
            assert not re.search(r"secret|password|token|private_key|hmac", name), name


def test_the_taskfile_passes_the_per_deployment_variables() -> None:
    result = run(
        tool("task"),
        "--dry",
        "terraform:apply",
        "ENV=production",
        "VERSION=1.2.3",
        "--",
        "-auto-approve",
        env={**os.environ, "TF_STATE_BUCKET": "acme-tfstate"},
    )
    assert result.returncode == 0, result.stderr
    assert '-backend-config="prefix=tagloop/production"' in result.stderr
    assert '-backend-config="bucket=acme-tfstate"' in result.stderr
    assert (
        '-var-file=environments/production.tfvars -var="app_version=1.2.3" -auto-approve'
        in result.stderr
    )
    for name in PER_DEPLOYMENT:
        assert f'-var="{name}=' in result.stderr
    refused = run(tool("task"), "--dry", "terraform:plan", "ENV=staging", "VERSION=1.2.3")
    assert refused.returncode != 0 and "staging" in refused.stderr


def test_backend_state_is_partial_so_each_environment_has_its_own(
    root: dict[str, list[Any]],
) -> None:
    (settings,) = root["terraform"]
    assert settings["backend"] == [{"gcs": {}}]


@pytest.mark.parametrize("directory", [TERRAFORM, *MODULES], ids=lambda p: p.name)
def test_every_reference_is_declared(directory: Path) -> None:
    module = load_module(directory)
    assert references(directory, "var") <= names(module.get("variable", []))
    declared_locals = {key for block in module.get("locals", []) for key in block}
    assert references(directory, "local") <= declared_locals
    assert references(directory, "module") <= names(module.get("module", []))


def test_module_calls_match_module_interfaces(root: dict[str, list[Any]]) -> None:
    """What `terraform validate` would check for the module calls."""
    for block in root["module"]:
        for name, call in block.items():
            source = TERRAFORM / call["source"]
            interface = load_module(source)
            assert set(call) - META_ARGUMENTS == names(interface.get("variable", [])), name
            used_outputs = set(
                re.findall(rf"module\.{name}\.(\w+)", (TERRAFORM / "main.tf").read_text())
            )
            used_outputs |= set(
                re.findall(rf"module\.{name}\.(\w+)", (TERRAFORM / "outputs.tf").read_text())
            )
            used_outputs |= set(
                re.findall(rf"module\.{name}\.(\w+)", (TERRAFORM / "providers.tf").read_text())
            )
            assert used_outputs <= names(interface.get("output", [])), name


def test_resource_names_match_the_services_configuration(root: dict[str, list[Any]]) -> None:
    defaults = CommonSettings.from_env({})
    (names_local,) = [block for block in root["locals"] if "feedback_topic" in block]
    assert names_local["feedback_topic"] == defaults.feedback_topic
    assert names_local["feedback_subscription"] == defaults.feedback_subscription
    assert names_local["model_topic"] == defaults.model_topic
    assert names_local["bucket_name"].endswith(f"-{defaults.s3_bucket}")
    # The same names reach the chart's configuration.
    app = load_module(TERRAFORM / "modules" / "app")
    (values_local,) = [block["values"] for block in app["locals"] if "values" in block]
    config = values_local["config"]
    for key, variable in {
        "feedbackTopic": "feedback_topic",
        "feedbackSubscription": "feedback_subscription",
        "modelTopic": "model_topic",
        "s3Bucket": "bucket_name",
        "gcpProject": "project_id",
    }.items():
        assert config[key] == f"${{var.{variable}}}", key


def key_structure(value: Any) -> Any:
    if isinstance(value, Mapping):
        return {k: key_structure(v) for k, v in value.items()}
    return None


def all_keys(value: Any) -> set[str]:
    if not isinstance(value, Mapping):
        return set()
    return set(value) | {key for child in value.values() for key in all_keys(child)}


def test_helm_values_set_by_terraform_are_the_ones_the_tests_render() -> None:
    app = load_module(TERRAFORM / "modules" / "app")
    (values_local,) = [block["values"] for block in app["locals"] if "values" in block]
    (per_component,) = [
        block["component_values"] for block in app["locals"] if "component_values" in block
    ]
    # python-hcl2 keeps a for-expression as text: compare the keys it builds.
    built_keys = set(re.findall(r'"?([\w./-]+)"?\s*=(?![=>])', per_component))
    assert values_local["inference"] == '${local.component_values["inference"]}'
    learning = values_local["learning"]
    assert learning.startswith('${merge(local.component_values["learning"]'), learning
    assert all(key in learning for key in LEARNER_ONLY)
    for component in ("learning", "inference"):
        built = all_keys(TERRAFORM_VALUES[component]) - LEARNER_ONLY
        assert built_keys == built, component
    shared = {
        key: value for key, value in values_local.items() if key not in {"learning", "inference"}
    }
    expected = {
        key: value
        for key, value in TERRAFORM_VALUES.items()
        if key not in {"learning", "inference"}
    }
    structure = key_structure(expected)
    structure["image"]["digests"] = None  # var.image_digests: a map, opaque to the parser
    assert key_structure(shared) == structure


def test_pubsub_learner_subscription_is_durable_with_retries_and_dead_letters() -> None:
    pubsub = load_module(TERRAFORM / "modules" / "pubsub")
    subscription = resources(pubsub, "google_pubsub_subscription")["learner"]
    assert subscription["expiration_policy"] == [{"ttl": ""}]
    assert subscription["retry_policy"][0]["minimum_backoff"]
    assert (
        subscription["dead_letter_policy"][0]["max_delivery_attempts"]
        == "${var.max_delivery_attempts}"
    )
    assert subscription["message_retention_duration"] == "${local.retention}"
    topics = resources(pubsub, "google_pubsub_topic")
    assert set(topics) == {"feedback", "model", "dead_letter"}


def policy_problems(module: Mapping[str, list[Any]]) -> list[str]:
    """The security policy every environment must meet (checkov-style, focused)."""
    problems = []
    for name, bucket in resources(module, "google_storage_bucket").items():
        if bucket.get("uniform_bucket_level_access") is not True:
            problems.append(f"bucket {name}: uniform bucket-level access off")
        if bucket.get("public_access_prevention") != "enforced":
            problems.append(f"bucket {name}: public access not prevented")
        if bucket.get("versioning") != [{"enabled": True}]:
            problems.append(f"bucket {name}: no object versioning")
        if not any(
            "num_newer_versions" in rule["condition"][0]
            for rule in bucket.get("lifecycle_rule", [])
        ):
            problems.append(f"bucket {name}: noncurrent versions are never pruned")
    for rtype in (
        "google_project_iam_member",
        "google_storage_bucket_iam_member",
        "google_pubsub_topic_iam_member",
    ):
        for name, binding in resources(module, rtype).items():
            if binding.get("role") in PRIMITIVE_ROLES:
                problems.append(f"{rtype} {name}: primitive role {binding['role']}")
    for name, cluster in resources(module, "google_container_cluster").items():
        if not cluster.get("workload_identity_config"):
            problems.append(f"cluster {name}: no Workload Identity")
        if cluster.get("enable_shielded_nodes") is not True:
            problems.append(f"cluster {name}: shielded nodes off")
        private = cluster.get("private_cluster_config", [{}])[0]
        if private.get("enable_private_nodes") is not True:
            problems.append(f"cluster {name}: nodes have public addresses")
        if cluster.get("remove_default_node_pool") is not True:
            problems.append(f"cluster {name}: default node pool (Compute default service account)")
        if cluster.get("datapath_provider") != "ADVANCED_DATAPATH":
            problems.append(f"cluster {name}: NetworkPolicies not enforced (no Dataplane V2)")
        issue = cluster.get("master_auth", [{}])[0].get("client_certificate_config", [{}])[0]
        if issue.get("issue_client_certificate") is not False:
            problems.append(f"cluster {name}: client certificate authentication")
    for name, pool in resources(module, "google_container_node_pool").items():
        config = pool.get("node_config", [{}])[0]
        if config.get("workload_metadata_config") != [{"mode": "GKE_METADATA"}]:
            problems.append(f"node pool {name}: node metadata exposed to pods")
        if not config.get("service_account"):
            problems.append(f"node pool {name}: Compute default service account")
        shielded = config.get("shielded_instance_config", [{}])[0]
        if shielded.get("enable_secure_boot") is not True:
            problems.append(f"node pool {name}: no secure boot")
    return problems


def test_every_module_meets_the_security_policy() -> None:
    for directory in MODULES:
        assert policy_problems(load_module(directory)) == [], directory.name


def test_the_policy_flags_an_insecure_configuration() -> None:
    problems = policy_problems(load_hcl(FIXTURES / "insecure.tf"))
    for expected in (
        "bucket public: public access not prevented",
        "google_project_iam_member too_broad: primitive role roles/editor",
        "cluster open: no Workload Identity",
        "cluster open: nodes have public addresses",
        "node pool legacy: node metadata exposed to pods",
    ):
        assert expected in problems


def test_managed_prometheus_and_the_workload_pool_the_chart_targets() -> None:
    gke = load_module(TERRAFORM / "modules" / "gke")
    cluster = resources(gke, "google_container_cluster")["this"]
    assert cluster["monitoring_config"][0]["managed_prometheus"] == [{"enabled": True}]
    pools = {pool["name"] for pool in resources(gke, "google_container_node_pool").values()}
    assert pools == {"system", "workload"}
    for environment in ENVIRONMENTS:
        text = (CHART / f"values-{environment}.yaml").read_text()
        assert "cloud.google.com/gke-nodepool: workload" in text


def test_workload_identity_binds_the_chart_service_accounts(root: dict[str, list[Any]]) -> None:
    (names_local,) = [block for block in root["locals"] if "kubernetes_service_accounts" in block]
    accounts = names_local["kubernetes_service_accounts"]
    assert set(accounts) == {"learning", "inference"}  # the UI needs no Google access
    identity = load_module(TERRAFORM / "modules" / "identity")
    binding = resources(identity, "google_service_account_iam_member")["workload_identity"]
    assert (
        binding["member"]
        == "serviceAccount:${var.project_id}.svc.id.goog[${var.namespace}/${each.value}]"
    )
    assert set(resources(identity, "google_storage_hmac_key")) == {"service"}
    app = load_module(TERRAFORM / "modules" / "app")
    secret = resources(app, "kubernetes_secret_v1")["s3"]
    assert set(secret["data"]) == {"AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"}
