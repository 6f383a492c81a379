# A dedicated VPC for the cluster: one subnet with secondary ranges for pods
# and services (VPC-native), and Cloud NAT so private nodes reach the image
# registry and Google APIs without public addresses.
variable "project_id" {
  description = "Project of the network."
  type        = string
}

variable "name" {
  description = "Name prefix of the network resources."
  type        = string
}

variable "region" {
  description = "Region of the subnet and the NAT."
  type        = string
}

resource "google_compute_network" "this" {
  project                 = var.project_id
  name                    = var.name
  auto_create_subnetworks = false
}

resource "google_compute_subnetwork" "this" {
  project                  = var.project_id
  name                     = var.name
  region                   = var.region
  network                  = google_compute_network.this.id
  ip_cidr_range            = "10.10.0.0/20"
  private_ip_google_access = true

  secondary_ip_range {
    range_name    = "pods"
    ip_cidr_range = "10.20.0.0/16"
  }

  secondary_ip_range {
    range_name    = "services"
    ip_cidr_range = "10.30.0.0/20"
  }

  log_config {
    aggregation_interval = "INTERVAL_10_MIN"
    flow_sampling        = 0.1
  }
}

resource "google_compute_router" "this" {
  project = var.project_id
  name    = var.name
  region  = var.region
  network = google_compute_network.this.id
}

resource "google_compute_router_nat" "this" {
  project                            = var.project_id
  name                               = var.name
  router                             = google_compute_router.this.name
  region                             = var.region
  nat_ip_allocate_option             = "AUTO_ONLY"
  source_subnetwork_ip_ranges_to_nat = "ALL_SUBNETWORKS_ALL_IP_RANGES"

  log_config {
    enable = true
    filter = "ERRORS_ONLY"
  }
}

output "network" {
  description = "VPC self link."
  value       = google_compute_network.this.self_link
}

output "subnetwork" {
  description = "Subnet self link."
  value       = google_compute_subnetwork.this.self_link
}

output "pods_range_name" {
  description = "Secondary range of the pods."
  value       = "pods"
}

output "services_range_name" {
  description = "Secondary range of the services."
  value       = "services"
}
