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
