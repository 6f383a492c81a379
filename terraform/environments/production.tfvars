# Production: deployed by a release after manual approval (GitHub environment
# protection). A regional cluster (control plane and nodes in three zones),
# deletion protection, longer histories, a domain with a managed certificate.
project_id  = "tagloop-production"
environment = "production"
region      = "europe-west1"

cluster_location        = "europe-west1"
release_channel         = "STABLE"
deletion_protection     = true
system_machine_type     = "e2-medium"
node_machine_type       = "e2-standard-4"
node_min_count          = 1
node_max_count          = 4
master_authorized_cidrs = []

model_versions_to_keep     = 20
feedback_retention_seconds = 604800
max_delivery_attempts      = 10

namespace      = "tagloop"
image_registry = "ghcr.io/tagloop"
domain         = "tagloop.example.com"

# Alerts: every rule of observability/alerts.yml notifies this address.
alert_email = "oncall-tagloop@example.com"

# Cloud Armor, per client address over the whole deployment (before any replica).
edge_feedback_per_minute = 60
edge_requests_per_minute = 1200

# Backups of the learner's data: the volume (Backup for GKE) and feedback.csv to the bucket.
learner_backup_cron              = "0 */6 * * *"
learner_backup_retain_days       = 30
feedback_backup_interval_seconds = 300
