# The model registry (contracts section 4), used through the S3
# interoperability API. Object versioning keeps overwritten objects (notably
# models/current.json) recoverable; the lifecycle rule bounds the history.
variable "project_id" {
  description = "Project of the bucket."
  type        = string
}

variable "name" {
  description = "Bucket name (TAGLOOP_S3_BUCKET)."
  type        = string
}

variable "location" {
  description = "Bucket location."
  type        = string
}

variable "model_versions_to_keep" {
  description = "Noncurrent versions kept per object."
  type        = number
}

variable "force_destroy" {
  description = "Allow terraform destroy to delete a non-empty bucket."
  type        = bool
}

resource "google_storage_bucket" "models" {
  project                     = var.project_id
  name                        = var.name
  location                    = var.location
  storage_class               = "STANDARD"
  uniform_bucket_level_access = true
  public_access_prevention    = "enforced"
  force_destroy               = var.force_destroy

  versioning {
    enabled = true
  }

  # Keep the last N noncurrent versions of every object; delete older ones.
  lifecycle_rule {
    condition {
      num_newer_versions = var.model_versions_to_keep
      with_state         = "ARCHIVED"
    }
    action {
      type = "Delete"
    }
  }

  soft_delete_policy {
    retention_duration_seconds = 604800
  }
}

output "name" {
  description = "Bucket name."
  value       = google_storage_bucket.models.name
}
