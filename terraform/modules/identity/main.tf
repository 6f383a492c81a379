# One Google service account per service, each granted only what that
# service does, bound to its Kubernetes service account through Workload
# Identity (no key files). The UI needs no Google access and gets none.
#
#   learning : consume (and get) the feedback subscription, publish model
#              updates, read and write the model bucket (models, feedback backup)
#   inference: publish feedback, create/consume/delete its own model-update
#              subscriptions (an IAM condition on their name prefix), read the
#              model bucket
#   nobody   : creates, changes or deletes topics or the learner's
#              subscription at run time: Terraform does (tests/infra/test_infra_iam.py
#              fails on any grant wider than the services' calls)
#
# The registry speaks the S3 API to Cloud Storage, which authenticates with
# HMAC keys: each service gets a key of its own service account, so the
# bucket permissions above are the ones that apply.

resource "google_service_account" "service" {
  for_each = var.kubernetes_service_accounts

  project      = var.project_id
  account_id   = "${var.name}-${each.key}"
  display_name = "tagloop ${each.key} (${var.name})"
}

resource "google_service_account_iam_member" "workload_identity" {
  for_each = var.kubernetes_service_accounts

  service_account_id = google_service_account.service[each.key].name
  role               = "roles/iam.workloadIdentityUser"
  member             = "serviceAccount:${var.project_id}.svc.id.goog[${var.namespace}/${each.value}]"
}

locals {
  learning  = "serviceAccount:${google_service_account.service["learning"].email}"
  inference = "serviceAccount:${google_service_account.service["inference"].email}"
}

# --- learning ---------------------------------------------------------------

resource "google_pubsub_subscription_iam_member" "learning_consume" {
  subscription = var.feedback_subscription_id
  role         = "roles/pubsub.subscriber"
  member       = local.learning
}

resource "google_pubsub_subscription_iam_member" "learning_inspect" {
  subscription = var.feedback_subscription_id
  role         = "roles/pubsub.viewer"
  member       = local.learning
}

resource "google_pubsub_topic_iam_member" "learning_publish_models" {
  topic  = var.model_topic_id
  role   = "roles/pubsub.publisher"
  member = local.learning
}

# objectUser, not objectAdmin: read, write, overwrite (which needs delete in
# Cloud Storage) and multipart uploads, but no object IAM.
resource "google_storage_bucket_iam_member" "learning_bucket" {
  bucket = var.bucket_name
  role   = "roles/storage.objectUser"
  member = local.learning
}

# --- inference --------------------------------------------------------------

resource "google_pubsub_topic_iam_member" "inference_publish_feedback" {
  topic  = var.feedback_topic_id
  role   = "roles/pubsub.publisher"
  member = local.inference
}

# Attaching a subscription to the model topic needs subscriber on the topic.
resource "google_pubsub_topic_iam_member" "inference_attach" {
  topic  = var.model_topic_id
  role   = "roles/pubsub.subscriber"
  member = local.inference
}

# Fan-out: every inference process creates its own subscription on the model
# topic at start-up and deletes it at shutdown
# (inference-model-updates-<host>-<pid>-<random>, with a one-day expiration
# TTL for processes that die uncleanly). Names are only known at run time, so
# the custom role is granted on the project, but an IAM condition confines it
# to subscriptions whose name has the inference prefix
# (tagloop.channels.provisioning.INFERENCE_SUBSCRIPTION_PREFIX): the learner's
# subscription and any other stay out of reach. The inference service may
# not create topics: Terraform owns them (TAGLOOP_PUBSUB_PROVISION=false).
resource "google_project_iam_custom_role" "subscription_owner" {
  project     = var.project_id
  role_id     = replace("${var.name}_subscription_owner", "-", "_")
  title       = "tagloop inference subscription owner (${var.name})"
  description = "Create, consume and delete the per-process model-update subscriptions."
  permissions = [
    "pubsub.subscriptions.consume",
    "pubsub.subscriptions.create",
    "pubsub.subscriptions.delete",
    "pubsub.subscriptions.get",
  ]
}

resource "google_project_iam_member" "inference_subscriptions" {
  project = var.project_id
  role    = google_project_iam_custom_role.subscription_owner.id
  member  = local.inference

  condition {
    title       = "own-subscriptions-only"
    description = "Only the inference processes' own subscriptions (name prefix ${var.inference_subscription_prefix})."
    expression  = "resource.type == \"pubsub.googleapis.com/Subscription\" && resource.name.startsWith(\"projects/${var.project_id}/subscriptions/${var.inference_subscription_prefix}\")"
  }
}

resource "google_storage_bucket_iam_member" "inference_bucket" {
  bucket = var.bucket_name
  role   = "roles/storage.objectViewer"
  member = local.inference
}

# --- S3 interoperability keys -----------------------------------------------

resource "google_storage_hmac_key" "service" {
  for_each = var.kubernetes_service_accounts

  project               = var.project_id
  service_account_email = google_service_account.service[each.key].email
}
