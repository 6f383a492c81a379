variable "project_id" {
  description = "Project of the environment."
  type        = string
}

variable "name" {
  description = "Name prefix (tagloop-<environment>)."
  type        = string
}

variable "environment" {
  description = "Selects the chart's values-<environment>.yaml."
  type        = string
}

variable "namespace" {
  description = "Namespace of the release."
  type        = string
}

variable "chart_path" {
  description = "Path of the chart directory."
  type        = string
}

variable "app_version" {
  description = "Image tag to deploy."
  type        = string
}

variable "image_registry" {
  description = "Registry prefix of the images."
  type        = string
}

variable "domain" {
  description = "Public host; empty: no host rule, no certificate."
  type        = string
}

variable "feedback_topic" {
  description = "Feedback topic name."
  type        = string
}

variable "feedback_subscription" {
  description = "The learner's subscription name."
  type        = string
}

variable "model_topic" {
  description = "Model-update topic name."
  type        = string
}

variable "bucket_name" {
  description = "Model bucket."
  type        = string
}

variable "kubernetes_service_accounts" {
  description = "Kubernetes service account name per service."
  type        = map(string)
}

variable "google_service_accounts" {
  description = "Google service account email per service (Workload Identity annotation)."
  type        = map(string)
}

variable "hmac_keys" {
  description = "HMAC access id and secret per service."
  type        = map(object({ access_id = string, secret = string }))
  sensitive   = true
}

variable "security_policy" {
  description = "Cloud Armor policy the ingress backend uses (the chart's BackendConfig)."
  type        = string
}

variable "feedback_backup_interval" {
  description = "Seconds between the learner's copies of feedback.csv to the bucket."
  type        = number
}

variable "image_digests" {
  description = "Image digest per service; empty: by tag."
  type        = map(string)
}
