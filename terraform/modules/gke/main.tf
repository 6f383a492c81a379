# A GKE Standard cluster: private nodes, Workload Identity, Dataplane V2 (so
# the chart's NetworkPolicies are enforced), shielded nodes and Google managed
# Prometheus. Two node pools: a small always-on "system" pool and the
# autoscaled "workload" pool the application runs on, which the off-hours
# workflow scales to zero in test.

# Nodes run as their own minimal service account, not the Compute default
# (which has Editor on the project).
resource "google_service_account" "nodes" {
  project      = var.project_id
  account_id   = "${var.name}-nodes"
  display_name = "GKE nodes of ${var.name}"
}

resource "google_project_iam_member" "nodes" {
  for_each = toset([
    "roles/logging.logWriter",
    "roles/monitoring.metricWriter",
    "roles/monitoring.viewer",
    "roles/stackdriver.resourceMetadata.writer",
    "roles/autoscaling.metricsWriter",
  ])

  project = var.project_id
  role    = each.value
  member  = "serviceAccount:${google_service_account.nodes.email}"
}

resource "google_container_cluster" "this" {
  project               = var.project_id
  name                  = var.name
  location              = var.location
  network               = var.network
  subnetwork            = var.subnetwork
  deletion_protection   = var.deletion_protection
  datapath_provider     = "ADVANCED_DATAPATH"
  enable_shielded_nodes = true

  # Node pools are managed below, not by the cluster resource.
  remove_default_node_pool = true
  initial_node_count       = 1

  release_channel {
    channel = var.release_channel
  }

  ip_allocation_policy {
    cluster_secondary_range_name  = var.pods_range_name
    services_secondary_range_name = var.services_range_name
  }

  private_cluster_config {
    enable_private_nodes    = true
    enable_private_endpoint = false
    master_ipv4_cidr_block  = "172.16.0.0/28"
  }

  # The control plane's IP endpoint admits only the authorized networks (none:
  # no public IP access at all, nodes reach it privately). Operators and CI
  # use the DNS-based endpoint instead, where every request is authorized by
  # IAM (container.clusters.connect), not by source address: GitHub-hosted
  # runners have no fixed addresses, and an open 0.0.0.0/0 is not acceptable.
  master_authorized_networks_config {
    dynamic "cidr_blocks" {
      for_each = var.master_authorized_cidrs
      content {
        cidr_block = cidr_blocks.value
      }
    }
  }

  control_plane_endpoints_config {
    dns_endpoint_config {
      allow_external_traffic = true
    }
  }

  workload_identity_config {
    workload_pool = "${var.project_id}.svc.id.goog"
  }

  monitoring_config {
    enable_components = ["SYSTEM_COMPONENTS"]
    managed_prometheus {
      enabled = true
    }
  }

  logging_config {
    enable_components = ["SYSTEM_COMPONENTS", "WORKLOADS"]
  }

  master_auth {
    client_certificate_config {
      issue_client_certificate = false
    }
  }

  addons_config {
    http_load_balancing {
      disabled = false
    }
    horizontal_pod_autoscaling {
      disabled = false
    }
    # Backup for GKE: the scheduled backups of the learner's volume (modules/backup).
    gke_backup_agent_config {
      enabled = true
    }
  }
}

locals {
  node_config = {
    service_account = google_service_account.nodes.email
    oauth_scopes    = ["https://www.googleapis.com/auth/cloud-platform"]
  }
}

resource "google_container_node_pool" "system" {
  project    = var.project_id
  name       = "system"
  cluster    = google_container_cluster.this.id
  location   = var.location
  node_count = 1

  management {
    auto_repair  = true
    auto_upgrade = true
  }

  node_config {
    machine_type    = var.system_machine_type
    service_account = local.node_config.service_account
    oauth_scopes    = local.node_config.oauth_scopes
    labels          = { pool = "system" }

    workload_metadata_config {
      mode = "GKE_METADATA"
    }

    shielded_instance_config {
      enable_secure_boot          = true
      enable_integrity_monitoring = true
    }
  }
}

resource "google_container_node_pool" "workload" {
  project            = var.project_id
  name               = "workload"
  cluster            = google_container_cluster.this.id
  location           = var.location
  initial_node_count = var.node_min_count

  autoscaling {
    min_node_count = var.node_min_count
    max_node_count = var.node_max_count
  }

  management {
    auto_repair  = true
    auto_upgrade = true
  }

  node_config {
    machine_type    = var.node_machine_type
    service_account = local.node_config.service_account
    oauth_scopes    = local.node_config.oauth_scopes
    labels          = { pool = "workload" }

    workload_metadata_config {
      mode = "GKE_METADATA"
    }

    shielded_instance_config {
      enable_secure_boot          = true
      enable_integrity_monitoring = true
    }
  }

  # The off-hours workflow resizes this pool; the next apply restores the
  # autoscaling bounds, and the node count itself is the autoscaler's.
  lifecycle {
    ignore_changes = [initial_node_count, node_count]
  }
}
