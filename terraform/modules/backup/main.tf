# Scheduled backups of the learner's disk with Backup for GKE: the
# namespace's volumes (only the learner has one: its feedback.csv) and
# resources, on a cron schedule, kept for a number of days. Restoring a
# backup brings the PersistentVolumeClaim back as it was at that time; the
# learner's own copy in the bucket (TAGLOOP_BACKUP_INTERVAL_SECONDS, `tagloop
# restore`) is the finer-grained path, and Pub/Sub redelivers what was not
# acknowledged. docs/deploy.md "Backups and restore" walks both.
variable "project_id" {
  description = "Project of the backup plan."
  type        = string
}

variable "name" {
  description = "Name prefix (tagloop-<environment>)."
  type        = string
}

variable "location" {
  description = "Region of the backup plan (the cluster's region)."
  type        = string
}

variable "cluster_id" {
  description = "Cluster whose volumes are backed up."
  type        = string
}

variable "namespace" {
  description = "Namespace of the release (the learner's volume)."
  type        = string
}

variable "cron_schedule" {
  description = "When to back up (cron, UTC)."
  type        = string
}

variable "retain_days" {
  description = "Days each backup is kept."
  type        = number
}

resource "google_gke_backup_backup_plan" "learner" {
  project  = var.project_id
  name     = "${var.name}-learner"
  cluster  = var.cluster_id
  location = var.location

  backup_schedule {
    cron_schedule = var.cron_schedule
  }

  retention_policy {
    backup_retain_days = var.retain_days
  }

  backup_config {
    include_volume_data = true
    include_secrets     = false
    selected_namespaces {
      namespaces = [var.namespace]
    }
  }
}
