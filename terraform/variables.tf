# Every variable is set in environments/<env>.tfvars, except app_version,
# which the Taskfile (and so the release workflow) passes per deployment.

variable "project_id" {
  description = "Google Cloud project of this environment."
  type        = string
}

variable "environment" {
  description = "Environment name; selects helm/tagloop/values-<environment>.yaml."
  type        = string
  validation {
    condition     = contains(["test", "production"], var.environment)
    error_message = "environment must be test or production."
  }
}

variable "region" {
  description = "Region of the network, Pub/Sub storage and the bucket."
  type        = string
}

variable "cluster_location" {
  description = "GKE location: a zone (cheaper, test) or the region (highly available control plane)."
  type        = string
}

variable "release_channel" {
  description = "GKE release channel."
  type        = string
}

variable "deletion_protection" {
  description = "Protect the cluster and the model bucket from terraform destroy."
  type        = bool
}

variable "system_machine_type" {
  description = "Machine type of the small always-on node pool (kube-system, managed Prometheus)."
  type        = string
}

variable "node_machine_type" {
  description = "Machine type of the workload node pool (the expensive one, scaled down off-hours in test)."
  type        = string
}

variable "node_min_count" {
  description = "Autoscaler minimum of the workload pool, per zone."
  type        = number
}

variable "node_max_count" {
  description = "Autoscaler maximum of the workload pool, per zone."
  type        = number
}

variable "master_authorized_cidrs" {
  description = "CIDR blocks allowed to reach the control plane's IP endpoint; empty allows none. Terraform, CI and operators use the IAM-authorized DNS endpoint."
  type        = list(string)
}

variable "model_versions_to_keep" {
  description = "Noncurrent object versions kept per object in the model bucket (older ones are deleted)."
  type        = number
}

variable "feedback_retention_seconds" {
  description = "How long unacknowledged feedback stays in the learner's subscription."
  type        = number
}

variable "max_delivery_attempts" {
  description = "Deliveries of one feedback message before it goes to the dead-letter topic."
  type        = number
}

variable "namespace" {
  description = "Kubernetes namespace of the release."
  type        = string
}

variable "image_registry" {
  description = "Registry prefix of the images <registry>/tagloop-<service>:<version>."
  type        = string
}

variable "domain" {
  description = "Public host name with a Google-managed certificate; empty serves plain HTTP on the ingress IP."
  type        = string
}

variable "app_version" {
  description = "Version to deploy: image tag (and chart appVersion), e.g. 1.2.3. Passed by the Taskfile."
  type        = string
  validation {
    condition     = can(regex("^[0-9]+\\.[0-9]+\\.[0-9]+(-[0-9A-Za-z.-]+)?$", var.app_version))
    error_message = "app_version must be a semantic version such as 1.2.3."
  }
}

variable "alert_email" {
  description = "Where alerts go: the address of the Cloud Monitoring email notification channel (an on-call list)."
  type        = string
  validation {
    condition     = can(regex("^[^@ ]+@[^@ ]+\\.[^@ ]+$", var.alert_email))
    error_message = "alert_email must be an email address."
  }
}

variable "edge_feedback_per_minute" {
  description = "Cloud Armor: POST /api/feedback per minute and client address before 429."
  type        = number
}

variable "edge_requests_per_minute" {
  description = "Cloud Armor: requests of any kind per minute and client address before 429."
  type        = number
}

variable "learner_backup_cron" {
  description = "Backup for GKE schedule of the learner's volume (cron, UTC)."
  type        = string
}

variable "learner_backup_retain_days" {
  description = "Days a learner volume backup is kept."
  type        = number
}

variable "feedback_backup_interval_seconds" {
  description = "How often the learner copies feedback.csv to the model bucket (TAGLOOP_BACKUP_INTERVAL_SECONDS)."
  type        = number
}

variable "image_digests" {
  description = "Image digest per service (learning, inference, ui), e.g. sha256:...: the release workflow sets TF_VAR_image_digests so that pods run exactly the tested images. Empty: by tag only (a manual apply)."
  type        = map(string)
  default     = {}
  validation {
    condition     = alltrue([for digest in values(var.image_digests) : can(regex("^sha256:[0-9a-f]{64}$", digest))])
    error_message = "image_digests values must be sha256:<64 hex digits>."
  }
}
