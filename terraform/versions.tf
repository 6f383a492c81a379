terraform {
  required_version = ">= 1.6"

  required_providers {
    google = {
      source  = "hashicorp/google"
      version = "~> 6.0"
    }
    kubernetes = {
      source  = "hashicorp/kubernetes"
      version = "~> 2.35"
    }
    helm = {
      source  = "hashicorp/helm"
      version = "~> 2.17"
    }
  }

  # Partial configuration: the bucket and a prefix per environment come from
  # -backend-config (Taskfile terraform:init), so each environment has its
  # own state and one apply changes one environment.
  backend "gcs" {}
}
