variable "project_id" {
  description = "Project of the service accounts."
  type        = string
}

variable "name" {
  description = "Name prefix of the service accounts."
  type        = string
}

variable "namespace" {
  description = "Kubernetes namespace of the release (Workload Identity member)."
  type        = string
}

variable "kubernetes_service_accounts" {
  description = "Kubernetes service account name per service (learning, inference)."
  type        = map(string)
}

variable "bucket_name" {
  description = "Model bucket."
  type        = string
}

variable "feedback_topic_id" {
  description = "Feedback topic id."
  type        = string
}

variable "feedback_subscription_id" {
  description = "The learner's subscription id."
  type        = string
}

variable "model_topic_id" {
  description = "Model-update topic id."
  type        = string
}

variable "inference_subscription_prefix" {
  description = "Name prefix of the inference processes' own subscriptions (their IAM condition)."
  type        = string
}
