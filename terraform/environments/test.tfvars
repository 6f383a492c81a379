# The test environment: deployed automatically by every release tag.
# Cheap: a zonal cluster, a small workload pool that the off-hours workflow
# scales to zero, plain HTTP on the ingress IP (no domain).
project_id  = "tagloop-test"
environment = "test"
region      = "europe-west1"

cluster_location        = "europe-west1-b"
release_channel         = "REGULAR"
deletion_protection     = false
system_machine_type     = "e2-medium"
node_machine_type       = "e2-standard-4"
node_min_count          = 1
node_max_count          = 3
master_authorized_cidrs = []

model_versions_to_keep     = 5
feedback_retention_seconds = 604800
max_delivery_attempts      = 10

namespace      = "tagloop"
image_registry = "ghcr.io/tagloop"
domain         = ""

# Alerts: every rule of observability/alerts.yml notifies this address.
alert_email = "tagloop-test-alerts@example.com"

# Cloud Armor, per client address over the whole deployment (before any replica).
edge_feedback_per_minute = 120
edge_requests_per_minute = 2400

# Backups of the learner's data: the volume (Backup for GKE) and feedback.csv to the bucket.
learner_backup_cron              = "0 3 * * *"
learner_backup_retain_days       = 7
feedback_backup_interval_seconds = 900
