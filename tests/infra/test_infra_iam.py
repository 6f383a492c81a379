"""Least privilege, checked: every IAM grant in terraform/modules/identity is parsed and
compared with the calls each service makes; a grant wider than those calls fails.

The calls come from the code: the learner pulls its subscription (and checks
it exists), publishes model updates and reads/writes the bucket; inference
publishes feedback, attaches, consumes and deletes its own "inference-"
subscriptions, and reads the bucket. Predefined roles are expanded to their
permissions as documented by Google (only the roles this project may use are
listed: any other role fails the check as unknown).
"""

from __future__ import annotations

import copy
import re
from dataclasses import dataclass
from typing import Any

import pytest

from tagloop.channels.provisioning import INFERENCE_SUBSCRIPTION_PREFIX, PERMISSIONS
from tests.fixtures.infra import TERRAFORM, load_module, resources

IDENTITY = TERRAFORM / "modules" / "identity"

# https://cloud.google.com/iam/docs/understanding-roles (Pub/Sub and Cloud Storage roles).
ROLE_PERMISSIONS = {
    "roles/pubsub.publisher": {"pubsub.topics.publish"},
    "roles/pubsub.subscriber": {
        "pubsub.snapshots.seek",
        "pubsub.subscriptions.consume",
        "pubsub.topics.attachSubscription",
    },
    "roles/pubsub.viewer": {
        "pubsub.schemas.get",
        "pubsub.schemas.list",
        "pubsub.snapshots.get",
        "pubsub.snapshots.list",
        "pubsub.subscriptions.get",
        "pubsub.subscriptions.list",
        "pubsub.topics.get",
        "pubsub.topics.list",
    },
    "roles/storage.objectViewer": {
        "storage.objects.get",
        "storage.objects.list",
        "storage.managedFolders.get",
        "storage.managedFolders.list",
    },
    "roles/storage.objectUser": {
        "storage.objects.create",
        "storage.objects.delete",
        "storage.objects.get",
        "storage.objects.list",
        "storage.objects.restore",
        "storage.objects.update",
        "storage.multipartUploads.abort",
        "storage.multipartUploads.create",
        "storage.multipartUploads.list",
        "storage.multipartUploads.listParts",
        "storage.managedFolders.create",
        "storage.managedFolders.delete",
        "storage.managedFolders.get",
        "storage.managedFolders.list",
    },
}

# On a single resource only the permissions about that kind of resource apply.
KIND_PREFIXES = {
    "subscription": ("pubsub.subscriptions.",),
    "topic": ("pubsub.topics.",),
    "bucket": ("storage.objects.", "storage.multipartUploads.", "storage.managedFolders."),
    "project": ("pubsub.", "storage.", "resourcemanager.", "iam."),
}
RESOURCE_TYPES = {
    "google_pubsub_subscription_iam_member": ("subscription", "subscription"),
    "google_pubsub_topic_iam_member": ("topic", "topic"),
    "google_storage_bucket_iam_member": ("bucket", "bucket"),
    "google_project_iam_member": ("project", "project"),
}

BUCKET_READ = {"storage.objects.get", "storage.objects.list"}
# Overwriting an object (models/current.json, the feedback backup) needs delete in GCS;
# the S3 API uploads big bundles in parts; managed folders come with the role, unused.
BUCKET_WRITE = BUCKET_READ | {
    "storage.objects.create",
    "storage.objects.delete",
    "storage.objects.update",
    "storage.objects.restore",
    "storage.multipartUploads.abort",
    "storage.multipartUploads.create",
    "storage.multipartUploads.list",
    "storage.multipartUploads.listParts",
}
MANAGED_FOLDERS = {
    "storage.managedFolders.create",
    "storage.managedFolders.delete",
    "storage.managedFolders.get",
    "storage.managedFolders.list",
}

OWN_SUBSCRIPTIONS = "inference subscriptions (IAM condition)"
# service -> the resource a grant is on -> what the service's calls need there.
NEEDS: dict[str, dict[str, set[str]]] = {
    "learning": {
        "var.feedback_subscription_id": {
            "pubsub.subscriptions.consume",
            "pubsub.subscriptions.get",
        },
        "var.model_topic_id": {"pubsub.topics.publish"},
        "var.bucket_name": BUCKET_WRITE | MANAGED_FOLDERS,
    },
    "inference": {
        "var.feedback_topic_id": {"pubsub.topics.publish"},
        "var.model_topic_id": {"pubsub.topics.attachSubscription"},
        OWN_SUBSCRIPTIONS: {
            "pubsub.subscriptions.consume",
            "pubsub.subscriptions.create",
            "pubsub.subscriptions.delete",
            "pubsub.subscriptions.get",
        },
        "var.bucket_name": BUCKET_READ
        | {"storage.managedFolders.get", "storage.managedFolders.list"},
    },
}


@dataclass(frozen=True)
class Grant:
    name: str
    service: str
    kind: str
    target: str
    permissions: frozenset[str]
    condition: str | None


def _reference(value: str) -> str:
    """ "${var.x}" -> "var.x"."""
    match = re.fullmatch(r"\$\{(.+)\}", value)
    return match.group(1) if match else value


def grants(module: dict[str, list[Any]]) -> list[Grant]:
    """Every IAM member grant of the module, with its role expanded to permissions."""
    custom = {
        f"google_project_iam_custom_role.{name}.id": set(role["permissions"])
        for name, role in resources(module, "google_project_iam_custom_role").items()
    }
    found = []
    for resource_type, (kind, field) in RESOURCE_TYPES.items():
        for name, grant in resources(module, resource_type).items():
            member = _reference(grant["member"])
            service = member.removeprefix("local.")
            role = _reference(grant["role"])
            permissions = custom.get(role, ROLE_PERMISSIONS.get(role))
            if permissions is None:
                raise AssertionError(f"{name}: role {role} is not a known narrow role")
            applicable = {
                p
                for p in permissions
                if p.startswith(KIND_PREFIXES[kind])
                # Listing topics or subscriptions is checked on the project, never on one.
                and not (kind in {"topic", "subscription"} and p.endswith(".list"))
            }
            conditions = grant.get("condition", [])
            found.append(
                Grant(
                    name,
                    service,
                    kind,
                    _reference(grant[field]),
                    frozenset(applicable),
                    # python-hcl2 keeps the HCL string's escapes
                    conditions[0]["expression"].replace('\\"', '"') if conditions else None,
                )
            )
    return found


def own_subscriptions_only(expression: str | None) -> bool:
    """The condition confines a project-wide grant to the inference prefix's subscriptions."""
    if expression is None:
        return False
    prefix = 'resource.name.startsWith("projects/${var.project_id}/subscriptions/'
    return (
        'resource.type == "pubsub.googleapis.com/Subscription"' in expression
        and f'{prefix}${{var.inference_subscription_prefix}}")' in expression
        and "||" not in expression
    )


def too_wide(grant: Grant) -> list[str]:
    """What a grant allows beyond the calls of its service (empty: fine)."""
    needs = NEEDS.get(grant.service)
    if needs is None:
        return [f"{grant.name}: {grant.service} is not a service that needs Google access"]
    target = grant.target
    if grant.kind == "project":
        if not own_subscriptions_only(grant.condition):
            return [f"{grant.name}: a project-wide grant without the own-subscriptions condition"]
        target = OWN_SUBSCRIPTIONS
    extra = set(grant.permissions) - needs.get(target, set())
    return [f"{grant.name}: {sorted(extra)} on {target}"] if extra else []


@pytest.fixture(scope="module")
def identity() -> dict[str, list[Any]]:
    return load_module(IDENTITY)


def test_no_grant_is_wider_than_the_services_calls(identity: dict[str, list[Any]]) -> None:
    found = grants(identity)
    assert {grant.service for grant in found} == {"learning", "inference"}
    assert [problem for grant in found for problem in too_wide(grant)] == []


def test_every_call_the_services_make_is_granted(identity: dict[str, list[Any]]) -> None:
    """The other direction: least privilege that still lets the services work."""
    found = grants(identity)
    for service, needs in NEEDS.items():
        for target, permissions in needs.items():
            granted = set().union(
                *(
                    g.permissions
                    for g in found
                    if g.service == service
                    and (
                        g.target == target or (g.kind == "project" and target == OWN_SUBSCRIPTIONS)
                    )
                )
            )
            missing = permissions - granted - MANAGED_FOLDERS
            assert not missing, f"{service} lacks {sorted(missing)} on {target}"


def test_inference_can_never_touch_the_learners_subscription(
    identity: dict[str, list[Any]],
) -> None:
    found = grants(identity)
    assert not [
        g for g in found if g.service == "inference" and g.target == "var.feedback_subscription_id"
    ]
    # The learner's subscription name lies outside the condition's prefix.
    root = (TERRAFORM / "main.tf").read_text()
    prefix = re.search(r'inference_subscription_prefix\s*=\s*"([^"]+)"', root)
    learner = re.search(r'feedback_subscription\s*=\s*"([^"]+)"', root)
    assert prefix and learner
    assert prefix.group(1) == INFERENCE_SUBSCRIPTION_PREFIX
    assert not learner.group(1).startswith(prefix.group(1))


def test_no_service_may_create_topics(identity: dict[str, list[Any]]) -> None:
    """Terraform owns the topics (TAGLOOP_PUBSUB_PROVISION=false in the chart)."""
    assert not [g for g in grants(identity) if "pubsub.topics.create" in g.permissions]
    assert PERMISSIONS["create topic"] == "pubsub.topics.create"


@pytest.mark.parametrize(
    "widen",
    [
        "condition removed",
        "admin role on the topic",
        "object admin on the bucket",
        "inference on the learner's subscription",
        "condition widened with ||",
    ],
)
def test_the_check_fails_on_a_wider_grant(identity: dict[str, list[Any]], widen: str) -> None:
    module = copy.deepcopy(identity)
    members = resources(module, "google_project_iam_member")
    if widen == "condition removed":
        members["inference_subscriptions"].pop("condition")
    elif widen == "condition widened with ||":
        condition = members["inference_subscriptions"]["condition"][0]
        condition["expression"] += ' || resource.name.startsWith("projects/")'
    elif widen == "admin role on the topic":
        topics = resources(module, "google_pubsub_topic_iam_member")
        topics["inference_publish_feedback"]["role"] = "roles/pubsub.subscriber"
    elif widen == "object admin on the bucket":
        buckets = resources(module, "google_storage_bucket_iam_member")
        buckets["inference_bucket"]["role"] = "roles/storage.objectUser"
    else:
        subscriptions = resources(module, "google_pubsub_subscription_iam_member")
        subscriptions["learning_consume"]["member"] = "${local.inference}"
    assert [problem for grant in grants(module) for problem in too_wide(grant)]
