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
  description = "CIDR blocks allowed to reach the control plane; empty allows any (GitHub-hosted runners have no fixed addresses)."
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
