# The message bus (contracts section 3): user feedback, model-update
# broadcasts, and the learner's durable subscription with a retry policy and a
# dead-letter topic. Inference replicas create their own short-lived
# subscriptions on the model topic at start-up.
variable "project_id" {
  description = "Project of the topics."
  type        = string
}

variable "feedback_topic" {
  description = "Topic of user feedback (TAGLOOP_FEEDBACK_TOPIC)."
  type        = string
}

variable "feedback_subscription" {
  description = "The learner's subscription (TAGLOOP_FEEDBACK_SUBSCRIPTION)."
  type        = string
}

variable "model_topic" {
  description = "Topic of model-update broadcasts (TAGLOOP_MODEL_TOPIC)."
  type        = string
}

variable "feedback_retention_seconds" {
  description = "Retention of unacknowledged feedback."
  type        = number
}

variable "max_delivery_attempts" {
  description = "Deliveries before a message is dead-lettered."
  type        = number
}

data "google_project" "this" {
  project_id = var.project_id
}

locals {
  retention         = "${var.feedback_retention_seconds}s"
  pubsub_agent      = "serviceAccount:service-${data.google_project.this.number}@gcp-sa-pubsub.iam.gserviceaccount.com"
  dead_letter_topic = "${var.feedback_topic}-dead-letter"
}

resource "google_pubsub_topic" "feedback" {
  project                    = var.project_id
  name                       = var.feedback_topic
  message_retention_duration = local.retention
}

resource "google_pubsub_topic" "model" {
  project = var.project_id
  name    = var.model_topic
}

resource "google_pubsub_topic" "dead_letter" {
  project                    = var.project_id
  name                       = local.dead_letter_topic
  message_retention_duration = local.retention
}

resource "google_pubsub_subscription" "learner" {
  project                    = var.project_id
  name                       = var.feedback_subscription
  topic                      = google_pubsub_topic.feedback.id
  ack_deadline_seconds       = 60
  message_retention_duration = local.retention
  retain_acked_messages      = false

  # A durable subscription: never garbage-collected while the learner is down.
  expiration_policy {
    ttl = ""
  }

  retry_policy {
    minimum_backoff = "10s"
    maximum_backoff = "600s"
  }

  dead_letter_policy {
    dead_letter_topic     = google_pubsub_topic.dead_letter.id
    max_delivery_attempts = var.max_delivery_attempts
  }
}

# Keeps dead-lettered feedback for inspection and replay.
resource "google_pubsub_subscription" "dead_letter" {
  project                    = var.project_id
  name                       = "${local.dead_letter_topic}-inspect"
  topic                      = google_pubsub_topic.dead_letter.id
  message_retention_duration = local.retention

  expiration_policy {
    ttl = ""
  }
}

# Pub/Sub's own service agent moves messages to the dead-letter topic.
resource "google_pubsub_topic_iam_member" "dead_letter_publisher" {
  project = var.project_id
  topic   = google_pubsub_topic.dead_letter.name
  role    = "roles/pubsub.publisher"
  member  = local.pubsub_agent
}

resource "google_pubsub_subscription_iam_member" "dead_letter_subscriber" {
  project      = var.project_id
  subscription = google_pubsub_subscription.learner.name
  role         = "roles/pubsub.subscriber"
  member       = local.pubsub_agent
}

output "feedback_topic_id" {
  description = "Feedback topic id."
  value       = google_pubsub_topic.feedback.id
}

output "feedback_subscription_id" {
  description = "The learner's subscription id."
  value       = google_pubsub_subscription.learner.id
}

output "model_topic_id" {
  description = "Model-update topic id."
  value       = google_pubsub_topic.model.id
}
